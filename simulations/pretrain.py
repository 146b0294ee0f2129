"""Pre-train the built-in tiny3d encoder on a disjoint synthetic pre-training world.

A randomly initialised 3D CNN hardly encodes actions (EXPERIMENTS.md: AR 17%), so the built-in
encoder ships pre-trained, like the paper's Kinetics-pretrained encoders. It is trained here,
supervised on actions and private attributes together, on a world made with
purpose="pretrain": its cameras, people and motions come from another seed stream than the
client sites and the central evaluation world, so no evaluation video is ever seen.

    latentveil pretrain-encoder --world runs/pretrain_world --out common/checkpoints/tiny3d.pt

After training, the encoder's output is standardised: the mean and standard deviation of its
features over the pre-training clips are folded into its last Linear layer, so every site and
every edge device sees features of one fixed scale (the w_LC weight depends on it).
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from common.atomic import atomic_write_text, output_file
from common.encoders import Tiny3DNet, save_tiny3d
from common.errors import LatentveilError
from common.metrics import class_mean_average_precision, top1_accuracy
from common.video import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    preprocess_clips,
    preprocess_frames,
    read_frames,
    static_clip,
)
from simulations.world import ACTIONS, ATTRIBUTES, PRESETS, generate_world, load_world


class PretrainError(LatentveilError):
    """A pre-training recipe or output path that cannot work."""


@dataclass(frozen=True)
class PretrainConfig:
    """The recipe of the built-in encoder (recorded in its checkpoint)."""

    world_preset: str = "default"
    world_seed: int = 0
    dim: int = 256
    frame_size: int = 64
    clip_len: int = 16
    widths: tuple[int, ...] = (16, 32, 64, 128)
    pooling: str = "avgmax"
    epochs: int = 12
    batch_size: int = 32
    # Attributes weigh 3x: with equal weights actions dominate and fine attributes (face
    # partly covered, skin tone) stay weak in the features (a feasibility check: cMAP 68 -> 78).
    attribute_weight: float = 3.0
    lr: float = 2e-3
    weight_decay: float = 0.05
    seed: int = 0
    threads: int = 2

    def __post_init__(self) -> None:
        # Checked here, not minutes later: a bad value would otherwise surface only after the
        # pre-training world was generated and decoded.
        minimums = {"epochs": 1, "batch_size": 1, "seed": 0, "world_seed": 0, "threads": 1}
        # tiny3d halves the frame three times (64 px ends at 8 x 8)
        minimums.update(frame_size=8, clip_len=1, dim=1)
        for name, minimum in minimums.items():
            value = getattr(self, name)
            if not value >= minimum:
                raise PretrainError(f"pre-training {name} must be at least {minimum}, not {value}")
        if self.world_preset not in PRESETS:
            raise PretrainError(
                f"unknown world preset {self.world_preset!r}; choose one of {sorted(PRESETS)}"
            )


class PretrainModel(nn.Module):
    """tiny3d plus the linear heads it is supervised through (dropped after training)."""

    def __init__(self, config: PretrainConfig) -> None:
        super().__init__()
        self.encoder = Tiny3DNet(
            dim=config.dim,
            widths=config.widths,
            pooling=config.pooling,
            clip_len=config.clip_len,
            frame_size=config.frame_size,
        )
        self.action_head = nn.Linear(config.dim, len(ACTIONS))
        self.attribute_head = nn.Linear(config.dim, len(ATTRIBUTES))


def _load_split(
    world, dataset: str, split: str, size: int, progress: bool
) -> tuple[list[np.ndarray], list[dict]]:
    """Decode every file of a split, resized once to the encoder's input size (uint8)."""
    entries = world.manifest(dataset, "pretrain", split)
    frames = []
    bar = tqdm(
        entries, desc=f"decode {dataset}/{split}", unit="file", leave=False, disable=not progress
    )
    for entry in bar:
        video = read_frames(world.path(entry), list(range(entry["num_frames"])))  # (F, H, W, 3)
        frames.append(_resize(video, size))
    return frames, entries


def _resize(frames: np.ndarray, size: int) -> np.ndarray:
    """(F, H, W, 3) uint8 -> (F, size, size, 3) uint8 with the extraction's resize and crop."""
    x = preprocess_frames(frames, size, None, (0.0, 0.0, 0.0), (1.0 / 255,) * 3)  # (F, 3, S, S)
    return x.permute(0, 2, 3, 1).round().clamp(0, 255).to(torch.uint8).numpy()


