"""`openvino` (optional extra): the part's ONNX graph converted to OpenVINO IR, run on its CPU
plugin. Kept beside ONNX Runtime because `benchmarks/edge.py` shows it much faster here (the 3D
convolutions of tiny3d above all).

Precision is the CPU plugin's inference precision: `fp32`, or `bf16` on a CPU with bfloat16
units (AVX512-BF16 or AMX; OpenVINO's own default there). The IR itself stays float32, so the
same files serve both; the artifact's metadata says which one it was checked with.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch.export import ExportedProgram

from edge_export.backends import Backend, BackendUnavailable, PartFunction, register_backend
from edge_export.backends.onnx_backend import export_onnx
from edge_export.modules import PartSpec

INSTALL = "pip install 'latentveil[openvino]'"
# The CPU plugin's INFERENCE_PRECISION_HINT of each precision.
HINTS = {"fp32": "f32", "bf16": "bf16"}


@register_backend("openvino")
class OpenVinoBackend(Backend):
    precisions = ("fp32", "bf16")
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

        if precision == "bf16" and "BF16" not in openvino.Core().get_property(
            "CPU", "OPTIMIZATION_CAPABILITIES"
        ):
            raise BackendUnavailable("this CPU has no bfloat16 units for OpenVINO's bf16")
        onnx_path = export_onnx(program, folder / f"{spec.name}.ov-source.onnx")
        model = openvino.convert_model(onnx_path)
        xml = folder / f"{spec.name}.xml"
        openvino.save_model(model, xml, compress_to_fp16=False)
        onnx_path.unlink()
        return [xml.name, xml.with_suffix(".bin").name]

    def load(
        self, folder: Path, files: list[str], spec: PartSpec, precision: str = "fp32"
    ) -> PartFunction:
        import openvino

        core = openvino.Core()
        xml = next(name for name in files if name.endswith(".xml"))
        compiled = core.compile_model(
            core.read_model(folder / xml),
            "CPU",
            {"INFERENCE_PRECISION_HINT": HINTS[precision]},
        )
        request = compiled.create_infer_request()

        def run(inputs: np.ndarray) -> np.ndarray:
            return np.array(request.infer({0: inputs})[0])

        return run
