"""Frozen video encoders f_E: a registry, one factory, and the three built-in encoders.

Every encoder is a `FrozenEncoder`: it maps float clips (N, 3, T, H, W), already resized,
centre-cropped and normalised as the encoder declares (`resize_short`, `frame_size`, `mean`,
`std`), to clip features (N, d). It never trains: it stays in eval mode, none of its parameters
requires grad, and its forward runs under `torch.no_grad()`, so no gradient from the adapter's
losses can reach it. `encoder_id` names the exact weights, so cached features can be keyed by it.

    encoder = create_encoder(EncoderConfig(name="tiny3d", seed=0))
    clip_features = encoder(clips)  # (N, 3, 16, 64, 64) -> (N, 256)

Built-in encoders (`list_encoders()`):

- `tiny3d`: `Tiny3DNet`, a small 3D CNN (the default; trainable on its own, frozen here), randomly
  initialised from `EncoderConfig.seed` or loaded from a `save_tiny3d` checkpoint.
- `videomae`: a Hugging Face `transformers.VideoMAEModel` from a local folder (extra `hf`).
- `module`: any user module saved with `torch.jit.save` or `torch.export.save` that maps
  (N, 3, T, H, W) clips normalised with ImageNet mean/std to (N, d).

New encoders register a builder `EncoderConfig -> FrozenEncoder` with `@register_encoder(name)`.
"""

from __future__ import annotations

import hashlib
import json
import weakref
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from common.atomic import atomic_path
from common.config import EncoderConfig
from common.errors import LatentveilError
from common.registry import Registry
from common.video.preprocess import IMAGENET_MEAN, IMAGENET_STD

# The pre-trained tiny3d shipped with the package (encoder.path = "builtin").
BUILTIN_TINY3D = Path(__file__).resolve().parent / "checkpoints" / "tiny3d.pt"
TINY3D_FORMAT = "latentveil-tiny3d"
TINY3D_VERSION = 1
TINY3D_POOLINGS = ("avg", "max", "avgmax", "attn")


# ---------------------------------------------------------------------------------------------
# The frozen wrapper


class EncoderError(LatentveilError, ValueError):
    """Encoder weights (encoder.path) that are missing their parts, unreadable, or do not fit
    the encoder config; the message names the file."""


class EncoderUnavailable(LatentveilError, ImportError):
    """An encoder whose optional dependency is not installed; the message says how to."""