def _attributes(entries: list[dict]) -> np.ndarray:
    return np.array([[e["attributes"][a] for a in ATTRIBUTES] for e in entries], dtype=np.float32)


def _to_input(clips: np.ndarray, config: PretrainConfig) -> torch.Tensor:
    """uint8 clips (N, T, H, W, 3) -> normalised (N, 3, T, S, S), as extraction will see them."""
    return preprocess_clips(clips, config.frame_size, None, IMAGENET_MEAN, IMAGENET_STD)


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Small random shifts and brightness/contrast changes, shared by all frames of a clip.

    No horizontal flip: it would turn walk_left into walk_right.
    """
    n = x.shape[0]
    shifts = torch.randint(-4, 5, (n, 2), generator=generator)
    out = torch.stack([torch.roll(x[i], tuple(shifts[i].tolist()), dims=(2, 3)) for i in range(n)])
    gain = 1.0 + 0.2 * (torch.rand(n, 1, 1, 1, 1, generator=generator) - 0.5)
    bias = 0.2 * (torch.rand(n, 1, 1, 1, 1, generator=generator) - 0.5)
    return out * gain + bias


def _action_clips(videos: list[np.ndarray], clip_len: int, rng: np.random.Generator) -> np.ndarray:
    """One random window of clip_len frames from each video -> (N, T, H, W, 3)."""
    starts = [int(rng.integers(0, len(v) - clip_len + 1)) for v in videos]
    return np.stack([v[s : s + clip_len] for v, s in zip(videos, starts, strict=True)])


def _static_clips(frames: list[np.ndarray], clip_len: int, rng: np.random.Generator) -> np.ndarray:
    """One random frame of each item tiled into a static clip -> (N, T, H, W, 3)."""
    picks = [f[int(rng.integers(0, len(f)))] for f in frames]
    return np.stack([static_clip(p, clip_len) for p in picks])


def _encode(
    net: Tiny3DNet, clips: np.ndarray, config: PretrainConfig, batch: int = 64
) -> torch.Tensor:
    net.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(clips), batch):
            out.append(net(_to_input(clips[start : start + batch], config)))
    return torch.cat(out)  # (N, d)


def _evaluate(
    model: PretrainModel, val: dict[str, Any], config: PretrainConfig
) -> dict[str, float]:
    """Validation action top-1 (first clip) and attribute cMAP on static clips of still frames."""
    action_features = _encode(model.encoder, val["action_clips"], config)
    static_features = _encode(model.encoder, val["static_clips"], config)
    with torch.no_grad():
        action_logits = model.action_head(action_features).numpy()
        attribute_scores = model.attribute_head(static_features).numpy()
    return {
        "val_action_top1": top1_accuracy(action_logits, val["actions"]),
        "val_attribute_cmap": class_mean_average_precision(
            attribute_scores, val["static_attributes"]
        ),
    }


def _fold_standardization(net: Tiny3DNet, features: torch.Tensor) -> dict[str, float]:
    """Make the net's output zero-mean and unit-variance per feature over `features`."""
    mean = features.mean(0)
    std = features.std(0).clamp_min(1e-4)
    with torch.no_grad():
        net.projection.weight.div_(std[:, None])
        net.projection.bias.sub_(mean).div_(std)
    return {"mean_abs_mean": float(mean.abs().mean()), "mean_std": float(std.mean())}


