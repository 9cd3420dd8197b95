"""Atomic writes for every file a user relies on: a temp file in the same folder, fsync, rename.

A kill or a full disk leaves either the previous file or the new one, never a torn one. A failed write
removes its temp file; so does a small janitor process when this one is killed mid-write (kill -9 runs no
cleanup code here). Only if both die at once (a whole process group killed) can a `.<name>.*.tmp` remain;
the next write to that name removes it.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO

from .errors import GptftError

NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # EFBIG: a file size limit (ulimit -f)


class WriteFailed(GptftError):
    """A file could not be written (disk full, no permission); the previous version is intact."""


# Reads "+path" / "-path" lines; at end of input (this process ended, however) removes the paths still open.
_JANITOR_CODE = """
import os, sys
pending = set()
for line in sys.stdin:
    line = line.rstrip("\\n")
    (pending.add if line[0] == "+" else pending.discard)(line[1:])
for path in pending:
    try:
        os.unlink(path)
    except OSError:
        pass
"""


class _Janitor:
    """One helper process per writer process, started at the first write, in its own session so a signal
    to this process (or its terminal's process group) does not reach it."""

    def __init__(self):
        self.lock = threading.Lock()
        self.proc: subprocess.Popen | None = None
        self.pid: int | None = None

    def _pipe(self):
        if self.proc is None or self.pid != os.getpid():  # a forked child starts its own
            self.proc = subprocess.Popen([sys.executable, "-S", "-c", _JANITOR_CODE], stdin=subprocess.PIPE,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                         start_new_session=True, text=True)
            self.pid = os.getpid()
        return self.proc.stdin

    def tell(self, sign: str, path: str) -> None:
        if "\n" in path:  # one path per line; such a temp is left to the next write's sweep
            return
        with self.lock:
            try:
                pipe = self._pipe()
                pipe.write(f"{sign}{path}\n")
                pipe.flush()
            except OSError:  # no janitor (e.g. no process slots): the next write's sweep still cleans up
                self.proc = None


_janitor = _Janitor()


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open a folder; the rename is still atomic
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_name(path: Path) -> Path:
    """The temp file for `path`: hidden, beside it, unique; the pattern the stale sweep removes."""
    return path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"


def _clear_stale(path: Path) -> None:
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)


def human_bytes(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


def _no_space_message(path: Path, err: OSError, size_hint: int | None) -> str:
    need = f"needs about {human_bytes(size_hint)}, " if size_hint else ""
    if err.errno == errno.EFBIG:
        why, fix = f"{need}more than the file size limit (ulimit -f) allows", "raise the limit"
    else:
        why, fix = f"{need}{human_bytes(shutil.disk_usage(path.parent).free)} free there", "free some space"
    return (f"cannot write {path}: {os.strerror(err.errno)} ({why}); the previous file is unchanged; "
            f"{fix} and run again")


def _put_in_place(path: Path, make_temp: Callable[[Path], None], size_hint: int | None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    _clear_stale(path)
    tmp = temp_name(path)
    _janitor.tell("+", str(tmp))
    try:
        make_temp(tmp)
        os.replace(tmp, path)  # over the old file (or link) in one step: never removed first
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno in NO_SPACE:
            raise WriteFailed(_no_space_message(path, err, size_hint)) from None
        if isinstance(err, PermissionError):
            raise WriteFailed(f"cannot write {path}: permission denied") from None
        raise
    finally:
        _janitor.tell("-", str(tmp))
    _fsync_dir(path.parent)
    return path


class _KeepsWriteError:
    """A file whose first failed write is kept: torch.save reports a full disk as a zip position error."""

    def __init__(self, f: IO[bytes]):
        self.f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def __getattr__(self, name):
        return getattr(self.f, name)


def write_atomic(path: str | os.PathLike, write: Callable[[IO[bytes]], None], size_hint: int | None = None) -> Path:
    """Call `write(f)` on a binary temp file beside `path`, then put it in place with one rename.
    `size_hint` (bytes) is only for the message when the disk is full."""

    def make_temp(tmp: Path) -> None:
        with open(tmp, "xb") as f:
            out = _KeepsWriteError(f)
            try:
                write(out)
            except Exception:
                if out.error is not None:  # the real cause, which a writer may have turned into its own error
                    raise out.error from None
                raise
            f.flush()
            os.fsync(f.fileno())

    return _put_in_place(Path(path), make_temp, size_hint)


def write_text(path: str | os.PathLike, text: str) -> Path:
    data = text.encode("utf-8")
    return write_atomic(path, lambda f: f.write(data), size_hint=len(data))


def write_json(path: str | os.PathLike, data) -> Path:
    return write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def write_folder_atomic(path: str | os.PathLike, fill: Callable[[Path], None]) -> Path:
    """Call `fill(folder)` on a hidden temp folder beside `path`, then rename it to `path` (absent or empty).

    A failure removes the temp folder, so `path` either does not appear or appears complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a killed earlier export
        shutil.rmtree(stale, ignore_errors=True)
    tmp = temp_name(path)
    tmp.mkdir()
    try:
        fill(tmp)
        for file in tmp.iterdir():
            with open(file, "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(tmp)
        os.replace(tmp, path)  # onto an empty folder too (POSIX rename replaces an empty directory)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError) and err.errno in NO_SPACE:
            raise WriteFailed(_no_space_message(path, err, None)) from None
        if isinstance(err, PermissionError):
            raise WriteFailed(f"cannot write {path}: permission denied") from None
        raise
    _fsync_dir(path.parent)
    return path
