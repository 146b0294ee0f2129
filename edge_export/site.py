"""A camera site's encoder: the frozen encoder through the best edge backend the site has.

A site encodes its own videos once, before training (the features are cached; training stays in
PyTorch because the adapter needs gradients). `site_encoder` exports the encoder part for the
chosen backend into the site's artifact folder the first time (parity-checked against eager),
reuses it afterwards, and returns it with a FrozenEncoder's interface, so feature extraction
does not know which library runs the encoder. Features from every backend carry the encoder's
`encoder_id` and agree with eager within the parity tolerance; the store records the backend.

Backends, best first: `tensorrt` (CUDA), `openvino`, `onnx`, `torch`; `auto` takes the first
that can run here. `eager` is the FrozenEncoder itself, with no export.
"""

from __future__ import annotations

from pathlib import Path

from common.config import EncoderConfig
from common.encoders import FrozenEncoder, create_encoder
from edge_export.artifact import (
    ArtifactEncoder,
    EdgeArtifactError,
    EdgeSource,
    export_artifact,
    load_artifact,
)
from edge_export.backends import available_backends, require_backend

EAGER = "eager"


def choose_backend(requested: str = "auto") -> str:
    """The backend a site uses: `requested`, or for "auto" the best one that runs here."""
    if requested in ("auto", ""):
        return available_backends()[0]
    if requested != EAGER:
        require_backend(requested)
    return requested


def site_encoder(
    encoder_config: EncoderConfig, backend: str = "auto", artifact_root: str | Path = "edge"
) -> FrozenEncoder | ArtifactEncoder:
    """The encoder a site runs: eager, or its encoder-only artifact in `artifact_root`
    (exported on first use, one folder per backend and encoder)."""
    encoder = create_encoder(encoder_config)
    backend = choose_backend(backend)
    if backend == EAGER:
        return encoder
    folder = Path(artifact_root) / f"{encoder.encoder_id}-{backend}"
    if folder.exists():
        try:
            return load_artifact(folder, encoder_id=encoder.encoder_id).clip_encoder()
        except EdgeArtifactError:
            pass  # another encoder's or a damaged artifact: build it again
    export_artifact(EdgeSource(encoder, None, window=1), backend, folder, overwrite=True)
    return load_artifact(folder, encoder_id=encoder.encoder_id).clip_encoder()
