"""Task heads trained with the adapter. (The privacy attackers are the evaluation's own
models: common.attackers.)

Heads sit behind one registry so that later tasks (temporal action detection, anomaly
detection) plug in by name:

    head = create_head("ar", dim=256, config=cfg.heads)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from common.config import HeadsConfig

HEADS: dict[str, Callable[[int, HeadsConfig], nn.Module]] = {}


def register_head(name: str) -> Callable:
    """Class decorator adding a head builder `(dim, heads_config) -> nn.Module` to HEADS."""

    def add(builder: Callable[[int, HeadsConfig], nn.Module]) -> Callable:
        if name in HEADS:
            raise ValueError(f"head '{name}' is already registered")
        HEADS[name] = builder
        return builder

    return add


def create_head(name: str, dim: int, config: HeadsConfig) -> nn.Module:
    """Build the head registered as `name` for feature width `dim`."""
    if name not in HEADS:
        raise ValueError(f"unknown head '{name}'; registered heads: {', '.join(sorted(HEADS))}")
    return HEADS[name](dim, config)


def masked_mean(features: torch.Tensor, key_padding_mask: torch.Tensor | None) -> torch.Tensor:
    """Average (B, T, d) over the valid positions of each sequence -> (B, d)."""
    if key_padding_mask is None:
        return features.mean(dim=1)
    valid = (~key_padding_mask).unsqueeze(-1).to(features.dtype)  # (B, T, 1)
    return (features * valid).sum(dim=1) / valid.sum(dim=1).clamp_min(1.0)


@register_head("ar")
class ActionRecognitionHead(nn.Module):
    """Linear action classifier on the sequence average of anonymized clip features."""

    def __init__(self, dim: int, config: HeadsConfig) -> None:
        super().__init__()
        self.classifier = nn.Linear(dim, config.num_actions)

    def forward(
        self, features: torch.Tensor, key_padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, T, d) -> action logits (B, num_actions)."""
        return self.classifier(masked_mean(features, key_padding_mask))