def pretrain_encoder(
    world_dir: str | Path,
    out_path: str | Path,
    config: PretrainConfig = PretrainConfig(),
    progress: bool = True,
    command: str = "",
) -> dict[str, Any]:
    """Generate the pre-training world if needed, train tiny3d on it, save the checkpoint.

    Returns the recipe and validation metrics, also stored in the checkpoint's meta and in a
    JSON file beside it (`<out>.json`, with the checkpoint's SHA-256).
    """
    started = time.time()
    out_path = output_file(out_path)  # a folder given as --out fails now, not after training
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed)

    # 1. The disjoint pre-training world, decoded into memory (a few hundred MB at 96 px).
    root = generate_world(
        world_dir,
        preset=config.world_preset,
        seed=config.world_seed,
        purpose="pretrain",
        progress=progress,
    )
    world = load_world(root)
    train_videos, train_entries = _load_split(world, "ar", "train", config.frame_size, progress)
    train_stills, train_still_entries = _load_split(
        world, "privacy", "train", config.frame_size, progress
    )
    val_videos, val_entries = _load_split(world, "ar", "val", config.frame_size, progress)
    val_stills, val_still_entries = _load_split(
        world, "privacy", "val", config.frame_size, progress
    )
    train_actions = torch.tensor([e["labels"]["action"] for e in train_entries])
    train_attributes = torch.from_numpy(_attributes(train_entries))
    still_attributes = torch.from_numpy(_attributes(train_still_entries))
    val_rng = np.random.default_rng(12345)
    val = {
        "action_clips": _action_clips(val_videos, config.clip_len, val_rng),
        "actions": np.array([e["labels"]["action"] for e in val_entries]),
        "static_clips": _static_clips(val_stills, config.clip_len, val_rng),
        "static_attributes": _attributes(val_still_entries),
    }

    # 2. Joint supervision: actions on real clips; attributes on real clips, static clips of
    #    training videos and static clips of still frames (the attacker's view at evaluation).
    model = PretrainModel(config)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    steps_per_epoch = math.ceil(len(train_videos) / config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, config.lr, total_steps=total_steps, pct_start=0.1
    )
    history = []
    bar = tqdm(total=total_steps, desc="pretrain tiny3d", unit="step", disable=not progress)
    for epoch in range(config.epochs):
        model.train()
        order = rng.permutation(len(train_videos))
        still_order = rng.permutation(len(train_stills))
        running = []
        for step in range(steps_per_epoch):
            index = order[step * config.batch_size : (step + 1) * config.batch_size]
            still_index = still_order[(step * config.batch_size) % len(still_order) :][: len(index)]
            clips = _action_clips([train_videos[i] for i in index], config.clip_len, rng)
            statics = _static_clips(
                [train_videos[i] for i in index[: len(index) // 2]], config.clip_len, rng
            )
            stills = _static_clips([train_stills[i] for i in still_index], config.clip_len, rng)
            x = _augment(_to_input(np.concatenate([clips, statics, stills]), config), generator)
            features = model.encoder(x)  # (B + B/2 + B', d)
            n, m = len(index), len(index) // 2
            action_loss = F.cross_entropy(model.action_head(features[:n]), train_actions[index])
            attribute_targets = torch.cat(
                [
                    train_attributes[index],
                    train_attributes[index[:m]],
                    still_attributes[still_index],
                ]
            )
            attribute_loss = F.binary_cross_entropy_with_logits(
                model.attribute_head(features), attribute_targets
            )
            loss = action_loss + config.attribute_weight * attribute_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            running.append((action_loss.item(), attribute_loss.item()))
            bar.update(1)
        metrics = _evaluate(model, val, config)
        metrics.update(
            epoch=epoch,
            action_loss=float(np.mean([r[0] for r in running])),
            attribute_loss=float(np.mean([r[1] for r in running])),
        )
        history.append(metrics)
        bar.set_postfix(
            ar=f"{metrics['val_action_top1']:.1f}", cmap=f"{metrics['val_attribute_cmap']:.1f}"
        )
    bar.close()

    # 3. Standardise the output on the pre-training clips and save the encoder alone.
    net = model.encoder.eval()
    calibration = np.concatenate(
        [
            _action_clips(train_videos, config.clip_len, rng),
            _static_clips(train_stills, config.clip_len, rng),
        ]
    )
    scale = _fold_standardization(net, _encode(net, calibration, config))
    recipe = {
        "command": command,
        "config": asdict(config),
        "world": {"purpose": "pretrain", "preset": config.world_preset, "seed": config.world_seed},
        "final": history[-1],
        "history": history,
        "standardization": scale,
        "seconds": round(time.time() - started, 1),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    save_tiny3d(net, out_path, extra_meta=recipe)
    sha = hashlib.sha256(out_path.read_bytes()).hexdigest()
    summary = {
        "sha256": sha,
        "bytes": out_path.stat().st_size,
        **{k: v for k, v in recipe.items() if k != "history"},
    }
    atomic_write_text(out_path.with_suffix(".json"), json.dumps(summary, indent=2) + "\n")
    return summary
