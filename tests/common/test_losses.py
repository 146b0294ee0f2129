"""Tests for NT-Xent (privacy budget), latent consistency and the combined objective."""

import math

import pytest
import torch

from common.config import LossConfig, RunConfig, TrainConfig
from common.losses import latent_consistency_loss, privacy_budget_loss, splavu_objective
from common.model import build_model
from common.training import TrainingBatch, build_optimizer, compute_losses, training_step
from tests.fakes import ar_batch


def nt_xent_by_hand(view_a: list[list[float]], view_b: list[list[float]], tau: float) -> float:
    """NT-Xent written out term by term from its definition, in plain Python."""

    def cosine(u, v):
        dot = sum(x * y for x, y in zip(u, v, strict=True))
        return dot / (math.sqrt(sum(x * x for x in u)) * math.sqrt(sum(y * y for y in v)))

    n = len(view_a)
    reps = view_a + view_b
    total = 0.0
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        numerator = math.exp(cosine(reps[i], reps[positive]) / tau)
        denominator = sum(math.exp(cosine(reps[i], reps[k]) / tau) for k in range(2 * n) if k != i)
        total += -math.log(numerator / denominator)
    return total / (2 * n)


def test_nt_xent_closed_form_for_three_orthogonal_videos():
    # Both views of each video identical, videos orthogonal: for every anchor the positive has
    # cosine 1 and the 4 negatives cosine 0, so the loss is log(1 + 4 exp(-1/tau)).
    eye = torch.eye(3, 4, dtype=torch.float64)
    expected = math.log(1.0 + 4.0 * math.exp(-10.0))
    assert privacy_budget_loss(eye, eye.clone(), tau=0.1).item() == pytest.approx(
        expected, rel=1e-6
    )


def test_nt_xent_matches_hand_computation_for_a_batch_of_three():
    view_a = [[1.0, 2.0, 0.5], [-1.0, 0.3, 2.0], [0.2, -1.5, 1.0]]
    view_b = [[0.8, 2.2, 0.1], [-0.5, 0.0, 1.5], [1.0, -1.0, -0.3]]
    got = privacy_budget_loss(torch.tensor(view_a), torch.tensor(view_b), tau=0.1)
    assert got.item() == pytest.approx(nt_xent_by_hand(view_a, view_b, 0.1), rel=1e-5)
    # tau matters: the same batch at tau 0.5 gives another value, also matching the definition.
    got_05 = privacy_budget_loss(torch.tensor(view_a), torch.tensor(view_b), tau=0.5)
    assert got_05.item() == pytest.approx(nt_xent_by_hand(view_a, view_b, 0.5), rel=1e-5)
    assert abs(got_05.item() - got.item()) > 0.1


def test_nt_xent_is_invariant_to_feature_scale_and_rejects_bad_shapes():
    a, b = torch.randn(5, 8), torch.randn(5, 8)
    torch.testing.assert_close(privacy_budget_loss(a, b), privacy_budget_loss(3 * a, 0.5 * b))
    with pytest.raises(ValueError, match="at least 2"):
        privacy_budget_loss(a[:1], b[:1])
    with pytest.raises(ValueError, match=r"\(N, d\)"):
        privacy_budget_loss(a, b[:4])


def test_capped_nt_xent_stops_paying_once_a_video_cannot_be_told_from_the_others():
    n = 4
    uniform = math.log(2 * n - 1)  # every anchor's positive as similar as its negatives
    same = torch.ones(n, 3)
    assert privacy_budget_loss(same, same.clone(), cap=True).item() == pytest.approx(uniform)
    # Each video's two views point in opposite directions: positives LESS similar than
    # negatives. Uncapped the loss goes beyond ln(2N-1) (and keeps paying); capped it stops there.
    torch.manual_seed(0)
    a = torch.randn(n, 8, dtype=torch.float64)
    b = -a + 0.01 * torch.randn(n, 8, dtype=torch.float64)
    assert privacy_budget_loss(a, b).item() > uniform + 0.5
    assert privacy_budget_loss(a, b, cap=True).item() == pytest.approx(uniform)
    a.requires_grad_(True)
    privacy_budget_loss(a, b, cap=True).backward()
    assert torch.count_nonzero(a.grad) == 0
    # Below the cap the two agree term by term (here: identical views, distinct videos).
    view_a = [[1.0, 2.0, 0.5], [-1.0, 0.3, 2.0], [0.2, -1.5, 1.0]]
    views = torch.tensor(view_a, dtype=torch.float64)
    capped = privacy_budget_loss(views, views.clone(), tau=0.1, cap=True)
    assert capped.item() == pytest.approx(nt_xent_by_hand(view_a, view_a, 0.1), rel=1e-5)