class FrozenEncoder(nn.Module):
    """A video model used as the frozen encoder f_E: (N, 3, T, H, W) clips -> (N, d) features.

    Attributes:
        name: registry name of the encoder (`tiny3d`, `videomae`, `module`, ...).
        dim: feature width d.
        clip_len: frames per clip T.
        frame_size: height = width of the frames it expects.
        resize_short: short side to resize frames to before the centre crop to `frame_size`;
            None means `frame_size` (resize the short side straight to the crop size).
        mean, std: per-channel normalisation of RGB values in [0, 1], applied before the encoder.
        arch: plain-data description of what the weights alone do not fix (e.g. tiny3d's
            pooling); part of `encoder_id`.
        backbone: the wrapped module; called on the clips, it returns (N, d).
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        name: str,
        dim: int,
        clip_len: int,
        frame_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        resize_short: int | None = None,
        arch: Mapping[str, Any] | None = None,
        constants: Mapping[str, Tensor] | None = None,
    ) -> None:
        """Wrap `backbone` frozen.

        `arch` (JSON-serialisable) describes what the weights alone do not, e.g. tiny3d's
        pooling; it enters `encoder_id`. `constants` are tensors the backbone uses that are
        neither parameters nor buffers (a torch.export program's lifted constants); they are
        hashed into `encoder_id` too.
        """
        super().__init__()
        self.backbone = backbone
        self.name = name
        self.dim = int(dim)
        self.clip_len = int(clip_len)
        self.frame_size = int(frame_size)
        self.resize_short = None if resize_short is None else int(resize_short)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.arch = json.loads(json.dumps(dict(arch or {}), sort_keys=True))
        self._constants = dict(constants or {})
        self._id_cache: tuple[list[weakref.ref], list[int], str] | None = None
        for parameter in self.backbone.parameters():
            parameter.requires_grad_(False)
        self.train(False)

    @property
    def channels_last_input(self) -> bool:
        """Whether the backbone convolves channels-last clips: feature extraction then hands it
        its batches in that layout as they are, and every other encoder contiguous ones."""
        return bool(getattr(self.backbone, "channels_last_input", False))

    def train(self, mode: bool = True) -> FrozenEncoder:
        """Stay in eval mode whatever `mode` is.

        A parent module put in training mode calls this; BatchNorm must keep its running
        statistics and dropout must stay off, or the cached features and the features the
        adapter trains on would drift. The flag is set directly instead of through the
        children's `train()`, which modules from `torch.export` refuse.
        """
        del mode  # a frozen encoder has no training mode
        for module in self.modules():
            module.training = False
        return self

    def forward(self, clips: Tensor) -> Tensor:
        """Encode clips (N, 3, T, H, W) into features (N, d) that do not require grad.

        Raises ValueError when the clips do not have the shape and dtype the encoder declares.
        """
        self._check_clips(clips)
        if any(module.training for module in self.modules()):
            # Someone switched the backbone itself to training mode; undo it before it can
            # update BatchNorm statistics.
            self.train(False)
        # no_grad rather than inference_mode: the features feed a trainable adapter, and
        # inference tensors cannot be saved for its backward pass.
        with torch.no_grad():
            clip_features = self.backbone(clips)  # (N, d)
        expected = (clips.shape[0], self.dim)
        if not isinstance(clip_features, Tensor) or tuple(clip_features.shape) != expected:
            got = tuple(clip_features.shape) if isinstance(clip_features, Tensor) else None
            raise RuntimeError(
                f"encoder '{self.name}' returned {got or type(clip_features).__name__} "
                f"instead of features {expected}"
            )
        return clip_features

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """Shape of one clip, (3, T, H, W)."""
        return (3, self.clip_len, self.frame_size, self.frame_size)

    @property
    def encoder_id(self) -> str:
        """`"{name}-{16 hex digits}"`: SHA-256 over the weights, stable across processes.

        Hashes the `arch` description, then every parameter, buffer and constant in sorted
        name order (name, dtype, shape, raw bytes of the contiguous CPU tensor). The digest
        is cached until a tensor is modified in place (e.g. by `load_state_dict`).
        """
        tensors = self._named_weight_tensors()
        versions = [t._version for _, t in tensors]
        if self._id_cache is not None:
            refs, cached_versions, cached_id = self._id_cache
            # weak references: a replaced tensor (load_state_dict(assign=True), .to()) never
            # matches, and the cache keeps no old tensor alive
            same = len(refs) == len(tensors) and all(
                ref() is t for ref, (_, t) in zip(refs, tensors, strict=True)
            )
            if same and cached_versions == versions:
                return cached_id
        digest = _sha256_of_tensors(tensors, header=_json_bytes(self.arch))
        encoder_id = f"{self.name}-{digest[:16]}"
        self._id_cache = ([weakref.ref(t) for _, t in tensors], versions, encoder_id)
        return encoder_id

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, dim={self.dim}, clip_len={self.clip_len}, "
            f"frame_size={self.frame_size}, resize_short={self.resize_short}"
        )

    def _named_weight_tensors(self) -> list[tuple[str, Tensor]]:
        named = {f"param:{n}": p for n, p in self.backbone.named_parameters()}
        named.update({f"buffer:{n}": b for n, b in self.backbone.named_buffers()})
        named.update({f"constant:{n}": c for n, c in self._constants.items()})
        return sorted(named.items())

    def _expected_dtype(self) -> torch.dtype:
        for parameter in self.backbone.parameters():
            if parameter.is_floating_point():
                return parameter.dtype
        return torch.float32

    def _check_clips(self, clips: Tensor) -> None:
        expected = (3, self.clip_len, self.frame_size, self.frame_size)
        if not isinstance(clips, Tensor) or clips.ndim != 5 or tuple(clips.shape[1:]) != expected:
            got = tuple(clips.shape) if isinstance(clips, Tensor) else type(clips).__name__
            raise ValueError(
                f"encoder '{self.name}' expects clips of shape (N, {', '.join(map(str, expected))})"
                f" = (batch, RGB channels, clip_len frames, height, width), got {got}"
            )
        dtype = self._expected_dtype()
        if clips.dtype != dtype:
            raise ValueError(
                f"encoder '{self.name}' expects {dtype} clips normalised with mean {self.mean} "
                f"and std {self.std}, got {clips.dtype}"
            )


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _sha256_of_tensors(named_tensors: Iterable[tuple[str, Tensor]], header: bytes = b"") -> str:
    """Hex SHA-256 of `header` and of each (name, dtype, shape, raw bytes), in the given order.

    Each record is length-prefixed so that no two different tensor lists hash alike. Raw bytes
    are the machine's (little-endian on every platform torch supports).
    """
    hasher = hashlib.sha256()
    hasher.update(len(header).to_bytes(8, "little") + header)
    for name, tensor in named_tensors:
        data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
        record = _json_bytes([name, str(tensor.dtype), list(tensor.shape), data.numel()])
        hasher.update(len(record).to_bytes(8, "little") + record)
        hasher.update(memoryview(data.numpy()))
    return hasher.hexdigest()


# ---------------------------------------------------------------------------------------------
# Registry and factory

EncoderBuilder = Callable[[EncoderConfig], FrozenEncoder]
ENCODERS: Registry[EncoderBuilder] = Registry("encoder")


def register_encoder(name: str) -> Callable[[EncoderBuilder], EncoderBuilder]:
    """Decorator registering a builder `EncoderConfig -> FrozenEncoder` under `name`."""
    return ENCODERS.register(name)


def list_encoders() -> list[str]:
    """Names of the registered encoders, sorted."""
    return sorted(ENCODERS.names())


def create_encoder(config: EncoderConfig) -> FrozenEncoder:
    """Build the frozen encoder `config.name` describes (see the module docstring).

    Raises ValueError for an unknown name, FileNotFoundError or EncoderError (a ValueError) for
    a bad `config.path`, EncoderUnavailable (an ImportError) when an optional dependency is
    missing; all but the first are LatentveilErrors, the command line's one-line errors.
    """
    return ENCODERS.get(config.name)(config)


def _existing_path(path: str | Path, expected: str, *, directory: bool = False) -> Path:
    """`path` as a Path if it exists as a file (or folder); otherwise a clear error."""
    if str(path) in ("", "builtin"):
        # "builtin" is the default of encoder.path and names tiny3d's shipped checkpoint only.
        raise EncoderError(f"encoder.path is not set (it is {str(path)!r}); expected {expected}")
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise FileNotFoundError(f"encoder weights not found: {resolved} (expected {expected})")
    if directory and not resolved.is_dir():
        raise EncoderError(f"{resolved} is a file; expected {expected}")
    if not directory and not resolved.is_file():
        raise EncoderError(f"{resolved} is a folder; expected {expected}")
    return resolved


# ---------------------------------------------------------------------------------------------
# tiny3d: a small 3D CNN


class Tiny3DNet(nn.Module):
    """Small 3D CNN mapping clips (N, 3, T, H, W) to features (N, dim).

    One Conv3d(3x3x3) + BatchNorm3d + ReLU block per entry of `widths`, each with its stride
    from `strides` (the default halves H and W three times and T three times: 16x64x64 ends
    at 2x8x8), then pooling over (T, H, W) and a Linear to `dim`. The network is fully
    convolutional and accepts any T, H, W; `clip_len` and `frame_size` record the input it is
    meant for (the checkpoint and `FrozenEncoder` enforce them).

    Pooling (`pooling`):
        avg: global average. Washes out small actors' fine attributes (EXPERIMENTS.md).
        max: global max.
        avgmax (default): average and max concatenated; max keeps a small actor's strongest
            local responses that averaging over the whole frame dilutes.
        attn: average concatenated with a learned spatio-temporal attention pooling (a 1x1x1
            conv scores each position, softmax over positions). The scorer starts at zero, so
            attention equals averaging until trained; prefer avgmax for a random encoder.
    """

    # On CPU it convolves channels-last input (forward), so a caller holding its clips in
    # that layout may pass them as they are (common.features does).
    channels_last_input = True

    def __init__(
        self,
        dim: int = 256,
        widths: Sequence[int] = (16, 32, 64, 128),
        strides: Sequence[Sequence[int]] = ((1, 2, 2), (2, 2, 2), (2, 2, 2), (2, 1, 1)),
        pooling: str = "avgmax",
        clip_len: int = 16,
        frame_size: int = 64,
    ) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        strides = tuple(tuple(int(s) for s in stride) for stride in strides)
        if len(widths) == 0 or len(widths) != len(strides) or any(len(s) != 3 for s in strides):
            raise ValueError(
                f"Tiny3DNet needs one (t, h, w) stride per width, got widths {widths} "
                f"and strides {strides}"
            )
        if pooling not in TINY3D_POOLINGS:
            raise ValueError(f"unknown pooling '{pooling}'; choose one of {TINY3D_POOLINGS}")
        self.dim = int(dim)
        self.widths = widths
        self.strides = strides
        self.pooling = pooling
        self.clip_len = int(clip_len)
        self.frame_size = int(frame_size)

        blocks = []
        in_channels = 3
        for width, stride in zip(widths, strides, strict=True):
            blocks += [
                # no conv bias: the BatchNorm right after it has one
                nn.Conv3d(in_channels, width, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm3d(width),
                nn.ReLU(inplace=True),
            ]
            in_channels = width
        self.features = nn.Sequential(*blocks)
        self.attention_score = nn.Conv3d(in_channels, 1, 1) if pooling == "attn" else None
        pooled = in_channels if pooling in ("avg", "max") else 2 * in_channels
        self.projection = nn.Linear(pooled, self.dim)
        self._init_weights()

    @property
    def arch(self) -> dict[str, Any]:
        """Constructor arguments as plain data: what a checkpoint needs to rebuild the net."""
        return {
            "dim": self.dim,
            "widths": list(self.widths),
            "strides": [list(s) for s in self.strides],
            "pooling": self.pooling,
            "clip_len": self.clip_len,
            "frame_size": self.frame_size,
        }

    def _init_weights(self) -> None:
        # He init keeps activations at a usable scale through the stack, which matters when
        # the random network is used as is (a frozen random encoder).
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if self.attention_score is not None:
            nn.init.zeros_(self.attention_score.weight)
            nn.init.zeros_(self.attention_score.bias)

    def forward(self, clips: Tensor) -> Tensor:
        """Clips (N, 3, T, H, W) -> features (N, dim)."""
        if clips.device.type == "cpu":
            # oneDNN's 3D convolutions ran about 1.3x faster on channels-last input (measured
            # on 2 threads); the weights keep their layout, so checkpoints and ids do not change
            clips = clips.contiguous(memory_format=torch.channels_last_3d)
        feature_map = self.features(clips)  # (N, C, T', H', W')
        flat = feature_map.flatten(2)  # (N, C, T'H'W')
        average = flat.mean(dim=2)  # (N, C)
        if self.pooling == "avg":
            pooled = average
        elif self.pooling == "max":
            pooled = flat.amax(dim=2)  # (N, C)
        elif self.pooling == "avgmax":
            pooled = torch.cat([average, flat.amax(dim=2)], dim=1)  # (N, 2C)
        else:
            scores = self.attention_score(feature_map).flatten(2)  # (N, 1, T'H'W')
            weights = scores.softmax(dim=2)  # (N, 1, T'H'W')
            attended = (flat * weights).sum(dim=2)  # (N, C)
            pooled = torch.cat([average, attended], dim=1)  # (N, 2C)
        return self.projection(pooled)  # (N, dim)


def save_tiny3d(
    net: Tiny3DNet, path: str | Path, extra_meta: Mapping[str, Any] | None = None
) -> Path:
    """Write `net` as a tiny3d checkpoint, atomically; return the path.

    The file is a torch pickle of plain data, loadable with `weights_only=True`:
    {"format": "latentveil-tiny3d", "version": 1, "arch": net.arch, "state_dict": ...,
    "meta": extra_meta}. `extra_meta` (e.g. the pre-training recipe) must be JSON-serialisable.
    """
    meta = dict(extra_meta or {})
    try:
        meta = json.loads(json.dumps(meta))
    except (TypeError, ValueError) as error:
        raise TypeError(f"extra_meta must be JSON-serialisable plain data: {error}") from error
    checkpoint = {
        "format": TINY3D_FORMAT,
        "version": TINY3D_VERSION,
        "arch": net.arch,
        # clone: a state_dict entry may be a view into a larger storage, which torch.save
        # would write whole
        "state_dict": {k: v.detach().to("cpu").clone() for k, v in net.state_dict().items()},
        "meta": meta,
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)
    return path


def load_tiny3d(
    path: str | Path,
    *,
    dim: int | None = None,
    frame_size: int | None = None,
    clip_len: int | None = None,
) -> Tiny3DNet:
    """Load a checkpoint written by `save_tiny3d` (with `torch.load(weights_only=True)`).

    `dim`, `frame_size` and `clip_len`, when given, must equal the checkpoint's. Raises
    FileNotFoundError for a missing file and EncoderError naming the file for anything that is
    not such a checkpoint or does not match.
    """
    expected = "a tiny3d checkpoint written by common.encoders.save_tiny3d"
    path = _existing_path(path, expected)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for foreign or corrupt files
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else repr(error)
        raise EncoderError(f"{path} is not {expected} (torch.load failed: {reason})") from error
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != TINY3D_FORMAT:
        raise EncoderError(f"{path} is not {expected} (no 'format': '{TINY3D_FORMAT}' entry)")
    if checkpoint.get("version") != TINY3D_VERSION:
        raise EncoderError(
            f"{path} is a tiny3d checkpoint of version {checkpoint.get('version')!r}; "
            f"this code reads version {TINY3D_VERSION}"
        )
    arch = checkpoint.get("arch")
    try:
        net = Tiny3DNet(**arch)
    except (TypeError, ValueError) as error:
        raise EncoderError(
            f"{path} has an invalid tiny3d 'arch' entry {arch!r}: {error}"
        ) from error

    requested = {"dim": dim, "frame_size": frame_size, "clip_len": clip_len}
    mismatches = [
        f"{key} is {getattr(net, key)} in the checkpoint but {value} in the encoder config"
        for key, value in requested.items()
        if value is not None and getattr(net, key) != int(value)
    ]
    if mismatches:
        raise EncoderError(
            f"tiny3d checkpoint {path} does not match the encoder config: {'; '.join(mismatches)}."
            " Set encoder.dim / encoder.frame_size / encoder.clip_len to the checkpoint's values"
            " or use a checkpoint trained for this config."
        )
    state_dict = checkpoint.get("state_dict")
    if not isinstance(state_dict, dict):
        raise EncoderError(f"{path} has no 'state_dict' mapping; expected {expected}")
    try:
        net.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        raise EncoderError(f"{path} has weights that do not fit its own arch: {error}") from error
    return net.eval()


@register_encoder("tiny3d")
def build_tiny3d(config: EncoderConfig) -> FrozenEncoder:
    """tiny3d encoder: from `config.path` (a `save_tiny3d` file) or, if empty, from `config.seed`.

    Normalisation: ImageNet mean/std, the same as every other encoder here, so one reading
    pipeline serves all encoders; tiny3d is trained from scratch with it.
    """
    if config.path == "builtin":
        if not BUILTIN_TINY3D.is_file():
            raise FileNotFoundError(
                f"the built-in tiny3d checkpoint is missing ({BUILTIN_TINY3D}); make it with "
                "`latentveil pretrain-encoder` (see common/checkpoints/README.md) or set "
                "encoder.path to a checkpoint ('' for a random encoder)"
            )
        net = load_tiny3d(
            BUILTIN_TINY3D, dim=config.dim, frame_size=config.frame_size, clip_len=config.clip_len
        )
    elif config.path:
        net = load_tiny3d(
            config.path, dim=config.dim, frame_size=config.frame_size, clip_len=config.clip_len
        )
    else:
        # A private RNG state so that building an encoder neither depends on nor disturbs the
        # caller's random stream: same seed, same weights, same encoder_id.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            net = Tiny3DNet(dim=config.dim, clip_len=config.clip_len, frame_size=config.frame_size)
    return FrozenEncoder(
        net,
        name="tiny3d",
        dim=net.dim,
        clip_len=net.clip_len,
        frame_size=net.frame_size,
        resize_short=None,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        arch=net.arch,
    )


# ---------------------------------------------------------------------------------------------
# videomae: Hugging Face transformers, local folder only


class VideoMAEClipEmbedder(nn.Module):
    """VideoMAEModel with our clip layout and a mean over its output tokens as the embedding.

    VideoMAE has no [CLS] token; the Kinetics-fine-tuned VideoMAE-B of the original repos
    classifies from the mean of the last hidden states (then `fc_norm`, which belongs to the
    classification head and is not applied here).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, clips: Tensor) -> Tensor:
        """Clips (N, 3, T, H, W) -> features (N, hidden_size)."""
        pixel_values = clips.permute(0, 2, 1, 3, 4)  # (N, T, 3, H, W): the layout HF expects
        tokens = self.model(pixel_values=pixel_values).last_hidden_state  # (N, tokens, d)
        return tokens.mean(dim=1)  # (N, d)


