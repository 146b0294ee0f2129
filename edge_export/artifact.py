"""Edge artifacts: a folder per exported anonymizer, parity-checked against eager PyTorch.

    artifact/
      metadata.json    what it is (see below), written last: a folder without it is not usable
      reference.npz    the eager outputs on the parity input, for `verify_artifact` anywhere
      encoder.<ext>    the encoder part's model file(s), from the backend
      adapter.<ext>    the adapter part's (absent in an encoder-only artifact)

metadata.json: format and version, backend and precision, library versions, the parts with
their files and sha256, input/output shapes and dynamic ranges, the encoder (`encoder_id` and
its preprocessing), the adapter (`adapter_hash`, window), and the parity check's results.

An artifact is written in a temporary folder beside its target and renamed into place only
after its parity check passed, so a folder with a metadata.json is always a checked one.
`load_artifact` refuses an artifact whose encoder or adapter is not the one the caller expects,
naming both.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import shutil
import tempfile
import time
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from common.aam import AnonymizingAdapter
from common.config import RunConfig, load_config
from common.encoders import FrozenEncoder, create_encoder
from common.errors import LatentveilError
from common.layout import RunLayout
from common.model import build_model
from common.weights import ShareableStateError, load_shareable
from edge_export.backends import Backend, require_backend
from edge_export.modules import (
    DEFAULT_MAX_BATCH,
    AdapterPart,
    EncoderPart,
    PartSpec,
    export_part,
    part_specs,
)

FORMAT = "latentveil-edge-artifact"
VERSION = 1
METADATA = "metadata.json"
REFERENCE = "reference.npz"
# Parity input: `PARITY_BATCH` windows of up to `PARITY_CLIPS` clips, sizes the trace (2 x 3)
# did not use, so the check also exercises the dynamic dimensions.
PARITY_BATCH, PARITY_CLIPS, PARITY_SEED = 3, 5, 0
# fp32: max |artifact - eager| <= FP32_MAX_ABS x max(1, max |eager|), cosine >= FP32_COSINE.
FP32_MAX_ABS, FP32_COSINE = 1e-4, 0.99999
# Reduced precision: cosine similarity per feature vector >= REDUCED_COSINE.
REDUCED_COSINE = 0.999


class EdgeArtifactError(LatentveilError):
    """An artifact that is missing, malformed, failed its parity check, or does not match."""


# ---------------------------------------------------------------------------------------------
# What is exported


@dataclass
class EdgeSource:
    """The eager modules an artifact is made from, and what identifies them."""

    encoder: FrozenEncoder
    adapter: AnonymizingAdapter | None
    window: int
    origin: str = ""

    @property
    def adapter_hash(self) -> str | None:
        return None if self.adapter is None else adapter_hash(self.adapter)


def adapter_hash(adapter: nn.Module) -> str:
    """`"aam-{16 hex digits}"`: SHA-256 over the adapter's state in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(adapter.state_dict().items()):
        array = tensor.detach().cpu().contiguous().numpy()
        header = json.dumps([name, str(array.dtype), list(array.shape)]).encode()
        digest.update(len(header).to_bytes(8, "little") + header + array.tobytes())
    return f"aam-{digest.hexdigest()[:16]}"


def run_config(run_dir: str | Path) -> RunConfig:
    """The resolved config of a run folder."""
    layout = RunLayout(Path(run_dir))
    if not layout.root.is_dir():
        raise EdgeArtifactError(f"run folder {run_dir} does not exist (or is not a folder)")
    if not layout.config.is_file():
        raise EdgeArtifactError(f"{run_dir} is not a run folder (no {layout.config.name})")
    return load_config(layout.config)


