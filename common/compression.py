"""Compressed updates: what a site sends instead of its float32 arrays.

A site's update is the difference between the arrays it trained and the arrays it received
(`delta = trained - received`). The delta is quantized and each array's bytes are deflated
(zlib, lossless); the server, which knows what it sent, decodes `received + delta` before it
screens and aggregates (server.federation). Methods:

- "none": the float32 arrays themselves (no delta);
- "fp16": float16 deltas;
- "int8": int8 deltas with one scale per array (max |delta| / 127);
- "int8-channel": int8 deltas with one scale per output channel (the first axis of every array
  of two or more dimensions; one scale for vectors).

Deltas of a round's training are small and concentrated around zero, which is why quantizing
the delta, not the weights, keeps the error small; deflating the int8 codes takes the update
below the 25% of float32 that 8-bit codes alone cannot reach once the scales are added.
Encoding is deterministic: the same update gives the same bytes.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping

import numpy as np

from common.errors import LatentveilError

METHODS: tuple[str, ...] = ("none", "fp16", "int8", "int8-channel")
LEVEL = 6  # zlib's default: most of the gain at a small cost


class CompressionError(LatentveilError, ValueError):
    """An encoded update that cannot be decoded against the arrays it was made from."""


def _scales(delta: np.ndarray, per_channel: bool) -> np.ndarray:
    if per_channel and delta.ndim >= 2:
        peak = np.abs(delta).reshape(delta.shape[0], -1).max(axis=1)
    else:
        peak = np.asarray(np.abs(delta).max() if delta.size else 0.0)
    return np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)


def _broadcast(scale: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return scale.reshape(scale.shape + (1,) * (len(shape) - scale.ndim)) if scale.ndim else scale


def encode(
    trained: Mapping[str, np.ndarray], received: Mapping[str, np.ndarray], method: str
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """`(payload, scales)` for `trained`, relative to `received`: per array name, the deflated
    codes as a uint8 vector and (int8 methods) the float32 scales."""
    if method not in METHODS or method == "none":
        raise CompressionError(f"cannot encode with method {method!r}; one of {METHODS[1:]}")
    payload: dict[str, np.ndarray] = {}
    scales: dict[str, np.ndarray] = {}
    for name, array in trained.items():
        delta = np.asarray(array, dtype=np.float32) - np.asarray(received[name], np.float32)
        if method == "fp16":
            codes = delta.astype(np.float16)
        else:
            scale = _scales(delta, per_channel=method == "int8-channel")
            codes = np.clip(np.rint(delta / _broadcast(scale, delta.shape)), -127, 127)
            codes = codes.astype(np.int8)
            scales[name] = scale
        raw = zlib.compress(np.ascontiguousarray(codes).tobytes(), LEVEL)
        payload[name] = np.frombuffer(raw, dtype=np.uint8)
    return payload, scales


def decode(
    payload: Mapping[str, np.ndarray],
    scales: Mapping[str, np.ndarray],
    received: Mapping[str, np.ndarray],
    method: str,
) -> dict[str, np.ndarray]:
    """The arrays a site trained, from its `payload` and `scales` and the `received` arrays it
    started from (names, shapes and dtypes of `received`). Raises CompressionError naming the
    first array that does not decode."""
    if method not in METHODS or method == "none":
        raise CompressionError(f"unknown compression method {method!r}; one of {METHODS[1:]}")
    extra = sorted(set(payload) - set(received))
    if extra:
        raise CompressionError(f"unexpected array '{extra[0]}' in a compressed update")
    out: dict[str, np.ndarray] = {}
    for name, reference in received.items():
        if name not in payload:
            raise CompressionError(f"missing array '{name}' in a compressed update")
        data = payload[name]
        if data.dtype != np.uint8 or data.ndim != 1:
            raise CompressionError(f"array '{name}': compressed bytes must be a uint8 vector")
        code_dtype = np.float16 if method == "fp16" else np.int8
        try:
            raw = zlib.decompress(data.tobytes())
        except zlib.error as error:
            raise CompressionError(f"array '{name}' does not inflate: {error}") from None
        expected = reference.size * np.dtype(code_dtype).itemsize
        if len(raw) != expected:
            raise CompressionError(
                f"array '{name}' inflates to {len(raw)} bytes, expected {expected}"
            )
        codes = np.frombuffer(raw, dtype=code_dtype).reshape(reference.shape)
        if method == "fp16":
            delta = codes.astype(np.float32)
        else:
            scale = np.asarray(scales.get(name))
            rows = reference.shape[0] if method == "int8-channel" and reference.ndim >= 2 else None
            want = (rows,) if rows is not None else ()
            if scales.get(name) is None or scale.shape != want or scale.dtype != np.float32:
                raise CompressionError(
                    f"array '{name}' needs a float32 scale of shape {want}, got "
                    f"{None if scales.get(name) is None else (scale.dtype, scale.shape)}"
                )
            if not np.isfinite(scale).all():
                raise CompressionError(f"array '{name}' has a non-finite scale")
            delta = codes.astype(np.float32) * _broadcast(scale, reference.shape)
        out[name] = (reference.astype(np.float32) + delta).astype(reference.dtype)
    return out
