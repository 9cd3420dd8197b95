"""Opening files that hold weights (checkpoints, safetensors, PyTorch state dicts) with one-line errors.

Every failure names the setting (`key=path`) and the fix. A file that would need `weights_only=False` is
refused as such: gptft never loads code from a file, so torch's advice to retry unsafely is not passed on.
"""
from __future__ import annotations

import re
import zipfile
from pathlib import Path

import torch

from ..errors import CheckpointError, MissingCheckpoint

FIX = "it may be truncated or corrupt: copy or download it again, or point {key} at another file"


def existing_file(path: str | Path, key: str) -> Path:
    """`path` as a Path when it is a file; else a CheckpointError saying what it is instead."""
    file = Path(path).expanduser()
    if file.is_dir():
        raise CheckpointError(f"{key}={path} is a directory; give the checkpoint file inside it "
                              f"(e.g. {key}={Path(path) / 'checkpoints' / ('last' if key == 'ckpt_path' else 'best')}.ckpt)")
    if not file.exists():
        raise MissingCheckpoint(f"{key}={path} does not exist ({file.resolve()})")
    return file


def _reason(err: Exception, key: str) -> str:
    """The cause and the fix in one line, without torch's suggestion to load with weights_only=False."""
    text = str(err)
    if "Weights only load failed" in text:
        found = re.search(r"GLOBAL (\S+)", text)
        named = f" ({found.group(1)})" if found else ""
        return (f"it holds objects other than tensors and plain values{named}, and gptft never loads those; "
                f"use a checkpoint written by gptft")
    line = next((s.strip() for s in text.splitlines() if s.strip()), type(err).__name__)
    return (line if len(line) <= 200 else line[:197] + "...") + "; " + FIX.format(key=key)


def read_torch_file(path: str | Path, key: str, mmap: bool = False):
    """torch.load with weights_only=True (mmap=True: structure only, the tensor bytes stay on disk)."""
    file = existing_file(path, key)
    if not zipfile.is_zipfile(file):  # torch's format is a zip archive; a cut-off file loses its directory
        raise CheckpointError(f"{key}={path} is not a PyTorch checkpoint (no zip archive); " + FIX.format(key=key))
    try:
        return torch.load(file, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # torch raises many kinds here; every one means the same to the user
        raise CheckpointError(f"{key}={path} cannot be read: {_reason(err, key)}") from None


def read_safetensors(path: str | Path, key: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    file = existing_file(path, key)
    try:
        return load_file(str(file))
    except Exception as err:  # safetensors' own error type (SafetensorError) and OSError for short reads
        raise CheckpointError(f"{key}={path} is not a readable safetensors file: {_reason(err, key)}") from None
