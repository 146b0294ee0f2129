"""Tests for the task-head registry and the AR head."""

import pytest
import torch

from common.config import HeadsConfig
from common.heads import HEADS, create_head, masked_mean, register_head


def test_registry_builds_ar_and_rejects_unknown_names():
    cfg = HeadsConfig(num_actions=5, num_attributes=7)
    assert "ar" in HEADS and "attacker" not in HEADS  # attackers are the evaluation's own
    ar = create_head("ar", 16, cfg)
    assert ar(torch.randn(3, 4, 16)).shape == (3, 5)
    with pytest.raises(ValueError, match=r"unknown head 'tad'.*ar"):
        create_head("tad", 16, cfg)
    with pytest.raises(ValueError, match="already registered"):
        register_head("ar")(lambda dim, config: None)


def test_ar_head_averages_valid_positions_only():
    features = torch.randn(2, 5, 8)
    mask = torch.tensor([[False, False, True, True, True], [False] * 5])
    pooled = masked_mean(features, mask)
    torch.testing.assert_close(pooled[0], features[0, :2].mean(0))
    torch.testing.assert_close(pooled[1], features[1].mean(0))
    head = create_head("ar", 8, HeadsConfig(num_actions=3))
    torch.testing.assert_close(head(features, mask)[0], head(features[:1, :2])[0])
