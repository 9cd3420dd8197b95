"""Lightning's checkpoint writer, made atomic: `L.Trainer(plugins=[AtomicCheckpointIO()])`."""
from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.plugins.io import AsyncCheckpointIO, TorchCheckpointIO

from .atomic import WriteFailed, write_atomic
from .errors import CheckpointError


def payload_bytes(obj) -> int:
    """The bytes of every tensor storage in a (nested) checkpoint, each storage once: about its file size."""
    seen: dict[int, int] = {}

    def walk(x):
        if isinstance(x, torch.Tensor):
            storage = x.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v)

    walk(obj)
    return sum(seen.values())


def add_to_metadata(path, key: str, value) -> None:
    """Set checkpoint["gptft"][key] = value (plain data) in the checkpoint file at `path`, atomically."""
    from .models.checkpoint_files import read_torch_file

    checkpoint = read_torch_file(path, "ckpt")
    checkpoint["gptft"][key] = value
    try:
        write_atomic(path, lambda f: torch.save(checkpoint, f), size_hint=payload_bytes(checkpoint))
    except WriteFailed as err:
        raise CheckpointError(f"checkpoint not updated: {err}") from None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temp file beside its target, fsyncs it and renames it over the target.

    Lightning's own writer serializes to the system temp folder and moves the file, which across
    filesystems is a truncate-and-copy: a kill or a full disk then destroys the previous checkpoint.
    Remote paths (`s3://...`) and storage options keep Lightning's writer.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any = None) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        try:
            write_atomic(path, lambda f: torch.save(checkpoint, f), size_hint=payload_bytes(checkpoint))
        except WriteFailed as err:
            raise CheckpointError(f"checkpoint not saved: {err}") from None

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict[str, Any]:
        """Always weights_only=True: a checkpoint is data (resume and scoring go through here; Lightning's
        default would unpickle anything)."""
        if map_location is None:
            return super().load_checkpoint(path, weights_only=True)
        return super().load_checkpoint(path, map_location=map_location, weights_only=True)


def background_atomic_io() -> AsyncCheckpointIO:
    """Atomic writes in a background thread: training waits only while the checkpoint's tensors are copied
    (Lightning's AsyncCheckpointIO clones them on the calling thread), not while they are serialized and
    fsynced. A failed write is raised at the next write or when training ends."""
    return AsyncCheckpointIO(AtomicCheckpointIO())


def writes_atomically(io) -> bool:
    return isinstance(io, AtomicCheckpointIO) or (isinstance(io, AsyncCheckpointIO)
                                                  and isinstance(io.checkpoint_io, AtomicCheckpointIO))