@register_encoder("videomae")
def build_videomae(config: EncoderConfig) -> FrozenEncoder:
    """VideoMAE from the local folder `config.path` (written by `save_pretrained`).

    dim, frame_size and clip_len come from the model's config (hidden_size, image_size,
    num_frames); `config.dim` and `config.frame_size` are ignored, `config.clip_len` must equal
    num_frames. Frames: short side int(256/224 * image_size), centre crop image_size, ImageNet
    mean/std (the Kinetics evaluation convention). Needs the `hf` extra.
    """
    try:
        from transformers import VideoMAEModel
    except ImportError as error:
        raise EncoderUnavailable(
            "the 'videomae' encoder needs Hugging Face transformers: pip install 'latentveil[hf]'"
        ) from error
    expected = "a local VideoMAE folder (config.json + weights) written by save_pretrained"
    folder = _existing_path(config.path, expected, directory=True)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{folder} has no config.json; expected {expected}")
    try:
        model_type = json.loads(config_file.read_text()).get("model_type")
    except (json.JSONDecodeError, AttributeError) as error:
        raise EncoderError(f"{config_file} is not a valid Hugging Face config: {error}") from error
    if model_type != "videomae":
        raise EncoderError(f"{folder} holds a '{model_type}' model; expected {expected}")
    try:
        model, info = VideoMAEModel.from_pretrained(
            folder, local_files_only=True, dtype=torch.float32, output_loading_info=True
        )
    except OSError as error:
        raise FileNotFoundError(f"cannot load VideoMAE weights from {folder}: {error}") from error
    if info.get("missing_keys"):
        # transformers would silently initialise these at random; a partly random encoder
        # gives meaningless features
        missing = sorted(info["missing_keys"])
        raise EncoderError(
            f"{folder} lacks VideoMAE weights {missing[:5]} ({len(missing)} missing)"
        )

    hf_config = model.config
    if config.clip_len != hf_config.num_frames:
        raise EncoderError(
            f"VideoMAE in {folder} takes clips of {hf_config.num_frames} frames but "
            f"encoder.clip_len is {config.clip_len}; set encoder.clip_len={hf_config.num_frames}"
        )
    image_size = int(hf_config.image_size)
    return FrozenEncoder(
        VideoMAEClipEmbedder(model),
        name="videomae",
        dim=int(hf_config.hidden_size),
        clip_len=int(hf_config.num_frames),
        frame_size=image_size,
        resize_short=int(256 / 224 * image_size),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        arch={
            "pooling": "token_mean",
            "use_mean_pooling": bool(hf_config.use_mean_pooling),
            "hidden_act": str(hf_config.hidden_act),
            "layer_norm_eps": float(hf_config.layer_norm_eps),
        },
    )


