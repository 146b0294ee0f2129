"""Tests for common.encoders: registry, the frozen contract of every encoder, tiny3d checkpoints,
VideoMAE from a local folder, and user modules from TorchScript / torch.export files."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import struct
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from common import encoders
from common.config import EncoderConfig
from common.encoders import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TINY3D_POOLINGS,
    FrozenEncoder,
    Tiny3DNet,
    create_encoder,
    list_encoders,
    load_tiny3d,
    register_encoder,
    save_tiny3d,
)
from tests.paths import REPO_ROOT

# TorchScript is deprecated in torch 2.13 but is one of the formats users may hand us
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")

SMALL = 32  # frame side used in tests: fast, and VideoMAE's tiny config uses it too
CLIP_LEN = 16


def clips_for(encoder: FrozenEncoder, n: int = 2, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, *encoder.input_shape, generator=generator)  # (N, 3, T, H, W)


def tiny3d_config(**overrides) -> EncoderConfig:
    values = {"name": "tiny3d", "path": "", "frame_size": SMALL, "dim": 64, "seed": 0} | overrides
    return EncoderConfig(**values)


# ---------------------------------------------------------------------------------------------
# Files for the videomae and module encoders, built once per test session


class UserClipEncoder(nn.Module):
    """A small frozen-encoder-shaped module with BatchNorm and a plain-tensor constant."""

    def __init__(self, out_dim: int = 6) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, 4, 3, stride=2, padding=1)
        self.norm = nn.BatchNorm3d(4)
        self.head = nn.Linear(4, out_dim)
        self.offset = torch.linspace(-1.0, 1.0, out_dim)  # lifted as a constant by torch.export

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        feature_map = torch.relu(self.norm(self.conv(clips)))  # (N, 4, T/2, H/2, W/2)
        return self.head(feature_map.mean(dim=(2, 3, 4))) + self.offset  # (N, out_dim)


def make_user_module(seed: int = 0) -> UserClipEncoder:
    torch.manual_seed(seed)
    module = UserClipEncoder()
    # give BatchNorm non-trivial running statistics, as a trained model would have
    with torch.no_grad():
        module.train()(torch.randn(4, 3, CLIP_LEN, SMALL, SMALL))
    return module.eval()


def export_user_module(module: nn.Module, path: Path, dynamic_batch: bool = True) -> Path:
    example = (torch.randn(2, 3, CLIP_LEN, SMALL, SMALL),)  # batch >= 2: see PAPER_NOTES
    shapes = {"clips": {0: torch.export.Dim("batch")}} if dynamic_batch else None
    torch.export.save(torch.export.export(module, example, dynamic_shapes=shapes), path)
    return path


@pytest.fixture(scope="session")
def user_module() -> UserClipEncoder:
    return make_user_module(seed=0)


@pytest.fixture(scope="session")
def torchscript_file(tmp_path_factory, user_module) -> Path:
    path = tmp_path_factory.mktemp("module") / "encoder.ts"
    torch.jit.save(torch.jit.script(user_module), path)
    return path


@pytest.fixture(scope="session")
def export_file(tmp_path_factory, user_module) -> Path:
    return export_user_module(user_module, tmp_path_factory.mktemp("module") / "encoder.pt2")


@pytest.fixture(scope="session")
def videomae_folder(tmp_path_factory) -> Path:
    transformers = pytest.importorskip("transformers")
    config = transformers.VideoMAEConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=SMALL,
        patch_size=16,
        num_frames=CLIP_LEN,
        tubelet_size=2,
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("videomae")
    transformers.VideoMAEModel(config).save_pretrained(folder)
    return folder


ENCODER_KINDS = ["tiny3d", "videomae", "torchscript", "export"]


@pytest.fixture(params=ENCODER_KINDS)
def encoder_factory(request) -> Callable[[], FrozenEncoder]:
    """Builds each built-in encoder, small, from the same config every call."""
    if request.param == "tiny3d":
        config = tiny3d_config()
    elif request.param == "videomae":
        folder = request.getfixturevalue("videomae_folder")
        config = EncoderConfig(name="videomae", path=str(folder))
    else:
        path = request.getfixturevalue(f"{request.param}_file")
        config = EncoderConfig(name="module", path=str(path), frame_size=SMALL)
    return lambda: create_encoder(config)


@pytest.fixture
def encoder(encoder_factory) -> FrozenEncoder:
    return encoder_factory()


# ---------------------------------------------------------------------------------------------
# Registry


def test_registry_lists_builtin_encoders():
    assert {"tiny3d", "videomae", "module"} <= set(list_encoders())
    assert list_encoders() == sorted(encoders.ENCODERS.names())


def test_unknown_encoder_name_is_an_error_listing_the_registered_ones():
    with pytest.raises(ValueError, match="unknown encoder 'i3d'") as error:
        create_encoder(EncoderConfig(name="i3d"))
    for name in ("tiny3d", "videomae", "module"):
        assert name in str(error.value)


def test_register_encoder_makes_create_encoder_use_the_builder(monkeypatch):
    monkeypatch.setattr(encoders, "ENCODERS", encoders.ENCODERS.copy())

    @register_encoder("linear-test")
    def build(config: EncoderConfig) -> FrozenEncoder:
        return FrozenEncoder(
            nn.Sequential(nn.Flatten(), nn.Linear(3 * config.clip_len * 4 * 4, config.dim)),
            name="linear-test",
            dim=config.dim,
            clip_len=config.clip_len,
            frame_size=4,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
        )

    encoder = create_encoder(EncoderConfig(name="linear-test", dim=5))
    assert "linear-test" in list_encoders()
    assert encoder(torch.zeros(3, 3, CLIP_LEN, 4, 4)).shape == (3, 5)
    with pytest.raises(ValueError, match="already registered"):
        register_encoder("linear-test")(lambda config: encoder)


# ---------------------------------------------------------------------------------------------
# The frozen contract, for every encoder


def test_encoder_maps_clips_to_features_without_grad(encoder):
    clips = clips_for(encoder, n=3)
    features = encoder(clips)
    assert features.shape == (3, encoder.dim)
    assert features.dtype == torch.float32
    assert not features.requires_grad and features.grad_fn is None
    assert torch.isfinite(features).all()
    assert features.std() > 0  # not a constant output


def test_encoder_feature_of_a_clip_does_not_depend_on_its_batch(encoder):
    clips = clips_for(encoder, n=3)
    torch.testing.assert_close(encoder(clips[1:2]), encoder(clips)[1:2], rtol=1e-4, atol=1e-5)


def test_encoder_stays_in_eval_mode_and_frozen(encoder):
    parent = nn.ModuleDict({"encoder": encoder, "adapter": nn.Linear(encoder.dim, encoder.dim)})
    encoder.train()
    parent.train()
    assert parent["adapter"].training  # the parent's other modules do train
    assert not any(module.training for module in encoder.modules())
    assert not any(p.requires_grad for p in encoder.parameters())
    assert sum(p.numel() for p in encoder.parameters()) > 0


def test_no_gradient_ever_reaches_an_encoder_parameter(encoder):
    clips = clips_for(encoder, n=4)
    encoder_before = {n: t.detach().clone() for n, t in encoder.state_dict().items()}
    adapter = nn.Linear(encoder.dim, encoder.dim)
    adapter_before = adapter.weight.detach().clone()
    model = nn.ModuleDict({"encoder": encoder, "adapter": adapter}).train()
    # careless training code: everything set to require grad, one optimiser over all
    # parameters, with weight decay that would move any parameter it touches
    model.requires_grad_(True)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.5)

    for _ in range(2):
        clip_features = encoder(clips)  # (N, d)
        anonymized = adapter(clip_features)  # (N, d)
        loss = (anonymized - clip_features).pow(2).mean() - anonymized.std()
        optimiser.zero_grad()
        loss.backward()
        assert all(p.grad is None for p in encoder.parameters())
        optimiser.step()

    assert adapter.weight.grad is not None
    assert not torch.equal(adapter.weight, adapter_before)
    for name, tensor in encoder.state_dict().items():
        assert torch.equal(tensor, encoder_before[name]), f"{name} changed"  # bit-exact


def test_running_statistics_do_not_change_in_a_training_loop(encoder):
    buffers_before = {n: b.clone() for n, b in encoder.named_buffers()}
    features_before = encoder(clips_for(encoder))
    nn.ModuleDict({"encoder": encoder}).train()
    for seed in range(3):
        encoder(clips_for(encoder, n=4, seed=seed + 1) * 3 + 1)  # shifted batches
    # even a backbone switched to training mode behind the wrapper's back
    for module in encoder.backbone.modules():
        module.training = True
    encoder(clips_for(encoder, n=4, seed=9) * 3 + 1)
    for name, buffer in encoder.named_buffers():
        assert torch.equal(buffer, buffers_before[name]), f"{name} changed"
    assert torch.equal(encoder(clips_for(encoder)), features_before)


@pytest.mark.parametrize(
    "bad_shape",
    [
        (CLIP_LEN, 3, SMALL, SMALL),  # one clip without the batch dimension
        (2, 1, CLIP_LEN, SMALL, SMALL),  # grey frames
        (2, CLIP_LEN, 3, SMALL, SMALL),  # (N, T, C, H, W), Hugging Face's layout
        (2, 3, CLIP_LEN // 2, SMALL, SMALL),  # too few frames
        (2, 3, CLIP_LEN, SMALL + 8, SMALL + 8),  # frames not cropped to frame_size
        (2, 3, CLIP_LEN, SMALL, SMALL + 8),  # not square
    ],
)
def test_wrong_clip_shape_is_a_clear_value_error(bad_shape):
    encoder = create_encoder(tiny3d_config())
    with pytest.raises(ValueError, match="expects clips of shape") as error:
        encoder(torch.zeros(bad_shape))
    assert f"(N, 3, {CLIP_LEN}, {SMALL}, {SMALL})" in str(error.value)
    assert str(bad_shape) in str(error.value)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float64])
def test_wrong_clip_dtype_is_a_clear_value_error(dtype):
    encoder = create_encoder(tiny3d_config())
    with pytest.raises(ValueError, match=r"expects torch\.float32 clips normalised"):
        encoder(torch.zeros(2, *encoder.input_shape, dtype=dtype))


def test_encoder_id_is_stable_for_the_same_weights(encoder_factory):
    encoder = encoder_factory()
    assert encoder.encoder_id.startswith(f"{encoder.name}-")
    digest = encoder.encoder_id.removeprefix(f"{encoder.name}-")
    assert re.fullmatch("[0-9a-f]{16}", digest), digest
    first_id = encoder.encoder_id
    encoder(clips_for(encoder))  # a forward pass must not change the identity
    assert encoder.encoder_id == first_id
    assert encoder_factory().encoder_id == first_id


def test_encoder_id_follows_weight_changes():
    encoder = create_encoder(tiny3d_config())
    original = encoder.encoder_id
    bias = encoder.backbone.projection.bias
    saved = bias.detach().clone()
    with torch.no_grad():
        bias[0] += 1.0
    assert encoder.encoder_id != original
    with torch.no_grad():
        bias.copy_(saved)
    assert encoder.encoder_id == original
    other = create_encoder(tiny3d_config(seed=1))
    encoder.backbone.load_state_dict(other.backbone.state_dict(), assign=True)  # new tensors
    assert encoder.encoder_id == other.encoder_id != original


def test_encoder_id_hash_follows_the_documented_scheme():
    """Features cached on one machine are reused on another only if both compute the same id
    for the same weights: the scheme is spelled out here by hand and its value pinned."""
    linear = nn.Linear(3, 2)
    with torch.no_grad():
        linear.weight.copy_(torch.arange(6, dtype=torch.float32).reshape(2, 3))
        linear.bias.copy_(torch.tensor([0.5, -0.5]))
    encoder = FrozenEncoder(
        linear, name="pinned", dim=2, clip_len=1, frame_size=1, mean=(0,) * 3, std=(1,) * 3
    )

    def compact_json(value) -> bytes:
        return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()

    def length_prefixed(data: bytes) -> bytes:
        return len(data).to_bytes(8, "little") + data

    hasher = hashlib.sha256(length_prefixed(compact_json({})))  # the (empty) arch
    for name, shape, values in [
        ("param:bias", [2], [0.5, -0.5]),  # sorted by name
        ("param:weight", [2, 3], [0, 1, 2, 3, 4, 5]),
    ]:
        raw = struct.pack(f"<{len(values)}f", *values)  # little-endian float32
        hasher.update(length_prefixed(compact_json([name, "torch.float32", shape, len(raw)])))
        hasher.update(raw)
    assert encoder.encoder_id == f"pinned-{hasher.hexdigest()[:16]}" == "pinned-935b005398014c45"


def test_encoder_id_is_the_same_in_another_process():
    expected = create_encoder(EncoderConfig(name="tiny3d", path="", seed=3)).encoder_id
    code = textwrap.dedent(
        """
        from common.config import EncoderConfig
        from common.encoders import create_encoder
        print(create_encoder(EncoderConfig(name="tiny3d", path="", seed=3)).encoder_id)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True
    )
    assert result.stdout.strip() == expected


