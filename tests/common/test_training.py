"""Tests for the local SPLAVU training step."""

import dataclasses
import itertools

import pytest
import torch

from common.config import LossConfig, RunConfig, TrainConfig, load_config
from common.losses import privacy_budget_loss
from common.model import build_model
from common.training import (
    TaskBatch,
    TrainingBatch,
    build_optimizer,
    compute_losses,
    train_local,
    training_step,
)
from common.weights import shareable_state
from tests.fakes import ar_batch

D = 32


def make_batch(b: int = 16, t: int = 2, seed: int = 0) -> TrainingBatch:
    gen = torch.Generator().manual_seed(seed)
    actions = torch.randint(0, 8, (b,), generator=gen)
    # Features that carry the action, so a head can learn it.
    centroids = torch.randn(8, D, generator=gen) * 2.0
    clips = centroids[actions][:, None, :] + torch.randn(b, t, D, generator=gen)
    mask = torch.zeros(b, t, dtype=torch.bool)
    mask[::3, -1] = True
    return ar_batch(clips, actions, torch.randn(b, 2, D, generator=gen), mask)


def test_step_returns_components_and_updates_adapter_and_heads():
    model = build_model(D, RunConfig(), seed=0)
    before = shareable_state(model)
    optimizer = build_optimizer(model, TrainConfig(lr=1e-3, head_lr=1e-3))
    metrics = training_step(model, optimizer, make_batch(), LossConfig())
    assert set(metrics) == {"loss", "loss_lc", "loss_t", "loss_b"}
    assert metrics["loss"] == pytest.approx(
        100 * metrics["loss_lc"] + metrics["loss_t"] - metrics["loss_b"], rel=1e-5
    )
    after = shareable_state(model)
    changed = [name for name in before if not (before[name] == after[name]).all()]
    assert any(n.startswith("adapter.") for n in changed)
    assert any(n.startswith("heads.ar.") for n in changed)


def test_optimizer_uses_separate_learning_rates():
    model = build_model(D, RunConfig(), seed=0)
    optimizer = build_optimizer(model, TrainConfig(lr=1e-4, head_lr=5e-3))
    assert [group["lr"] for group in optimizer.param_groups] == [1e-4, 5e-3]


def test_repeated_steps_learn_the_task_and_raise_the_privacy_loss():
    model = build_model(D, RunConfig(), seed=0)
    batch = make_batch()
    optimizer = build_optimizer(model, TrainConfig(lr=1e-3, head_lr=1e-2))
    first = compute_losses(model, batch, LossConfig())
    for _ in range(30):
        training_step(model, optimizer, batch, LossConfig())
    last = compute_losses(model, batch, LossConfig())
    assert last.utility.item() < 0.5 * first.utility.item()
    assert last.privacy_budget.item() > first.privacy_budget.item()


def test_proximal_term_is_logged_and_pulls_towards_the_global_weights():
    batch = make_batch()
    runs = {}
    for mu in (0.0, 100.0):
        model = build_model(D, RunConfig(), seed=0)
        global_params = {n: p.detach().clone() for n, p in model.named_parameters()}
        optimizer = build_optimizer(model, TrainConfig(lr=1e-2, head_lr=1e-2))
        for _ in range(5):
            metrics = training_step(
                model, optimizer, batch, LossConfig(), proximal_mu=mu, global_params=global_params
            )
        drift = sum((p - global_params[n]).pow(2).sum().item() for n, p in model.named_parameters())
        runs[mu] = (drift, metrics)
    assert "loss_prox" not in runs[0.0][1] and runs[100.0][1]["loss_prox"] > 0
    assert runs[100.0][0] < runs[0.0][0]
    with pytest.raises(ValueError, match="global parameters"):
        model = build_model(D, RunConfig(), seed=0)
        training_step(
            model, build_optimizer(model, TrainConfig()), batch, LossConfig(), proximal_mu=1.0
        )


def test_static_features_shape_is_checked():
    model = build_model(D, RunConfig(), seed=0)
    batch = make_batch()
    ar = batch.tasks["ar"]
    bad = ar_batch(ar.clip_features, ar.labels["action"], ar.static_features[:, :1])
    with pytest.raises(ValueError, match="static_features"):
        compute_losses(model, bad, LossConfig())


