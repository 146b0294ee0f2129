"""The trainable part of SPLAVU at a site: the AAM plus its task heads.

The frozen encoder is not in here: features are cached (DESIGN.md decision 4), and what a site
trains and shares is exactly this module's parameters (see common.weights).
"""

from __future__ import annotations

import torch
from torch import nn

from common.aam import create_adapter
from common.config import RunConfig
from common.tasks import get_task


class AnonymizerModel(nn.Module):
    """AAM (`adapter`) and the heads of the seen tasks (`heads`, a ModuleDict by task name)."""

    def __init__(self, dim: int, config: RunConfig) -> None:
        super().__init__()
        self.dim = dim
        self.adapter = create_adapter(dim, config.anonymizer)
        self.heads = nn.ModuleDict(
            {task: get_task(task).build_head(dim, config) for task in config.tasks.seen}
        )

    def forward(
        self, clip_features: torch.Tensor, key_padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Anonymize (B, T, d) clip features."""
        return self.adapter(clip_features, key_padding_mask)


def build_model(dim: int, config: RunConfig, seed: int | None = None) -> AnonymizerModel:
    """Build an AnonymizerModel; with `seed`, its initial weights depend on nothing else."""
    if seed is None:
        return AnonymizerModel(dim, config)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return AnonymizerModel(dim, config)
