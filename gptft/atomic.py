"""Atomic writes for every file a user relies on: a temp file in the same folder, fsync, rename.

A kill or a full disk leaves either the previous file or the new one, never a torn one, and no temp file
survives a failed write (a kill -9 can leave one `.<name>.*.tmp`; the next write to that name removes it).
"""
from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from .errors import GptftError


class WriteFailed(GptftError):
    """A file could not be written (disk full, no permission); the previous version is intact."""


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open a folder; the rename is still atomic
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _clear_stale(path: Path) -> None:
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call `write(f)` on a binary temp file beside `path`, then put it in place with one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _clear_stale(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # over the old file in one step: never removed first
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise WriteFailed(f"cannot write {path}: {os.strerror(err.errno)}; the previous file is "
                              f"unchanged; free some space and run again") from None
        if isinstance(err, PermissionError):
            raise WriteFailed(f"cannot write {path}: permission denied") from None
        raise
    _fsync_dir(path.parent)
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_atomic(path, lambda f: f.write(text.encode("utf-8")))


def write_json(path: str | os.PathLike, data) -> Path:
    return write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
