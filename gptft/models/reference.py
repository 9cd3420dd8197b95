"""What a small checkpoint says about its frozen backbone, and how loading gets that backbone back.

A small checkpoint keeps only the trained tensors; the frozen rest is named by a reference (plain data):
  {"kind": "files", "checkpoint": the path the weights were loaded from (file or folder), "hub_id": ...,
   "files": [{"path", "size", "sha256"}, ...]}            pretrained weights
  {"kind": "random", "seed": N, "sha256": ...}            model.pretrained=false: re-created from the seed,
                                                          checked against the hash of the tensors at init
Loading re-reads the source and refuses, in one line naming the file and its expected hash, a source that
is missing or different. A file is hashed once per process (cached by path, size and modification time).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import CheckpointError, MissingCheckpoint

log = logging.getLogger(__name__)

_CHUNK = 16 * 2**20
_file_hashes: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    stat = path.stat()
    key = (str(path.absolute()), stat.st_size, stat.st_mtime_ns)
    if key not in _file_hashes:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
        _file_hashes[key] = digest.hexdigest()
    return _file_hashes[key]


def tensors_sha256(module: nn.Module) -> str:
    """sha256 over every tensor of `module` (name, dtype, shape and bytes, in name order)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def weight_files(source: Path) -> list[Path]:
    """The files a loader reads weights from, for its source: a file, a sharded index, or a model folder."""
    if source.is_dir():
        for name in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                     "pytorch_model.bin.index.json"):
            if (source / name).is_file():
                return weight_files(source / name)
        return []
    if source.name.endswith(".index.json"):
        shards = sorted(set(json.loads(source.read_text())["weight_map"].values()))
        return [source, *(source.parent / s for s in shards)]
    return [source]


def describe(backbone: nn.Module, seed: int, hub_id: str | None) -> dict:
    """The reference to the backbone as loaded, before any task changes it (head, freezing)."""
    start = time.perf_counter()
    source = getattr(backbone, "weights_source", None)
    if source is None:
        ref = {"kind": "random", "seed": int(seed), "sha256": tensors_sha256(backbone)}
    else:
        files = [Path(os.path.abspath(f)) for f in weight_files(Path(source))]
        ref = {"kind": "files", "checkpoint": os.path.abspath(source), "hub_id": hub_id,
               "files": [{"path": str(f), "size": f.stat().st_size, "sha256": file_sha256(f)} for f in files]}
    log.info("backbone reference (%s) in %.2f s", ref["kind"], time.perf_counter() - start)
    return ref


def same_backbone(a: Mapping | None, b: Mapping | None) -> bool:
    """Whether two references name the same frozen tensors (files by content, wherever they lie)."""
    if not a or not b or a.get("kind") != b.get("kind"):
        return False
    if a["kind"] == "random":
        return a.get("sha256") == b.get("sha256")
    content = lambda ref: [(f.get("size"), f.get("sha256")) for f in ref.get("files") or []]
    return content(a) == content(b)


def shown(ref: Mapping | None) -> str:
    """One short phrase for messages."""
    if not ref:
        return "unknown (no backbone reference)"
    if ref.get("kind") == "random":
        return f"random init with seed {ref.get('seed')} (sha256 {str(ref.get('sha256'))[:12]})"
    return ", ".join(f"{f.get('path')} (sha256 {str(f.get('sha256'))[:12]})" for f in ref.get("files") or [])


# ---- loading --------------------------------------------------------------------------------------
def _ref_of(meta: Mapping, where: Path) -> Mapping:
    ref = meta.get("backbone_ref")
    if not isinstance(ref, Mapping) or ref.get("kind") not in ("files", "random"):
        raise CheckpointError(f"{where} holds no frozen backbone and no valid reference to one "
                              f"(backbone_ref); it is damaged: retrain, or use a checkpoint written with "
                              f"checkpoint.full=true")
    return ref


def _check_files(ref: Mapping, where: Path) -> None:
    hint = "put that file back, or use a checkpoint written with checkpoint.full=true (it holds the whole model)"
    for entry in ref.get("files") or []:
        path, size, sha = Path(str(entry.get("path"))), entry.get("size"), entry.get("sha256")
        if not path.is_file():
            origin = f" (a file of the Hub's {ref['hub_id']}, in the Hugging Face cache)" if ref.get("hub_id") else ""
            raise MissingCheckpoint(f"{where} refers to its frozen backbone {path}{origin} (sha256 {sha}, {size} "
                                    f"bytes), which does not exist; {hint}")
        actual = file_sha256(path) if path.stat().st_size == size else f"of another file ({path.stat().st_size} bytes)"
        if actual != sha:
            raise CheckpointError(f"{where} refers to its frozen backbone {path} with sha256 {sha}, but that file "
                                  f"now has sha256 {actual}: it changed since training; {hint}")


def _model_cfg(meta: Mapping, ref: Mapping, where: Path) -> dict:
    model = meta.get("model")
    if not isinstance(model, Mapping):
        raise CheckpointError(f"{where} lacks the model settings (model) its backbone reference needs")
    return {**model, "arch": meta["arch"], "pretrained": True, "checkpoint": str(ref.get("checkpoint")),
            "hub_id": None}


def rebuild(meta: Mapping, where: Path) -> nn.Module:
    """The frozen backbone a small checkpoint refers to, checked against its reference."""
    from .build import backbone_from_meta, build_backbone, config_from_meta

    ref = _ref_of(meta, where)
    if ref["kind"] == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(ref.get("seed", 0)))
            backbone = backbone_from_meta(meta)
        actual = tensors_sha256(backbone)
        if actual != ref.get("sha256"):
            raise CheckpointError(f"{where}: its random backbone, re-created from seed {ref.get('seed')}, has sha256 "
                                  f"{actual}, not {ref.get('sha256')} (another torch version initialises "
                                  f"differently); retrain, or use checkpoint.full=true checkpoints")
        return backbone
    _, config = config_from_meta(meta)  # refuses an unknown architecture or shape before any file is read
    _check_files(ref, where)
    try:
        backbone, _ = build_backbone(_model_cfg(meta, ref, where))
    except KeyError as err:
        raise CheckpointError(f"{where} lacks model.{err.args[0]} in its metadata") from None
    shape = lambda cfg: {k: v for k, v in asdict(cfg).items() if k != "dropout"}
    if shape(backbone.config) != shape(config):
        raise CheckpointError(f"{where}: the backbone read from {ref.get('checkpoint')} has another shape than the "
                              f"one it was trained with; put the original files back")
    return backbone
