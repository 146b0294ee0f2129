"""The mistakes corpus: everyday user mistakes and odd inputs against the `latentveil` command
line, each run in-process through `main([...])`.

Every case must end the same way:

- a non-zero exit code, and no traceback;
- stderr is exactly ONE line, `latentveil <command>: error: ...`, naming the offending file, flag
  or config key (the `names` of the case);
- every file that existed before is byte-identical after, and nothing new is left behind: no
  temporary files, no empty `*.parts` folders, no half-written outputs.

The inputs are generated in `tmp_path` (tiny videos with PyAV, fake run folders) or shared by
the module (a tiny world, a finished run with an adapter, an artifact exported from it); a case
that uses a shared folder has it checked for damage too. Nothing heavy may start: preparing a
run, starting Flower, rendering a world or pre-training is replaced by a tripwire, so a mistake
that is not caught before such work fails its case instead of running for minutes.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from common.config import load_config, to_dict
from simulations.cli import build_parser, main
from tests.edge_export.generated import make_run, write_video
from tests.simulations.test_cli import fake_run

# Commands with a progress bar on stderr: the corpus runs them with --quiet.
QUIET = {"world", "extract", "pretrain-encoder", "leakage", "prepare", "simulate", "ablate",
         "anonymize"}  # fmt: skip
COMMANDS = set(build_parser()[1])
ROOT = os.geteuid() == 0  # root ignores file permissions: the unwritable-folder cases skip

# The work a refused command must never reach (module attribute -> what it is).
TRIPWIRES = {
    "simulations.simulate.prepare_run": "preparing a run",
    "simulations.simulate.run_flower_simulation": "starting Flower",
    "simulations.simulate.run_centralized": "training",
    "simulations.ablate.prepare_run": "preparing the ablation",
    "simulations.ablate.simulate": "running an ablation variant",
    "simulations.worldfeatures.measure_raw_leakage": "measuring leakage",
    "simulations.world.writing._render_missing": "rendering a world",
    "simulations.pretrain._load_split": "pre-training",
}


class ReachedHeavyWork(BaseException):
    """A mistake got past every check into real work (a BaseException: main() must not turn
    it into an error line)."""


# ---------------------------------------------------------------------------------------------
# Shared inputs


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny evaluation world of 2 sites."""
    root = tmp_path_factory.mktemp("world") / "world"
    assert main(["world", "--preset", "tiny", "--sites", "2", "--out", str(root), "--quiet"]) == 0
    return root


@pytest.fixture(scope="module")
def edge_run(tmp_path_factory):
    """A finished run folder with a tiny config and its adapter.npz (what export reads)."""
    return make_run(tmp_path_factory.mktemp("edge_run") / "run")


@pytest.fixture(scope="module")
def artifact(edge_run, tmp_path_factory):
    """A torch artifact exported from `edge_run` (window 4)."""
    out = tmp_path_factory.mktemp("artifact") / "torch"
    assert main(["export", "--run", str(edge_run), "--backend", "torch", "--out", str(out)]) == 0
    return out