def adapter_from_run(run_dir: str | Path, dim: int) -> AnonymizingAdapter:
    """The adapter a run shipped (its adapter.npz), built with the run's config."""
    layout = RunLayout(Path(run_dir))
    if not layout.adapter.is_file():
        raise EdgeArtifactError(
            f"{run_dir} has no {layout.adapter.name}: the run has not finished, so it has "
            "shipped no adapter yet"
        )
    config = run_config(run_dir)
    model = build_model(dim, config)
    try:
        archive = np.load(layout.adapter)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError("it holds one array, not named arrays")
        with archive:
            arrays = dict(archive)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        # Not an .npz archive: cut short, overwritten, a single np.save array, pickled data.
        raise EdgeArtifactError(
            f"{layout.adapter} is not a readable adapter archive ({type(error).__name__}: "
            f"{error}); copy it again from the run that shipped it"
        ) from error
    try:
        load_shareable(model, arrays)
    except ShareableStateError as error:
        raise EdgeArtifactError(
            f"{layout.adapter} does not fit the run's config (encoder dim {dim}): {error}"
        ) from error
    return model.adapter.eval()


def source_from_run(run_dir: str | Path, with_adapter: bool = True) -> EdgeSource:
    """Encoder and shipped adapter of a run folder, as its config.yaml describes them."""
    config = run_config(run_dir)
    encoder = create_encoder(config.encoder)
    adapter = adapter_from_run(run_dir, encoder.dim) if with_adapter else None
    return EdgeSource(encoder, adapter, config.anonymizer.window, origin=str(run_dir))


# ---------------------------------------------------------------------------------------------
# Exporting


def parity_clips(encoder: FrozenEncoder, batch: int, clips: int, seed: int) -> torch.Tensor:
    """A fixed input (batch, clips, 3, L, S, S): uniform pixels normalised as the encoder asks."""
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, clips, 3, encoder.clip_len, encoder.frame_size, encoder.frame_size)
    pixels = torch.rand(shape, generator=generator)  # (B, T, 3, L, S, S) in [0, 1)
    mean = torch.tensor(encoder.mean).view(3, 1, 1, 1)
    std = torch.tensor(encoder.std).view(3, 1, 1, 1)
    return (pixels - mean) / std


def _parity_input(source: EdgeSource) -> torch.Tensor:
    return parity_clips(source.encoder, PARITY_BATCH, min(PARITY_CLIPS, source.window), PARITY_SEED)


def compare(reference: np.ndarray, output: np.ndarray, precision: str) -> dict[str, Any]:
    """Max abs difference and least cosine similarity of feature vectors, against thresholds."""
    reference = reference.reshape(-1, reference.shape[-1]).astype(np.float64)
    output = np.asarray(output).reshape(reference.shape).astype(np.float64)
    max_abs = float(np.abs(output - reference).max())
    norms = np.linalg.norm(reference, axis=1) * np.linalg.norm(output, axis=1)
    cosine = float(((reference * output).sum(axis=1) / np.maximum(norms, 1e-12)).min())
    scale = max(1.0, float(np.abs(reference).max()))
    if precision == "fp32":
        limit = {"max_abs": FP32_MAX_ABS * scale, "cosine": FP32_COSINE}
        passed = max_abs <= limit["max_abs"] and cosine >= limit["cosine"]
    else:
        limit = {"max_abs": None, "cosine": REDUCED_COSINE}
        passed = cosine >= limit["cosine"]
    return {"max_abs": max_abs, "cosine_min": cosine, "limits": limit, "passed": bool(passed)}


def _reference(source: EdgeSource, clips: torch.Tensor) -> dict[str, np.ndarray]:
    """Eager outputs on the parity input: encoder features and (with an adapter) the edge's."""
    with torch.no_grad():
        features = source.encoder(clips.flatten(0, 1))  # (B*T, d)
        reference = {"encoder": features.numpy()}
        if source.adapter is not None:
            windows = features.reshape(clips.shape[0], clips.shape[1], -1)  # (B, T, d)
            reference["adapter"] = source.adapter.eval()(windows).numpy()
    return reference


def _check_parity(
    runtime: EdgeRuntime, clips: torch.Tensor, reference: Mapping[str, np.ndarray]
) -> dict[str, Any]:
    """The artifact against eager: the encoder part alone, and the whole edge path."""
    encoded = runtime.encode(clips.flatten(0, 1))  # (B*T, d)
    results = {"encoder": compare(reference["encoder"], encoded, runtime.precision)}
    if "adapter" in reference:
        anonymized = runtime(clips)  # (B, T, d)
        results["edge"] = compare(reference["adapter"], anonymized, runtime.precision)
    return results


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _build_part(
    backend: Backend, module: nn.Module, spec: PartSpec, folder: Path, precision: str
) -> dict:
    started = time.perf_counter()
    with warnings.catch_warnings(), _quiet_exporter():
        # torch.export and the ONNX exporter warn about their own internals (deprecations,
        # torchvision ops they skip); none of it concerns the artifact, which is checked below.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        program = export_part(module, spec)
        files = backend.build(program, spec, folder, precision)
    return {
        "files": {name: _sha256(folder / name) for name in files},
        "export_seconds": time.perf_counter() - started,
        **spec.as_json(),
    }


