"""`openvino` (optional extra): the part's ONNX graph converted to OpenVINO IR, run on its CPU
plugin. Kept beside ONNX Runtime only where `benchmarks/edge.py` shows it faster."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch.export import ExportedProgram

from edge_export.backends import Backend, PartFunction, register_backend
from edge_export.backends.onnx_backend import export_onnx
from edge_export.modules import PartSpec

INSTALL = "pip install 'latentveil[openvino]'"


@register_backend("openvino")
class OpenVinoBackend(Backend):
    precisions = ("fp32",)
    preference = 40

    def unavailable(self) -> str | None:
        missing = [m for m in ("openvino", "onnxscript") if importlib.util.find_spec(m) is None]
        return f"{', '.join(missing)} not installed; {INSTALL}" if missing else None

    def versions(self) -> dict[str, str]:
        import openvino

        return {"torch": torch.__version__, "openvino": openvino.__version__}

    def build(
        self, program: ExportedProgram, spec: PartSpec, folder: Path, precision: str
    ) -> list[str]:
        import openvino

        onnx_path = export_onnx(program, folder / f"{spec.name}.ov-source.onnx")
        model = openvino.convert_model(onnx_path)
        xml = folder / f"{spec.name}.xml"
        openvino.save_model(model, xml, compress_to_fp16=False)
        onnx_path.unlink()
        return [xml.name, xml.with_suffix(".bin").name]

    def load(self, folder: Path, files: list[str], spec: PartSpec) -> PartFunction:
        import openvino

        core = openvino.Core()
        xml = next(name for name in files if name.endswith(".xml"))
        compiled = core.compile_model(
            core.read_model(folder / xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
        )
        request = compiled.create_infer_request()

        def run(inputs: np.ndarray) -> np.ndarray:
            return np.array(request.infer({0: inputs})[0])

        return run