def clip_batch(b: int = 8, t: int = 2, d: int = 16) -> TrainingBatch:
    gen = torch.Generator().manual_seed(1)
    return ar_batch(
        torch.randn(b, t, d, generator=gen),
        torch.arange(b) % 2,
        torch.randn(b, 2, d, generator=gen),
    )


def test_moving_clip_budget_anonymizes_the_two_halves_of_a_sequence_apart():
    config = load_config(
        None, ["loss.budget_views=clips", "loss.budget_negatives=same_action", "loss.tau=0.5"]
    )
    model = build_model(16, config, seed=0)
    for p in model.adapter.parameters():  # leave identity so that attention does something
        torch.nn.init.normal_(p, std=0.1)
    batch = clip_batch()
    terms = compute_losses(model, batch, config.loss)
    with torch.no_grad():
        ar = batch.tasks["ar"]
        first = model.adapter(ar.clip_features[:, :1]).mean(dim=1)
        second = model.adapter(ar.clip_features[:, 1:]).mean(dim=1)
        expected = privacy_budget_loss(first, second, 0.5, groups=ar.labels["action"])
    assert terms.privacy_budget.item() == pytest.approx(expected.item(), rel=1e-5)


def test_moving_clip_budget_needs_two_clips_per_sequence():
    config = load_config(None, ["loss.budget_views=clips"])
    model = build_model(16, config, seed=0)
    with pytest.raises(ValueError, match="two clips per sequence"):
        compute_losses(model, clip_batch(t=1), config.loss)


def test_whitened_budget_trains_the_bottleneck_code():
    config = load_config(
        None,
        ["loss.budget_views=clips", "loss.whiten_budget=true", "anonymizer.bottleneck=4"],
    )
    model = build_model(16, config, seed=0)
    optimizer = build_optimizer(model, config.train)
    training_step(model, optimizer, clip_batch(b=16), config.loss)
    assert all(p.grad is not None for p in model.adapter.bottleneck.parameters())


def test_a_task_with_a_single_video_at_a_site_sits_the_round_out():
    from common.sitedata import TaskTensors
    from tests.fakes import site_data

    config = load_config(None, ["train.batch_size=8"])
    data = site_data(1)
    lone = data["ar"]
    single = {"ar": TaskTensors(lone.clip_features[:1], lone.static_features[:1],
                                {"action": lone.labels["action"][:1]})}  # fmt: skip
    model = build_model(16, config, seed=0)
    with pytest.raises(ValueError, match="at least 2 videos"):
        train_local(model, single, config)
    metrics = train_local(model, data, config, seed=0)
    assert metrics["steps"] > 0


def test_a_sites_update_depends_on_its_seed_not_on_what_its_process_drew_before():
    # The AD head uses dropout, which draws from torch's global generator; a simulation worker
    # process serves several sites in an order that varies from run to run.
    from common.sitedata import TaskTensors

    config = load_config(None, ["tasks.seen={ar: 1.0, ad: 1.0}", "train.batch_size=8"])
    gen = torch.Generator().manual_seed(3)
    n = 8
    anomalies = torch.full((n, 4, 2), -1.0)
    anomalies[::2, 0] = torch.tensor([0.3, 0.6])
    ad = TaskTensors(
        torch.randn(n, 10, D, generator=gen),
        torch.randn(n, 2, D, generator=gen),
        {"anomalous": torch.arange(n) % 2 == 0, "anomalies": anomalies,
         "num_frames": torch.full((n,), 160)},
    )  # fmt: skip
    ad.labels["anomalous"] = ad.labels["anomalous"].long()
    data = {"ar": make_site_ar(), "ad": ad}
    runs = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        model = build_model(D, config, seed=0)
        train_local(model, data, config, seed=5)
        runs.append(shareable_state(model))
    for name, array in runs[0].items():
        assert (array == runs[1][name]).all(), name


