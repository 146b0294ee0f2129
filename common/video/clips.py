"""Clip sampling: which frame indices make the clips of a video (pure functions of frame counts).

A clip is `clip_len` frames `stride` apart; `clip_starts` cuts a video into training clips,
`eval_clip_starts` picks evenly spaced evaluation clips, and `static_frame_indices` picks the
frames that `static_clip` tiles into static clips (one frame repeated, no motion), the view an
attacker gets of a still image.
"""

from __future__ import annotations

import numpy as np

from common.video.decode import VideoError


def _span(clip_len: int, stride: int) -> int:
    """Frames from a clip's first to its last frame, inclusive."""
    if clip_len < 1 or stride < 1:
        raise ValueError(f"clip_len and stride must be >= 1, got {clip_len} and {stride}")
    return (clip_len - 1) * stride + 1


def _require_one_clip(num_frames: int, clip_len: int, stride: int, source: str | None) -> int:
    span = _span(clip_len, stride)
    if num_frames < span:
        where = f"{source}: " if source else ""
        raise VideoError(
            f"{where}video of {num_frames} frames is shorter than one clip "
            f"({clip_len} frames at stride {stride} span {span} frames)"
        )
    return span


def clip_starts(
    num_frames: int, clip_len: int = 16, stride: int = 1, step: int = 16, source: str | None = None
) -> list[int]:
    """First-frame indices of all full clips, `step` frames apart, starting at frame 0.

    A clip covers frames start + i * stride for i < clip_len; only clips that fit entirely are
    returned. The defaults give non-overlapping 16-frame clips. `source` (a file name) is put in
    the VideoError raised when not even one clip fits.
    """
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    span = _require_one_clip(num_frames, clip_len, stride, source)
    return list(range(0, num_frames - span + 1, step))


def clip_frame_indices(start: int, clip_len: int = 16, stride: int = 1) -> np.ndarray:
    """Frame indices of the clip starting at `start`: int64 (clip_len,)."""
    _span(clip_len, stride)
    return start + stride * np.arange(clip_len, dtype=np.int64)


def eval_clip_starts(
    num_frames: int, n: int = 5, clip_len: int = 16, stride: int = 1, source: str | None = None
) -> list[int]:
    """`n` evenly spaced clip starts from the first to the last full clip (n=1: the middle one).

    Short videos repeat starts rather than return fewer clips, so every video gives exactly n.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    span = _require_one_clip(num_frames, clip_len, stride, source)
    last_start = num_frames - span
    if n == 1:
        return [last_start // 2]
    # floor(x + 0.5) rounds halves up, unlike np.round's round-half-to-even.
    return [int(np.floor(x + 0.5)) for x in np.linspace(0, last_start, n)]


def static_frame_indices(num_frames: int, k: int, source: str | None = None) -> list[int]:
    """`k` evenly spaced frame indices: the middle frame of each of k equal segments."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if num_frames < 1:
        where = f"{source}: " if source else ""
        raise VideoError(f"{where}video has no frames to take static frames from")
    return [int((2 * i + 1) * num_frames // (2 * k)) for i in range(k)]


def static_clip(frame: np.ndarray, clip_len: int = 16) -> np.ndarray:
    """One frame (H, W, 3) tiled into a static clip (clip_len, H, W, 3) (a writable copy)."""
    if frame.ndim != 3 or frame.shape[-1] != 3:
        raise ValueError(f"frame must have shape (H, W, 3), got {frame.shape}")
    if clip_len < 1:
        raise ValueError(f"clip_len must be >= 1, got {clip_len}")
    return np.repeat(frame[None], clip_len, axis=0)  # (clip_len, H, W, 3)