# ---------------------------------------------------------------------------------------------
# tiny3d


def test_tiny3d_is_deterministic_in_its_seed_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    first = create_encoder(tiny3d_config(seed=7))
    assert torch.equal(torch.rand(3), expected_draw)

    second = create_encoder(tiny3d_config(seed=7))
    other = create_encoder(tiny3d_config(seed=8))
    clips = clips_for(first)
    assert first.encoder_id == second.encoder_id
    assert torch.equal(first(clips), second(clips))
    assert other.encoder_id != first.encoder_id
    assert not torch.allclose(other(clips), first(clips))


def test_tiny3d_declares_the_input_its_config_asks_for():
    # Not the defaults, so that a builder ignoring the config shows.
    encoder = create_encoder(tiny3d_config(dim=24, clip_len=8))
    assert (encoder.name, encoder.dim, encoder.clip_len, encoder.frame_size) == (
        "tiny3d",
        24,
        8,
        SMALL,
    )
    assert encoder.input_shape == (3, 8, SMALL, SMALL)
    assert encoder(clips_for(encoder)).shape == (2, 24)
    assert encoder.resize_short is None
    assert (encoder.mean, encoder.std) == (IMAGENET_MEAN, IMAGENET_STD)


def test_tiny3d_default_is_small_enough_to_commit():
    net = Tiny3DNet(dim=256)
    assert sum(p.numel() for p in net.parameters()) * 4 < 2_000_000  # bytes of float32