def test_centred_nt_xent_ignores_a_part_every_clip_shares():
    torch.manual_seed(1)
    a, b = torch.randn(6, 8, dtype=torch.float64), torch.randn(6, 8, dtype=torch.float64)
    shared = 20.0 * torch.randn(8, dtype=torch.float64)  # e.g. a site's background
    centred = privacy_budget_loss(a, b, center=True)
    torch.testing.assert_close(privacy_budget_loss(a + shared, b + shared, center=True), centred)
    # Uncentred, the shared part makes every pair alike: the loss moves towards ln(2N-1).
    plain, shifted = privacy_budget_loss(a, b), privacy_budget_loss(a + shared, b + shared)
    assert abs(shifted.item() - math.log(11)) < abs(plain.item() - math.log(11))
    assert abs(shifted.item() - plain.item()) > 0.1


def test_latent_consistency_ignores_padding():
    h = torch.zeros(1, 3, 2)
    z = torch.tensor([[[1.0, 1.0], [1.0, 1.0], [100.0, 100.0]]])
    mask = torch.tensor([[False, False, True]])
    assert latent_consistency_loss(h, z, mask).item() == pytest.approx(1.0)
    assert latent_consistency_loss(h, z).item() > 1000


def test_latent_consistency_motion_counts_clip_to_clip_changes_of_valid_pairs_only():
    h = torch.zeros(1, 3, 2)
    z = torch.tensor([[[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]]])
    # positions: (0 + 1 + 1) / 3; changes: (1 + 0) / 2, times 2
    assert latent_consistency_loss(h, z, motion=2.0).item() == pytest.approx(2 / 3 + 1.0)
    assert latent_consistency_loss(h, z).item() == pytest.approx(2 / 3)
    # the last clip is padding: one valid position pair, (0, 1), whose change is 1
    mask = torch.tensor([[False, False, True]])
    assert latent_consistency_loss(h, z, mask, motion=2.0).item() == pytest.approx(0.5 + 2.0)
    # one-clip sequences have no change to keep: only the positions' term
    single = torch.ones(4, 1, 2)
    assert latent_consistency_loss(single * 0, single, motion=5.0).item() == pytest.approx(1.0)


def test_latent_consistency_motion_ignores_what_a_video_keeps_throughout():
    torch.manual_seed(0)
    h = torch.randn(3, 5, 4)
    offset = 3.0 * torch.randn(3, 1, 4)  # one shift per video, e.g. who is in it
    plain = latent_consistency_loss(h, h + offset)
    with_motion = latent_consistency_loss(h, h + offset, motion=10.0)
    torch.testing.assert_close(with_motion, plain)
    assert plain.item() > 1.0
    # a change that differs from clip to clip is paid for
    jitter = offset * torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0]).view(1, 5, 1)
    assert (
        latent_consistency_loss(h, h + jitter, motion=10.0)
        > latent_consistency_loss(h, h + jitter) + 10.0
    )


def test_latent_consistency_tail_averages_the_worst_kept_valid_clips():
    h = torch.zeros(2, 3, 2)
    # per-clip errors 1, 4, 9 (video 0) and 16, 25 (video 1), then a padded clip of error 100
    z = torch.tensor([[[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]], [[4.0, 4.0], [5.0, 5.0], [10.0, 10.0]]])
    mask = torch.tensor([[False, False, False], [False, False, True]])
    assert latent_consistency_loss(h, z, mask).item() == pytest.approx(55 / 5)
    assert latent_consistency_loss(h, z, mask, tail=1.0).item() == pytest.approx(55 / 5)
    # ceil(0.4 x 5) = 2 worst valid clips: 25 and 16; the padded 100 never counts
    assert latent_consistency_loss(h, z, mask, tail=0.4).item() == pytest.approx(20.5)
    # 0.07 x 100 clips is 7 clips (not the 8 a floating-point ceil gives)
    errors = torch.arange(100.0).sqrt().view(1, 100, 1)  # per-clip errors 0, 1, ..., 99
    worst_7 = (93 + 99) / 2
    assert latent_consistency_loss(torch.zeros(1, 100, 1), errors, tail=0.07).item() == (
        pytest.approx(worst_7)
    )
    # at least one clip, and no valid clip at all is 0
    assert latent_consistency_loss(h, z, mask, tail=1e-6).item() == pytest.approx(25.0)
    assert latent_consistency_loss(h, z, torch.ones(2, 3, dtype=torch.bool), tail=0.5) == 0
    # the motion term is unchanged by the tail
    both = latent_consistency_loss(h, z, mask, motion=1.0, tail=0.4)
    only_motion = latent_consistency_loss(h, z, mask, motion=1.0) - 55 / 5
    assert both.item() == pytest.approx(20.5 + only_motion.item())


def test_latent_consistency_tail_weighs_a_rare_clip_that_the_mean_drowns():
    h = torch.zeros(50, 2, 4)
    z = torch.full((50, 2, 4), 0.1)
    z_rare = z.clone()
    z_rare[7, 1] = 3.0  # one clip of one video dropped: a rare event left unkept
    # the mean over 100 clips: the dropped clip adds 9 / 100; the worst 2 clips: 9 / 2
    rise = {
        tail: (
            latent_consistency_loss(h, z_rare, tail=tail) - latent_consistency_loss(h, z, tail=tail)
        ).item()
        for tail in (1.0, 0.02)
    }
    assert rise[1.0] == pytest.approx((9.0 - 0.01) / 100)
    assert rise[0.02] == pytest.approx((9.0 - 0.01) / 2)


