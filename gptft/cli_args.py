"""`key=value` arguments and error handling for the small user-facing commands (classify, generate, evaluate).

Values are checked against the type of their default (int, float, bool, str); a key whose default is None
takes `null` (or nothing) for None, else a value of the type named in `types`, else the raw string.
Values are never YAML-parsed, so free text such as `text="Re: call me"` arrives as typed.
"""
from __future__ import annotations

import functools
import math
import os
import sys
from types import SimpleNamespace

from .errors import GptftError, raised_by_gptft

NULLS = ("null", "")  # a None-default key given one of these stays None (Hydra's spelling)
TRUE, FALSE = ("true", "yes", "1"), ("false", "no", "0")


class CommandExit(SystemExit):
    """Exit status 2 whose str() is still the message, so in-process callers (tests) can read it."""

    def __init__(self, message: str):
        super().__init__(message)
        self.code = 2  # an int code: the interpreter exits with it and prints nothing more


def command(fn):
    """A command's `main`: gptft's own errors become `error: <message>` on stderr and exit status 2.

    Same rule as errors.friendly_errors (GptftError always; other ValueError/RuntimeError/FileNotFoundError
    only when raised inside gptft; GPTFT_DEBUG=1 re-raises), but the SystemExit keeps the message.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ValueError, RuntimeError, FileNotFoundError) as err:
            deliberate = isinstance(err, GptftError) or raised_by_gptft(err)
            if os.environ.get("GPTFT_DEBUG") or not deliberate:
                raise
            hint = "" if isinstance(err, GptftError) else "\n(set GPTFT_DEBUG=1 to see the traceback)"
            print(f"error: {err}{hint}", file=sys.stderr, flush=True)
            raise CommandExit(str(err)) from None

    return wrapper


def _flat(defaults: dict, prefix: str = "") -> dict:
    """{"judge.url": default, ...}: nested groups as dotted keys."""
    out = {}
    for key, value in defaults.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def convert(key: str, raw: str, kind: type | None):
    """`raw` as `kind` (None: the string itself), or a GptftError naming the key."""
    if kind is None or kind is str:
        return raw
    text = raw.strip().lower()
    if kind is bool:
        if text in TRUE or text in FALSE:
            return text in TRUE
        raise GptftError(f"{key} must be true or false, got {raw!r}")
    try:
        value = kind(raw)
    except ValueError:
        noun = "an integer" if kind is int else "a number"
        raise GptftError(f"{key} must be {noun}, got {raw!r}") from None
    if kind is float and not math.isfinite(value):
        raise GptftError(f"{key} must be a finite number, got {raw!r}")
    return value


def parse(defaults: dict, usage: str, argv: list[str] | None = None,
          types: dict[str, type] | None = None) -> SimpleNamespace:
    """`defaults` overridden by `key=value` arguments (dotted keys for nested groups: judge.url=...).

    `types` gives the type of keys whose default is None (e.g. {"top_k": int}); all such keys take null.
    Raises GptftError for anything wrong; -h/--help prints `usage` and exits 0.
    """
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(usage)
        raise SystemExit(0)
    known, types = _flat(defaults), types or {}
    bad = [a for a in argv if "=" not in a or not a.split("=", 1)[0]]
    if bad:
        raise GptftError(f"arguments must be key=value, got {bad}\n\n{usage}")
    given = dict(a.split("=", 1) for a in argv)  # a repeated key: the last one wins, as in Hydra
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise GptftError(f"unknown argument(s) {unknown}; valid: {sorted(known)}\n\n{usage}")

    values = dict(known)
    for key, raw in given.items():
        default = known[key]
        if default is None:
            values[key] = None if raw.strip() in NULLS else convert(key, raw, types.get(key))
        else:
            values[key] = convert(key, raw, type(default))

    root = SimpleNamespace()
    for key, value in values.items():  # dotted keys back into nested namespaces
        *groups, leaf = key.split(".")
        node = root
        for g in groups:
            node = node.__dict__.setdefault(g, SimpleNamespace())
        setattr(node, leaf, value)
    return root