def test_tiny3d_poolings_pool_as_documented():
    clips = torch.randn(2, 3, CLIP_LEN, SMALL, SMALL)
    torch.manual_seed(0)
    nets = {p: Tiny3DNet(dim=8, pooling=p, frame_size=SMALL) for p in TINY3D_POOLINGS}
    for net in nets.values():  # the same convolutions in every net
        net.features.load_state_dict(nets["avg"].features.state_dict())
        net.eval()
    with torch.no_grad():
        feature_map = nets["avg"].features(clips).flatten(2)  # (N, C, T'H'W')
        average, maximum = feature_map.mean(dim=2), feature_map.amax(dim=2)  # (N, C)
        assert not torch.allclose(average, maximum)
        pooled = {
            "avg": average,
            "max": maximum,
            "avgmax": torch.cat([average, maximum], dim=1),  # (N, 2C)
            "attn": torch.cat([average, average], dim=1),  # its scorer starts at zero: uniform
        }
        for pooling, net in nets.items():
            torch.testing.assert_close(net(clips), net.projection(pooled[pooling]), msg=pooling)


def test_tiny3d_pooling_is_part_of_the_encoder_id():
    # avg and max pooling have identical parameter shapes; only the arch tells them apart
    ids = set()
    for pooling in ("avg", "max"):
        torch.manual_seed(0)
        net = Tiny3DNet(dim=8, pooling=pooling, frame_size=SMALL)
        wrapped = FrozenEncoder(
            net,
            name="tiny3d",
            dim=8,
            clip_len=CLIP_LEN,
            frame_size=SMALL,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            arch=net.arch,
        )
        ids.add(wrapped.encoder_id)
    assert len(ids) == 2


