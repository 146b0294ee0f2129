"""Atomic file writes (a temporary file beside the target, renamed over it) and file hashes.

A reader never sees a half-written file, and an interrupted write leaves the old file (or no
file) behind, never a truncated one. `output_folder` and `output_file` check an output path
before any work: a command that would fail at its last write says so at once, naming the path.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from common.errors import PathError


def _default_mode() -> int:
    """rw for everyone the umask allows, as open() would create the file (mkstemp uses 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def check_output_folder(folder: str | os.PathLike) -> Path:
    """Raise PathError if a file stands where the output folder `folder` goes; creates
    nothing (for a check before long work that writes there only at its end)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise PathError(f"{folder} is a file, not a folder; choose a folder for the outputs")
    return folder


def output_folder(folder: str | os.PathLike) -> Path:
    """Create `folder` (and its parents) for outputs, or raise PathError naming what is in the
    way: a file at its place or at a parent's, or a parent without write permission."""
    folder = check_output_folder(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocking = next(
            (p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), folder
        )
        raise PathError(f"cannot create the folder {folder}: {blocking} is a file") from None
    except PermissionError:
        parent = next((p for p in folder.parents if p.exists()), folder.parent)
        raise PathError(
            f"cannot create the folder {folder}: no permission to write in {parent}"
        ) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PathError(f"no permission to write in {folder}")
    return folder


def output_file(target: str | os.PathLike) -> Path:
    """Check that `target` can be written as a file (its folder is created): PathError if it
    is a folder, or if its folder cannot be made or written in."""
    target = Path(target)
    if target.is_dir():
        raise PathError(f"{target} is a folder; give the path of the file to write")
    output_folder(target.parent)
    return target


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "", fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto `target` on success.

    On an exception the temporary file is removed and `target` is left untouched.
    `suffix` keeps an extension on the temporary name for writers that look at it. With
    `fsync=False` the data is not forced to disk before the rename (for files whose content is
    verified by hash before reuse, where a crash can only cost a regeneration).
    """
    target = output_file(target)  # before writing: os.replace onto a folder fails at the end
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=suffix + ".tmp", dir=target.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        os.chmod(tmp, _default_mode())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `target` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `target` atomically."""
    atomic_write_bytes(target, text.encode("utf-8"))


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (what manifests and feature stores record)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
