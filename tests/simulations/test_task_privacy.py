"""`latentveil task-privacy`: the attacker suite on every task's released videos, per task."""

import json

import numpy as np
import pytest

from common.evaluation import EvaluationSet, TaskVideos, VideoSplit
from simulations.cli import main
from simulations.crossfit import CrossfitError
from simulations.task_privacy import attacked_tasks, write_task_privacy
from tests import fakes
from tests.simulations.test_crossfit import finished_run, with_ad


def with_readable_ad(base: EvaluationSet) -> EvaluationSet:
    """`with_ad`'s AD videos, their actors' 7 attributes planted in every clip (the AR videos
    of fakes.evaluation_set are noise)."""
    directions = np.random.default_rng(7).normal(size=(7, fakes.D))
    ad = {}
    for seed, (split, videos) in enumerate(with_ad(base).tasks["ad"].splits.items()):
        rng = np.random.default_rng(10 + seed)
        actors = (rng.random((len(videos), 7)) < 0.4).astype(np.float32)
        actors[0] = 1
        clips = rng.normal(size=videos.clips.shape) + 3.0 * (actors @ directions)[:, None]
        ad[split] = VideoSplit(clips.astype(np.float32), videos.labels, actors)
    return EvaluationSet(
        base.encoder_id, base.attributes, base.stills, {**base.tasks, "ad": TaskVideos((), ad)}
    )


def test_each_tasks_test_videos_are_scored_by_one_suite_trained_on_every_task(tmp_path, capsys):
    evaluation_set = with_readable_ad(fakes.evaluation_set())
    finished_run(tmp_path / "a", evaluation_set, 0)
    finished_run(tmp_path / "b", evaluation_set, 1)
    code = main(["task-privacy", str(tmp_path / "a"), str(tmp_path / "b"), "--out",
                 str(tmp_path / "tp"), "--quiet"])  # fmt: skip
    assert code == 0
    result = json.loads((tmp_path / "tp" / "task_privacy.json").read_text())
    assert result["tasks"] == ["ar", "ad"]
    assert result["test_videos"] == {"ar": 16, "ad": 16, "all": 32}
    assert (result["train_videos"], result["val_videos"]) == (40 + 24, 16 + 8)
    assert list(result["rows"]) == ["raw", "a", "b"]
    raw = result["rows"]["raw"]
    # The planted AD actors are read; the AR videos are noise, about chance.
    assert raw["ad"]["cmap"] > 85 > raw["ar"]["cmap"]
    assert abs(raw["ar"]["cmap"] - raw["ar"]["chance_cmap"]) < 20
    assert raw["ar"]["cmap"] < raw["all"]["cmap"] < raw["ad"]["cmap"]
    for row in result["rows"].values():
        assert set(row) == {"ar", "ad", "all"}
        assert len({cell["val_cmap"] for cell in row.values()}) == 1  # one suite per row
    table = (tmp_path / "tp" / "task_privacy.md").read_text()
    assert (
        "| features | ar (16 test videos) | ad (16 test videos) | all (32 test videos) |" in table
    )
    assert "| b | " in table and "written to" in capsys.readouterr().out


def test_only_videos_with_known_actors_are_attacked_and_bad_requests_are_one_line_errors(
    tmp_path, capsys
):
    no_actors = with_ad(fakes.evaluation_set())  # AD videos without their actors' attributes
    assert attacked_tasks(no_actors, None) == ["ar"]
    with pytest.raises(CrossfitError, match="'ad' videos carry no actor attributes"):
        attacked_tasks(no_actors, ["ar", "ad"])
    finished_run(tmp_path / "a", no_actors, 0)
    code = main(["task-privacy", str(tmp_path / "a"), "--out", str(tmp_path / "tp"),
                 "--tasks", "ar,tad"])  # fmt: skip
    assert code == 2
    assert "no 'tad' videos (it has ad, ar)" in capsys.readouterr().err
    finished_run(tmp_path / "b", with_readable_ad(fakes.evaluation_set()), 0)
    code = main(["task-privacy", str(tmp_path / "a"), str(tmp_path / "b"), "--out",
                 str(tmp_path / "tp")])  # fmt: skip
    assert code == 2 and "different evaluation sets" in capsys.readouterr().err
    assert not (tmp_path / "tp").exists()
    with pytest.raises(CrossfitError, match="has no evaluation_set.npz"):
        write_task_privacy([tmp_path], tmp_path / "tp")
