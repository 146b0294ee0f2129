"""Edge artifacts: export, parity against eager, loading, refusal, verification, hot-swap."""

import hashlib
import json

import numpy as np
import onnx
import pytest
import torch

from common.aam import anonymize_in_windows
from common.registry import RegistryError
from edge_export import backends
from edge_export.artifact import (
    METADATA,
    EdgeArtifactError,
    EdgeSource,
    adapter_hash,
    export_artifact,
    load_artifact,
    parity_clips,
    swap_adapter,
    verify_artifact,
)
from edge_export.backends import BackendUnavailable, require_backend
from edge_export.backends.onnx_backend import OnnxBackend

WINDOW = 4


def eager(encoder, adapter, clips):
    """What the artifact must reproduce: f_A(f_E(clips)), (B, T, d)."""
    with torch.no_grad():
        features = encoder(clips.flatten(0, 1))
        return adapter(features.reshape(*clips.shape[:2], -1))


@pytest.fixture(scope="module", params=["torch", "onnx", "openvino"])
def artifact(request, tmp_path_factory, encoder, adapter):
    reason = backends.get_backend(request.param).unavailable()
    if reason:
        pytest.skip(reason)
    out = tmp_path_factory.mktemp(request.param) / "artifact"
    export_artifact(EdgeSource(encoder, adapter, WINDOW), request.param, out, max_batch=4)
    return out


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_fp32_artifact_matches_eager_at_batch_and_clip_counts_not_seen_at_export(
    artifact, encoder, adapter
):
    runtime = load_artifact(artifact)
    # batch 7 > max_batch 4 is split; 1 and 4 clips were neither traced (3) nor checked (5)
    for batch, length in [(1, 1), (7, 4), (2, 2)]:
        clips = parity_clips(encoder, batch, length, seed=batch + 10)
        got = runtime(clips)
        assert got.shape == (batch, length, encoder.dim)
        torch.testing.assert_close(got, eager(encoder, adapter, clips), rtol=0, atol=1e-4)
    metadata = json.loads((artifact / METADATA).read_text())
    for check in metadata["parity"]["checks"].values():
        assert check["passed"] and check["max_abs"] <= 1e-4 and check["cosine_min"] > 0.99999
    assert metadata["encoder"]["encoder_id"] == encoder.encoder_id
    assert metadata["adapter"]["adapter_hash"] == adapter_hash(adapter)
    assert metadata["parts"]["adapter"]["ranges"] == {"batch": [1, 4], "clips": [1, WINDOW]}


def test_a_video_is_anonymized_in_the_windows_training_used(artifact, encoder, adapter):
    runtime = load_artifact(artifact)
    features = encoder(parity_clips(encoder, 1, 9, seed=3)[0])  # (9, d): windows 4, 4, 1
    expected = anonymize_in_windows(adapter, features[None], WINDOW)[0].detach()
    torch.testing.assert_close(runtime.anonymize_video(features), expected, rtol=0, atol=1e-4)


def test_inputs_the_artifact_was_not_exported_for_are_refused_with_the_reason(artifact, encoder):
    runtime = load_artifact(artifact)
    with pytest.raises(ValueError, match="clips from 1 to 4"):
        runtime(parity_clips(encoder, 1, WINDOW + 1, seed=0))
    with pytest.raises(ValueError, match="shape"):
        runtime.encode(torch.zeros(2, 3, encoder.clip_len, 16, 16))


def test_int8_onnx_is_quantized_and_within_its_cosine_tolerance(tmp_path, encoder, adapter):
    out = tmp_path / "int8"
    metadata = export_artifact(EdgeSource(encoder, adapter, WINDOW), "onnx", out, "int8")
    ops = {
        node.op_type
        for part in metadata["parts"].values()
        for name in part["files"]
        for node in onnx.load(out / name).graph.node
    }
    assert {"ConvInteger", "MatMulInteger"} <= ops
    clips = parity_clips(encoder, 3, WINDOW, seed=5)
    got, want = (
        load_artifact(out)(clips).flatten(0, 1),
        eager(encoder, adapter, clips).flatten(0, 1),
    )
    cosine = torch.nn.functional.cosine_similarity(got, want, dim=1)
    assert cosine.min() >= 0.999
    assert (got - want).abs().max() > 1e-6  # it really is a different, quantized computation


def test_an_artifact_that_differs_from_eager_is_never_written(tmp_path, monkeypatch, encoder):
    class NoisyOnnx(OnnxBackend):
        def load(self, folder, files, spec, precision="fp32"):
            run = super().load(folder, files, spec, precision)
            return lambda inputs: run(inputs) * 1.001  # 0.1% off: 10x the fp32 limit

    registry = backends.BACKENDS.copy()
    registry.register("noisy")(NoisyOnnx)
    monkeypatch.setattr(backends, "BACKENDS", registry)
    out = tmp_path / "noisy"
    with pytest.raises(EdgeArtifactError, match="failed its parity check"):
        export_artifact(EdgeSource(encoder, None, WINDOW), "noisy", out)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_an_artifact_is_refused_for_another_encoder_or_adapter_and_when_tampered_with(
    tmp_path, artifact, encoder, adapter, other_adapter
):
    with pytest.raises(EdgeArtifactError, match=f"{encoder.encoder_id}.*tiny3d-0000"):
        load_artifact(artifact, encoder_id="tiny3d-0000")
    other = adapter_hash(other_adapter)
    with pytest.raises(EdgeArtifactError, match=f"{adapter_hash(adapter)}.*{other}"):
        load_artifact(artifact, adapter_hash=other)
    load_artifact(artifact, encoder_id=encoder.encoder_id, adapter_hash=adapter_hash(adapter))

    copy = tmp_path / "copy"
    copy.mkdir()
    for path in artifact.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    model = next(p for p in copy.iterdir() if p.name.startswith("adapter."))
    model.write_bytes(model.read_bytes()[:-10])
    with pytest.raises(EdgeArtifactError, match="changed since export"):
        load_artifact(copy)
    with pytest.raises(EdgeArtifactError, match="not an edge artifact"):
        load_artifact(tmp_path / "nothing")


