"""One live run per folder: a run claims its folder before writing anything into it.

The claim is an exclusive lock (flock) on `<folder>/.gptft-owner`, held until the process ends; the
kernel drops it when the process dies (even by kill -9), so a crashed run never blocks its folder.
The default folder names are already unique (a microsecond stamp, see conf/train.yaml); the claim
covers the rest: two runs given the same `hydra.run.dir`, or the same stamp on two machines.
In a multi-process run rank 0 claims the folder and the other ranks share it (gptft/ranks.py).
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import time
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from .checks import validate
from .errors import ConfigError, friendly_errors
from .ranks import is_first_rank

OWNER_FILE = ".gptft-owner"
_held: dict[Path, int] = {}  # folder -> open descriptor holding its lock (for the life of the process)


def claim(folder: str | Path, key: str = "run_dir") -> Path:
    """Create `folder` if needed and take it for this process; a ConfigError when another live run holds it."""
    folder = Path(folder).resolve()
    if not is_first_rank():  # rank 0 holds the folder for the whole run
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    if folder in _held:  # this process already owns it (a sweep job, a second train() call)
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / OWNER_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.read(fd, 200).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise ConfigError(f"{key}={folder} is in use by a live run ({owner}); wait for it to finish "
                          f"or choose another folder") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
             .encode())
    _held[folder] = fd
    return folder


def startup_only(folder: Path) -> bool:
    """Whether `folder` holds only what a run's start put there: the lock, Hydra's `.hydra/` and log, empty folders."""
    for path in folder.rglob("*"):
        if path.is_dir() or path.name == OWNER_FILE or ".hydra" in path.relative_to(folder).parts:
            continue
        if path.parent == folder and path.suffix == ".log":
            continue
        return False
    return True


def release(folder: Path) -> None:
    fd = _held.pop(folder.resolve(), None)
    if fd is not None:
        os.close(fd)


@contextlib.contextmanager
def discarded_on_failure(folder: Path):
    """A run that fails before it wrote anything of its own leaves no folder behind (a sweep summary or a
    notebook listing outputs/ would otherwise meet folders holding only a log and `.hydra/`)."""
    try:
        yield
    except BaseException:
        folder = Path(folder).resolve()
        if is_first_rank() and folder.is_dir() and folder != Path.cwd().resolve() and startup_only(folder):
            release(folder)
            shutil.rmtree(folder, ignore_errors=True)  # silently: a bad input stays one `error:` line
        raise


def start_run(cfg: DictConfig) -> Path:
    """The first step of a training job: check the config, then claim the run folder."""
    validate(cfg)
    return claim(cfg.get("run_dir") or os.getcwd(), "run_dir")


class RunGuard(Callback):
    """Hydra callback: check and claim before Hydra itself writes `.hydra/` and the log into the folder."""

    @friendly_errors
    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        validate(config)
        claim(config.hydra.run.dir, "hydra.run.dir")

    @friendly_errors
    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        validate(config)  # the settings every job shares; each job checks its own in start_run
        claim(config.hydra.sweep.dir, "hydra.sweep.dir")