def test_objective_combines_with_signs_and_weights():
    terms = splavu_objective(torch.tensor(0.5), torch.tensor(2.0), torch.tensor(3.0), LossConfig())
    assert terms.total.item() == pytest.approx(100 * 0.5 + 1 * 2.0 - 1 * 3.0)
    floats = terms.as_floats()
    assert floats == pytest.approx({"loss": 49.0, "loss_lc": 0.5, "loss_t": 2.0, "loss_b": 3.0})


def make_batch(b: int = 8, t: int = 3, d: int = 32, seed: int = 0) -> TrainingBatch:
    gen = torch.Generator().manual_seed(seed)
    return ar_batch(
        torch.randn(b, t, d, generator=gen),
        torch.randint(0, 8, (b,), generator=gen),
        torch.randn(b, 2, d, generator=gen),
    )


def test_latent_consistency_is_zero_at_initialisation():
    model = build_model(32, RunConfig(), seed=0)
    terms = compute_losses(model, make_batch(), LossConfig())
    assert terms.latent_consistency.item() == 0.0


def test_one_step_on_the_objective_increases_the_privacy_budget_loss():
    cfg = RunConfig()
    model = build_model(32, cfg, seed=0)
    batch = make_batch()
    before = compute_losses(model, batch, cfg.loss).privacy_budget.item()
    optimizer = build_optimizer(model, TrainConfig(lr=1e-3, head_lr=1e-3))
    metrics = training_step(model, optimizer, batch, cfg.loss)
    assert metrics["loss_b"] == pytest.approx(before, rel=1e-6)
    after = compute_losses(model, batch, cfg.loss).privacy_budget.item()
    assert after > before


def test_same_action_negatives_leave_other_actions_out_of_the_denominator():
    a, b = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
    groups = torch.tensor([0, 0, 0, 1, 1, 1])
    grouped = privacy_budget_loss(a, b, tau=0.5, groups=groups)
    # Equal to the mean of the plain loss computed on each action's videos alone.
    by_hand = (
        privacy_budget_loss(a[:3], b[:3], tau=0.5) + privacy_budget_loss(a[3:], b[3:], tau=0.5)
    ) / 2
    assert grouped.item() == pytest.approx(by_hand.item(), rel=1e-9)
    # A video alone in its action has no negative and adds nothing.
    lonely = torch.tensor([0, 0, 0, 1, 1, 2])
    kept = privacy_budget_loss(a[:5], b[:5], tau=0.5, groups=lonely[:5])
    assert privacy_budget_loss(a, b, tau=0.5, groups=lonely).item() == pytest.approx(
        kept.item(), rel=1e-9
    )


def test_capped_same_action_budget_caps_each_anchor_by_its_own_group_size():
    same = torch.ones(4, 3, dtype=torch.float64)  # every view identical: nothing to tell apart
    groups = torch.tensor([0, 0, 1, 1])
    # Each anchor: 1 positive and 2 negatives, all alike -> ln 3 = ln(2 * 2 - 1), the cap.
    capped = privacy_budget_loss(same, same, groups=groups, cap=True)
    assert capped.item() == pytest.approx(math.log(3), rel=1e-9)


def test_whitened_budget_sees_a_direction_of_tiny_variance_like_a_large_one():
    torch.manual_seed(0)
    n, d = 32, 4
    identity = torch.randn(n, d - 1, dtype=torch.float64)  # what tells the videos apart
    noise_a, noise_b = (torch.randn(n, 1, dtype=torch.float64) for _ in range(2))
    # The identity lives in directions 100x smaller than independent per-view noise.
    view_a = torch.cat([1e-2 * identity, noise_a], dim=1)
    view_b = torch.cat([1e-2 * identity, noise_b], dim=1)  # (N, d)
    cap = math.log(2 * n - 1)
    plain = privacy_budget_loss(view_a, view_b, tau=0.1, center=True)
    whitened = privacy_budget_loss(view_a, view_b, tau=0.1, whiten=True)
    # The plain cosine cannot see the identity: the videos look indistinguishable (loss near
    # the chance value); whitened, the identity counts as much as the noise does.
    assert plain.item() > cap - 0.5
    assert whitened.item() < plain.item() - 1.0
    # Whitening makes the loss blind to any invertible linear map of the views.
    mixing = torch.randn(d, d, dtype=torch.float64)
    mixed = privacy_budget_loss(view_a @ mixing, view_b @ mixing, tau=0.1, whiten=True)
    assert mixed.item() == pytest.approx(whitened.item(), rel=1e-4)


def test_whitening_more_dimensions_than_views_is_a_clear_error():
    with pytest.raises(ValueError, match="bottleneck"):
        privacy_budget_loss(torch.randn(4, 16), torch.randn(4, 16), whiten=True)
