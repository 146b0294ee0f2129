"""`torch`: the exported program itself, saved with `torch.export.save` (the reference)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.export import ExportedProgram

from edge_export.backends import Backend, PartFunction, register_backend
from edge_export.modules import PartSpec


@register_backend("torch")
class TorchBackend(Backend):
    precisions = ("fp32",)
    preference = 90

    def versions(self) -> dict[str, str]:
        return {"torch": torch.__version__}

    def build(
        self, program: ExportedProgram, spec: PartSpec, folder: Path, precision: str
    ) -> list[str]:
        name = f"{spec.name}.pt2"
        torch.export.save(program, folder / name)
        return [name]

    def load(
        self, folder: Path, files: list[str], spec: PartSpec, precision: str = "fp32"
    ) -> PartFunction:
        module = torch.export.load(folder / files[0]).module()

        def run(inputs: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return module(torch.from_numpy(inputs)).numpy()

        return run