def test_tiny3d_rejects_an_unknown_pooling():
    with pytest.raises(ValueError, match="unknown pooling 'gap'"):
        Tiny3DNet(pooling="gap")


def trained_tiny3d() -> Tiny3DNet:
    """A Tiny3DNet with non-default BatchNorm statistics, as after pre-training."""
    torch.manual_seed(0)
    net = Tiny3DNet(dim=64, frame_size=SMALL).train()
    with torch.no_grad():
        net(torch.randn(4, 3, CLIP_LEN, SMALL, SMALL) * 2 + 0.5)
    return net.eval()


def test_tiny3d_checkpoint_round_trip(tmp_path):
    net = trained_tiny3d()
    path = save_tiny3d(net, tmp_path / "tiny3d.pt", {"recipe": "test", "epochs": 3})
    assert [p.name for p in tmp_path.iterdir()] == ["tiny3d.pt"]  # no temporary file left

    raw = torch.load(path, weights_only=True)
    assert (raw["format"], raw["version"]) == ("latentveil-tiny3d", 1)
    assert raw["arch"] == net.arch
    assert raw["meta"] == {"recipe": "test", "epochs": 3}

    from_file = create_encoder(tiny3d_config(path=str(path)))
    in_memory = FrozenEncoder(
        net,
        name="tiny3d",
        dim=64,
        clip_len=CLIP_LEN,
        frame_size=SMALL,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        arch=net.arch,
    )
    clips = clips_for(from_file)
    assert torch.equal(from_file(clips), in_memory(clips))
    assert from_file.encoder_id == in_memory.encoder_id
    assert from_file.encoder_id != create_encoder(tiny3d_config()).encoder_id
    assert load_tiny3d(path).arch == net.arch


