"""One error convention: a check of gptft's raises a GptftError subclass, shown as `error: <message>` (exit 2);
anything else is a bug and keeps its traceback."""
from __future__ import annotations

import functools
import os
import sys


class GptftError(ValueError):
    """A check of gptft's that said no: bad input, a bad setting, a missing file. Shown without traceback.
    (A ValueError so that callers which caught ValueError before this class existed still do.)"""


class ConfigError(GptftError):
    """A setting (a config key or a command argument) that cannot work; the message names the key."""


class CheckpointError(GptftError):
    """A checkpoint that is missing, unreadable, hostile or does not fit this run."""


class MissingCheckpoint(CheckpointError, FileNotFoundError):
    """A checkpoint path that names nothing (still a FileNotFoundError for callers that catch that)."""


class CommandExit(SystemExit):
    """Exit status 2 whose str() is still the message, so in-process callers (tests) can read it."""

    def __init__(self, message: str):
        super().__init__(message)
        self.code = 2  # an int code: the interpreter exits with it and prints nothing more


class Stopped(SystemExit):
    """A run stopped by SIGTERM: exit status 143 (128 + 15, what a shell reports for a process the signal
    killed), never 0, so a script or scheduler does not take it for a finished run; str() is the message."""

    def __init__(self, message: str):
        super().__init__(message)
        self.code = 143


def friendly_errors(fn):
    """An entry point's `main`: a GptftError becomes `error: <message>` on stderr and exit status 2.
    Every other exception propagates with its traceback; GPTFT_DEBUG=1 shows the traceback of a GptftError too."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except GptftError as err:
            if os.environ.get("GPTFT_DEBUG"):
                raise
            print(f"error: {err}", file=sys.stderr, flush=True)
            raise CommandExit(str(err)) from None

    return wrapper
