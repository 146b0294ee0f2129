"""The TensorRT path: a clear refusal without CUDA, the calls made into torch_tensorrt (recorded
here with a stand-in module), and the real thing on a GPU machine (marked `gpu`)."""

from types import SimpleNamespace

import pytest
import torch

from edge_export.artifact import EdgeSource, export_artifact, load_artifact, parity_clips
from edge_export.backends import BackendUnavailable, require_backend
from edge_export.backends import tensorrt_backend as trt_backend
from edge_export.modules import AdapterPart, export_part, part_specs
from simulations.cli import main
from tests.edge_export.generated import make_run

WINDOW = 4
HAS_TENSORRT = torch.cuda.is_available() and trt_backend.TensorRTBackend().unavailable() is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_the_tensorrt_backend_says_what_is_missing_and_how_to_install(
    tmp_path, capsys
):
    with pytest.raises(BackendUnavailable, match="no CUDA device.*pip install"):
        require_backend("tensorrt")
    run = make_run(tmp_path / "run")
    out = tmp_path / "trt"
    code = main(["export", "--run", str(run), "--backend", "tensorrt", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "tensorrt backend cannot run here: no CUDA device" in err and "cu130" in err
    assert not out.exists()


class RecordingTorchTensorRT:
    """Stands in for torch_tensorrt: records every call, returns plain torch objects."""

    def __init__(self):
        self.calls = []
        self.dynamo = SimpleNamespace(
            compile=self._record("dynamo.compile", lambda program, **kw: program.module()),
            refit_module_weights=self._record(
                "dynamo.refit_module_weights", lambda **kw: kw["new_weight_module"].module()
            ),
        )
        self.__version__ = "recorder"

    def _record(self, name, result):
        def call(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            return result(*args, **kwargs)

        return call

    def Input(self, **kwargs):
        self.calls.append(("Input", (), kwargs))
        return SimpleNamespace(**kwargs)

    def save(self, module, path, **kwargs):
        self.calls.append(("save", (path,), kwargs))
        open(path, "wb").write(b"engine")

    def load(self, path):
        self.calls.append(("load", (path,), {}))
        return SimpleNamespace(module=lambda: None)


def test_the_tensorrt_glue_compiles_refittable_engines_for_the_configured_ranges(
    tmp_path, monkeypatch, encoder, adapter, other_adapter
):
    recorder = RecordingTorchTensorRT()
    monkeypatch.setattr(trt_backend, "_torch_tensorrt", lambda: recorder)
    backend = trt_backend.TensorRTBackend()
    backend.device = "cpu"  # the recorder runs on CPU
    spec = part_specs(encoder, WINDOW, max_batch=16)["adapter"]
    program = export_part(AdapterPart(adapter), spec)

    files = backend.build(program, spec, tmp_path, "fp16")
    assert files == ["adapter.trt.ep"] and (tmp_path / files[0]).is_file()
    (name, _, input_kwargs), (compile_name, args, kwargs), (save_name, _, save_kwargs) = (
        recorder.calls
    )
    assert name == "Input" and input_kwargs["dtype"] is torch.float32
    assert input_kwargs["min_shape"] == (1, 1, encoder.dim)
    assert input_kwargs["opt_shape"] == (8, WINDOW, encoder.dim)
    assert input_kwargs["max_shape"] == (16, WINDOW, encoder.dim)
    assert compile_name == "dynamo.compile" and args[0] is program
    assert kwargs["immutable_weights"] is False
    assert kwargs["enabled_precisions"] == {torch.float16}
    assert save_name == "save" and save_kwargs["output_format"] == "exported_program"

    recorder.calls.clear()
    new_program = export_part(AdapterPart(other_adapter), spec)
    backend.refit(tmp_path, files, spec, new_program)
    names = [call[0] for call in recorder.calls]
    assert names == ["load", "dynamo.refit_module_weights", "save"]
    refit_kwargs = recorder.calls[1][2]
    assert refit_kwargs["new_weight_module"] is new_program
    assert refit_kwargs["arg_inputs"][0].shape == (8, WINDOW, encoder.dim)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_TENSORRT, reason="needs CUDA and torch-tensorrt (a GPU site)")
def test_a_tensorrt_artifact_matches_eager_on_a_gpu(tmp_path, encoder, adapter):
    out = tmp_path / "trt"
    metadata = export_artifact(EdgeSource(encoder, adapter, WINDOW), "tensorrt", out, "fp32")
    assert all(check["passed"] for check in metadata["parity"]["checks"].values())
    clips = parity_clips(encoder, 3, 2, seed=4)
    with torch.no_grad():
        want = adapter(encoder(clips.flatten(0, 1)).reshape(3, 2, -1))
    torch.testing.assert_close(load_artifact(out)(clips), want, rtol=0, atol=1e-3)