@pytest.mark.parametrize("batches,steps", [(1, 2), (3, 10), (4, 7), (5, 5), (1, 1), (7, 9)])
def test_task_schedule_once_takes_each_batch_once_spread_over_the_epoch(batches, steps):
    from common.training import task_batch_at

    once = [task_batch_at(step, batches, steps, "once") for step in range(steps)]
    taken = [i for i in once if i is not None]
    assert taken == list(range(batches))  # each batch once, in order
    # Evenly spread: batch j at step floor(j * steps / batches), so the gaps differ by at most 1
    # and the last batch is in the epoch's last stretch, not all of them at its start.
    assert [i for i, j in enumerate(once) if j is not None] == [
        j * steps // batches for j in range(batches)
    ]
    gaps = [b - a for a, b in itertools.pairwise([i for i, j in enumerate(once) if j is not None])]
    assert not gaps or max(gaps) - min(gaps) <= 1
    repeat = [task_batch_at(step, batches, steps, "repeat") for step in range(steps)]
    assert repeat == [step % batches for step in range(steps)]
    with pytest.raises(ValueError, match="unknown task schedule"):
        task_batch_at(0, batches, steps, "onec")


def test_task_schedule_once_leaves_a_smaller_task_out_of_the_steps_beyond_its_batches(
    monkeypatch,
):
    import common.training as training
    from common.sitedata import TaskTensors

    gen = torch.Generator().manual_seed(6)
    anomalies = torch.full((4, 4, 2), -1.0)
    anomalies[::2, 0] = torch.tensor([0.3, 0.6])
    ad = TaskTensors(
        torch.randn(4, 10, D, generator=gen),
        torch.randn(4, 2, D, generator=gen),
        {"anomalous": (torch.arange(4) % 2 == 0).long(), "anomalies": anomalies,
         "num_frames": torch.full((4,), 160)},
    )  # fmt: skip
    data = {"ar": make_site_ar(), "ad": ad}  # 12 AR videos: 3 batches of 4; AD: 1 batch
    seen = []
    step = training.training_step

    def recording_step(model, optimizer, batch, *args, **kwargs):
        seen.append({name: len(b.clip_features) for name, b in batch.tasks.items()})
        return step(model, optimizer, batch, *args, **kwargs)

    monkeypatch.setattr(training, "training_step", recording_step)
    for schedule, ad_steps in (("repeat", 3), ("once", 1)):
        seen.clear()
        config = load_config(
            None,
            ["tasks.seen={ar: 1.0, ad: 1.0}", "train.batch_size=4", "train.epochs=2",
             f"train.task_schedule={schedule}"],
        )  # fmt: skip
        metrics = train_local(build_model(D, config, seed=0), data, config, seed=1)
        assert metrics["steps"] == 6
        assert [s["ar"] for s in seen] == [4] * 6  # every AR video once per epoch
        ad_taken = [s.get("ad") for s in seen]
        assert ad_taken == ([4] * 6 if schedule == "repeat" else [4, None, None] * 2)
        assert sum(a is not None for a in ad_taken) == 2 * ad_steps


def make_site_ar():
    from common.sitedata import TaskTensors

    gen = torch.Generator().manual_seed(4)
    return TaskTensors(
        torch.randn(12, 2, D, generator=gen),
        torch.randn(12, 2, D, generator=gen),
        {"action": torch.randint(0, 8, (12,), generator=gen)},
    )


def test_a_store_without_static_clips_gives_the_clip_budget_the_same_update():
    """loss.budget_views=clips reads no static clip: a site store made without them (K = 0)
    gives the update of one with two, and a budget of static views on it is refused."""
    from common.sitedata import TaskTensors

    # Several epochs: each epoch's order is drawn after the previous epoch's batches.
    config = load_config(None, ["loss.budget_views=clips", "train.batch_size=8", "train.epochs=3"])
    ar = make_site_ar()
    without = TaskTensors(ar.clip_features, ar.static_features[:, :0], ar.labels)
    updates = []
    for data in ({"ar": ar}, {"ar": without}):
        model = build_model(D, config, seed=0)
        train_local(model, data, config, seed=5)
        updates.append(shareable_state(model))
    for name, array in updates[0].items():
        assert (array == updates[1][name]).all(), name

    static = load_config(None, ["loss.budget_views=static", "train.batch_size=8"])
    with pytest.raises(ValueError, match="needs two static clips of each video"):
        train_local(build_model(D, static, seed=0), {"ar": without}, static, seed=5)
    one = TaskTensors(ar.clip_features, ar.static_features[:, :1], ar.labels)
    with pytest.raises(ValueError, match="2 static clips per video"):
        train_local(build_model(D, config, seed=0), {"ar": one}, config, seed=5)


