"""Generated inputs for the edge tests: a tiny encoder config, trained-looking adapters, a run
folder, videos.

Everything is generated here: a random tiny3d (32x32 frames, d = 16), adapters whose zero-
initialised projections are filled with random values (a fresh adapter is close to a plain
linear map and would hide attention errors), and small H.264 videos.
"""

from pathlib import Path

import av
import numpy as np
import torch

from common.config import load_config
from common.layout import RunLayout
from common.model import build_model
from common.runconfig import config_as_yaml
from common.weights import shareable_state

SIZE = 32
OVERRIDES = [
    "encoder.path=",
    f"encoder.frame_size={SIZE}",
    "encoder.dim=16",
    "anonymizer.layers=2",
    "anonymizer.heads=2",
    "anonymizer.bottleneck=4",
    "anonymizer.window=4",
    "tasks.seen={ar: 1.0}",
    "tasks.evaluated={ar: 2.0}",
]


def tiny_config(seed: int = 0):
    return load_config(None, [*OVERRIDES, f"encoder.seed={seed}"])


def trained_model(config, seed: int):
    """The AAM + heads of `config` with every weight random (as if trained)."""
    model = build_model(config.encoder.dim, config, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return model.eval()


def make_run(root: Path, seed: int = 1, encoder_seed: int = 0) -> Path:
    """A finished run folder as `simulate` leaves it, for what `export` reads."""
    config = tiny_config(encoder_seed)
    layout = RunLayout(root)
    root.mkdir(parents=True, exist_ok=True)
    layout.config.write_text(config_as_yaml(config))
    np.savez(layout.adapter, **shareable_state(trained_model(config, seed)))
    return root


def write_video(
    path: Path, num_frames: int, seed: int, size: int = 48, faststart: bool = False
) -> Path:
    """A small H.264 mp4 whose frames move and differ between seeds. With `faststart` its index
    is at the front (as cameras and web videos have it), so a copy cut short still opens and
    decodes part-way."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (size, size + 16, 3), dtype=np.uint8)
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height = size + 16, size
        stream.pix_fmt = "yuv420p"
        for i in range(num_frames):
            frame = np.roll(base, shift=2 * i, axis=1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
