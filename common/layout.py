"""The run folder, defined once: every file a run reads or writes is named here.

    layout = RunLayout(Path("runs/default"))
    layout.report_json        # runs/default/report.json
    layout.site_store("site_03")

Every module that touches a run folder asks a RunLayout; none spells a file name of its own.
README's "Run folder" table is `RunLayout.markdown_table()`, checked by a test.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunLayout:
    """The files of one run folder (`root`)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # What `prepare` makes ---------------------------------------------------------------------
    @property
    def config(self) -> Path:
        """The resolved config of the run (written before anything else)."""
        return self.root / "config.yaml"

    @property
    def default_world(self) -> Path:
        """The generated world (unless `world.dir` puts it elsewhere)."""
        return self.root / "world"

    def world(self, world_dir: str = "") -> Path:
        """The world root: `world_dir` (the config's world.dir) when set, else <run>/world."""
        return Path(world_dir) if world_dir else self.default_world

    @property
    def features(self) -> Path:
        """The simulated sites' feature stores."""
        return self.root / "features"

    def site_store(self, site_id: str) -> Path:
        """A simulated site's HDF5 feature store (its videos of the seen tasks)."""
        return self.features / f"{site_id}.h5"

    @property
    def central_store(self) -> Path:
        """The central evaluation world's HDF5 feature store."""
        return self.root / "central.h5"

    @property
    def evaluation_set(self) -> Path:
        """The central evaluation set built from central.h5: stills, and videos per task."""
        return self.root / "evaluation_set.npz"

    @property
    def sites(self) -> Path:
        """One description per site (videos, action mix, attribute prevalence)."""
        return self.root / "sites.json"

    # What a run makes --------------------------------------------------------------------------
    @property
    def checkpoint(self) -> Path:
        """The last complete round (server.checkpoints), replaced after every round."""
        return self.root / "checkpoint.npz"

    @property
    def adapter(self) -> Path:
        """The AAM + head arrays of the selected round: what the run ships."""
        return self.root / "adapter.npz"

    @property
    def report_json(self) -> Path:
        """Every number of the run (the contract in DESIGN.md)."""
        return self.root / "report.json"

    @property
    def report_md(self) -> Path:
        """The report's tables: baseline vs anonymized, every attacker, rounds, sites."""
        return self.root / "report.md"

    @property
    def rounds_csv(self) -> Path:
        """One row per round: losses, privacy and task metrics (test, val), sites, bytes, time."""
        return self.root / "rounds.csv"

    @property
    def rounds_plot(self) -> Path:
        """Privacy and each task's metric per evaluated round."""
        return self.root / "privacy_utility_rounds.png"

    @property
    def frontier_plot(self) -> Path:
        """Privacy against the first evaluated task's metric, one point per evaluated round."""
        return self.root / "privacy_vs_utility.png"

    @property
    def leakage(self) -> Path:
        """`latentveil leakage`: the attacker suite and task probes on raw features."""
        return self.root / "leakage.json"

    # Flower's files ----------------------------------------------------------------------------
    @property
    def flower_log(self) -> Path:
        """Everything `flwr run` printed."""
        return self.root / "flower.log"

    @property
    def wire_log(self) -> Path:
        """The server's wire audit: every message sent and received, array by array (JSON
        lines, common.wire); each site keeps its own beside its feature store."""
        return self.root / "wire.jsonl"

    @property
    def flower_home(self) -> Path:
        """The run's private FLWR_HOME (Flower's own state and the local SuperLink's)."""
        return self.root / "flwr_home"

    @property
    def flower_run_config(self) -> Path:
        """The --run-config TOML file handed to `flwr run`."""
        return self.root / "flower_run_config.toml"

    @classmethod
    def describe(cls) -> dict[str, str]:
        """Relative name -> what it holds (its docstring's first line), for every entry."""
        layout = cls(Path("."))
        entries = {}
        for name, member in vars(cls).items():
            if isinstance(member, property):
                path = getattr(layout, name).as_posix()
                doc = member.__doc__
            elif name == "site_store":
                path, doc = layout.site_store("<site>").as_posix(), member.__doc__
            else:
                continue
            suffix = "/" if name in _FOLDERS else ""
            entries[path + suffix] = " ".join((doc or "").strip().split("\n")[0].split())
        return entries

    @classmethod
    def markdown_table(cls) -> str:
        """The README's run-folder table (a test checks the README against it)."""
        rows = [f"| `{path}` | {doc} |" for path, doc in cls.describe().items()]
        return "\n".join(["| file | what it holds |", "|---|---|", *rows])


_FOLDERS = frozenset({"default_world", "features", "flower_home"})