def export_artifact(
    source: EdgeSource,
    backend_name: str,
    out: str | Path,
    precision: str = "fp32",
    max_batch: int = DEFAULT_MAX_BATCH,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Export `source` with the backend into the folder `out`; return its metadata.

    The folder appears only if the parity check passes; otherwise EdgeArtifactError gives the
    figures and nothing is left behind.
    """
    out = Path(out)
    if max_batch < 1:
        raise EdgeArtifactError(
            f"the largest batch (--max-batch) must be at least 1, not {max_batch}"
        )
    if out.exists() and not out.is_dir():
        raise EdgeArtifactError(f"{out} is a file, not an artifact folder; choose another --out")
    if out.exists() and not overwrite:
        raise EdgeArtifactError(f"{out} already exists; choose another --out or pass --overwrite")
    if out.exists() and any(out.iterdir()) and not (out / METADATA).is_file():
        # --overwrite replaces an artifact, never a folder of something else (a run, videos).
        raise EdgeArtifactError(
            f"{out} is not an edge artifact (no {METADATA}) and is not empty; --overwrite only "
            "replaces an artifact: choose another --out"
        )
    backend = require_backend(backend_name, precision)
    specs = part_specs(source.encoder, source.window, max_batch)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        parts = {
            "encoder": _build_part(
                backend, EncoderPart(source.encoder), specs["encoder"], staging, precision
            )
        }
        if source.adapter is not None:
            parts["adapter"] = _build_part(
                backend, AdapterPart(source.adapter), specs["adapter"], staging, precision
            )
        clips = _parity_input(source)
        reference = _reference(source, clips)
        np.savez(staging / REFERENCE, **reference)
        metadata = {
            "format": FORMAT,
            "version": VERSION,
            "kind": "edge" if source.adapter is not None else "encoder",
            "backend": backend.name,
            "precision": precision,
            "versions": backend.versions(),
            "encoder": _encoder_metadata(source.encoder),
            "adapter": None
            if source.adapter is None
            else {"adapter_hash": source.adapter_hash, "window": source.window},
            "parts": parts,
            "max_batch": max_batch,
            "source": source.origin,
            "parity": {
                "input": {"seed": PARITY_SEED, "shape": list(clips.shape)},
                "reference_sha256": _sha256(staging / REFERENCE),
            },
        }
        runtime = EdgeRuntime(staging, metadata)
        checks = _check_parity(runtime, clips, reference)
        metadata["parity"].update(checks=checks, machine=_machine())
        failed = {name: check for name, check in checks.items() if not check["passed"]}
        if failed:
            raise EdgeArtifactError(
                f"the {backend.name} {precision} artifact failed its parity check against eager "
                f"PyTorch: {_describe(failed)}; nothing was written to {out}"
            )
        _write_json(staging / METADATA, metadata)
        staging.chmod(0o777 & ~_umask())  # mkdtemp made it private
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
        return metadata
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _encoder_metadata(encoder: FrozenEncoder) -> dict[str, Any]:
    return {
        "encoder_id": encoder.encoder_id,
        "name": encoder.name,
        "dim": encoder.dim,
        "clip_len": encoder.clip_len,
        "frame_size": encoder.frame_size,
        "resize_short": encoder.resize_short,
        "mean": list(encoder.mean),
        "std": list(encoder.std),
    }


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _machine() -> dict[str, str]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
    }


def _describe(checks: Mapping[str, Mapping[str, Any]]) -> str:
    return "; ".join(
        f"{name}: max abs difference {c['max_abs']:.3g} (limit {c['limits']['max_abs']}), "
        f"least cosine {c['cosine_min']:.6f} (limit {c['limits']['cosine']})"
        for name, c in checks.items()
    )


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")


# ---------------------------------------------------------------------------------------------
# Loading and running


# What every artifact's metadata.json holds (read before any of it is used).
_METADATA_KEYS = ("backend", "precision", "encoder", "parts", "parity")


def read_metadata(folder: str | Path) -> dict[str, Any]:
    """An artifact's metadata, checked to be one this code reads."""
    folder = Path(folder)
    path = folder / METADATA
    if not path.is_file():
        what = "does not exist" if not folder.exists() else f"has no {METADATA}"
        raise EdgeArtifactError(
            f"{folder} {what}; it is not an edge artifact (make one with `latentveil export`)"
        )
    try:
        metadata = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise EdgeArtifactError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise EdgeArtifactError(f"{path} is not the metadata of a latentveil edge artifact")
    if metadata.get("version") != VERSION:
        raise EdgeArtifactError(
            f"{folder} is an edge artifact of version {metadata.get('version')!r}; this code "
            f"reads version {VERSION}: export it again"
        )
    missing = [key for key in _METADATA_KEYS if not isinstance(metadata.get(key), dict | str)]
    if missing:
        raise EdgeArtifactError(
            f"{path} lacks {', '.join(missing)}: the artifact is incomplete or was edited; "
            "export it again"
        )
    return metadata


def load_artifact(
    folder: str | Path,
    *,
    encoder_id: str | None = None,
    adapter_hash: str | None = None,
    check_files: bool = True,
) -> EdgeRuntime:
    """The artifact in `folder` as an EdgeRuntime.

    With `encoder_id` / `adapter_hash`, an artifact made from another encoder or adapter is
    refused with both names. With `check_files`, model files whose bytes changed since export
    are refused.
    """
    folder = Path(folder)
    metadata = read_metadata(folder)
    have_encoder = metadata["encoder"]["encoder_id"]
    if encoder_id is not None and encoder_id != have_encoder:
        raise EdgeArtifactError(
            f"artifact {folder} was exported from encoder {have_encoder}, but it is used with "
            f"encoder {encoder_id}: export it again from this encoder"
        )
    have_adapter = (metadata.get("adapter") or {}).get("adapter_hash")
    if adapter_hash is not None and adapter_hash != have_adapter:
        raise EdgeArtifactError(
            f"artifact {folder} holds adapter {have_adapter or '(none: encoder only)'}, but "
            f"adapter {adapter_hash} is expected: swap it in with `latentveil export --swap`"
        )
    if check_files:
        for name, part in metadata["parts"].items():
            for file_name, digest in part["files"].items():
                path = folder / file_name
                if not path.is_file() or _sha256(path) != digest:
                    state = "is missing" if not path.is_file() else "changed since export"
                    raise EdgeArtifactError(
                        f"{path} ({name} part of artifact {folder}) {state}; export it again"
                    )
    return EdgeRuntime(folder, metadata)


class EdgeRuntime:
    """A loaded artifact: `encode` clips, `anonymize` clip features, or both in one call.

    Inputs are checked against the exported shapes and ranges before any call (an exported
    graph does not check them itself); batches larger than the artifact's are split.
    """

    def __init__(self, folder: Path, metadata: Mapping[str, Any]) -> None:
        self.folder = Path(folder)
        self.metadata = dict(metadata)
        self.backend = metadata["backend"]
        self.precision = metadata["precision"]
        encoder = metadata["encoder"]
        self.encoder_id = encoder["encoder_id"]
        self.dim = int(encoder["dim"])
        self.clip_len = int(encoder["clip_len"])
        self.frame_size = int(encoder["frame_size"])
        self.resize_short = encoder["resize_short"]
        self.mean = tuple(encoder["mean"])
        self.std = tuple(encoder["std"])
        adapter = metadata.get("adapter") or {}
        self.adapter_hash = adapter.get("adapter_hash")
        self.window = int(adapter.get("window", 1))
        backend = require_backend(self.backend, self.precision)
        self.specs = {name: _spec(name, part) for name, part in metadata["parts"].items()}
        self._parts = {
            name: backend.load(self.folder, list(part["files"]), self.specs[name], self.precision)
            for name, part in metadata["parts"].items()
        }

    @property
    def has_adapter(self) -> bool:
        return "adapter" in self._parts

    def encode(self, clips: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Clips (N, 3, L, S, S), preprocessed as the encoder declares -> features (N, d)."""
        return torch.from_numpy(self._run("encoder", _float32(clips), "clips"))

    def anonymize(self, clip_features: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Windows of clip features (B, T, d), T <= window -> anonymized features (B, T, d)."""
        if not self.has_adapter:
            raise EdgeArtifactError(
                f"artifact {self.folder} is encoder-only; export one from a run to anonymize"
            )
        return torch.from_numpy(self._run("adapter", _float32(clip_features), "batch"))

    def anonymize_video(
        self, clip_features: torch.Tensor | np.ndarray, window: int | None = None
    ) -> torch.Tensor:
        """One video's clip features (n, d) -> anonymized (n, d), in consecutive windows of
        `window` clips (the artifact's by default; a last, shorter window is a sequence of its
        own), as in training."""
        window = window or self.window
        features = _float32(clip_features)  # (n, d)
        full = len(features) // window * window
        pieces = []
        if full:
            windows = features[:full].reshape(-1, window, features.shape[-1])  # (W, T, d)
            pieces.append(self.anonymize(windows).reshape(full, -1))
        if full < len(features):
            pieces.append(self.anonymize(features[None, full:])[0])  # (n - full, d)
        return torch.cat(pieces) if pieces else torch.zeros(0, self.dim)

    def __call__(self, clips: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Clips (B, T, 3, L, S, S) -> anonymized features (B, T, d)."""
        clips = _float32(clips)
        if clips.ndim != 6:
            raise ValueError(
                f"the edge anonymizer takes clips (batch, clips, 3, {self.clip_len}, "
                f"{self.frame_size}, {self.frame_size}), got {clips.shape}"
            )
        batch, length = clips.shape[:2]
        features = self.encode(clips.reshape(batch * length, *clips.shape[2:]))  # (B*T, d)
        return self.anonymize(features.numpy().reshape(batch, length, -1))  # (B, T, d)

    def _run(self, part: str, inputs: np.ndarray, split_axis: str) -> np.ndarray:
        spec = self.specs[part]
        high = spec.ranges[split_axis][1]
        if len(inputs) == 0:
            raise ValueError(f"the {part} part got an empty batch {inputs.shape}")
        outputs = []
        for start in range(0, len(inputs), high):
            chunk = np.ascontiguousarray(inputs[start : start + high])
            spec.check_input(tuple(chunk.shape))
            outputs.append(np.asarray(self._parts[part](chunk), dtype=np.float32))
        return np.concatenate(outputs)

    def clip_encoder(self) -> ArtifactEncoder:
        """The encoder part as the feature store's extraction expects an encoder to be."""
        return ArtifactEncoder(self)


class ArtifactEncoder:
    """An artifact's encoder part with a FrozenEncoder's interface for `extract_features`."""

    def __init__(self, runtime: EdgeRuntime) -> None:
        self.runtime = runtime
        for name in ("encoder_id", "dim", "clip_len", "frame_size", "resize_short", "mean", "std"):
            setattr(self, name, getattr(runtime, name))
        self.backend = runtime.backend
        self.name = runtime.metadata["encoder"]["name"]

    def __call__(self, clips: torch.Tensor) -> torch.Tensor:
        return self.runtime.encode(clips)  # (N, d)


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _spec(name: str, part: Mapping[str, Any]) -> PartSpec:
    return PartSpec(
        name=name,
        input_name=part["input"]["name"],
        input_shape=tuple(part["input"]["shape"]),
        output_shape=tuple(part["output"]["shape"]),
        ranges={key: tuple(bounds) for key, bounds in part["ranges"].items()},
    )


def _float32(values: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.ascontiguousarray(values, dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# Verifying and swapping


def verify_artifact(folder: str | Path) -> dict[str, Any]:
    """Run an artifact's parity check again on this machine; return the checks.

    The input is regenerated from its seed and the outputs compared with the eager ones stored
    at export (`reference.npz`), so no run folder or eager model is needed.
    """
    folder = Path(folder)
    runtime = load_artifact(folder)
    parity = runtime.metadata["parity"]
    reference_path = folder / REFERENCE
    if not reference_path.is_file() or _sha256(reference_path) != parity["reference_sha256"]:
        raise EdgeArtifactError(f"{reference_path} is missing or changed since export")
    with np.load(reference_path) as stored:
        reference = dict(stored)
    batch, clips = parity["input"]["shape"][:2]
    inputs = parity_clips(runtime, batch, clips, parity["input"]["seed"])
    return _check_parity(runtime, inputs, reference)


def swap_adapter(folder: str | Path, source: EdgeSource) -> dict[str, Any]:
    """Replace the adapter part of an artifact with `source.adapter`, keeping the encoder part's
    files byte for byte; return the new metadata (with `swap_seconds`).

    The new adapter must come from the artifact's encoder (same `encoder_id`). The swapped
    artifact passes the same parity check before it replaces the old one.
    """
    folder = Path(folder)
    metadata = read_metadata(folder)
    if source.adapter is None:
        raise EdgeArtifactError("no adapter to swap in")
    if metadata.get("adapter") is None:
        raise EdgeArtifactError(f"artifact {folder} is encoder-only; it has no adapter part")
    have_encoder = metadata["encoder"]["encoder_id"]
    if source.encoder.encoder_id != have_encoder:
        raise EdgeArtifactError(
            f"the new adapter was trained on encoder {source.encoder.encoder_id}, but artifact "
            f"{folder} runs encoder {have_encoder}; export a new artifact instead"
        )
    started = time.perf_counter()
    backend = require_backend(metadata["backend"], metadata["precision"])
    spec = _spec("adapter", metadata["parts"]["adapter"])
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.swap.", dir=folder.parent))
    try:
        old_files = list(metadata["parts"]["adapter"]["files"])
        keep = [p for p in folder.iterdir() if p.name not in (*old_files, METADATA, REFERENCE)]
        for path in keep:
            _link_or_copy(path, staging / path.name)  # the encoder part, unchanged
        if hasattr(backend, "refit"):
            # TensorRT: the new weights go into a copy of the built engine (no rebuild)
            started_part = time.perf_counter()
            for name in old_files:
                shutil.copy2(folder / name, staging / name)
            program = export_part(AdapterPart(source.adapter), spec)
            files = backend.refit(staging, old_files, spec, program)
            new_part = {
                "files": {name: _sha256(staging / name) for name in files},
                "export_seconds": time.perf_counter() - started_part,
                **spec.as_json(),
            }
        else:
            new_part = _build_part(
                backend, AdapterPart(source.adapter), spec, staging, metadata["precision"]
            )
        with np.load(folder / REFERENCE) as stored:
            reference = dict(stored)
        clips = parity_clips(source.encoder, *metadata["parity"]["input"]["shape"][:2], PARITY_SEED)
        windows = torch.from_numpy(reference["encoder"]).reshape(*clips.shape[:2], -1)
        with torch.no_grad():
            reference["adapter"] = source.adapter.eval()(windows).numpy()
        np.savez(staging / REFERENCE, **reference)
        metadata = {
            **metadata,
            "adapter": {"adapter_hash": source.adapter_hash, "window": source.window},
            "parts": {**metadata["parts"], "adapter": new_part},
            "source": source.origin,
        }
        metadata["parity"] = {
            **metadata["parity"],
            "reference_sha256": _sha256(staging / REFERENCE),
        }
        runtime = EdgeRuntime(staging, metadata)
        checks = _check_parity(runtime, clips, reference)
        if not all(check["passed"] for check in checks.values()):
            raise EdgeArtifactError(
                f"the swapped artifact failed its parity check: {_describe(checks)}"
            )
        metadata["parity"].update(checks=checks, machine=_machine())
        metadata["swap_seconds"] = time.perf_counter() - started
        _write_json(staging / METADATA, metadata)
        # Replace only what changed, metadata last (until then the old metadata's hashes refuse
        # a half-swapped folder); the encoder part's files are never rewritten.
        for name in (*new_part["files"], REFERENCE, METADATA):
            (staging / name).replace(folder / name)
        for name in set(old_files) - set(new_part["files"]):
            (folder / name).unlink(missing_ok=True)
        return metadata
    finally:
        shutil.rmtree(staging, ignore_errors=True)
