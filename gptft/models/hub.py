"""Files from the Hugging Face Hub through its cache.

Offline with nothing cached fails at once with the ways out, instead of the hub client's
retries (about 30 s when the network is down).
"""
from __future__ import annotations

import functools
import socket
from pathlib import Path
from urllib.parse import urlparse

from ..errors import CheckpointError, GptftError


class HubUnavailable(GptftError, RuntimeError):
    """Weights that are neither cached nor downloadable (a RuntimeError too, as callers caught before)."""


@functools.lru_cache(maxsize=8)
def _reachable(endpoint: str, timeout: float = 3.0) -> bool:
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def _network_error(err: Exception) -> bool:
    # httpx's transport errors are not ConnectionError; match by module, no httpx import
    return isinstance(err, (ConnectionError, TimeoutError)) or type(err).__module__.split(".")[0] in (
        "httpx", "httpcore", "requests", "urllib3")


def fetch(hub_id: str, filename: str, *, local_hint: str, optional: bool = False) -> Path | None:
    """Path of `filename` from `hub_id` (downloaded once, then read from the cache).

    optional: None when the repository has no such file. `local_hint` names the files that
    `model.checkpoint=PATH` accepts instead, for the error message.
    """
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.utils import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    offline = constants.HF_HUB_OFFLINE or not _reachable(constants.ENDPOINT)
    try:
        return Path(hf_hub_download(hub_id, filename, local_files_only=offline))
    except LocalEntryNotFoundError as err:  # a subclass of EntryNotFoundError: check it first
        raise _unavailable(hub_id, filename, local_hint, err) from err
    except EntryNotFoundError:
        if optional:
            return None
        raise CheckpointError(f"the Hub repository {hub_id!r} has no {filename}; set model.checkpoint=PATH to "
                              f"{local_hint}") from None
    except RepositoryNotFoundError:
        raise CheckpointError(f"model.hub_id={hub_id!r}: no such repository on the Hub (or it is private); "
                              f"check the name, or set model.checkpoint=PATH to {local_hint}") from None
    except Exception as err:
        if _network_error(err):
            raise _unavailable(hub_id, filename, local_hint, err) from err
        raise


def _unavailable(hub_id: str, filename: str, local_hint: str, err: Exception) -> HubUnavailable:
    return HubUnavailable(
        f"cannot get {filename} of {hub_id!r}: it is not in the local Hugging Face cache and the Hub "
        f"is unreachable or offline mode is on ({err.__class__.__name__}). Either connect to the "
        f"internet once to download it (it is cached and works offline afterwards), set "
        f"model.checkpoint=PATH to {local_hint}, or set model.pretrained=false for random weights of the same "
        f"shape (the same keys in python -m gptft.train and python -m gptft.generate)."
    )
