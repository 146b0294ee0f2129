"""`latentveil crossfit`: folds that cover every video once, the task's own protocol on each,
and run folders compared on one evaluation set only."""

import json
from dataclasses import replace

import numpy as np
import pytest

from common.config import EvaluationConfig, save_config
from common.evaluation import EvaluationSet, TaskVideos, VideoSplit
from common.layout import RunLayout
from common.model import build_model
from common.weights import shareable_state
from server.rounds import save_adapter
from simulations.cli import build_parser, main
from simulations.crossfit import (
    TRAIN_SIZES,
    VAL_SIZE,
    CrossfitError,
    crossfit_scores,
    cut_folds,
    row_names,
    write_crossfit,
)
from tests import fakes
from tests.common.test_anomaly_detection import planted_videos


def ad_labels(n: int) -> dict[str, np.ndarray]:
    return {"anomalous": (np.arange(n) % 3 == 0), "other": np.arange(n)}


@pytest.mark.parametrize("folds,train,val", [(4, 20, 5), (3, 10, 8), (2, 1, 1)])
def test_every_video_is_tested_once_and_never_trains_or_chooses_its_own_head(folds, train, val):
    labels = ad_labels(60)
    cuts = cut_folds(labels, folds, train, val, seed=3)
    assert len(cuts) == folds
    tested = np.concatenate([c.test for c in cuts])
    assert sorted(tested) == list(range(60))
    anomalous = labels["anomalous"]
    for cut in cuts:
        assert len(cut.train) == train and len(cut.val) == val
        assert not set(cut.train) & set(cut.test) and not set(cut.val) & set(cut.test)
        assert not set(cut.train) & set(cut.val)
        # Each fold holds a third of anomalous videos, as the pool does (within one video).
        assert abs(anomalous[cut.test].mean() * len(cut.test) - len(cut.test) / 3) <= 1
        if train > 1:
            assert 0 < anomalous[cut.train].sum() < train
        if val > 1:
            assert 0 < anomalous[cut.val].sum() < val
    assert cut_folds(labels, folds, train, val, seed=3)[0].train.tolist() == cuts[0].train.tolist()
    assert cut_folds(labels, folds, train, val, seed=4)[0].test.tolist() != cuts[0].test.tolist()


def test_folds_that_cannot_be_cut_are_refused_with_what_fits():
    labels = ad_labels(40)  # 14 anomalous, 26 normal: folds of 11, 11, 9, 9
    assert len(cut_folds(labels, 4, 24, 5)) == 4  # 40 - 11 - 5 beside a test fold and val
    with pytest.raises(CrossfitError, match="25 training videos do not fit.*leave 24"):
        cut_folds(labels, 4, 25, 5)
    with pytest.raises(CrossfitError, match="validation set of 10 videos"):
        cut_folds(labels, 4, 5, 10)
    with pytest.raises(CrossfitError, match="at least 2 folds"):
        cut_folds(labels, 1, 5, 5)
    with pytest.raises(CrossfitError, match="at least 1 video each"):
        cut_folds(labels, 4, 0, 5)
    with pytest.raises(CrossfitError, match="at least 4 videos of each kind; there are 3"):
        cut_folds({"anomalous": np.arange(40) < 3}, 4, 5, 5)
    without_kinds = {"segments": np.zeros((40, 2, 3))}
    assert sorted(np.concatenate([c.test for c in cut_folds(without_kinds, 4, 20, 5)])) == list(
        range(40)
    )


def test_each_fold_is_scored_by_the_tasks_protocol():
    planted = planted_videos(48, 0, 10.0)
    noise = planted_videos(48, 1, 0.0)
    config = EvaluationConfig(probe_epochs=30)
    cuts = cut_folds(planted.labels, 3, 24, 8)
    found = crossfit_scores("ad", planted.clips, planted.labels, (), config, cuts)
    blind = crossfit_scores("ad", noise.clips, noise.labels, (), config, cuts)
    assert len(found) == 3 and min(found) > 90
    assert np.mean(blind) < 75


def test_rows_are_named_by_the_fewest_path_parts_that_tell_the_runs_apart(tmp_path):
    assert row_names([tmp_path / "a", tmp_path / "b"]) == ["a", "b"]
    assert row_names([tmp_path / "s0" / "all_seen", tmp_path / "s1" / "all_seen"]) == [
        "s0/all_seen",
        "s1/all_seen",
    ]
    assert row_names([tmp_path / "x" / "raw"]) == ["x/raw"]
    with pytest.raises(CrossfitError, match="named twice"):
        row_names([tmp_path / "a", tmp_path / "a"])


