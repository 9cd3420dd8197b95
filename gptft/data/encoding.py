"""Decoding a user's data file: UTF-8, or what spreadsheets on Windows write (cp1252, else Latin-1)."""
from __future__ import annotations

import codecs
import logging
from pathlib import Path

from gptft.data.base import DataError

log = logging.getLogger(__name__)

FALLBACKS = ("cp1252", "latin-1")  # latin-1 decodes any byte: the last resort


def _line_of(raw: bytes, offset: int) -> int:
    return raw[:offset].count(b"\n") + 1


def not_utf8_lines(raw: bytes) -> int:
    """How many lines are not valid UTF-8 (the ones whose characters depend on the encoding chosen)."""
    bad = 0
    for line in raw.split(b"\n"):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            bad += 1
    return bad


def read_text(file: Path, encoding: str = "auto") -> tuple[str, dict]:
    """(the file's text, {"encoding": used, "not_utf8_lines": n}). `auto`: UTF-8 (a byte-order mark is dropped),
    else cp1252, else Latin-1, with a warning naming how many lines were not UTF-8."""
    raw = file.read_bytes()
    if encoding != "auto":
        try:
            name = codecs.lookup(encoding).name
        except LookupError:
            raise DataError(f"data.encoding={encoding!r} is not an encoding Python knows; use auto, utf-8, cp1252, "
                            f"latin-1, ...") from None
        try:
            text = raw.decode("utf-8-sig" if name == "utf-8" else name)
        except UnicodeDecodeError as err:
            raise DataError(f"{file}, line {_line_of(raw, err.start)}: not valid {encoding} ({err.reason}); set "
                            f"data.encoding to the file's encoding (auto tries UTF-8, then cp1252, then latin-1)") from None
        return text, {"encoding": name, "not_utf8_lines": not_utf8_lines(raw)}
    try:
        return raw.decode("utf-8-sig"), {"encoding": "utf-8", "not_utf8_lines": 0}
    except UnicodeDecodeError:
        pass
    for name in FALLBACKS:
        try:
            text = raw.decode(name)
        except UnicodeDecodeError:
            continue
        bad, lines = not_utf8_lines(raw), raw.count(b"\n") + (not raw.endswith(b"\n"))
        log.warning("%s is not UTF-8: read as %s (%d of %d lines have such characters); if they look wrong, set "
                    "data.encoding to the file's encoding", file, name, bad, lines)
        return text, {"encoding": name, "not_utf8_lines": bad}
    raise AssertionError("latin-1 decodes every byte")