# ---------------------------------------------------------------------------------------------
# module: a user-supplied TorchScript or torch.export file


def _load_user_module(path: Path) -> tuple[nn.Module, dict[str, Tensor], str]:
    """(module, lifted constants, format) from a TorchScript or torch.export file."""
    try:
        names = zipfile.ZipFile(path).namelist()
    except (zipfile.BadZipFile, OSError):
        names = []
    # torch.export archives carry an `archive_format` record, TorchScript ones `constants.pkl`
    is_export = any(n.endswith("/archive_format") or n == "archive_format" for n in names)
    is_script = any(n.endswith("/constants.pkl") for n in names)
    if is_export:
        try:
            program = torch.export.load(path)
        except Exception as error:
            raise EncoderError(
                f"{path} is a torch.export archive that fails to load: {error}"
            ) from error
        return program.module(), dict(program.constants), "torch.export"
    if is_script:
        try:
            return torch.jit.load(path, map_location="cpu"), {}, "torchscript"
        except Exception as error:
            raise EncoderError(
                f"{path} is a TorchScript archive that fails to load: {error}"
            ) from error
    raise EncoderError(
        f"{path} is neither a TorchScript (torch.jit.save) nor a torch.export (torch.export.save)"
        " file; a module saved with plain torch.save cannot be loaded safely"
    )


