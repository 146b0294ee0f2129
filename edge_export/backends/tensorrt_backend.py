"""`tensorrt`: `torch_tensorrt.dynamo.compile` of the exported program, for a site with CUDA.

The engine is built for the part's dynamic ranges (`torch_tensorrt.Input(min, opt, max)`),
refittable (`immutable_weights=False`), and saved as an exported program
(`torch_tensorrt.save(..., output_format="exported_program")`). A new adapter is put into a
built adapter engine with `torch_tensorrt.dynamo.refit_module_weights` (`refit`), without
rebuilding; the encoder engine is never touched.

torch-tensorrt needs CUDA and cannot even be imported without TensorRT's libraries, so every call
into it goes through `_torch_tensorrt()`, and `unavailable()` says what is missing first. A GPU
site installs it with the commands in `INSTALL` (README, "Edge anonymizer").
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from torch.export import ExportedProgram

from edge_export.backends import Backend, BackendUnavailable, PartFunction, register_backend
from edge_export.modules import PartSpec

INSTALL = (
    "on a CUDA 13 machine: pip install torch==2.13.0 --index-url "
    "https://download.pytorch.org/whl/cu130 && pip install 'latentveil[tensorrt]' "
    "(torch-tensorrt 2.13 with TensorRT 11)"
)
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16}


def _torch_tensorrt() -> ModuleType:
    """The torch_tensorrt module (one place, so a test can record the calls made into it)."""
    try:
        return importlib.import_module("torch_tensorrt")
    except (ImportError, OSError) as error:  # OSError: libnvinfer missing
        raise BackendUnavailable(
            f"torch_tensorrt cannot be imported ({error}); {INSTALL}"
        ) from error


def input_ranges(spec: PartSpec, opt: dict[str, int] | None = None) -> dict[str, tuple]:
    """min, opt and max input shapes of a part from its dynamic ranges (opt: a typical size,
    8 windows of the full length unless given)."""
    low = {name: bounds[0] for name, bounds in spec.ranges.items()}
    high = {name: bounds[1] for name, bounds in spec.ranges.items()}
    typical = {name: min(high[name], max(low[name], 8)) for name in spec.ranges}
    if "batch" in spec.ranges and "clips" in spec.ranges:
        typical["clips"] = high["clips"]  # full windows are the common case
    typical.update(opt or {})
    return {
        "min_shape": spec.example_shape(**low),
        "opt_shape": spec.example_shape(**typical),
        "max_shape": spec.example_shape(**high),
    }


@register_backend("tensorrt")
class TensorRTBackend(Backend):
    precisions = tuple(PRECISIONS)
    preference = 10
    device = "cuda"

    def unavailable(self) -> str | None:
        if not torch.cuda.is_available():
            return f"no CUDA device (torch {torch.__version__}); {INSTALL}"
        if importlib.util.find_spec("torch_tensorrt") is None:
            return f"torch_tensorrt is not installed; {INSTALL}"
        return None

    def versions(self) -> dict[str, str]:
        trt = _torch_tensorrt()
        return {"torch": torch.__version__, "torch_tensorrt": str(trt.__version__)}

    def compile(self, program: ExportedProgram, spec: PartSpec, precision: str) -> torch.nn.Module:
        """The TensorRT module of one part (refittable, for the part's dynamic ranges)."""
        trt = _torch_tensorrt()
        dtype = PRECISIONS[precision]
        inputs = [trt.Input(**input_ranges(spec), dtype=torch.float32)]
        return trt.dynamo.compile(
            program,
            arg_inputs=inputs,
            enabled_precisions={dtype},
            immutable_weights=False,
            min_block_size=1,
        )

    def build(
        self, program: ExportedProgram, spec: PartSpec, folder: Path, precision: str
    ) -> list[str]:
        trt = _torch_tensorrt()
        compiled = self.compile(program, spec, precision)
        name = f"{spec.name}.trt.ep"
        example = torch.zeros(input_ranges(spec)["opt_shape"], device=self.device)
        trt.save(compiled, str(folder / name), output_format="exported_program", inputs=[example])
        return [name]

    def refit(
        self, folder: Path, files: list[str], spec: PartSpec, program: ExportedProgram
    ) -> list[str]:
        """Put the weights of `program` (same graph, new values) into the saved engine."""
        trt = _torch_tensorrt()
        path = folder / files[0]
        compiled = trt.load(str(path)).module()
        example = torch.zeros(input_ranges(spec)["opt_shape"], device=self.device)
        refitted = trt.dynamo.refit_module_weights(
            compiled_module=compiled, new_weight_module=program, arg_inputs=[example]
        )
        trt.save(refitted, str(path), output_format="exported_program", inputs=[example])
        return files

    def load(
        self, folder: Path, files: list[str], spec: PartSpec, precision: str = "fp32"
    ) -> PartFunction:
        trt = _torch_tensorrt()
        module = trt.load(str(folder / files[0])).module()

        def run(inputs: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return module(torch.from_numpy(inputs).to(self.device)).float().cpu().numpy()

        return run