class Bench:
    """What a case builds its inputs with: files in tmp_path, and the shared inputs (which the
    case then also checks for damage)."""

    def __init__(self, tmp: Path, request: pytest.FixtureRequest) -> None:
        self.tmp = tmp
        self.request = request
        self.watched = [tmp]

    def shared(self, name: str) -> Path:
        root = self.request.getfixturevalue(name)
        self.watched.append(root)
        return root

    def path(self, name: str) -> Path:
        """A path in tmp_path that does not exist."""
        return self.tmp / name

    def folder(self, name: str) -> Path:
        path = self.tmp / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def file(self, name: str, content: str | bytes) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_text(content)
        else:
            path.write_bytes(content)
        return path

    def junk(self, name: str, size: int = 5000) -> Path:
        """Random bytes under any name."""
        return self.file(name, np.random.default_rng(0).bytes(size))

    def video(self, name: str, frames: int = 40, seed: int = 1) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_video(path, frames, seed=seed)

    def truncated(self, name: str) -> Path:
        """The first half of a faststart mp4: it opens, and decodes part-way."""
        whole = write_video(self.tmp / "whole.mp4", 120, seed=5, faststart=True)
        data = whole.read_bytes()
        whole.unlink()
        return self.file(name, data[: len(data) // 2])

    def image(self, name: str) -> Path:
        from PIL import Image

        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((32, 48, 3), 120, np.uint8)).save(path)
        return path

    def run(self, name: str = "run", finished: bool = True) -> Path:
        """A run folder as `simulate` leaves it (test_cli.fake_run)."""
        return fake_run(self.tmp / name, finished=finished)

    def edge_run(self, name: str = "run", replace: dict[str, bytes] | None = None) -> Path:
        """A copy of the shared finished run, with the files in `replace` rewritten."""
        run = self.tmp / name
        shutil.copytree(self.request.getfixturevalue("edge_run"), run)
        for file, content in (replace or {}).items():
            (run / file).write_bytes(content)
        return run

    def artifact(self, name: str = "artifact") -> Path:
        """A copy of the shared artifact, to tamper with."""
        copy = self.tmp / name
        shutil.copytree(self.request.getfixturevalue("artifact"), copy)
        return copy

    def readonly(self, name: str) -> Path:
        if ROOT:
            pytest.skip("running as root: file permissions are not enforced")
        folder = self.folder(name)
        folder.chmod(0o500)
        self.request.addfinalizer(lambda: folder.chmod(0o700))
        return folder


# A case builds its inputs and returns the command line and what its error line must name.
Case = Callable[[Bench], tuple[list[str], list[str]]]


@dataclass(frozen=True)
class Mistake:
    name: str
    build: Case


CASES: list[Mistake] = []


def mistake(build: Case) -> Case:
    CASES.append(Mistake(build.__name__.replace("_", "-"), build))
    return build


def setting(name: str, override: str, *names: str) -> None:
    """A case of `latentveil config --set override`."""
    CASES.append(Mistake(f"config-{name}", lambda b: (["config", "--set", override], list(names))))


# ---------------------------------------------------------------------------------------------
# config: keys and values


setting("misspelled-key", "train.lrr=1", "'train.lrr'", "'train.lr'")
setting("unknown-init", "anonymizer.init=lda", "'anonymizer.init'", "discriminant")
setting("shrinkage-above-one", "anonymizer.shrinkage=2", "'anonymizer.shrinkage'")
setting(
    "discriminant-without-bottleneck", "anonymizer.init=discriminant", "'anonymizer.bottleneck'"
)
setting("misspelled-section", "trian.lr=1", "'trian'")
setting("moved-key", "loss.w_ar=1", "'loss.w_ar'", "tasks.seen.ar")
setting("negative-lr", "train.lr=-1", "'train.lr'")
setting("infinite-lr", "train.lr=inf", "'train.lr'")
setting("nan-temperature", "loss.tau=nan", "'loss.tau'")
setting("zero-epochs", "train.epochs=0", "'train.epochs'")
setting("zero-rounds", "federation.rounds=0", "'federation.rounds'")
setting("negative-sites", "world.sites=-2", "'world.sites'")
setting("fractional-epochs", "train.epochs=2.5", "'train.epochs'")
setting("word-for-a-number", "train.lr=fast", "'train.lr'")
setting("bool-for-an-integer", "world.sites=true", "'world.sites'")
setting("not-a-bool", "loss.cap_budget=maybe", "'loss.cap_budget'")
setting("unknown-mode", "federation.mode=decentral", "'federation.mode'")
setting("unknown-strategy", "federation.strategy=fedfoo", "fedfoo")
setting("unknown-encoder", "encoder.name=resnet", "'encoder.name'", "resnet")
setting("unknown-world-preset", "world.preset=huge", "'world.preset'", "huge")
setting("unknown-attacker", "evaluation.attackers=mlp,svm", "'evaluation.attackers'", "svm")
setting("unknown-task", "tasks.seen.pose=1", "'tasks.seen'", "pose")
setting("unknown-select-rule", "evaluation.select=best", "'evaluation.select'")
setting("no-tasks", "tasks.evaluated={}", "'tasks.evaluated'")
setting("list-for-a-mapping", "tasks.seen=[ar]", "'tasks.seen'")
setting("fraction-above-one", "federation.fraction_train=1.5", "'federation.fraction_train'")
setting("dropout-one", "anonymizer.dropout=1", "'anonymizer.dropout'")
setting("unknown-dtype", "features.dtype=float64", "'features.dtype'")
setting("one-static-clip", "features.static_clips=1", "'features.static_clips'")
setting("batch-of-one", "train.batch_size=1", "'train.batch_size'")
setting("zero-dirichlet", "world.dirichlet_alpha=0", "'world.dirichlet_alpha'")
setting("no-equals-sign", "train.lr", "'train.lr'", "key=value")
setting("a-section-as-a-value", "train=1", "'train'")
setting("a-value-as-a-section", "train.lr.max=1", "'train.lr'")
setting("unclosed-yaml-value", "tasks.seen={ar: 1.0", "tasks.seen")


# config: files


@mistake
def config_file_missing(b):
    path = b.path("nope.yaml")
    return ["config", "--config", str(path)], [str(path)]


@mistake
def config_file_is_a_folder(b):
    path = b.folder("configs")
    return ["config", "--config", str(path)], [str(path), "folder"]


@mistake
def config_file_malformed_yaml(b):
    path = b.file("bad.yaml", "train: {lr: 1\nfederation:\n  rounds: 3\n")
    return ["config", "--config", str(path)], [str(path), "YAML"]


@mistake
def config_file_with_tabs(b):
    path = b.file("tabs.yaml", "train:\n\tlr: 1\n")
    return ["config", "--config", str(path)], [str(path)]


@mistake
def config_file_binary(b):
    path = b.junk("weights.yaml")
    return ["config", "--config", str(path)], [str(path)]


@mistake
def config_file_a_list(b):
    path = b.file("list.yaml", "- train\n- federation\n")
    return ["config", "--config", str(path)], [str(path)]


@mistake
def config_file_unknown_key(b):
    path = b.file("typo.yaml", "train:\n  lrr: 0.1\n")
    return ["config", "--config", str(path)], ["'train.lrr'"]


@mistake
def config_file_section_as_scalar(b):
    path = b.file("scalar.yaml", "train: 5\n")
    return ["config", "--config", str(path)], ["'train'"]


@mistake
def config_file_path_with_spaces(b):
    path = b.file("my configs/bad run.yaml", "train: [\n")
    return ["config", "--config", str(path)], [str(path)]


@mistake
def config_out_is_a_folder(b):
    out = b.folder("resolved")
    return ["config", "--out", str(out)], [str(out), "folder"]


@mistake
def config_out_under_a_file(b):
    notes = b.file("notes.txt", "my notes")
    return ["config", "--out", str(notes / "config.yaml")], [str(notes)]


@mistake
def config_out_kept_on_a_bad_value(b):
    out = b.file("resolved.yaml", "previous: config\n")
    return ["config", "--set", "train.lr=-1", "--out", str(out)], ["'train.lr'"]


@mistake
def config_out_unwritable(b):
    folder = b.readonly("locked")
    return ["config", "--out", str(folder / "c.yaml")], [str(folder)]


# ---------------------------------------------------------------------------------------------
# world


def world_args(b, *more: str) -> list[str]:
    return ["world", "--preset", "tiny", "--out", str(b.path("w")), *more]


@mistake
def world_zero_sites(b):
    return world_args(b, "--sites", "0"), ["sites"]


@mistake
def world_negative_sites(b):
    return world_args(b, "--sites", "-4"), ["sites"]


@mistake
def world_sites_not_a_number(b):
    return world_args(b, "--sites", "two"), ["--sites", "'two'"]


@mistake
def world_negative_seed(b):
    return world_args(b, "--seed", "-1"), ["seed"]


@mistake
def world_fractional_seed(b):
    return world_args(b, "--seed", "1.5"), ["--seed"]


@mistake
def world_unknown_preset(b):
    return ["world", "--preset", "huge", "--out", str(b.path("w"))], ["--preset", "'huge'"]


@mistake
def world_unknown_purpose(b):
    return world_args(b, "--purpose", "train"), ["--purpose", "'train'"]


@mistake
def world_zero_alpha(b):
    return world_args(b, "--alpha", "0"), ["alpha"]


@mistake
def world_negative_alpha(b):
    return world_args(b, "--alpha", "-0.5"), ["alpha"]


@mistake
def world_out_is_a_file(b):
    out = b.file("world.txt", "not a world")
    return ["world", "--preset", "tiny", "--out", str(out)], [str(out)]


@mistake
def world_out_under_a_file(b):
    notes = b.file("notes.txt", "my notes")
    return ["world", "--preset", "tiny", "--out", str(notes / "w")], [str(notes)]


@mistake
def world_out_holds_another_world(b):
    root = b.shared("world")
    return ["world", "--preset", "tiny", "--sites", "2", "--seed", "1", "--out", str(root)], [
        str(root),
        "another world",
    ]


@mistake
def world_out_empty_path(b):
    return ["world", "--preset", "tiny", "--out", ""], ["--out"]


@mistake
def world_out_missing(b):
    return ["world", "--preset", "tiny"], ["--out"]


@mistake
def world_out_unwritable(b):
    folder = b.readonly("locked")
    return ["world", "--preset", "tiny", "--out", str(folder / "w")], [str(folder)]


# ---------------------------------------------------------------------------------------------
# extract


def extract_args(data: Path, out: Path, *more: str) -> list[str]:
    return ["extract", "--data", str(data), "--out", str(out), *more]


@mistake
def extract_data_missing(b):
    data = b.path("videos")
    return extract_args(data, b.path("f.h5")), [str(data)]


@mistake
def extract_data_empty_folder(b):
    data = b.folder("videos")
    return extract_args(data, b.path("f.h5")), [str(data)]


@mistake
def extract_data_only_text_files(b):
    b.file("videos/README.txt", "the videos come tomorrow")
    return extract_args(b.tmp / "videos", b.path("f.h5")), [str(b.tmp / "videos")]


@mistake
def extract_data_not_a_video_file(b):
    data = b.file("notes.txt", "hello")
    return extract_args(data, b.path("f.h5")), [str(data)]


@mistake
def extract_text_file_named_mp4(b):
    data = b.file("clip.mp4", "this is not a video\n")
    return extract_args(data, b.path("f.h5")), [str(data)]


@mistake
def extract_random_bytes_mp4(b):
    data = b.junk("clip.mp4")
    return extract_args(data, b.path("f.h5")), [str(data)]


@mistake
def extract_empty_mp4(b):
    data = b.file("clip.mp4", b"")
    return extract_args(data, b.path("f.h5")), [str(data)]


@mistake
def extract_truncated_mp4(b):
    data = b.truncated("clip.mp4")
    return extract_args(data, b.path("f.h5")), [str(data), "--allow-partial"]


@mistake
def extract_video_shorter_than_a_clip(b):
    data = b.video("short.mp4", frames=10)
    return extract_args(data, b.path("f.h5")), [str(data)]


@mistake
def extract_corrupt_png(b):
    data = b.junk("still.png")
    return extract_args(data, b.path("f.h5")), [str(data)]


@mistake
def extract_skip_bad_when_every_file_is_bad(b):
    b.junk("videos/a.mp4")
    b.file("videos/b.mp4", "text")
    out = b.path("f.h5")
    return extract_args(b.tmp / "videos", out, "--skip-bad"), [str(out)]


@mistake
def extract_duplicate_ids(b):
    first = b.video("videos/cam__a.mp4")
    second = b.video("videos/cam/a.mp4", seed=2)
    return extract_args(b.tmp / "videos", b.path("f.h5")), [str(first), str(second)]


@mistake
def extract_path_with_spaces(b):
    data = b.junk("my videos/clip one.mp4")
    return extract_args(b.tmp / "my videos", b.path("my store.h5")), [str(data)]


@mistake
def extract_datasets_without_a_world(b):
    data = b.video("videos/a.mp4")
    return extract_args(data.parent, b.path("f.h5"), "--datasets", "central/ar"), ["--datasets"]


@mistake
def extract_unknown_world_dataset(b):
    root = b.shared("world")
    return extract_args(root, b.path("f.h5"), "--datasets", "central/pose"), ["'central/pose'"]


@mistake
def extract_malformed_world_dataset(b):
    root = b.shared("world")
    return extract_args(root, b.path("f.h5"), "--datasets", "privacy"), ["'privacy'"]


@mistake
def extract_out_is_a_folder(b):
    data = b.video("a.mp4")
    out = b.folder("features")
    return extract_args(data, out), [str(out), "folder"]


@mistake
def extract_out_not_hdf5(b):
    data = b.video("a.mp4")
    out = b.file("notes.h5", "my notes, not features")
    return extract_args(data, out), [str(out), "HDF5"]


@mistake
def extract_out_under_a_file(b):
    data = b.video("a.mp4")
    notes = b.file("notes.txt", "my notes")
    return extract_args(data, notes / "f.h5"), [str(notes)]


@mistake
def extract_out_of_another_encoder(b):
    data = b.video("a.mp4")
    out = b.path("f.h5")
    tiny = ["--set", "encoder.path=", "--set", "encoder.dim=16", "--set", "encoder.frame_size=32"]
    assert main([*extract_args(data, out, *tiny), "--quiet"]) == 0
    return extract_args(data, out, *tiny, "--set", "encoder.seed=5"), [str(out), "encoder"]


@mistake
def extract_unknown_encoder(b):
    return extract_args(b.video("a.mp4"), b.path("f.h5"), "--encoder", "resnet"), ["resnet"]


@mistake
def extract_encoder_path_missing(b):
    weights = b.path("tiny3d.pt")
    args = extract_args(b.video("a.mp4"), b.path("f.h5"), "--encoder-path", str(weights))
    return args, [str(weights)]


@mistake
def extract_encoder_path_not_a_checkpoint(b):
    weights = b.file("tiny3d.pt", "not weights")
    args = extract_args(b.video("a.mp4"), b.path("f.h5"), "--encoder-path", str(weights))
    return args, [str(weights)]


@mistake
def extract_encoder_path_a_folder(b):
    weights = b.folder("weights")
    args = extract_args(b.video("a.mp4"), b.path("f.h5"), "--encoder-path", str(weights))
    return args, [str(weights)]


@mistake
def extract_videomae_without_weights(b):
    return extract_args(b.video("a.mp4"), b.path("f.h5"), "--encoder", "videomae"), ["encoder"]


@mistake
def extract_dim_other_than_the_checkpoint(b):
    args = extract_args(b.video("a.mp4"), b.path("f.h5"), "--set", "encoder.dim=16")
    return args, ["encoder.dim"]


@mistake
def extract_zero_batch(b):
    args = extract_args(b.video("a.mp4"), b.path("f.h5"), "--set", "features.batch_size=0")
    return args, ["'features.batch_size'"]


@mistake
def extract_out_unwritable(b):
    folder = b.readonly("locked")
    return extract_args(b.video("a.mp4"), folder / "f.h5"), [str(folder)]


@mistake
def extract_data_missing_flag(b):
    return ["extract", "--out", str(b.path("f.h5"))], ["--data"]


# ---------------------------------------------------------------------------------------------
# pretrain-encoder


def pretrain_args(b, *more: str) -> list[str]:
    return ["pretrain-encoder", "--world", str(b.path("pw")), "--out", str(b.path("t.pt")), *more]


@mistake
def pretrain_zero_epochs(b):
    return pretrain_args(b, "--epochs", "0"), ["epochs"]


@mistake
def pretrain_negative_epochs(b):
    return pretrain_args(b, "--epochs", "-3"), ["epochs"]


@mistake
def pretrain_epochs_not_a_number(b):
    return pretrain_args(b, "--epochs", "ten"), ["--epochs", "'ten'"]


@mistake
def pretrain_zero_frame_size(b):
    return pretrain_args(b, "--frame-size", "0"), ["frame_size"]


@mistake
def pretrain_negative_seed(b):
    return pretrain_args(b, "--seed", "-1"), ["seed"]


@mistake
def pretrain_negative_world_seed(b):
    return pretrain_args(b, "--world-seed", "-1"), ["seed", "-1"]


@mistake
def pretrain_out_is_a_folder(b):
    out = b.folder("checkpoints")
    return ["pretrain-encoder", "--world", str(b.path("pw")), "--out", str(out)], [str(out)]


@mistake
def pretrain_world_is_a_file(b):
    world = b.file("world.zip", "PK")
    return ["pretrain-encoder", "--world", str(world), "--out", str(b.path("t.pt"))], [str(world)]


@mistake
def pretrain_on_the_evaluation_world(b):
    root = b.shared("world")
    return ["pretrain-encoder", "--world", str(root), "--out", str(b.path("t.pt"))], [
        str(root),
        "another world",
    ]


@mistake
def pretrain_world_missing_flag(b):
    return ["pretrain-encoder", "--out", str(b.path("t.pt"))], ["--world"]


# ---------------------------------------------------------------------------------------------
# leakage, prepare


@mistake
def leakage_config_missing(b):
    path = b.path("nope.yaml")
    return ["leakage", "--config", str(path), "--out", str(b.path("l"))], [str(path)]


@mistake
def leakage_config_malformed(b):
    path = b.file("bad.yaml", "world: {preset: tiny\n")
    return ["leakage", "--config", str(path), "--out", str(b.path("l"))], [str(path)]


@mistake
def leakage_unknown_preset(b):
    return ["leakage", "--out", str(b.path("l")), "--set", "world.preset=huge"], ["'world.preset'"]


@mistake
def leakage_out_is_a_file(b):
    out = b.file("leakage.json", "{}")
    return ["leakage", "--out", str(out)], [str(out)]


@mistake
def leakage_out_under_a_file(b):
    notes = b.file("notes.txt", "my notes")
    return ["leakage", "--out", str(notes / "l")], [str(notes)]


@mistake
def prepare_into_a_finished_run(b):
    run = b.run()
    return ["prepare", "--out", str(run)], [str(run), "finished run"]


@mistake
def prepare_into_an_unfinished_run(b):
    run = b.run(finished=False)
    return ["prepare", "--out", str(run)], [str(run), "unfinished run"]


@mistake
def prepare_out_is_a_file(b):
    out = b.file("run", "a file")
    return ["prepare", "--out", str(out)], [str(out)]


@mistake
def prepare_unknown_strategy(b):
    return ["prepare", "--out", str(b.path("r")), "--set", "federation.strategy=fedfoo"], ["fedfoo"]


@mistake
def prepare_unknown_encoder(b):
    return ["prepare", "--out", str(b.path("r")), "--set", "encoder.name=i3d"], ["'encoder.name'"]


# ---------------------------------------------------------------------------------------------
# simulate


@mistake
def simulate_resume_an_empty_folder(b):
    run = b.folder("run")
    return ["simulate", "--out", str(run), "--resume"], [str(run), "resume"]


@mistake
def simulate_resume_a_missing_folder(b):
    run = b.path("run")
    return ["simulate", "--out", str(run), "--resume"], [str(run), "resume"]


@mistake
def simulate_resume_and_overwrite(b):
    run = b.run()
    return ["simulate", "--out", str(run), "--resume", "--overwrite"], ["--resume", "--overwrite"]


@mistake
def simulate_resume_with_another_setting(b):
    run = b.run(finished=False)
    return ["simulate", "--out", str(run), "--resume", "--set", "world.seed=1"], ["--resume"]


@mistake
def simulate_resume_with_another_config_file(b):
    run = b.run(finished=False)
    data = to_dict(load_config(run / "config.yaml"))
    data["train"]["lr"] = 0.5
    other = b.file("other.yaml", yaml.safe_dump(data))
    return ["simulate", "--out", str(run), "--resume", "--config", str(other)], ["--config"]


@mistake
def simulate_resume_with_a_missing_config_file(b):
    run = b.run(finished=False)
    missing = b.path("gone.yaml")
    return ["simulate", "--out", str(run), "--resume", "--config", str(missing)], [str(missing)]


@mistake
def simulate_resume_a_run_with_a_broken_config(b):
    run = b.run(finished=False)
    (run / "config.yaml").write_text("train: {lr: \n")
    return ["simulate", "--out", str(run), "--resume"], [str(run / "config.yaml")]


@mistake
def simulate_resume_a_finished_run_with_a_cut_report(b):
    run = b.run()
    (run / "report.json").write_text('{"baseline": {"privacy_cmap": 4')
    return ["simulate", "--out", str(run), "--resume"], [str(run / "report.json")]


@mistake
def simulate_resume_with_more_rounds(b):
    run = b.run()
    args = ["simulate", "--out", str(run), "--resume", "--set", "federation.rounds=40"]
    return args, ["--extend-to 40"]


@mistake
def simulate_extend_to_fewer_rounds(b):
    run = b.run()
    return ["simulate", "--out", str(run), "--extend-to", "4"], ["--extend-to 4", str(run)]


@mistake
def simulate_extend_and_overwrite(b):
    run = b.run()
    args = ["simulate", "--out", str(run), "--extend-to", "40", "--overwrite"]
    return args, ["--extend-to", "--overwrite"]


@mistake
def simulate_extend_an_empty_folder(b):
    run = b.folder("run")
    return ["simulate", "--out", str(run), "--extend-to", "40"], [str(run)]


@mistake
def simulate_extend_a_run_whose_checkpoint_is_not_one(b):
    run = b.run()  # its checkpoint.npz holds a few bytes of text
    return ["simulate", "--out", str(run), "--extend-to", "40"], [str(run / "checkpoint.npz")]


@mistake
def simulate_extend_with_another_setting(b):
    run = b.run()
    args = ["simulate", "--out", str(run), "--extend-to", "40", "--set", "train.lr=0.5"]
    return args, ["--extend-to", "--set"]


@mistake
def simulate_into_a_finished_run(b):
    run = b.run()
    return ["simulate", "--out", str(run)], [str(run), "--overwrite"]


@mistake
def simulate_into_an_unfinished_run(b):
    run = b.run(finished=False)
    return ["simulate", "--out", str(run)], [str(run), "--resume"]


@mistake
def simulate_out_is_a_file(b):
    out = b.file("run.txt", "a file")
    return ["simulate", "--out", str(out)], [str(out)]


@mistake
def simulate_overwrite_with_an_unknown_strategy(b):
    run = b.run()
    args = ["simulate", "--out", str(run), "--overwrite", "--set", "federation.strategy=fedfoo"]
    return args, ["fedfoo"]


@mistake
def simulate_overwrite_with_a_missing_config(b):
    run = b.run()
    missing = b.path("typo.yaml")
    return ["simulate", "--out", str(run), "--overwrite", "--config", str(missing)], [str(missing)]


@mistake
def simulate_overwrite_with_a_bad_value(b):
    run = b.run()
    return ["simulate", "--out", str(run), "--overwrite", "--set", "train.lr=-1"], ["'train.lr'"]


@mistake
def simulate_unknown_strategy(b):
    run = b.path("run")
    return ["simulate", "--out", str(run), "--set", "federation.strategy=fedfoo"], ["fedfoo"]


@mistake
def simulate_misspelled_mode(b):
    run = b.path("run")
    args = ["simulate", "--out", str(run), "--set", "federation.mode=centralised"]
    return args, ["'federation.mode'"]


@mistake
def simulate_misspelled_flag(b):
    run = b.run()
    return ["simulate", "--out", str(run), "--overwite"], ["--overwite", "--overwrite"]


@mistake
def simulate_out_empty_path(b):
    return ["simulate", "--out", ""], ["--out"]


@mistake
def simulate_out_missing(b):
    return ["simulate"], ["--out"]


# ---------------------------------------------------------------------------------------------
# crossfit


@mistake
def crossfit_run_missing(b):
    run = b.path("run")
    return ["crossfit", str(run), "--out", str(b.path("cf"))], [str(run), "evaluation_set.npz"]


@mistake
def crossfit_run_not_prepared(b):
    run = b.folder("run")
    return ["crossfit", str(run), "--out", str(b.path("cf"))], [str(run), "evaluation_set.npz"]


@mistake
def crossfit_out_is_a_file(b):
    run = b.folder("run")
    out = b.file("crossfit.md", "old table")
    return ["crossfit", str(run), "--out", str(out)], [str(out)]


@mistake
def crossfit_train_sizes_not_numbers(b):
    run = b.folder("run")
    return ["crossfit", str(run), "--out", str(b.path("cf")), "--train-sizes", "32,many"], [
        "--train-sizes",
        "many",
    ]


# ---------------------------------------------------------------------------------------------
# task-privacy


@mistake
def task_privacy_run_not_prepared(b):
    run = b.folder("run")
    return ["task-privacy", str(run), "--out", str(b.path("tp"))], [str(run), "evaluation_set.npz"]


@mistake
def task_privacy_out_is_a_file(b):
    run = b.folder("run")
    out = b.file("task_privacy.md", "old table")
    return ["task-privacy", str(run), "--out", str(out)], [str(out)]


# ---------------------------------------------------------------------------------------------
# discriminant


@mistake
def discriminant_run_not_a_run_folder(b):
    run = b.folder("run")
    return ["discriminant", str(run), "--out", str(b.path("d"))], [str(run), "config.yaml"]


@mistake
def discriminant_shrinkage_not_numbers(b):
    run = b.folder("run")
    return ["discriminant", str(run), "--out", str(b.path("d")), "--shrinkage", "0.1,lots"], [
        "--shrinkage",
        "lots",
    ]


@mistake
def discriminant_shrinkage_above_one(b):
    run = b.folder("run")
    return ["discriminant", str(run), "--out", str(b.path("d")), "--shrinkage", "0.1,2"], ["2"]


@mistake
def discriminant_out_is_a_file(b):
    run = b.folder("run")
    out = b.file("discriminant.md", "old table")
    return ["discriminant", str(run), "--out", str(out)], [str(out)]


# ---------------------------------------------------------------------------------------------
# frontier


REPORT = {
    "baseline": {"privacy_cmap": 60.0, "ar_top1": 98.0},
    "anonymized": {"privacy_cmap": 40.0, "ar_top1": 97.0, "round": 10},
    "privacy_reduction_rel": 0.33,
}


def report_run(b, name: str, report: str | None = None) -> Path:
    import json

    run = b.folder(name)
    (run / "report.json").write_text(json.dumps(REPORT) if report is None else report)
    return run


@mistake
def frontier_without_report(b):
    run = b.folder("run")
    return ["frontier", str(run), "--out", str(b.path("f"))], [str(run), "report.json"]


@mistake
def frontier_run_missing(b):
    run = b.path("run")
    return ["frontier", str(run), "--out", str(b.path("f"))], [str(run)]


@mistake
def frontier_empty_report(b):
    run = report_run(b, "run", "{}")
    return ["frontier", str(run), "--out", str(b.path("f"))], [str(run / "report.json")]


@mistake
def frontier_report_not_json(b):
    run = report_run(b, "run", "<html>")
    return ["frontier", str(run), "--out", str(b.path("f"))], [str(run / "report.json")]


@mistake
def frontier_out_is_a_file(b):
    run = report_run(b, "run")
    out = b.file("frontier.md", "old table")
    return ["frontier", str(run), "--out", str(out)], [str(out)]


@mistake
def frontier_keeps_the_old_table_when_a_run_is_bad(b):
    good = report_run(b, "good")
    bad = b.folder("bad run")
    out = b.folder("frontier")
    (out / "frontier.md").write_text("old table\n")
    return ["frontier", str(good), str(bad), "--out", str(out)], [str(bad)]


@mistake
def frontier_no_runs(b):
    return ["frontier", "--out", str(b.path("f"))], ["runs"]


# ---------------------------------------------------------------------------------------------
# seeds (a bad run folder is refused before anything is written; server.seeds reads the real
# report layout in tests/server/test_seeds.py)


@mistake
def seeds_no_group(b):
    return ["seeds", "--out", str(b.path("s"))], ["--group"]


@mistake
def seeds_group_without_runs(b):
    return ["seeds", "--group", "w_lc 1", "--out", str(b.path("s"))], ["w_lc 1", "run folder"]


@mistake
def seeds_run_without_report(b):
    run = b.folder("run")
    return ["seeds", "--group", "a", str(run), "--out", str(b.path("s"))], [str(run)]


@mistake
def seeds_keeps_the_old_table_when_a_run_is_bad(b):
    good = report_run(b, "good")
    out = b.folder("seeds")
    (out / "seeds.md").write_text("old table\n")
    return ["seeds", "--group", "a", str(good), "--out", str(out)], [str(good)]


@mistake
def seeds_bad_within(b):
    run = b.folder("run")
    argv = ["seeds", "--group", "a", str(run), "--within", "ad:5", "--out", str(b.path("s"))]
    return argv, ["--within", "ad:5"]


# ---------------------------------------------------------------------------------------------
# ablate


@mistake
def ablate_unknown_variant(b):
    return ["ablate", "--out", str(b.path("a")), "--variants", "no_lc,no_budgte"], ["no_budgte"]


@mistake
def ablate_seen_not_evaluated(b):
    return ["ablate", "--out", str(b.path("a")), "--seen", "pose"], ["--seen", "'pose'"]


@mistake
def ablate_unknown_strategy(b):
    return ["ablate", "--out", str(b.path("a")), "--set", "federation.strategy=fedfoo"], ["fedfoo"]


@mistake
def ablate_out_is_a_file(b):
    out = b.file("ablation.md", "old table")
    return ["ablate", "--out", str(out)], [str(out)]


@mistake
def ablate_config_missing(b):
    path = b.path("ablate.yaml")
    return ["ablate", "--config", str(path), "--out", str(b.path("a"))], [str(path)]


# ---------------------------------------------------------------------------------------------
# export


@mistake
def export_nothing_to_do(b):
    return ["export"], ["--run"]


@mistake
def export_run_missing(b):
    run = b.path("run")
    return ["export", "--run", str(run), "--out", str(b.path("a"))], [str(run)]


@mistake
def export_not_a_run(b):
    run = b.folder("videos")
    return ["export", "--run", str(run), "--out", str(b.path("a"))], [str(run)]


@mistake
def export_run_without_adapter(b):
    run = b.run(finished=False)
    return ["export", "--run", str(run), "--out", str(b.path("a"))], ["adapter.npz"]


@mistake
def export_corrupt_adapter(b):
    run = b.edge_run(replace={"adapter.npz": np.random.default_rng(1).bytes(3000)})
    return ["export", "--run", str(run), "--out", str(b.path("a"))], [str(run / "adapter.npz")]


@mistake
def export_truncated_adapter(b):
    whole = (b.shared("edge_run") / "adapter.npz").read_bytes()
    run = b.edge_run(replace={"adapter.npz": whole[: len(whole) // 2]})
    return ["export", "--run", str(run), "--out", str(b.path("a"))], [str(run / "adapter.npz")]


@mistake
def export_adapter_saved_as_one_array(b):
    run = b.edge_run()
    with open(run / "adapter.npz", "wb") as handle:
        np.save(handle, np.zeros((4, 4), np.float32))
    return ["export", "--run", str(run), "--out", str(b.path("a"))], [str(run / "adapter.npz")]


@mistake
def export_adapter_of_another_config(b):
    run = b.edge_run()
    data = to_dict(load_config(run / "config.yaml"))
    data["anonymizer"]["layers"] = 3
    (run / "config.yaml").write_text(yaml.safe_dump(data))
    return ["export", "--run", str(run), "--out", str(b.path("a"))], [str(run / "adapter.npz")]


@mistake
def export_run_with_a_broken_config(b):
    run = b.edge_run(replace={"config.yaml": b"anonymizer: {layers: 2\n"})
    return ["export", "--run", str(run), "--out", str(b.path("a"))], [str(run / "config.yaml")]


@mistake
def export_without_out(b):
    return ["export", "--run", str(b.shared("edge_run"))], ["--out"]


@mistake
def export_over_an_artifact_without_overwrite(b):
    out = b.artifact()
    return ["export", "--run", str(b.shared("edge_run")), "--out", str(out)], [
        str(out),
        "--overwrite",
    ]


@mistake
def export_out_is_a_file(b):
    out = b.file("artifact.onnx", "old model")
    return ["export", "--run", str(b.shared("edge_run")), "--out", str(out)], [str(out), "file"]


@mistake
def export_overwrite_a_file(b):
    out = b.file("artifact.onnx", "old model")
    args = ["export", "--run", str(b.shared("edge_run")), "--out", str(out), "--overwrite"]
    return args, [str(out), "file"]


@mistake
def export_overwrite_a_run_folder(b):
    run = b.run("precious run")
    args = ["export", "--run", str(b.shared("edge_run")), "--out", str(run), "--overwrite"]
    return args, [str(run)]


@mistake
def export_unknown_backend(b):
    args = ["export", "--run", str(b.shared("edge_run")), "--out", str(b.path("a"))]
    return [*args, "--backend", "tflite"], ["tflite"]


@mistake
def export_unknown_precision(b):
    args = ["export", "--run", str(b.shared("edge_run")), "--out", str(b.path("a"))]
    return [*args, "--backend", "torch", "--precision", "int4"], ["int4"]


@mistake
def export_zero_max_batch(b):
    args = ["export", "--run", str(b.shared("edge_run")), "--out", str(b.path("a"))]
    return [*args, "--backend", "torch", "--max-batch", "0"], ["--max-batch"]


@mistake
def export_negative_max_batch(b):
    args = ["export", "--run", str(b.shared("edge_run")), "--out", str(b.path("a"))]
    return [*args, "--backend", "torch", "--max-batch", "-8"], ["--max-batch"]


@mistake
def export_max_batch_not_a_number(b):
    args = ["export", "--run", str(b.shared("edge_run")), "--out", str(b.path("a"))]
    return [*args, "--max-batch", "many"], ["--max-batch", "'many'"]


@mistake
def export_verify_missing(b):
    folder = b.path("artifact")
    return ["export", "--verify", str(folder)], [str(folder)]


@mistake
def export_verify_not_an_artifact(b):
    folder = b.run()
    return ["export", "--verify", str(folder)], [str(folder), "metadata.json"]


@mistake
def export_verify_a_file(b):
    path = b.file("model.onnx", "onnx?")
    return ["export", "--verify", str(path)], [str(path)]


@mistake
def export_verify_tampered_model(b):
    folder = b.artifact()
    model = folder / "encoder.pt2"
    model.write_bytes(model.read_bytes()[:100])
    return ["export", "--verify", str(folder)], [str(model), "changed since export"]


@mistake
def export_verify_missing_model(b):
    folder = b.artifact()
    (folder / "adapter.pt2").unlink()
    return ["export", "--verify", str(folder)], [str(folder / "adapter.pt2"), "missing"]


@mistake
def export_verify_metadata_not_json(b):
    folder = b.artifact()
    (folder / "metadata.json").write_text("{'format': ")
    return ["export", "--verify", str(folder)], [str(folder / "metadata.json")]


@mistake
def export_verify_metadata_of_something_else(b):
    folder = b.artifact()
    (folder / "metadata.json").write_text('{"format": "onnx-zoo", "version": 1}')
    return ["export", "--verify", str(folder)], [str(folder / "metadata.json")]


@mistake
def export_verify_metadata_cut_down(b):
    folder = b.artifact()
    (folder / "metadata.json").write_text('{"format": "latentveil-edge-artifact", "version": 1}')
    return ["export", "--verify", str(folder)], [str(folder / "metadata.json")]


@mistake
def export_verify_newer_artifact(b):
    import json

    folder = b.artifact()
    metadata = json.loads((folder / "metadata.json").read_text())
    (folder / "metadata.json").write_text(json.dumps({**metadata, "version": 99}))
    return ["export", "--verify", str(folder)], [str(folder), "version"]


@mistake
def export_verify_without_reference(b):
    folder = b.artifact()
    (folder / "reference.npz").unlink()
    return ["export", "--verify", str(folder)], [str(folder / "reference.npz")]


@mistake
def export_swap_into_a_non_artifact(b):
    folder = b.folder("edge")
    return ["export", "--run", str(b.shared("edge_run")), "--swap", str(folder)], [str(folder)]


@mistake
def export_swap_encoder_only(b):
    args = ["export", "--run", str(b.shared("edge_run")), "--swap", str(b.artifact())]
    return [*args, "--encoder-only"], ["--encoder-only"]


@mistake
def export_swap_an_adapter_of_another_encoder(b):
    other = make_run(b.path("other run"), encoder_seed=1)
    folder = b.artifact()
    return ["export", "--run", str(other), "--swap", str(folder)], [str(folder), "encoder"]


# ---------------------------------------------------------------------------------------------
# anonymize


def anonymize_args(b, *inputs: Path, more: tuple[str, ...] = (), out: Path | None = None):
    out = b.path("anonymized.h5") if out is None else out
    artifact = b.shared("artifact")
    return ["anonymize", *map(str, inputs), "--artifact", str(artifact), "--out", str(out), *more]


@mistake
def anonymize_input_missing(b):
    video = b.path("clip.mp4")
    return anonymize_args(b, video), [str(video)]


@mistake
def anonymize_empty_folder(b):
    folder = b.folder("camera")
    return anonymize_args(b, folder), [str(folder)]


@mistake
def anonymize_text_file_named_mp4(b):
    video = b.file("clip.mp4", "not a video")
    return anonymize_args(b, video), [str(video)]


@mistake
def anonymize_random_bytes(b):
    video = b.junk("clip.mp4")
    return anonymize_args(b, video), [str(video)]


@mistake
def anonymize_truncated(b):
    video = b.truncated("clip.mp4")
    return anonymize_args(b, video), [str(video), "--allow-partial"]


@mistake
def anonymize_shorter_than_a_clip(b):
    video = b.video("short.mp4", frames=10)
    return anonymize_args(b, video), [str(video)]


@mistake
def anonymize_image_only_folder(b):
    first = b.image("stills/a.png")
    b.image("stills/b.jpg")
    return anonymize_args(b, first.parent), [str(first.parent)]


@mistake
def anonymize_duplicate_ids(b):
    first = b.video("cam1/clip.mp4")
    second = b.video("cam2/clip.mp4", seed=2)
    return anonymize_args(b, first.parent, second.parent), [str(first), str(second)]


@mistake
def anonymize_the_same_file_twice(b):
    video = b.video("clip.mp4")
    return anonymize_args(b, video, video), [str(video)]


@mistake
def anonymize_artifact_missing(b):
    video = b.video("clip.mp4")
    artifact = b.path("edge")
    args = ["anonymize", str(video), "--artifact", str(artifact), "--out", str(b.path("a.h5"))]
    return args, [str(artifact)]


@mistake
def anonymize_artifact_not_an_artifact(b):
    video = b.video("clip.mp4")
    artifact = b.run()
    args = ["anonymize", str(video), "--artifact", str(artifact), "--out", str(b.path("a.h5"))]
    return args, [str(artifact)]


@mistake
def anonymize_artifact_a_file(b):
    video = b.video("clip.mp4")
    artifact = b.file("model.onnx", "onnx?")
    args = ["anonymize", str(video), "--artifact", str(artifact), "--out", str(b.path("a.h5"))]
    return args, [str(artifact)]


@mistake
def anonymize_tampered_artifact(b):
    video = b.video("clip.mp4")
    artifact = b.artifact()
    (artifact / "adapter.pt2").write_bytes(b"\0" * 64)
    args = ["anonymize", str(video), "--artifact", str(artifact), "--out", str(b.path("a.h5"))]
    return args, [str(artifact / "adapter.pt2")]


@mistake
def anonymize_with_an_encoder_only_artifact(b):
    import json

    video = b.video("clip.mp4")
    artifact = b.artifact()
    metadata = json.loads((artifact / "metadata.json").read_text())
    metadata["adapter"] = None
    del metadata["parts"]["adapter"]
    (artifact / "metadata.json").write_text(json.dumps(metadata))
    args = ["anonymize", str(video), "--artifact", str(artifact), "--out", str(b.path("a.h5"))]
    return args, ["encoder-only", "--raw"]


@mistake
def anonymize_window_zero(b):
    return anonymize_args(b, b.video("clip.mp4"), more=("--window", "0")), ["--window"]


@mistake
def anonymize_window_negative(b):
    return anonymize_args(b, b.video("clip.mp4"), more=("--window", "-2")), ["--window"]


@mistake
def anonymize_window_beyond_the_artifact(b):
    return anonymize_args(b, b.video("clip.mp4"), more=("--window", "9")), ["--window", "1..4"]


@mistake
def anonymize_window_not_a_number(b):
    args = anonymize_args(b, b.video("clip.mp4"), more=("--window", "all"))
    return args, ["--window", "'all'"]


@mistake
def anonymize_out_is_a_folder(b):
    out = b.folder("features")
    return anonymize_args(b, b.video("clip.mp4"), out=out), [str(out), "folder"]


@mistake
def anonymize_out_under_a_file(b):
    notes = b.file("notes.txt", "my notes")
    return anonymize_args(b, b.video("clip.mp4"), out=notes / "a.h5"), [str(notes)]


@mistake
def anonymize_into_a_raw_store(b):
    video = b.video("clip.mp4")
    out = b.path("features.h5")
    assert main([*anonymize_args(b, video, out=out, more=("--raw",)), "--quiet"]) == 0
    return anonymize_args(b, video, out=out), [str(out)]


@mistake
def anonymize_path_with_spaces(b):
    video = b.junk("camera 1/clip one.mp4")
    return anonymize_args(b, video.parent, out=b.path("my features.h5")), [str(video)]


@mistake
def anonymize_out_unwritable(b):
    folder = b.readonly("locked")
    return anonymize_args(b, b.video("clip.mp4"), out=folder / "a.h5"), [str(folder)]


@mistake
def anonymize_artifact_missing_flag(b):
    return ["anonymize", str(b.video("clip.mp4")), "--out", str(b.path("a.h5"))], ["--artifact"]


# ---------------------------------------------------------------------------------------------
# The command line itself


@mistake
def unknown_command(b):
    return ["simulte", "--out", str(b.path("run"))], ["'simulte'"]


@mistake
def config_misspelled_flag(b):
    return ["config", "--sett", "train.lr=1"], ["--sett", "--set"]


@mistake
def config_flag_of_another_command(b):
    return ["config", "--resume"], ["--resume", "latentveil simulate"]


# ---------------------------------------------------------------------------------------------
# The check every case goes through


def snapshot(roots: list[Path]) -> tuple[dict[Path, bytes], set[Path]]:
    """Every file's bytes and every folder under `roots`."""
    files: dict[Path, bytes] = {}
    folders: set[Path] = set()
    for root in roots:
        for path in [root, *root.rglob("*")]:
            if path.is_dir() and not path.is_symlink():
                folders.add(path)
            elif path.is_file():
                files[path] = path.read_bytes()
    return files, folders


def test_the_corpus_is_large_and_its_names_are_unique():
    names = [case.name for case in CASES]
    assert len(names) >= 80
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_a_mistake_ends_in_one_clear_line_and_damages_nothing(
    case, tmp_path, request, monkeypatch, capsys
):
    bench = Bench(tmp_path, request)
    argv, names = case.build(bench)
    command = argv[0] if argv[0] in COMMANDS else ""
    if command in QUIET:
        argv = [*argv, "--quiet"]
    monkeypatch.chdir(tmp_path)  # a relative-path accident lands where it is checked
    files, folders = snapshot(bench.watched)
    capsys.readouterr()

    def tripwire(what: str) -> Callable[..., None]:
        def refuse(*args: object, **kwargs: object) -> None:
            raise ReachedHeavyWork(f"the mistake was not caught before {what}")

        return refuse

    for target, what in TRIPWIRES.items():
        monkeypatch.setattr(target, tripwire(what))
    try:
        code = main(argv)
    except ReachedHeavyWork as error:
        pytest.fail(f"[heavy work] {error}")
    except SystemExit as error:  # argparse's own exit
        code = error.code
    except Exception as error:
        pytest.fail(f"[traceback] {type(error).__name__}: {error}")
    err = capsys.readouterr().err
    after_files, after_folders = snapshot(bench.watched)

    assert code != 0, f"[exit 0] {err}"
    changed = sorted(str(p) for p, data in files.items() if after_files.get(p) != data)
    assert not changed, f"[damaged] changed or removed: {changed}"
    new = sorted(str(p) for p in (set(after_files) | after_folders) - set(files) - folders)
    assert not new, f"[littered] left behind: {new}"
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err, f"[multi-line] {err}"
    prefix = f"latentveil {command}: error: " if command else "latentveil: error: "
    assert lines[0].startswith(prefix), f"[unclear] {lines[0]}"
    missing = [name for name in names if name not in lines[0]]
    assert not missing, f"[unclear] does not name {missing}: {lines[0]}"
