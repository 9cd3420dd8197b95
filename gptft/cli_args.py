"""`key=value` arguments and error handling for the small user-facing commands (classify, generate, evaluate).

Values are checked against the type of their default (int, float, bool, str); a key whose default is None
takes `null` (or nothing) for None, else a value of the type named in `types`, else the raw string.
Values are never YAML-parsed, so free text such as `text="Re: call me"` arrives as typed.
"""
from __future__ import annotations

import functools
import math
import sys
from types import SimpleNamespace

from .errors import ConfigError, friendly_errors
from .quiet import quiet

NULLS = ("null", "")  # a None-default key given one of these stays None (Hydra's spelling)
TRUE, FALSE = ("true", "yes", "1"), ("false", "no", "0")


def command(fn):
    """The same rule for every entry point: library noise filtered, GptftError -> `error: ...`, exit 2."""
    checked = friendly_errors(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        quiet()
        return checked(*args, **kwargs)

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
    """`raw` as `kind` (None: the string itself), or a ConfigError naming the key."""
    if kind is None or kind is str:
        return raw
    text = raw.strip().lower()
    if kind is bool:
        if text in TRUE or text in FALSE:
            return text in TRUE
        raise ConfigError(f"{key} must be true or false, got {raw!r}")
    try:
        value = kind(raw)
    except ValueError:
        noun = "an integer" if kind is int else "a number"
        raise ConfigError(f"{key} must be {noun}, got {raw!r}") from None
    if kind is float and not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number, got {raw!r}")
    return value


def parse(defaults: dict, usage: str, argv: list[str] | None = None,
          types: dict[str, type] | None = None) -> SimpleNamespace:
    """`defaults` overridden by `key=value` arguments (dotted keys for nested groups: judge.url=...).

    `types` gives the type of keys whose default is None (e.g. {"top_k": int}); all such keys take null.
    Raises ConfigError for anything wrong; -h/--help prints `usage` and exits 0.
    """
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(usage)
        raise SystemExit(0)
    known, types = _flat(defaults), types or {}
    bad = [a for a in argv if "=" not in a or not a.split("=", 1)[0]]
    if bad:
        raise ConfigError(f"arguments must be key=value, got {bad}\n\n{usage}")
    given = dict(a.split("=", 1) for a in argv)  # a repeated key: the last one wins, as in Hydra
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ConfigError(f"unknown argument(s) {unknown}; valid: {sorted(known)}\n\n{usage}")

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
