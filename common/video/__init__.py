"""Video and still-image reading, clip sampling and encoder preprocessing, one module per job.

- `common.video.decode`: `read_frames` / `probe_video`, exact RGB frames by index (the reading
  contract and the decoders behind it, PyAV and decord).
- `common.video.clips`: which frame indices make a video's clips, evaluation clips and static
  clips (pure functions of frame counts).
- `common.video.preprocess`: uint8 frames to normalised encoder input; `IMAGENET_MEAN` / `_STD`.

Import the public names from here (`from common.video import read_frames`).
"""

from __future__ import annotations

from common.video.clips import (
    clip_frame_indices,
    clip_starts,
    eval_clip_starts,
    static_clip,
    static_frame_indices,
)
from common.video.decode import (
    BACKENDS,
    IMAGE_SUFFIXES,
    BackendChoice,
    VideoError,
    VideoInfo,
    choose_backend,
    clear_video_cache,
    probe_video,
    read_frames,
)
from common.video.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    preprocess_clips,
    preprocess_frames,
)

__all__ = [
    "BACKENDS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_SUFFIXES",
    "BackendChoice",
    "VideoError",
    "VideoInfo",
    "choose_backend",
    "clear_video_cache",
    "clip_frame_indices",
    "clip_starts",
    "eval_clip_starts",
    "preprocess_clips",
    "preprocess_frames",
    "probe_video",
    "read_frames",
    "static_clip",
    "static_frame_indices",
]
