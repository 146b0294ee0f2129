"""Tests for shareable weights: the allow-list and strict loading."""

import numpy as np
import pytest
import torch
from torch import nn

from common.config import RunConfig
from common.model import build_model
from common.weights import (
    ShareableStateError,
    load_shareable,
    shareable_state,
    state_nbytes,
)

D = 16


class SiteModel(nn.Module):
    """A model holding everything a site or server might: encoder, adapter, heads, attacker."""

    def __init__(self) -> None:
        super().__init__()
        inner = build_model(D, RunConfig(), seed=0)
        self.encoder = nn.Sequential(nn.Conv3d(3, 4, 3), nn.BatchNorm3d(4))
        self.adapter = inner.adapter
        self.heads = inner.heads
        self.attacker = nn.Sequential(nn.Linear(D, D), nn.ReLU(), nn.Linear(D, 7))


def test_only_adapter_and_heads_are_shareable():
    model = SiteModel()
    state = shareable_state(model)
    assert state, "nothing shared"
    assert all(name.startswith(("adapter.", "heads.")) for name in state)
    assert not any("encoder" in name or "attacker" in name for name in state)
    expected = [n for n in model.state_dict() if n.startswith(("adapter.", "heads."))]
    assert list(state) == expected
    assert state_nbytes(state) == sum(
        t.numel() * t.element_size() for n, t in model.state_dict().items() if n in state
    )


def test_round_trip_loads_values_and_leaves_the_rest_alone():
    source, target = SiteModel(), SiteModel()
    with torch.no_grad():
        for param in source.parameters():
            param.add_(1.0)
    encoder_before = {k: v.clone() for k, v in target.encoder.state_dict().items()}
    load_shareable(target, shareable_state(source))
    for name, array in shareable_state(source).items():
        np.testing.assert_array_equal(target.state_dict()[name].numpy(), array)
    for name, tensor in target.encoder.state_dict().items():
        assert torch.equal(tensor, encoder_before[name])


def corrupt(kind: str):
    state = shareable_state(SiteModel())
    name = list(state)[3]
    if kind == "shape":
        state[name] = np.zeros((*state[name].shape, 2), dtype=np.float32)
    elif kind == "missing":
        del state[name]
    elif kind == "extra":
        name = "encoder.0.weight"
        state[name] = np.zeros((4, 3, 3, 3, 3), dtype=np.float32)
    elif kind == "nan":
        state[name] = state[name].copy()
        state[name].flat[0] = np.nan
    elif kind == "inf":
        state[name] = state[name].copy()
        state[name].flat[-1] = np.inf
    elif kind == "dtype":
        state[name] = state[name].astype(np.float64)
    return state, name


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("shape", "has shape"),
        ("missing", "missing array"),
        ("extra", "unexpected array"),
        ("nan", "non-finite"),
        ("inf", "non-finite"),
        ("dtype", "has dtype"),
    ],
)
def test_bad_arrays_are_rejected_with_their_name(kind, message):
    model = SiteModel()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state, name = corrupt(kind)
    with pytest.raises(ShareableStateError, match=message) as error:
        load_shareable(model, state)
    assert f"'{name}'" in str(error.value)
    # A rejected update changes nothing.
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[key]), key
