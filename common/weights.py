"""Shareable weights: what a site may send, and strict loading of what it receives.

Only parameters and buffers under the allow-listed modules (the AAM and the task heads) are ever
serialised (DESIGN.md decision 3). The frozen encoder and the server's attacker never appear,
whatever else the model holds. Loading is strict: the names, shapes and dtypes must equal the
model's own and every value must be finite; otherwise the error names the offending array.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from common.errors import LatentveilError

if TYPE_CHECKING:  # torch is imported where a model is handled: the wire audit needs none
    from torch import nn

# Module prefixes whose state may leave a site. Everything else (encoder, attacker) stays.
SHAREABLE_PREFIXES: tuple[str, ...] = ("adapter.", "heads.")


class ShareableStateError(LatentveilError, ValueError):
    """Arrays that do not fit the model's shareable state."""


def is_shareable(name: str) -> bool:
    """True when state entry `name` belongs to an allow-listed module."""
    return name.startswith(SHAREABLE_PREFIXES)


def shareable_state(model: nn.Module) -> OrderedDict[str, np.ndarray]:
    """Ordered numpy copies of the allow-listed state entries of `model`."""
    state = OrderedDict()
    for name, tensor in model.state_dict().items():
        if is_shareable(name):
            state[name] = tensor.detach().cpu().numpy().copy()
    if not state:
        raise ShareableStateError("the model has no adapter or head state to share")
    return state


def state_nbytes(arrays: Mapping[str, np.ndarray]) -> int:
    """Bytes of array payload in a shareable state."""
    return int(sum(np.asarray(array).nbytes for array in arrays.values()))


def check_shareable(expected: Mapping[str, np.ndarray], arrays: Mapping[str, np.ndarray]) -> None:
    """Raise ShareableStateError unless `arrays` matches `expected` in names, shapes, dtypes and
    holds only finite values. The message names the first offending array."""
    missing = [name for name in expected if name not in arrays]
    if missing:
        raise ShareableStateError(f"missing array '{missing[0]}' ({len(missing)} missing in all)")
    extra = [name for name in arrays if name not in expected]
    if extra:
        raise ShareableStateError(
            f"unexpected array '{extra[0]}' ({len(extra)} not in the shareable state in all)"
        )
    for name, reference in expected.items():
        array = arrays[name]
        if not isinstance(array, np.ndarray):
            raise ShareableStateError(
                f"array '{name}' is a {type(array).__name__}, not a numpy array"
            )
        if array.shape != reference.shape:
            raise ShareableStateError(
                f"array '{name}' has shape {array.shape}, expected {reference.shape}"
            )
        if array.dtype != reference.dtype:
            raise ShareableStateError(
                f"array '{name}' has dtype {array.dtype}, expected {reference.dtype}"
            )
        if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
            raise ShareableStateError(f"array '{name}' holds non-finite values (NaN or inf)")


def load_shareable(model: nn.Module, arrays: Mapping[str, np.ndarray]) -> None:
    """Load `arrays` into the allow-listed state of `model`, strictly (see check_shareable)."""
    import torch

    expected = shareable_state(model)
    check_shareable(expected, arrays)
    tensors = {name: torch.from_numpy(np.array(arrays[name], copy=True)) for name in expected}
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    assert not unexpected, unexpected  # guaranteed by check_shareable
    not_loaded = [name for name in missing if is_shareable(name)]
    assert not not_loaded, not_loaded


def shareable_arrays_markdown(model: nn.Module) -> str:
    """A markdown table of the arrays a site sends and a run ships (`adapter.npz`): name,
    shape and dtype, and their count (docs/run_folder.md holds it for the default config)."""
    rows = ["| array | shape | dtype |", "|---|---|---|"]
    state = shareable_state(model)
    rows += [f"| `{name}` | {tuple(a.shape)} | {a.dtype} |" for name, a in state.items()]
    total = sum(a.size for a in state.values())
    return "\n".join([*rows, "", f"{len(state)} arrays, {total} values."])
