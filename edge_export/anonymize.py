"""`latentveil anonymize`: videos in, anonymized clip features out, through an edge artifact.

Each video is decoded and cut into non-overlapping clips exactly as the feature store does
(`common.features.extract_features`, so the clips equal the ones the adapter was trained on),
the clips of many videos are encoded together by the artifact's encoder part, and each video's
clip features are then anonymized by its adapter part in consecutive windows of `window` clips.
Its static clips (single frames tiled) are anonymized as sequences of one clip.

The output is a feature store (resumable, atomic, one entry per video) whose attributes record
the adapter hash and window (`anonymized`) and the backend; raw features are written only when
asked (`raw=True`). A file that cannot be decoded, is truncated, or is shorter than one clip (a
still image among them) is skipped and reported, and the others are done.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from common.config import FeaturesConfig
from common.features import FeatureStoreError, VideoItem, extract_features, find_videos
from common.video import IMAGE_SUFFIXES
from edge_export.artifact import EdgeArtifactError, EdgeRuntime


def collect_videos(inputs: Sequence[str | Path]) -> list[VideoItem]:
    """The videos (and images) named: files as they are, folders searched recursively."""
    items: list[VideoItem] = []
    for entry in inputs:
        items += find_videos(entry)
    if not items:
        raise FeatureStoreError(f"no videos or images found in {', '.join(map(str, inputs))}")
    return items


def anonymized_mark(runtime: EdgeRuntime, window: int) -> str:
    """What a store of this artifact's anonymized features records: adapter hash and window."""
    return f"{runtime.adapter_hash}/window={window}"


def anonymize_videos(
    items: Sequence[VideoItem],
    runtime: EdgeRuntime,
    out: str | Path,
    *,
    window: int | None = None,
    raw: bool = False,
    dtype: str = "float32",
    batch_size: int = 32,
    allow_partial: bool = False,
    progress: bool = True,
) -> list[tuple[str, str]]:
    """Write the anonymized features of `items` to the store `out`; return the skipped
    (video id, reason) pairs. `raw=True` writes the encoder's features instead."""
    if not raw and not runtime.has_adapter:
        raise EdgeArtifactError(
            f"artifact {runtime.folder} is encoder-only: it can write raw features (--raw) but "
            "not anonymized ones; export one from a run folder"
        )
    window = runtime.window if window is None else window  # 0 is a mistake, not "default"
    if not 1 <= window <= runtime.window:
        raise EdgeArtifactError(
            f"--window {window} is outside the artifact's 1..{runtime.window} clips (its "
            "adapter was trained and exported for windows of at most that)"
        )
    config = FeaturesConfig(
        clip_step=runtime.clip_len, eval_clips=0, dtype=dtype, batch_size=batch_size
    )

    def anonymize(name: str, features: np.ndarray) -> np.ndarray:
        if len(features) == 0:
            return features
        if name == "clip_features":
            return runtime.anonymize_video(features, window).numpy()  # (n, d)
        return runtime.anonymize(features[:, None, :]).numpy()[:, 0]  # each clip alone

    # A still image is one frame, shorter than one clip: reported like a too-short video.
    videos, skipped = [], []
    for item in items:
        if Path(item.path).suffix.lower() in IMAGE_SUFFIXES:
            skipped.append((item.video_id, f"{item.path}: a still image has no clip to anonymize"))
        else:
            videos.append(item)
    if not videos:
        return skipped
    return skipped + extract_features(
        videos,
        runtime.clip_encoder(),
        out,
        config,
        progress=progress,
        on_error="skip",
        transform=None if raw else anonymize,
        anonymized="" if raw else anonymized_mark(runtime, window),
        allow_partial=allow_partial,
    )
