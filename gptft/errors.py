"""Show deliberate errors as one clear message; keep tracebacks for real bugs."""
from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


class GptftError(ValueError):
    """A check of gptft's that said no: bad input, a bad setting, a missing file. Shown without traceback."""


class ConfigError(GptftError):
    """A setting (a config key or a command argument) that cannot work; the message names the key."""


class CheckpointError(GptftError):
    """A checkpoint that is missing, unreadable, hostile or does not fit this run."""


def raised_by_gptft(err: BaseException) -> bool:
    """True when the innermost frame is gptft's own code: a check that said no, not a crash."""
    tb = err.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(PACKAGE)


def friendly_errors(fn):
    """Exit with `error: <message>` for gptft's own checks; GPTFT_DEBUG=1 shows the traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ValueError, RuntimeError, FileNotFoundError) as err:
            # GptftError always; other kinds only when gptft raised them itself (a deliberate check)
            if os.environ.get("GPTFT_DEBUG") or not (isinstance(err, GptftError) or raised_by_gptft(err)):
                raise
            print(f"error: {err}\n(set GPTFT_DEBUG=1 to see the traceback)", file=sys.stderr, flush=True)
            raise SystemExit(2) from None

    return wrapper
