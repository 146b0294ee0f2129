"""Tests for the Anonymizing Adapter Module."""

import numpy as np
import pytest
import torch

from common.aam import AnonymizingAdapter, create_adapter
from common.config import AnonymizerConfig

D = 32


def make_adapter(seed: int = 0) -> AnonymizingAdapter:
    torch.manual_seed(seed)
    return AnonymizingAdapter(D, layers=3, heads=8, ff_ratio=2.0)


def perturb(adapter: AnonymizingAdapter, seed: int = 1) -> AnonymizingAdapter:
    """Give every parameter random values, so tests do not pass only because of identity init."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in adapter.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=gen))
    return adapter


def test_identity_at_initialisation():
    adapter = make_adapter()
    features = torch.randn(4, 6, D) * 3.0
    mask = torch.zeros(4, 6, dtype=torch.bool)
    mask[1, 4:] = True
    assert torch.equal(adapter(features), features)
    assert (adapter(features, mask) - features).abs().max().item() <= 1e-6


def test_create_adapter_uses_config():
    adapter = create_adapter(D, AnonymizerConfig(layers=5, heads=4, ff_ratio=1.0))
    assert len(adapter.blocks) == 5 and adapter.blocks[0].attn.heads == 4
    assert adapter.blocks[0].fc1.out_features == D


def test_output_shape_and_shape_errors():
    adapter = perturb(make_adapter())
    assert adapter(torch.randn(3, 7, D)).shape == (3, 7, D)
    with pytest.raises(ValueError, match=r"\(B, T, 32\)"):
        adapter(torch.randn(3, D))
    with pytest.raises(ValueError, match="key_padding_mask"):
        adapter(torch.randn(3, 7, D), torch.zeros(3, 6, dtype=torch.bool))


def test_batch_independence():
    adapter = perturb(make_adapter()).eval()
    videos = torch.randn(5, 4, D)
    alone = adapter(videos[2:3])
    in_batch = adapter(videos)[2:3]
    permutation = torch.tensor([4, 2, 0, 3, 1])
    permuted = adapter(videos[permutation])
    torch.testing.assert_close(in_batch, alone, rtol=0, atol=1e-5)
    torch.testing.assert_close(permuted[1:2], alone, rtol=0, atol=1e-5)
    # More companions: five more random videos change nothing for video 2.
    bigger = adapter(torch.cat([torch.randn(5, 4, D), videos]))[7:8]
    torch.testing.assert_close(bigger, alone, rtol=0, atol=1e-5)


def test_attention_mixes_within_a_sequence():
    """Guards the batch-independence test: clips of one video do influence each other."""
    adapter = perturb(make_adapter()).eval()
    video = torch.randn(1, 4, D)
    changed = video.clone()
    changed[0, 3] += 3.0 * torch.randn(D)  # not a constant shift: LayerNorm would remove it
    assert (adapter(video)[0, 0] - adapter(changed)[0, 0]).abs().max() > 1e-3


def test_padding_independence():
    adapter = perturb(make_adapter()).eval()
    short = torch.randn(1, 3, D)
    padded = torch.cat([short, torch.randn(1, 4, D) * 100.0], dim=1)  # (1, 7, D)
    mask = torch.tensor([[False] * 3 + [True] * 4])
    reference = adapter(short)
    torch.testing.assert_close(adapter(padded, mask)[:, :3], reference, rtol=0, atol=1e-5)
    # A padded batch of mixed lengths gives each video what it gets alone.
    other = torch.randn(1, 7, D)
    batch = torch.cat([padded, other])
    batch_mask = torch.cat([mask, torch.zeros(1, 7, dtype=torch.bool)])
    out = adapter(batch, batch_mask)
    torch.testing.assert_close(out[0:1, :3], reference, rtol=0, atol=1e-5)
    torch.testing.assert_close(out[1:2], adapter(other), rtol=0, atol=1e-5)


def test_every_parameter_gets_a_gradient_after_one_training_step():
    adapter = make_adapter()
    optimizer = torch.optim.AdamW(adapter.parameters(), lr=1e-2)
    features = torch.randn(8, 4, D)
    target = torch.randn(8, 4, D)
    for _ in range(2):
        optimizer.zero_grad()
        loss = (adapter(features) - target).pow(2).mean()
        loss.backward()
        optimizer.step()
    # After the first step the zero-initialised projections are non-zero, so the second
    # backward reaches every parameter.
    for name, param in adapter.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, f"{name} got no gradient"


def test_an_output_bottleneck_releases_at_most_r_directions_and_is_not_the_identity():
    from common.aam import starts_as_identity
    from common.config import AnonymizerConfig

    config = AnonymizerConfig(layers=1, heads=2, bottleneck=3)
    adapter = create_adapter(16, config)
    x = torch.randn(40, 2, 16)
    with torch.no_grad():
        out = adapter(x).reshape(-1, 16)
        code = adapter.code(x)
        decoded = adapter.bottleneck[1](code).reshape(-1, 16)
    centred = out - out.mean(dim=0)
    assert torch.linalg.matrix_rank(centred, atol=1e-4) == 3
    assert code.shape == (40, 2, 3)
    # The output is an affine function of the code.
    np.testing.assert_allclose(decoded.numpy(), out.numpy(), atol=1e-5)
    assert not starts_as_identity(config)
    assert starts_as_identity(AnonymizerConfig())
