"""The edge module and its two parts, as plain modules ready for `torch.export`.

A camera runs the frozen encoder f_E and the trained adapter f_A over a video's consecutive
clips, a window of at most `anonymizer.window` clips at a time:

    clips (B, T, 3, L, S, S)  --encoder part-->  (B*T, d)  --adapter part-->  (B, T, d)

The input is the encoder's native clip layout: frames decoded, resized (short side), centre
cropped and normalised by `common.video.preprocess_clips`, exactly as the feature store's
features were made. Resizing stays outside the graph on purpose: its output size depends on each
camera's resolution, and one preprocessing function for training and deployment keeps the edge
features equal to the features the adapter was trained on.

`EdgeModule` is the whole path in one graph (what `torch_tensorrt` can compile and refit);
`EncoderPart` and `AdapterPart` are its two halves, exported alone so that a new adapter from the
server replaces only the small adapter graph and the encoder artifact is built once per site.
Every part is exported with a dynamic batch and (for the adapter and the whole module) a dynamic
number of clips; `dynamic_ranges` gives the ranges, and an exported program does not enforce
them itself, so callers check inputs first (`edge_export.runtime`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.export import Dim, ExportedProgram

from common.aam import AnonymizingAdapter
from common.encoders import FrozenEncoder

PARTS = ("encoder", "adapter")
# The largest batch an artifact is exported (and TensorRT optimised) for, unless told otherwise.
DEFAULT_MAX_BATCH = 64


class EncoderPart(nn.Module):
    """f_E alone: clips (N, 3, L, S, S) -> clip features (N, d)."""

    def __init__(self, encoder: FrozenEncoder) -> None:
        super().__init__()
        self.backbone = encoder.backbone

    def forward(self, clips: Tensor) -> Tensor:
        return self.backbone(clips)  # (N, d)


class AdapterPart(nn.Module):
    """f_A alone: one window of clip features per row, (B, T, d) -> (B, T, d)."""

    def __init__(self, adapter: AnonymizingAdapter) -> None:
        super().__init__()
        self.adapter = adapter

    def forward(self, clip_features: Tensor) -> Tensor:
        return self.adapter(clip_features)  # (B, T, d)


class EdgeModule(nn.Module):
    """f_A(f_E(.)) in one graph: clips (B, T, 3, L, S, S) -> anonymized features (B, T, d)."""

    def __init__(self, encoder: FrozenEncoder, adapter: AnonymizingAdapter) -> None:
        super().__init__()
        self.encoder = EncoderPart(encoder)
        self.adapter = AdapterPart(adapter)

    def forward(self, clips: Tensor) -> Tensor:
        batch, clips_per_row = clips.shape[0], clips.shape[1]
        clip_features = self.encoder(clips.flatten(0, 1))  # (B*T, d)
        return self.adapter(clip_features.reshape(batch, clips_per_row, -1))  # (B, T, d)


@dataclass(frozen=True)
class PartSpec:
    """What one exported graph takes and gives.

    `input_shape` and `output_shape` hold ints for fixed sizes and names ("batch", "clips") for
    dynamic ones; `ranges` gives each name's inclusive (min, max).
    """

    name: str
    input_name: str
    input_shape: tuple[int | str, ...]
    output_shape: tuple[int | str, ...]
    ranges: dict[str, tuple[int, int]]

    def as_json(self) -> dict[str, object]:
        return {
            "input": {"name": self.input_name, "shape": list(self.input_shape), "dtype": "float32"},
            "output": {"shape": list(self.output_shape), "dtype": "float32"},
            "ranges": {name: list(bounds) for name, bounds in self.ranges.items()},
        }

    def example_shape(self, **sizes: int) -> tuple[int, ...]:
        """The concrete input shape with the named dynamic sizes filled in."""
        return tuple(sizes[d] if isinstance(d, str) else d for d in self.input_shape)

    def check_input(self, shape: tuple[int, ...]) -> None:
        """Raise ValueError unless `shape` fits this part's fixed sizes and dynamic ranges."""
        expected = ", ".join(str(d) for d in self.input_shape)
        if len(shape) != len(self.input_shape):
            raise ValueError(
                f"the {self.name} part takes {self.input_name} of shape ({expected}), got {shape}"
            )
        for size, want in zip(shape, self.input_shape, strict=True):
            if isinstance(want, int) and size != want:
                raise ValueError(
                    f"the {self.name} part takes {self.input_name} of shape ({expected}), "
                    f"got {shape}"
                )
            if isinstance(want, str):
                low, high = self.ranges[want]
                if not low <= size <= high:
                    raise ValueError(
                        f"the {self.name} part was exported for {want} from {low} to {high}, "
                        f"got {size} (input shape {shape}); split the input or export again "
                        "with a larger --max-batch"
                    )


def part_specs(
    encoder: FrozenEncoder, window: int, max_batch: int = DEFAULT_MAX_BATCH
) -> dict[str, PartSpec]:
    """The specs of the encoder part, the adapter part and the whole edge module."""
    clip = (3, encoder.clip_len, encoder.frame_size, encoder.frame_size)
    d = encoder.dim
    # The encoder part sees a whole batch of windows at once, B * T clips.
    clip_rows = {"clips": (1, max_batch * window)}
    windows = {"batch": (1, max_batch), "clips": (1, window)}
    return {
        "encoder": PartSpec("encoder", "clips", ("clips", *clip), ("clips", d), clip_rows),
        "adapter": PartSpec(
            "adapter", "clip_features", ("batch", "clips", d), ("batch", "clips", d), windows
        ),
        "edge": PartSpec(
            "edge", "clips", ("batch", "clips", *clip), ("batch", "clips", d), windows
        ),
    }


def export_part(module: nn.Module, spec: PartSpec) -> ExportedProgram:
    """`torch.export` of one part with its dynamic dimensions, traced on a small example.

    The example uses sizes of 2 and 3, not 1: torch.export specialises a dimension of size 1.
    """
    module = module.eval()
    sizes = {
        name: min(2 if name == "batch" else 3, high) for name, (_, high) in spec.ranges.items()
    }
    example = torch.zeros(spec.example_shape(**sizes))
    dynamic = {
        axis: Dim(size, min=spec.ranges[size][0], max=spec.ranges[size][1])
        for axis, size in enumerate(spec.input_shape)
        if isinstance(size, str) and spec.ranges[size][1] > 1
    }
    with torch.no_grad():
        return torch.export.export(module, (example,), dynamic_shapes=(dynamic,))
