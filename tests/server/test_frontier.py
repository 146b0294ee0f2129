"""Tests for the privacy-utility frontier across run folders (server.frontier)."""

import json

import pytest

from server.frontier import FrontierError, frontier_point, write_frontier
from simulations.cli import main


def write_run(folder, cmap: float, top1: float, r2: float | None = 0.3) -> None:
    folder.mkdir(parents=True)
    inversion = {"anonymized": {"test_cmap": cmap, "chosen": {"r2_attribute_directions": r2}}}
    report = {
        "baseline": {"privacy_cmap": 94.0, "ar_top1": 98.0},
        "anonymized": {
            "privacy_cmap": cmap,
            "privacy_attacker": "inversion",
            "privacy_stills_cmap": cmap + 5,
            "ar_top1": top1,
            "round": 30,
        },
        "privacy_reduction_rel": (94.0 - cmap) / 94.0,
        "selection": {"privacy_val_cmap": cmap + 1, "ar_val_top1": top1},
        "privacy_attackers": {"video": {"inversion": inversion}},
    }
    (folder / "report.json").write_text(json.dumps(report))


def test_one_point_per_run_most_private_first(tmp_path):
    write_run(tmp_path / "plain", 80.0, 98.0)
    write_run(tmp_path / "whitened", 60.0, 97.5, r2=0.25)
    table = write_frontier([tmp_path / "plain", tmp_path / "whitened"], tmp_path / "out")
    rows = [line for line in table.read_text().splitlines() if line.startswith("| ")][1:]
    assert [row.split(" | ")[0] for row in rows] == ["| whitened", "| plain"]
    assert "60.00 (inversion)" in rows[0] and "36.2%" in rows[0] and "0.25" in rows[0]
    points = json.loads((tmp_path / "out" / "frontier.json").read_text())
    assert {p["setting"] for p in points} == {"plain", "whitened"}
    assert (tmp_path / "out" / "frontier.png").stat().st_size > 1000
    assert frontier_point(tmp_path / "plain")["ar_top1"] == 98.0


def test_a_folder_without_a_report_is_a_clear_one_line_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FrontierError, match="no report.json"):
        frontier_point(tmp_path / "empty")
    assert main(["frontier", str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 2
    assert "no report.json" in capsys.readouterr().err