def ar_and_ad_batches(seed: int) -> tuple[TaskBatch, TaskBatch]:
    """An AR batch of 8 videos (2 clips of 16 dimensions) and an AD batch of 2 (4 clips, the
    second anomalous over a fifth to three fifths of its frames)."""
    gen = torch.Generator().manual_seed(seed)
    ar = TaskBatch(torch.randn(8, 2, 16, generator=gen), torch.randn(8, 2, 16, generator=gen),
                   {"action": torch.arange(8) % 3})  # fmt: skip
    anomalies = -torch.ones(2, 4, 2)
    anomalies[1, 0] = torch.tensor([0.2, 0.6])
    ad = TaskBatch(torch.randn(2, 4, 16, generator=gen), torch.randn(2, 2, 16, generator=gen),
                   {"anomalous": torch.tensor([0, 1]), "anomalies": anomalies,
                    "num_frames": torch.tensor([64, 64])})  # fmt: skip
    return ar, ad


def test_task_average_videos_weights_each_task_term_by_its_batch_of_videos():
    # L_LC and L_B of a step with an AR batch of 8 videos and an AD batch of 2: the mean of
    # the two task terms ("tasks"), or weighted 8 : 2 ("videos").
    ar, ad = ar_and_ad_batches(seed=0)
    config = load_config(
        None,  # a bottleneck: the adapter is no identity, so L_LC is not 0 for either task
        ["tasks.seen={ar: 1.0, ad: 1.0}", "loss.budget_views=clips", "anonymizer.bottleneck=4"],
    )
    model = build_model(16, config, seed=0).eval()
    alone = {
        name: compute_losses(model, TrainingBatch({name: batch}), config.loss)
        for name, batch in (("ar", ar), ("ad", ad))
    }
    both = TrainingBatch({"ar": ar, "ad": ad})
    by_tasks = compute_losses(model, both, config.loss)
    videos = dataclasses.replace(config.loss, task_average="videos")
    by_videos = compute_losses(model, both, videos)
    summed = compute_losses(model, both, dataclasses.replace(videos, budget_combine="sum"))
    for term in ("latent_consistency", "privacy_budget"):
        a, d = getattr(alone["ar"], term), getattr(alone["ad"], term)
        assert torch.allclose(getattr(by_tasks, term), (a + d) / 2)
        assert torch.allclose(getattr(by_videos, term), (8 * a + 2 * d) / 10)
        assert not torch.allclose(a, d)  # so the two averages differ
    # loss.budget_combine=sum: each task's budget at full weight; L_LC still averaged.
    a, d = alone["ar"].privacy_budget, alone["ad"].privacy_budget
    assert torch.allclose(summed.privacy_budget, a + d)
    assert torch.allclose(summed.latent_consistency, by_videos.latent_consistency)
    alone_summed = compute_losses(
        model, TrainingBatch({"ar": ar}), dataclasses.replace(videos, budget_combine="sum")
    )
    assert torch.equal(alone_summed.privacy_budget, a)  # one task: the same budget


def test_budget_tasks_puts_only_the_named_tasks_videos_under_the_budget():
    # loss.budget_tasks=[ar]: L_B of a step with AR and AD videos is AR's alone, while L_LC
    # and L_T still see both; a step without AR videos has no budget (and still trains).
    ar, ad = ar_and_ad_batches(seed=2)
    config = load_config(
        None,
        ["tasks.seen={ar: 1.0, ad: 1.0}", "loss.budget_views=clips", "anonymizer.bottleneck=4",
         "loss.task_average=videos", "loss.budget_tasks=[ar]"],
    )  # fmt: skip
    assert config.loss.budget_tasks == ("ar",)
    model = build_model(16, config, seed=0).eval()
    every = dataclasses.replace(config.loss, budget_tasks=None)
    both = TrainingBatch({"ar": ar, "ad": ad})
    covered, all_covered = (
        compute_losses(model, both, config.loss),
        compute_losses(model, both, every),
    )
    ar_alone = compute_losses(model, TrainingBatch({"ar": ar}), every)
    assert torch.allclose(covered.privacy_budget, ar_alone.privacy_budget)
    assert not torch.allclose(covered.privacy_budget, all_covered.privacy_budget)
    assert torch.equal(covered.latent_consistency, all_covered.latent_consistency)
    assert torch.equal(covered.utility, all_covered.utility)
    ad_only = compute_losses(model, TrainingBatch({"ad": ad}), config.loss)
    assert float(ad_only.privacy_budget) == 0.0
    assert ad_only.utility.requires_grad