def test_verify_repeats_the_parity_check_from_the_stored_reference(tmp_path, artifact):
    checks = verify_artifact(artifact)
    assert set(checks) == {"encoder", "edge"} and all(c["passed"] for c in checks.values())

    copy = tmp_path / "copy"
    copy.mkdir()
    for path in artifact.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    with np.load(copy / "reference.npz") as stored:
        reference = {name: stored[name] + 1.0 for name in stored}
    np.savez(copy / "reference.npz", **reference)
    with pytest.raises(EdgeArtifactError, match="reference.npz is missing or changed"):
        verify_artifact(copy)


def test_a_new_adapter_is_swapped_in_without_touching_the_encoder_part(
    tmp_path, encoder, adapter, other_adapter
):
    out = tmp_path / "swap"
    before = export_artifact(EdgeSource(encoder, adapter, WINDOW), "onnx", out)
    encoder_file = out / next(iter(before["parts"]["encoder"]["files"]))
    bytes_before, inode_before = encoder_file.read_bytes(), encoder_file.stat().st_ino

    after = swap_adapter(out, EdgeSource(encoder, other_adapter, WINDOW))
    assert encoder_file.read_bytes() == bytes_before
    assert encoder_file.stat().st_ino == inode_before
    assert after["parts"]["encoder"] == before["parts"]["encoder"]
    assert after["adapter"]["adapter_hash"] == adapter_hash(other_adapter) != adapter_hash(adapter)
    clips = parity_clips(encoder, 2, 3, seed=9)
    runtime = load_artifact(out, adapter_hash=adapter_hash(other_adapter))
    torch.testing.assert_close(
        runtime(clips), eager(encoder, other_adapter, clips), rtol=0, atol=1e-4
    )
    assert verify_artifact(out)["edge"]["passed"]


def test_an_adapter_of_another_encoder_is_not_swapped_in(tmp_path, encoder, adapter):
    from common.config import EncoderConfig
    from common.encoders import create_encoder

    out = tmp_path / "swap"
    export_artifact(EdgeSource(encoder, adapter, WINDOW), "torch", out)
    stranger = create_encoder(EncoderConfig(path="", frame_size=32, dim=16, seed=5))
    with pytest.raises(EdgeArtifactError, match=f"{stranger.encoder_id}.*{encoder.encoder_id}"):
        swap_adapter(out, EdgeSource(stranger, adapter, WINDOW))


def test_an_existing_artifact_is_not_replaced_unless_asked(tmp_path, encoder):
    out = tmp_path / "enc"
    export_artifact(EdgeSource(encoder, None, WINDOW), "torch", out)
    with pytest.raises(EdgeArtifactError, match="already exists"):
        export_artifact(EdgeSource(encoder, None, WINDOW), "torch", out)
    export_artifact(EdgeSource(encoder, None, WINDOW), "torch", out, overwrite=True)


def test_an_unknown_backend_or_precision_is_one_clear_error():
    with pytest.raises(RegistryError, match="unknown edge backend 'tflite'"):
        require_backend("tflite")
    with pytest.raises(BackendUnavailable, match="offers precision fp32, int8, not fp16"):
        require_backend("onnx", "fp16")


def test_openvino_bf16_is_within_the_reduced_precision_tolerance(tmp_path, encoder, adapter):
    backend = backends.get_backend("openvino")
    if backend.unavailable():
        pytest.skip(backend.unavailable())
    out = tmp_path / "bf16"
    try:
        export_artifact(EdgeSource(encoder, adapter, WINDOW), "openvino", out, "bf16")
    except BackendUnavailable as error:  # a CPU without bfloat16 units
        pytest.skip(str(error))
    clips = parity_clips(encoder, 2, WINDOW, seed=6)
    got, want = (
        load_artifact(out)(clips).flatten(0, 1),
        eager(encoder, adapter, clips).flatten(0, 1),
    )
    assert torch.nn.functional.cosine_similarity(got, want, dim=1).min() >= 0.999
    assert (got - want).abs().max() > 1e-5  # computed in bfloat16, not float32


def test_the_default_encoder_and_adapter_export_and_match_eager_at_unseen_sizes(tmp_path):
    """The shipped configuration itself: the built-in tiny3d (64x64, d = 256) and the default
    AAM (3 layers, bottleneck 8, windows of 8), weights as if trained."""
    from common.config import load_config
    from common.encoders import create_encoder
    from tests.edge_export.generated import trained_model
    from tests.paths import CONFIG_DIR

    config = load_config(CONFIG_DIR / "default.yaml")
    encoder = create_encoder(config.encoder)
    adapter = trained_model(config, seed=4).adapter
    out = tmp_path / "default"
    window = config.anonymizer.window
    export_artifact(EdgeSource(encoder, adapter, window), "onnx", out)
    runtime = load_artifact(out, encoder_id=encoder.encoder_id, adapter_hash=adapter_hash(adapter))
    for batch, length in [(1, window), (4, 1), (2, 7)]:
        clips = parity_clips(encoder, batch, length, seed=batch)
        want = eager(encoder, adapter, clips)
        torch.testing.assert_close(
            runtime(clips), want, rtol=0, atol=1e-4 * max(1, want.abs().max())
        )