@pytest.mark.parametrize(
    ("override", "field"), [({"dim": 128}, "dim"), ({"frame_size": 64}, "frame_size")]
)
def test_tiny3d_checkpoint_that_does_not_match_the_config_is_rejected(tmp_path, override, field):
    path = save_tiny3d(trained_tiny3d(), tmp_path / "tiny3d.pt")
    with pytest.raises(ValueError, match=f"{field} is") as error:
        create_encoder(tiny3d_config(path=str(path), **override))
    assert str(path) in str(error.value)


def test_non_checkpoint_files_are_rejected_naming_the_file(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(2)}, plain)
    for path in (garbage, plain):
        with pytest.raises(ValueError, match="is not a tiny3d checkpoint") as error:
            create_encoder(tiny3d_config(path=str(path)))
        assert str(path) in str(error.value)


def test_missing_tiny3d_checkpoint_is_a_file_not_found_error(tmp_path):
    missing = tmp_path / "nowhere.pt"
    with pytest.raises(FileNotFoundError, match=r"nowhere\.pt"):
        create_encoder(tiny3d_config(path=str(missing)))
    with pytest.raises(ValueError, match="is a folder"):
        create_encoder(tiny3d_config(path=str(tmp_path)))


def test_save_tiny3d_refuses_meta_that_cannot_be_read_back(tmp_path):
    with pytest.raises(TypeError, match="JSON"):
        save_tiny3d(trained_tiny3d(), tmp_path / "tiny3d.pt", {"tensor": torch.zeros(1)})
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------
# videomae


def test_videomae_declares_its_input_from_the_hf_config(videomae_folder):
    encoder = create_encoder(EncoderConfig(name="videomae", path=str(videomae_folder)))
    assert (encoder.dim, encoder.clip_len, encoder.frame_size) == (32, CLIP_LEN, SMALL)
    assert encoder.resize_short == int(256 / 224 * SMALL)
    assert (encoder.mean, encoder.std) == (IMAGENET_MEAN, IMAGENET_STD)


def test_videomae_feature_is_the_token_mean_of_frames_in_hf_layout(videomae_folder):
    transformers = pytest.importorskip("transformers")
    encoder = create_encoder(EncoderConfig(name="videomae", path=str(videomae_folder)))
    reference = transformers.VideoMAEModel.from_pretrained(videomae_folder).eval()
    frames = torch.randn(2, CLIP_LEN, 3, SMALL, SMALL)  # (N, T, C, H, W): HF's pixel_values
    with torch.no_grad():
        expected = reference(pixel_values=frames).last_hidden_state.mean(dim=1)  # (N, d)
    clips = frames.transpose(1, 2)  # (N, 3, T, H, W)
    torch.testing.assert_close(encoder(clips), expected)


def test_videomae_folder_errors_name_the_path(tmp_path, videomae_folder):
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        create_encoder(EncoderConfig(name="videomae", path=str(missing)))
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        create_encoder(EncoderConfig(name="videomae", path=str(tmp_path)))
    with pytest.raises(ValueError, match=r"encoder\.clip_len=16"):
        create_encoder(EncoderConfig(name="videomae", path=str(videomae_folder), clip_len=8))
    other = tmp_path / "bert"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="'bert' model"):
        create_encoder(EncoderConfig(name="videomae", path=str(other)))


