"""Video and still-image reading, clip sampling and encoder preprocessing.

The public names live here; `common.video.decode` holds the reading contract and its decoders.
"""

from __future__ import annotations

from common.video.decode import (
    BACKENDS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    BackendChoice,
    VideoError,
    VideoInfo,
    choose_backend,
    clear_video_cache,
    clip_frame_indices,
    clip_starts,
    eval_clip_starts,
    preprocess_clips,
    preprocess_frames,
    probe_video,
    read_frames,
    static_clip,
    static_frame_indices,
)

__all__ = [
    "BACKENDS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
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
