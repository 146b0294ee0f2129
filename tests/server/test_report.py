"""The markdown report against a golden file, and the report's JSON from a typed history.

The history is written by hand, so every number in the report is known. When a change to the
report is intended, regenerate the golden file with

    LATENTVEIL_UPDATE_GOLDEN=1 python -m pytest tests/server/test_report.py

and read its diff before committing it.
"""

import csv
import io
import json
import os
from dataclasses import replace
from pathlib import Path

from common.attackers import AttackResult
from common.config import load_config
from common.evaluation import Evaluation, privacy_summary
from common.tasks import TaskScore
from server.history import History, RoundRecord
from server.report import build_report, report_markdown, rounds_csv

GOLDEN = Path(__file__).parent / "golden" / "report.md"
ATTRIBUTES = ("skin_tone", "gender")


def evaluation(
    cmaps: dict[str, float], stills: float, ar: float, ar_val: float, change_se=None
) -> Evaluation:
    def results(values: dict[str, float]) -> dict[str, AttackResult]:
        return {
            name: AttackResult(name, cmap, cmap - 1.0, 40.0, [cmap + 2.0, cmap - 2.0])
            for name, cmap in values.items()
        }

    privacy = privacy_summary(results(cmaps), results({name: stills for name in cmaps}), ATTRIBUTES)
    return Evaluation(privacy, {"ar": TaskScore(ar, 1.25, ar_val, 400, change_se)})


def history() -> History:
    baseline = evaluation({"mlp": 90.0, "inversion": 92.0}, 95.0, 98.0, 98.5)
    selected = evaluation({"mlp": 50.0, "inversion": 55.0}, 60.0, 97.5, 98.0, change_se=0.375)
    last = evaluation({"mlp": 52.0, "inversion": 58.0}, 61.0, 97.0, 96.0)
    train = {"loss": 1.5, "loss_b": 4.25, "loss_lc": 0.0123, "loss_t": 0.5}
    common = {"sites_sampled": 3, "bytes_down": 3_000_000, "bytes_up": 3_000_000}
    rejected = [{"node": 7, "reason": "non-finite values in adapter.w", "round": 2}]
    return History(
        baseline=baseline,
        rounds=[
            RoundRecord(0, evaluation=baseline, seconds=10.0),
            RoundRecord(1, train, sites_aggregated=3, evaluation=selected, seconds=5.0, **common),
            RoundRecord(
                2,
                train,
                sites_aggregated=2,
                sites_rejected=rejected,
                evaluation=last,
                seconds=6.0,
                **common,
            ),
        ],
        rejected=rejected,
        selected_round=1,
    )


def report() -> dict:
    config = load_config(None, ["federation.rounds=2"])
    sites = [{"site": "site_00", "train_videos": 10, "action_mix": {"wave": 10},
              "attribute_prevalence": {"skin_tone": 0.5}}]  # fmt: skip
    communication = {"shared_params": 1000, "encoder_params": 5000,
                     "bytes_per_client_per_round": 4000}  # fmt: skip
    return build_report(config, history(), communication, sites, wall_seconds=21.0)


def test_the_markdown_report_matches_the_golden_file():
    text = report_markdown(report())
    if os.environ.get("LATENTVEIL_UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), "report.md changed: see this module's docstring"


def test_the_json_report_reads_its_numbers_from_the_selected_round():
    data = report()
    assert data["anonymized"]["round"] == 1 and data["last_evaluated"]["round"] == 2
    assert data["baseline"]["privacy_cmap"] == 92.0 and data["anonymized"]["privacy_cmap"] == 55.0
    assert data["privacy_reduction_rel"] == (92.0 - 55.0) / 92.0
    assert data["utility_drop"]["ar_top1"] == 98.0 - 97.5
    assert data["baseline"]["tad_map"] is None and data["anonymized"]["ad_auc"] is None
    assert data["selection"]["ar_val_top1"] == 98.0
    assert data["selection"]["max_val_drop"] == {"ar": 2.0}
    # and the raw features' validation numbers the allowed drops are measured from
    assert data["selection"]["raw"] == {"privacy_val_cmap": 91.0, "ar_val_top1": 98.5}
    assert [r["sites_aggregated"] for r in data["rounds"]] == [None, 3, 2]
    assert data["rejected_updates"][0]["node"] == 7
    json.dumps(data)  # JSON-ready throughout


def test_a_task_broken_down_by_kind_gets_a_row_per_kind_raw_and_anonymized():
    past = history()

    def by_kind(evaluation: Evaluation, kinds: dict[str, float]) -> Evaluation:
        return replace(evaluation, tasks={"ar": replace(evaluation.tasks["ar"], by_kind=kinds)})

    baseline = by_kind(past.baseline, {"walk": 99.0, "wave": 97.0})
    selected = by_kind(past.rounds[1].evaluation, {"walk": 98.5, "wave": 90.25})
    rounds = [
        replace(past.rounds[0], evaluation=baseline),
        replace(past.rounds[1], evaluation=selected),
        past.rounds[2],
    ]
    broken_down = replace(past, baseline=baseline, rounds=rounds)
    config = load_config(None, ["federation.rounds=2"])
    data = build_report(config, broken_down, {"shared_params": 1, "encoder_params": 1,
                        "bytes_per_client_per_round": 1}, [])  # fmt: skip
    assert data["baseline"]["ar_top1_by_kind"] == {"walk": 99.0, "wave": 97.0}
    assert data["anonymized"]["ar_top1_by_kind"] == {"walk": 98.5, "wave": 90.25}
    text = report_markdown(data)
    assert "| AR top-1, wave only | 97.00 | 90.25 | 6.75 points lower |" in text
    assert "| AR top-1, walk only | 99.00 | 98.50 | 0.50 points lower |" in text
    assert "only |" not in report_markdown(report())  # no kinds, no rows


def test_a_history_round_trips_through_the_checkpoints_json():
    original = history()
    again = History.from_json(json.loads(json.dumps(original.to_json())))
    assert again == original


def test_the_round_line_names_each_evaluated_task_and_the_rejected_updates():
    from server.rounds import round_line

    records = history().rounds
    line = round_line(records[2])
    assert line.startswith("round   2 | L_B 4.250 L_LC 0.0123 L_T 0.500 | ")
    assert "privacy cMAP 58.00 (inversion) stills 61.00 AR top-1 97.00" in line
    assert "1 update(s) rejected" in line and line.endswith("6.0 s")
    assert round_line(RoundRecord(3, seconds=1.0)) == "round   3 | 1.0 s"


def test_a_selected_round_zero_is_said_first_and_plainly():
    data = report()
    data["selection"] = {**data["selection"], "round": 0}
    text = report_markdown(data)
    assert "**Round 0 was selected: `adapter.npz` is the untrained starting adapter" in text
    assert "(ar 2.0 points)" in text
    assert "Round 0 was selected" not in report_markdown(report())


def test_the_rounds_csv_has_a_row_per_round_and_blanks_where_nothing_was_measured():
    rows = list(csv.DictReader(io.StringIO(rounds_csv(report()))))
    assert [row["round"] for row in rows] == ["0", "1", "2"]
    assert rows[0]["sites_aggregated"] == "" and rows[1]["sites_aggregated"] == "3"
    assert float(rows[1]["privacy_cmap"]) == 55.0 and float(rows[1]["ar_val_top1"]) == 98.0
    assert "sites_rejected" not in rows[0]  # a list: it stays in report.json