def test_budget_combine_sum_averages_a_tasks_pairs_of_views_before_summing():
    # With loss.budget_views=both a task has two pairs of views; its budget is their mean.
    gen = torch.Generator().manual_seed(1)
    ar = TaskBatch(torch.randn(6, 2, 16, generator=gen), torch.randn(6, 2, 16, generator=gen),
                   {"action": torch.arange(6) % 2})  # fmt: skip
    config = load_config(None, ["loss.budget_views=both", "anonymizer.bottleneck=4"])
    model = build_model(16, config, seed=0).eval()
    average = compute_losses(model, TrainingBatch({"ar": ar}), config.loss)
    summed = compute_losses(
        model, TrainingBatch({"ar": ar}), dataclasses.replace(config.loss, budget_combine="sum")
    )
    assert torch.allclose(summed.privacy_budget, average.privacy_budget)


def _surgery_config(scope: str = "tasks") -> RunConfig:
    return load_config(
        None,
        [
            f"loss.budget_surgery_scope={scope}",
            "loss.budget_views=clips",
            "loss.budget_negatives=same_action",
            "loss.w_lc=1",
            "loss.w_b=2",
            "loss.cap_budget=true",
            "loss.center_budget=true",
            "loss.budget_surgery=true",
        ],
    )


def _gradients(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("scope", ["tasks", "objective"])
def test_budget_surgery_takes_out_of_the_tasks_gradient_only_what_works_against_the_budget(scope):
    import copy

    from common.training import backward_with_budget_surgery

    config = _surgery_config(scope)
    seen = set()
    for seed in range(16):
        batch = make_batch(b=12, t=4, seed=seed)
        model = build_model(D, config, seed=seed)
        for p in model.adapter.parameters():  # away from the identity, so the budget has a say
            torch.nn.init.normal_(p, std=0.2)
        joint, surgical, probe = (copy.deepcopy(model) for _ in range(3))

        compute_losses(joint, batch, config.loss).total.backward()
        terms = compute_losses(surgical, batch, config.loss)
        conflict = backward_with_budget_surgery(surgical, terms, config.loss)
        seen.add(conflict)
        expected, got = _gradients(joint), _gradients(surgical)
        assert set(got) == set(expected)
        for name in expected:
            if not name.startswith("adapter.") or not conflict:
                # The heads always, and the adapter without a conflict: the joint step's gradient.
                torch.testing.assert_close(got[name], expected[name])

        # The projected gradient (the tasks', with L_LC's in the "objective" scope) and the
        # budget's on the adapter, one at a time.
        adapter = dict(probe.adapter.named_parameters())
        names = list(adapter)
        probe_terms = compute_losses(probe, batch, config.loss)
        projected = config.loss.w_t * probe_terms.utility
        if scope == "objective":
            projected = projected + config.loss.w_lc * probe_terms.latent_consistency
        g_t = torch.autograd.grad(projected, list(adapter.values()), retain_graph=True)
        g_b = torch.autograd.grad(
            -config.loss.w_b * probe_terms.privacy_budget, list(adapter.values())
        )
        flat = lambda grads: torch.cat([g.reshape(-1) for g in grads])  # noqa: E731
        g_t, g_b = flat(g_t), flat(g_b)
        assert conflict == bool(torch.dot(g_t, g_b) < 0)
        if conflict:
            # What the surgery changed is along the budget's gradient, and what is left of the
            # tasks' gradient is orthogonal to it.
            change = flat([got[f"adapter.{n}"] - expected[f"adapter.{n}"] for n in names])
            assert torch.dot(change, g_b) > 0
            torch.testing.assert_close(
                change, -torch.dot(g_t, g_b) / g_b.pow(2).sum() * g_b, atol=1e-6, rtol=1e-4
            )
            left = g_t + change
            assert abs(torch.dot(left, g_b)) <= 1e-4 * left.norm() * g_b.norm()
    assert seen == {True, False}, "the batches should give both a conflict and none"


def _two_task_batch(seed: int) -> TrainingBatch:
    """An AR batch of 10 videos and an AD batch of 6 (half anomalous)."""
    gen = torch.Generator().manual_seed(seed)
    actions = torch.arange(10) % 3
    ar = TaskBatch(torch.randn(10, 4, D, generator=gen) + 2 * actions[:, None, None],
                   torch.randn(10, 2, D, generator=gen), {"action": actions})  # fmt: skip
    anomalies = -torch.ones(6, 4, 2)
    anomalies[3:, 0] = torch.tensor([0.2, 0.6])
    ad = TaskBatch(torch.randn(6, 4, D, generator=gen), torch.randn(6, 2, D, generator=gen),
                   {"anomalous": (torch.arange(6) >= 3).long(), "anomalies": anomalies,
                    "num_frames": torch.full((6,), 64)})  # fmt: skip
    return TrainingBatch({"ar": ar, "ad": ad})


def test_budget_surgery_each_task_projects_every_tasks_gradient_on_its_own():
    import copy

    from common.training import backward_with_budget_surgery

    config = load_config(
        None,
        [
            "tasks.seen={ar: 1.0, ad: 1.0}",
            "loss.budget_surgery_scope=each_task",
            "loss.budget_views=clips",
            "loss.w_lc=1",
            "loss.w_b=2",
            "loss.budget_surgery=true",
        ],
    )
    tasks = dataclasses.replace(
        config, loss=dataclasses.replace(config.loss, budget_surgery_scope="tasks")
    )
    flat = lambda grads: torch.cat([g.reshape(-1) for g in grads])  # noqa: E731
    seen_conflicts = []
    for seed in range(12):
        batch = _two_task_batch(seed)
        model = build_model(D, config, seed=seed).eval()  # the AD head's dropout: off
        for p in model.adapter.parameters():
            torch.nn.init.normal_(p, std=0.2)
        joint, surgical, probe = (copy.deepcopy(model) for _ in range(3))
        compute_losses(joint, batch, config.loss).total.backward()
        terms = compute_losses(surgical, batch, config.loss)
        assert set(terms.task_utilities) == {"ar", "ad"}
        torch.testing.assert_close(sum(terms.task_utilities.values()), terms.utility)
        conflict = backward_with_budget_surgery(surgical, terms, config.loss)
        expected, got = _gradients(joint), _gradients(surgical)
        for name in expected:
            if not name.startswith("adapter."):
                torch.testing.assert_close(got[name], expected[name])

        adapter = list(probe.adapter.parameters())
        names = [n for n, _ in probe.adapter.named_parameters()]
        probe_terms = compute_losses(probe, batch, config.loss)
        g = {
            task: flat(torch.autograd.grad(term, adapter, retain_graph=True))
            for task, term in probe_terms.task_utilities.items()
        }
        g_b = flat(torch.autograd.grad(-config.loss.w_b * probe_terms.privacy_budget, adapter))
        dots = {task: torch.dot(grad, g_b) for task, grad in g.items()}
        seen_conflicts.append(tuple(bool(d < 0) for d in dots.values()))
        assert conflict == any(d < 0 for d in dots.values())
        # What changed: each conflicting task's component along g_b, taken out on its own.
        change = flat([got[f"adapter.{n}"] - expected[f"adapter.{n}"] for n in names])
        want = sum(-min(float(d), 0.0) / g_b.pow(2).sum() * g_b for d in dots.values())
        torch.testing.assert_close(change, want * torch.ones_like(g_b), atol=1e-6, rtol=1e-4)
        # The sum's projection ("tasks") differs whenever the two tasks disagree.
        if len(set(seen_conflicts[-1])) == 2:
            whole = copy.deepcopy(model)
            backward_with_budget_surgery(
                whole, compute_losses(whole, batch, tasks.loss), tasks.loss
            )
            assert not torch.allclose(
                flat([p.grad for p in whole.adapter.parameters()]),
                flat([p.grad for p in surgical.adapter.parameters()]),
            )
    assert any(len(set(c)) == 2 for c in seen_conflicts), "one task conflicting, the other not"


def test_budget_surgery_each_task_with_one_task_is_the_tasks_scope():
    from common.training import backward_with_budget_surgery

    batch = make_batch(b=12, t=4, seed=3)
    grads = []
    for scope in ("tasks", "each_task"):
        config = _surgery_config(scope)
        model = build_model(D, config, seed=3).eval()
        torch.manual_seed(3)
        for p in model.adapter.parameters():
            torch.nn.init.normal_(p, std=0.2)
        terms = compute_losses(model, batch, config.loss)
        assert backward_with_budget_surgery(model, terms, config.loss)  # a conflict to project
        grads.append(_gradients(model))
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        assert torch.equal(grads[0][name], grads[1][name])


def test_training_with_budget_surgery_learns_the_task_raises_the_budget_and_logs_conflicts():
    config = _surgery_config()
    model = build_model(D, config, seed=0)
    batch = make_batch(t=4)
    optimizer = build_optimizer(model, TrainConfig(lr=1e-3, head_lr=1e-2))
    first = compute_losses(model, batch, config.loss)
    conflicts = [
        training_step(model, optimizer, batch, config.loss)["budget_conflict"] for _ in range(30)
    ]
    last = compute_losses(model, batch, config.loss)
    assert set(conflicts) <= {0.0, 1.0}
    assert last.utility.item() < 0.5 * first.utility.item()
    assert last.privacy_budget.item() > first.privacy_budget.item()


def _motion_error(model, clips: torch.Tensor) -> float:
    """MSE between the anonymized and the encoder features' clip-to-clip changes."""
    with torch.no_grad():
        anonymized = model.adapter(clips)
    return float((anonymized.diff(dim=1) - clips.diff(dim=1)).pow(2).mean())


def _fit_narrow_adapter(clips: torch.Tensor, steps: int, **loss_terms: float):
    """A rank-4 linear adapter fitted to `clips` (B, T, d) by L_LC alone (w_lc 1, no task, no
    budget), with `loss_terms` set on the loss config; returns the model."""
    b, _, d = clips.shape
    config = load_config(
        None, ["anonymizer.bottleneck=4", "anonymizer.layers=0", "loss.budget_views=clips"]
    )
    loss = dataclasses.replace(config.loss, w_lc=1.0, w_t=0.0, w_b=0.0, **loss_terms)
    model = build_model(d, config, seed=0)
    batch = ar_batch(clips, torch.zeros(b, dtype=torch.long), torch.zeros(b, 0, d))
    optimizer = torch.optim.Adam(model.adapter.parameters(), lr=0.05)
    for _ in range(steps):
        optimizer.zero_grad()
        compute_losses(model, batch, loss).total.backward()
        optimizer.step()
    return model


@pytest.mark.parametrize("motion", [0.0, 50.0])
def test_lc_motion_makes_a_narrow_adapter_keep_what_moves_over_what_stays(motion):
    # Each video: a large offset it keeps throughout (dims 0-3, e.g. who is in it) plus a
    # small change from clip to clip (dims 4-7). A rank-4 adapter cannot keep both: the
    # paper's L_LC keeps the larger, what stays; with loss.lc_motion it keeps what moves.
    gen = torch.Generator().manual_seed(0)
    b, t, d = 32, 4, 8
    clips = torch.zeros(b, t, d)
    clips[:, :, :4] = 3.0 * torch.randn(b, 1, 4, generator=gen)
    clips[:, :, 4:] = 0.5 * torch.randn(b, t, 4, generator=gen)
    model = _fit_narrow_adapter(clips, 200, lc_motion=motion)
    kept_motion = _motion_error(model, clips) < 0.1 * float(clips.diff(dim=1).pow(2).mean())
    assert kept_motion == (motion > 0)


@pytest.mark.parametrize("tail", [1.0, 0.015])
def test_lc_tail_makes_a_narrow_adapter_keep_a_rare_kind_of_clip(tail):
    # 128 clips vary along dims 0-3; two of them (a rare event) also along dim 4. A rank-4
    # adapter cannot keep all five: the paper's L_LC (the mean over clips) keeps the common
    # four; averaging only the worst-kept clips (loss.lc_tail) keeps the rare one.
    gen = torch.Generator().manual_seed(0)
    b, t, d = 32, 4, 8
    clips = torch.zeros(b, t, d)
    clips[:, :, :4] = 3.0 * torch.randn(b, t, 4, generator=gen)
    clips[5, 1, 4] = clips[20, 2, 4] = 20.0
    model = _fit_narrow_adapter(clips, 300, lc_tail=tail)
    with torch.no_grad():
        kept = model.adapter(clips)
    rare_error = float((kept[5, 1, 4] - 20.0).abs())  # about 0.5 with the tail, 18 without
    assert (rare_error < 5.0) == (tail < 1.0)
