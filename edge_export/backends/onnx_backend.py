"""`onnx`: `torch.onnx.export(..., dynamo=True)` of the exported program, run with ONNX Runtime.

Reduced precision is int8 by `onnxruntime.quantization.quantize_dynamic`: weights quantized
once, activations per call (Conv becomes ConvInteger and MatMul MatMulInteger). The model is one
self-contained file (`external_data=False`), so an artifact folder can be copied as it is.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
from pathlib import Path

import numpy as np
import torch
from torch.export import ExportedProgram

from edge_export.backends import Backend, PartFunction, register_backend
from edge_export.modules import PartSpec

INSTALL = "pip install 'latentveil[onnx]' (onnx, onnxruntime, onnxscript)"


@register_backend("onnx")
class OnnxBackend(Backend):
    precisions = ("fp32", "int8")
    preference = 50

    def unavailable(self) -> str | None:
        missing = [m for m in ("onnx", "onnxruntime", "onnxscript") if not _installed(m)]
        return f"{', '.join(missing)} not installed; {INSTALL}" if missing else None

    def versions(self) -> dict[str, str]:
        import onnx
        import onnxruntime

        return {
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
        }

    def build(
        self, program: ExportedProgram, spec: PartSpec, folder: Path, precision: str
    ) -> list[str]:
        fp32 = export_onnx(program, folder / f"{spec.name}.onnx")
        if precision == "fp32":
            return [fp32.name]
        from onnxruntime.quantization import QuantType, quantize_dynamic

        int8 = folder / f"{spec.name}.int8.onnx"
        logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))
        quantize_dynamic(fp32, int8, weight_type=QuantType.QInt8)
        fp32.unlink()
        return [int8.name]

    def load(
        self, folder: Path, files: list[str], spec: PartSpec, precision: str = "fp32"
    ) -> PartFunction:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        session = onnxruntime.InferenceSession(
            str(folder / files[0]), options, providers=["CPUExecutionProvider"]
        )
        input_name = session.get_inputs()[0].name

        def run(inputs: np.ndarray) -> np.ndarray:
            return session.run(None, {input_name: inputs})[0]

        return run


def export_onnx(program: ExportedProgram, path: Path) -> Path:
    """The exported program as one self-contained ONNX file (dynamic dimensions kept)."""
    example = tuple(program.example_inputs[0]) if program.example_inputs else ()
    # The exporter narrates each step on stdout; the artifact's metadata is the record.
    with contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(program, example, path, dynamo=True, external_data=False)
    return path


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None