def finished_run(folder, evaluation_set: EvaluationSet, seed: int, window: int = 8) -> None:
    config = fakes.small_config(
        extra=["tasks.evaluated={ar: 2.0, ad: 2.0}", f"anonymizer.window={window}"]
    )
    config = replace(config, evaluation=replace(config.evaluation, probe_epochs=30))
    layout = RunLayout(folder)
    folder.mkdir(parents=True)
    save_config(config, layout.config)
    evaluation_set.save(layout.evaluation_set)
    import torch

    torch.manual_seed(seed)
    save_adapter(shareable_state(build_model(fakes.D, config)), layout.adapter)


def with_ad(base: EvaluationSet) -> EvaluationSet:
    sizes = {"train": 24, "val": 8, "test": 16}
    ad = {}
    for seed, (split, n) in enumerate(sizes.items()):
        videos = planted_videos(n, seed, 10.0, dim=fakes.D)
        ad[split] = VideoSplit(videos.clips.astype(np.float32), videos.labels)
    return EvaluationSet(
        base.encoder_id, base.attributes, base.stills, {**base.tasks, "ad": TaskVideos((), ad)}
    )


def test_the_command_writes_raw_and_each_run_on_the_same_folds(tmp_path, capsys):
    evaluation_set = with_ad(fakes.evaluation_set())
    finished_run(tmp_path / "a", evaluation_set, 0)
    finished_run(tmp_path / "b", evaluation_set, 1)
    code = main(["crossfit", str(tmp_path / "a"), str(tmp_path / "b"), "--out",
                 str(tmp_path / "cf"), "--tasks", "ad", "--train-sizes", "10,20",
                 "--folds", "3", "--val-size", "5", "--quiet"])  # fmt: skip
    assert code == 0
    result = json.loads((tmp_path / "cf" / "crossfit.json").read_text())
    rows = result["tasks"]["ad"]["rows"]
    assert list(rows) == ["raw", "a", "b"] and result["tasks"]["ad"]["videos"] == 48
    for row in rows.values():
        assert set(row) == {"10", "20"}
        for cell in row.values():
            assert len(cell["folds"]) == 3
            assert cell["mean"] == pytest.approx(np.mean(cell["folds"]))
    assert rows["raw"]["20"]["mean"] > 90  # the planted anomalies, on the raw features
    assert sorted(np.concatenate(result["tasks"]["ad"]["test_folds"])) == list(range(48))
    table = (tmp_path / "cf" / "crossfit.md").read_text()
    assert "### ad (48 videos)" in table and "| b | " in table
    assert "written to" in capsys.readouterr().out


def test_runs_of_different_evaluation_sets_or_unknown_tasks_are_one_line_errors(tmp_path, capsys):
    finished_run(tmp_path / "a", with_ad(fakes.evaluation_set(0)), 0)
    finished_run(tmp_path / "b", with_ad(fakes.evaluation_set(1)), 0)
    code = main(["crossfit", str(tmp_path / "a"), str(tmp_path / "b"), "--out",
                 str(tmp_path / "cf")])  # fmt: skip
    assert code == 2
    assert "different evaluation sets" in capsys.readouterr().err
    code = main(["crossfit", str(tmp_path / "a"), "--out", str(tmp_path / "cf"),
                 "--tasks", "ad,tad", "--val-size", "5", "--train-sizes", "10"])  # fmt: skip
    assert code == 2  # before the AD heads train
    assert "no 'tad' videos (it has ad, ar)" in capsys.readouterr().err
    # A validation set of one kind: AD's own check, before anything trains.
    code = main(["crossfit", str(tmp_path / "a"), "--out", str(tmp_path / "cf"),
                 "--tasks", "ad", "--val-size", "1", "--train-sizes", "10"])  # fmt: skip
    assert code == 2
    assert "ad, fold 0 with 10 training videos" in capsys.readouterr().err
    code = main(["crossfit", str(tmp_path / "a"), "--out", str(tmp_path / "cf"),
                 "--train-sizes", "ten"])  # fmt: skip
    assert code == 2 and "comma-separated integers" in capsys.readouterr().err
    finished_run(tmp_path / "c", with_ad(fakes.evaluation_set(0)), 0, window=4)
    code = main(["crossfit", str(tmp_path / "a"), str(tmp_path / "c"), "--out",
                 str(tmp_path / "cf")])  # fmt: skip
    assert code == 2 and "anonymizer.window" in capsys.readouterr().err
    assert not (tmp_path / "cf" / "crossfit.json").exists()
    with pytest.raises(CrossfitError, match="has no evaluation_set.npz"):
        write_crossfit([tmp_path], tmp_path / "cf")


def test_the_commands_defaults_are_the_modules():
    # The CLI spells the defaults out (it imports simulations.crossfit only when it runs).
    parser, _ = build_parser()
    args = parser.parse_args(["crossfit", "runs/a", "--out", "out"])
    assert tuple(int(s) for s in args.train_sizes.split(",")) == TRAIN_SIZES
    assert args.val_size == VAL_SIZE