def _probe_output_dim(module: nn.Module, path: Path, clip_len: int, frame_size: int) -> int:
    """Feature width d from two dummy forwards, checking the module is a frozen clip encoder.

    Rejects a module that fails on (2, 3, T, H, W) or (1, ...) inputs (e.g. exported with a
    static batch size), returns something other than (N, d), changes its buffers (BatchNorm
    exported in training mode), or encodes a clip differently depending on its batch
    companions.
    """
    shape = f"(N, 3, {clip_len}, {frame_size}, {frame_size})"
    generator = torch.Generator().manual_seed(0)
    clips = torch.randn(2, 3, clip_len, frame_size, frame_size, generator=generator)
    buffers_before = {n: b.clone() for n, b in module.named_buffers()}
    try:
        with torch.no_grad():
            batch_features = module(clips)  # (2, d)
            single_features = module(clips[:1])  # (1, d)
    except Exception as error:
        raise EncoderError(
            f"module {path} failed on clips {shape} with N = 2 and N = 1 (export it with a "
            f"dynamic batch dimension and these frame counts and sizes): {error}"
        ) from error
    for features, n in ((batch_features, 2), (single_features, 1)):
        if not isinstance(features, Tensor) or features.ndim != 2 or features.shape[0] != n:
            got = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
            raise EncoderError(
                f"module {path} must map clips {shape} to a tensor (N, d), got {got}"
            )
    changed = [n for n, b in module.named_buffers() if not torch.equal(b, buffers_before[n])]
    if changed:
        raise EncoderError(
            f"module {path} updates its buffers {changed[:3]} when called (saved in training "
            "mode?); save it after model.eval()"
        )
    scale = max(1.0, float(batch_features.abs().max()))
    if not torch.allclose(single_features, batch_features[:1], rtol=1e-3, atol=1e-3 * scale):
        raise EncoderError(
            f"module {path} encodes a clip differently depending on the other clips in its batch"
            " (BatchNorm in training mode?); save it after model.eval()"
        )
    return int(batch_features.shape[1])


