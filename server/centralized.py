"""The centralized baseline's round: the same training on all sites' data pooled.

One model and one AdamW persist across rounds (a round is `train.epochs` epochs on the pool),
so the baseline gets the federated run's epoch budget. The round loop is server.rounds, the
same as the federated run's: same evaluation schedule, selection, checkpoints and report.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from common.config import RunConfig
from common.discriminant import trained_moments
from common.sitedata import SiteData
from common.training import build_optimizer, train_local
from common.weights import load_shareable, shareable_state
from server.rounds import RoundOutcome, SiteMoments, initial_model


class PooledTrainer:
    """Trains on pooled data in this process; its state (for resume) is the optimiser's."""

    def __init__(self, data: SiteData, config: RunConfig) -> None:
        self.data = data
        self.config = config
        dim = next(iter(data.values())).clip_features.shape[-1]
        self.model = initial_model(config, dim)
        self.optimizer = build_optimizer(self.model, config.train)

    def train_round(self, server_round: int, arrays: dict[str, np.ndarray]) -> RoundOutcome:
        started = time.perf_counter()
        load_shareable(self.model, arrays)
        metrics = train_local(
            self.model,
            self.data,
            self.config,
            seed=self.config.train.seed * 1_000_003 + server_round,
            optimizer=self.optimizer,
        )
        return RoundOutcome(
            arrays=shareable_state(self.model),
            train=metrics,
            site_seconds=[time.perf_counter() - started],
        )

    def class_moments(self, num_classes: int, dim: int) -> SiteMoments:
        """The moments of the pool's clips that show an action, as one site (the pool is what it
        trains on)."""
        moments = SiteMoments()
        pooled = trained_moments(self.config, self.data)
        if pooled is None:
            moments.left_out.append({"site": "pooled", "reason": "no videos labelled with actions"})
        else:
            moments.sites["pooled"] = pooled
        return moments

    def state(self) -> dict[str, np.ndarray]:
        """AdamW's moments and step counts, per parameter index."""
        out = {}
        for index, entries in self.optimizer.state_dict()["state"].items():
            for key, value in entries.items():
                out[f"adamw/{index}/{key}"] = torch.as_tensor(value).numpy().copy()
        return out

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        saved = self.optimizer.state_dict()
        entries: dict[int, dict[str, torch.Tensor]] = {}
        for name, value in state.items():
            _, index, key = name.split("/")
            entries.setdefault(int(index), {})[key] = torch.from_numpy(np.array(value))
        self.optimizer.load_state_dict({"state": entries, "param_groups": saved["param_groups"]})
