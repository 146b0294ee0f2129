"""A run's history, typed: what every round did and what every evaluation measured.

The records serialise to the JSON the checkpoint stores and the report reads
(`History.to_json` / `History.from_json`), so a run resumed from a checkpoint continues the same
history.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from common.evaluation import Evaluation


@dataclass
class RoundRecord:
    """One round: its training (mean loss components over the sites), the sites taking part,
    the bytes that travelled, its timings, and its central evaluation when it had one."""

    round: int
    train: dict[str, float] = field(default_factory=dict)
    sites_sampled: int | None = None
    sites_aggregated: int | None = None
    # Updates left out of aggregation: {"node", "reason", "round"}.
    sites_rejected: list[dict[str, Any]] = field(default_factory=list)
    bytes_down: int = 0
    bytes_up: int = 0
    slowest_site_seconds: float | None = None
    site_seconds: float | None = None  # the sites' compute, summed over the round's sites
    evaluation: Evaluation | None = None
    evaluation_seconds: float | None = None
    seconds: float | None = None
    # Sampled sites that did not answer: {"site", "node", "reason", "round"}.
    sites_dropped: list[dict[str, Any]] = field(default_factory=list)
    # Per sampled site: {"site", "node", "bytes_down", "bytes_up", "status"}.
    sites: list[dict[str, Any]] = field(default_factory=list)
    epsilon: float | None = None  # differential privacy spent after this round
    note: str = ""  # why the round changed nothing, when it did not

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "round": self.round,
            "train": self.train,
            "sites_sampled": self.sites_sampled,
            "sites_aggregated": self.sites_aggregated,
            "sites_rejected": self.sites_rejected,
            "bytes_down": self.bytes_down,
            "bytes_up": self.bytes_up,
            "slowest_site_seconds": self.slowest_site_seconds,
            "site_seconds": self.site_seconds,
            "evaluation_seconds": self.evaluation_seconds,
            "seconds": self.seconds,
            "sites_dropped": self.sites_dropped,
            "sites": self.sites,
            "epsilon": self.epsilon,
            "note": self.note,
        }
        if self.evaluation is not None:
            out["evaluation"] = self.evaluation.to_json()
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RoundRecord:
        data = dict(data)
        evaluation = data.pop("evaluation", None)
        return cls(**data, evaluation=Evaluation.from_json(evaluation) if evaluation else None)


@dataclass
class History:
    """A run so far: the raw-feature baseline, every round (round 0 first), every rejected
    update, and the round whose arrays the run ships (server.selection; None until a round
    has been evaluated)."""

    baseline: Evaluation
    rounds: list[RoundRecord] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    selected_round: int | None = None
    stopped: str = ""  # why the run ended before its last round (its privacy budget)
    # How round 0's adapter was made when it is not the seeded one (`anonymizer.init`
    # discriminant: the fit's account, server.rounds.discriminant_start); empty otherwise.
    initialisation: dict[str, Any] = field(default_factory=dict)

    def evaluated(self) -> list[RoundRecord]:
        return [r for r in self.rounds if r.evaluation is not None]

    def selected(self) -> RoundRecord:
        """The selected round's record (the last evaluated one if none is selected)."""
        evaluated = self.evaluated()
        if not evaluated:
            raise ValueError("no round of this run has been evaluated yet")
        for record in evaluated:
            if record.round == self.selected_round:
                return record
        return evaluated[-1]

    def to_json(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline.to_json(),
            "rounds": [r.to_json() for r in self.rounds],
            "rejected": self.rejected,
            "selected_round": self.selected_round,
            "stopped": self.stopped,
            "initialisation": self.initialisation,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> History:
        return cls(
            baseline=Evaluation.from_json(data["baseline"]),
            rounds=[RoundRecord.from_json(r) for r in data["rounds"]],
            rejected=list(data.get("rejected", [])),
            selected_round=data.get("selected_round"),
            stopped=str(data.get("stopped", "")),
            initialisation=dict(data.get("initialisation", {})),
        )
