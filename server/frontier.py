"""The privacy-utility frontier across runs: one point per run folder (setting), read from each
`report.json`: the worst-case video cMAP (lower = more private) against AR top-1, raw and
selected round, with the validation numbers that chose it.

    latentveil frontier runs/a runs/b runs/c --out runs/frontier
    -> runs/frontier/frontier.md (a table), frontier.json, frontier.png
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from common.atomic import atomic_path, atomic_write_text, output_folder
from common.errors import LatentveilError
from common.layout import RunLayout


class FrontierError(LatentveilError):
    """A run folder without a usable report."""


def frontier_point(run_dir: str | Path) -> dict[str, Any]:
    """One setting's point: its name (the folder's), numbers and the selected round."""
    path = RunLayout(Path(run_dir)).report_json
    if not Path(run_dir).is_dir():
        raise FrontierError(f"run folder {run_dir} does not exist")
    if not path.is_file():
        raise FrontierError(f"{run_dir} has no report.json (run `latentveil simulate` there)")
    try:
        report = json.loads(path.read_text())
        base, anon = report["baseline"], report["anonymized"]
        inversion = ((report.get("privacy_attackers") or {}).get("video") or {}).get("inversion")
        chosen = ((inversion or {}).get("anonymized") or {}).get("chosen") or {}
        return {
            "setting": Path(run_dir).name,
            "raw_privacy_cmap": base["privacy_cmap"],
            "privacy_cmap": anon["privacy_cmap"],
            "privacy_attacker": anon.get("privacy_attacker"),
            "privacy_reduction_rel": report["privacy_reduction_rel"],
            "privacy_stills_cmap": anon.get("privacy_stills_cmap"),
            "raw_ar_top1": base["ar_top1"],
            "ar_top1": anon["ar_top1"],
            "round": anon.get("round"),
            "privacy_val_cmap": (report.get("selection") or {}).get("privacy_val_cmap"),
            "ar_val_top1": (report.get("selection") or {}).get("ar_val_top1"),
            "inversion_r2_attribute_directions": chosen.get("r2_attribute_directions"),
        }
    except KeyError as error:
        raise FrontierError(f"{path} is not a latentveil report: it lacks {error}") from error
    except (TypeError, ValueError) as error:
        raise FrontierError(f"{path} is not a latentveil report: {error}") from error


def frontier_markdown(points: list[dict[str, Any]]) -> str:
    """The frontier as a table, most private first."""

    def fmt(value: Any, digits: int = 2) -> str:
        return (
            "–"
            if value is None
            else f"{value:.{digits}f}"
            if isinstance(value, float)
            else str(value)
        )

    lines = [
        "| setting | video cMAP, worst case (raw -> selected) | lower by | stills cMAP | "
        "AR top-1 (raw -> selected) | round | val cMAP | inversion R^2 (attribute dirs) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in sorted(points, key=lambda p: p["privacy_cmap"]):
        lines.append(
            f"| {p['setting']} | {fmt(p['raw_privacy_cmap'])} -> {fmt(p['privacy_cmap'])} "
            f"({p['privacy_attacker']}) | {fmt(100 * p['privacy_reduction_rel'], 1)}% | "
            f"{fmt(p['privacy_stills_cmap'])} | {fmt(p['raw_ar_top1'])} -> {fmt(p['ar_top1'])} | "
            f"{p['round']} | {fmt(p['privacy_val_cmap'])} | "
            f"{fmt(p['inversion_r2_attribute_directions'])} |"
        )
    return "\n".join(lines) + "\n"


def write_frontier(run_dirs: list[str | Path], out_dir: str | Path) -> Path:
    """frontier.md, frontier.json and frontier.png in `out_dir`; returns the table's path."""
    if not run_dirs:
        raise FrontierError("give at least one run folder")
    points = [frontier_point(run) for run in run_dirs]
    out = output_folder(out_dir)
    atomic_write_text(out / "frontier.json", json.dumps(points, indent=2) + "\n")
    atomic_write_text(out / "frontier.md", frontier_markdown(points))
    _plot(points, out / "frontier.png")
    return out / "frontier.md"


def _plot(points: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(6.5, 4.5))
    raw = points[0]
    axis.scatter(
        [raw["raw_privacy_cmap"]], [raw["raw_ar_top1"]], marker="s", s=80,
        facecolors="none", edgecolors="black", label="raw features",
    )  # fmt: skip
    for p in points:
        axis.scatter([p["privacy_cmap"]], [p["ar_top1"]])
        axis.annotate(p["setting"], (p["privacy_cmap"], p["ar_top1"]), fontsize=8,
                      xytext=(4, 4), textcoords="offset points")  # fmt: skip
    axis.axvline(0.7 * raw["raw_privacy_cmap"], color="gray", linestyle=":", label="30% below raw")
    axis.axhline(raw["raw_ar_top1"] - 2, color="gray", linestyle="--", label="AR 2 points below")
    axis.set(
        xlabel="worst-case attacker cMAP on video (lower = more private)",
        ylabel="AR top-1 (%)",
        title="privacy-utility frontier (selected round of each setting)",
    )
    axis.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