@register_encoder("module")
def build_module(config: EncoderConfig) -> FrozenEncoder:
    """A user module from `config.path`: TorchScript or torch.export, recognised by content.

    The module maps float32 clips (N, 3, clip_len, frame_size, frame_size), normalised with
    ImageNet mean/std after resizing the short side to frame_size and centre cropping, to
    (N, d); bake any other preprocessing into the module. d is read from a dummy forward at
    the configured clip_len and frame_size; `config.dim` is ignored. encoder_id hashes the
    parameters, buffers and (torch.export) lifted constants, not the code.
    """
    expected = "a TorchScript (torch.jit.save) or torch.export (torch.export.save) file"
    path = _existing_path(config.path, expected)
    module, constants, file_format = _load_user_module(path)
    for module_ in module.modules():
        # exported modules refuse eval(); the flag itself is harmless to set
        module_.training = False
    dim = _probe_output_dim(module, path, config.clip_len, config.frame_size)
    return FrozenEncoder(
        module,
        name="module",
        dim=dim,
        clip_len=config.clip_len,
        frame_size=config.frame_size,
        resize_short=None,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        arch={"format": file_format},
        constants=constants,
    )


__all__ = [
    "ENCODERS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "EncoderError",
    "EncoderUnavailable",
    "FrozenEncoder",
    "Tiny3DNet",
    "VideoMAEClipEmbedder",
    "create_encoder",
    "list_encoders",
    "load_tiny3d",
    "register_encoder",
    "save_tiny3d",
]
