"""Run `python -m gptft.serve` as a child process (the load command and the tests): a free port on
127.0.0.1, bounded waits for /health, and a stop that always ends the whole process group."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from ..errors import GptftError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """Ctrl+C for the server's whole process group, then SIGKILL for what is left after `grace_s`."""
    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    except ProcessLookupError:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # workers that outlived the main process too
    except ProcessLookupError:
        pass
    proc.wait(timeout=grace_s)


def wait_healthy(url: str, proc: subprocess.Popen, limit_s: float, log: Path) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise GptftError(f"the server exited with status {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    raise GptftError(f"the server at {url} was not healthy within {limit_s:.0f} s: {log.read_text()[-2000:]}")


@contextmanager
def running_server(ckpt, *args: str, log: Path, startup_s: float = 300.0):
    """Yields the base URL of a server for `ckpt` (extra `key=value` args), stopped on exit."""
    port = free_port()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gptft.serve", f"ckpt={ckpt}", f"port={port}", *args],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, proc, startup_s, log)
        yield url
    finally:
        stop(proc)
