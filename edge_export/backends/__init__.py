"""Edge backends: one module per inference library, registered by name.

A backend turns one exported part (`edge_export.modules`) into model file(s) in an artifact
folder and loads them back as a function of float32 numpy arrays. Nothing outside this package
imports a backend library; a backend that cannot run here says what is missing and how to
install it (`unavailable()`), before anything is written.

Adding a backend is one module here with a `@register_backend("name")` class.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from torch.export import ExportedProgram

from common.errors import LatentveilError
from common.registry import Registry
from edge_export.modules import PartSpec

PartFunction = Callable[[np.ndarray], np.ndarray]


class BackendUnavailable(LatentveilError):
    """A backend whose library or hardware is missing on this machine."""


class Backend:
    """Base class: builds a part's model file(s) and loads them as a numpy function."""

    name: str = ""
    precisions: tuple[str, ...] = ("fp32",)
    # Order of preference when a site picks the best backend it has (lower is better).
    preference: int = 100

    def unavailable(self) -> str | None:
        """None when the backend can run here; otherwise what is missing and how to install."""
        return None

    def versions(self) -> dict[str, str]:
        """The library versions an artifact records."""
        return {}

    def build(
        self, program: ExportedProgram, spec: PartSpec, folder: Path, precision: str
    ) -> list[str]:
        """Write the part's model file(s) into `folder`; return their names."""
        raise NotImplementedError

    def load(
        self, folder: Path, files: list[str], spec: PartSpec, precision: str = "fp32"
    ) -> PartFunction:
        """The part as a function of a float32 array of `spec`'s input shape, computed at
        `precision` (the artifact's)."""
        raise NotImplementedError


BACKENDS: Registry[type[Backend]] = Registry("edge backend")


def register_backend(name: str) -> Callable[[type[Backend]], type[Backend]]:
    """Class decorator registering a Backend subclass under `name`."""

    def add(cls: type[Backend]) -> type[Backend]:
        cls.name = name
        return BACKENDS.register(name)(cls)

    return add


def get_backend(name: str) -> Backend:
    """An instance of the backend `name` (an unknown name lists the known ones)."""
    backend = BACKENDS.get(name)()
    backend.name = name  # the name it is registered under is the one artifacts record
    return backend


def require_backend(name: str, precision: str = "fp32") -> Backend:
    """The backend `name`, checked able to run here with `precision`; else one clear error."""
    backend = get_backend(name)
    if precision not in backend.precisions:
        raise BackendUnavailable(
            f"the {name} backend offers precision {', '.join(backend.precisions)}, not {precision}"
        )
    reason = backend.unavailable()
    if reason:
        raise BackendUnavailable(f"the {name} backend cannot run here: {reason}")
    return backend


def available_backends() -> list[str]:
    """The backends that can run on this machine, best first (a site's choice order)."""
    usable = [get_backend(name) for name in BACKENDS.names()]
    return [b.name for b in sorted(usable, key=lambda b: b.preference) if not b.unavailable()]


def list_backends() -> list[str]:
    return sorted(BACKENDS.names())


for _module in ("torch_backend", "onnx_backend", "openvino_backend", "tensorrt_backend"):
    importlib.import_module(f"edge_export.backends.{_module}")

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendUnavailable",
    "PartFunction",
    "available_backends",
    "get_backend",
    "list_backends",
    "register_backend",
    "require_backend",
]
