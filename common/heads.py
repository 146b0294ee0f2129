"""Building blocks of task heads (each task builds its own head: common.tasks).

The privacy attackers are not heads: they are the evaluation's own models (common.attackers).
"""

from __future__ import annotations

import torch
from torch import nn


def masked_mean(features: torch.Tensor, key_padding_mask: torch.Tensor | None) -> torch.Tensor:
    """Average (B, T, d) over the valid positions of each sequence -> (B, d)."""
    if key_padding_mask is None:
        return features.mean(dim=1)
    valid = (~key_padding_mask).unsqueeze(-1).to(features.dtype)  # (B, T, 1)
    return (features * valid).sum(dim=1) / valid.sum(dim=1).clamp_min(1.0)


class SequenceClassifier(nn.Module):
    """Linear classifier on the sequence average of anonymized clip features."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.classifier = nn.Linear(dim, num_classes)

    def forward(
        self, features: torch.Tensor, key_padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, T, d) -> logits (B, num_classes)."""
        return self.classifier(masked_mean(features, key_padding_mask))