def test_videomae_folder_with_missing_weights_is_rejected(tmp_path, videomae_folder):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    shutil.copy(videomae_folder / "config.json", no_weights)
    with pytest.raises(FileNotFoundError, match="cannot load VideoMAE weights from"):
        create_encoder(EncoderConfig(name="videomae", path=str(no_weights)))

    # transformers would initialise absent layers at random and only warn
    partial = tmp_path / "partial"
    shutil.copytree(videomae_folder, partial)
    weights = safetensors_torch.load_file(partial / "model.safetensors")
    kept = {name: tensor for name, tensor in weights.items() if "layer.1." not in name}
    safetensors_torch.save_file(kept, partial / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="lacks VideoMAE weights") as error:
        create_encoder(EncoderConfig(name="videomae", path=str(partial)))
    assert str(partial) in str(error.value)


def test_videomae_without_transformers_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes the import fail
    with pytest.raises(ImportError, match=r"latentveil\[hf\]"):
        create_encoder(EncoderConfig(name="videomae", path=str(tmp_path)))


# ---------------------------------------------------------------------------------------------
# module: TorchScript and torch.export


@pytest.mark.parametrize("kind", ["torchscript", "export"])
def test_user_module_encodes_like_the_original(request, user_module, kind):
    path = request.getfixturevalue(f"{kind}_file")
    encoder = create_encoder(EncoderConfig(name="module", path=str(path), frame_size=SMALL))
    assert encoder.dim == 6  # read from a dummy forward, not from config.dim
    assert encoder.arch == {"format": "torch.export" if kind == "export" else "torchscript"}
    clips = clips_for(encoder, n=3)
    with torch.no_grad():
        expected = user_module(clips)
    torch.testing.assert_close(encoder(clips), expected)


def test_user_module_ids_follow_weights_and_constants(tmp_path, export_file, torchscript_file):
    def encoder_id(path: Path) -> str:
        config = EncoderConfig(name="module", path=str(path), frame_size=SMALL)
        return create_encoder(config).encoder_id

    other_weights = export_user_module(make_user_module(seed=1), tmp_path / "other.pt2")
    shifted = make_user_module(seed=0)
    shifted.offset = shifted.offset + 1.0  # only a lifted constant differs
    other_constant = export_user_module(shifted, tmp_path / "constant.pt2")
    other_script = tmp_path / "other.ts"
    torch.jit.save(torch.jit.script(make_user_module(seed=1)), other_script)

    paths = (export_file, other_weights, other_constant, torchscript_file, other_script)
    assert len({encoder_id(path) for path in paths}) == len(paths)


def test_user_module_with_a_static_batch_is_rejected(tmp_path):
    path = export_user_module(make_user_module(), tmp_path / "static.pt2", dynamic_batch=False)
    with pytest.raises(ValueError, match="dynamic batch") as error:
        create_encoder(EncoderConfig(name="module", path=str(path), frame_size=SMALL))
    assert str(path) in str(error.value)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_user_module_saved_in_training_mode_is_rejected(tmp_path):
    module = make_user_module().train()
    path = tmp_path / "traced-train.ts"
    torch.jit.save(torch.jit.trace(module, torch.randn(2, 3, CLIP_LEN, SMALL, SMALL)), path)
    with pytest.raises(ValueError, match=r"model\.eval\(\)"):
        create_encoder(EncoderConfig(name="module", path=str(path), frame_size=SMALL))


def test_user_module_file_errors_name_the_path(tmp_path):
    pickled = tmp_path / "pickled.pt"
    torch.save(make_user_module(), pickled)
    with pytest.raises(ValueError, match="neither a TorchScript") as error:
        create_encoder(EncoderConfig(name="module", path=str(pickled)))
    assert str(pickled) in str(error.value)
    with pytest.raises(FileNotFoundError, match=r"absent\.pt2"):
        create_encoder(EncoderConfig(name="module", path=str(tmp_path / "absent.pt2")))
    with pytest.raises(ValueError, match=r"encoder\.path is not set"):
        create_encoder(EncoderConfig(name="module"))


def test_user_module_input_contract_comes_from_the_config(torchscript_file):
    # the module itself pools globally and would accept any size; the configured one is the
    # contract, so clips of another size are refused
    encoder = create_encoder(
        EncoderConfig(name="module", path=str(torchscript_file), frame_size=48)
    )
    assert encoder.frame_size == 48
    with pytest.raises(ValueError, match="expects clips of shape"):
        encoder(torch.zeros(1, 3, CLIP_LEN, SMALL, SMALL))
