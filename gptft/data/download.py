"""Where data files live, and fetching them once (sha256-verified) when they are missing."""
from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from gptft.errors import GptftError

log = logging.getLogger(__name__)


class DownloadError(GptftError, RuntimeError):
    """A data file that cannot be fetched or has the wrong contents; the message says where to put it.
    Also a RuntimeError: that is what callers caught before GptftError existed."""


TIMEOUT_S = 20  # short: offline machines should fail fast with the "put it here" message

SMS_SPAM = dict(
    relpath="sms_spam_collection/SMSSpamCollection",
    url="https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip",
    sha256="7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d",
    extract="SMSSpamCollection",
)
INSTRUCTIONS = dict(
    relpath="instruction-data.json",
    url="https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch07/01_main-chapter-code/instruction-data.json",
    sha256="7e09a9af353722ca15c18bc580f093f9c39d3178335a75177319cb1e1d163944",
    extract=None,
)


def data_dir() -> Path:
    """`$GPTFT_DATA_DIR`, else a per-user cache folder."""
    env = os.environ.get("GPTFT_DATA_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "gptft" / "data"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def ensure_file(relpath: str, url: str, sha256: str | None, extract: str | None = None) -> Path:
    """Return `data_dir()/relpath`, downloading it from `url` first if it is missing.

    `extract` names the one member to take out of a zip archive. The final file must have
    digest `sha256` (skipped when None); a partly written file never appears at the path.
    """
    dest = data_dir() / relpath
    if dest.is_file():
        _check_digest(dest, sha256, f"{dest} does not match the expected contents",
                      f"Delete it to download it again from {url}, or pass data.path=FILE to use your own file.")
        return dest

    log.info("downloading %s -> %s", url, dest)
    try:
        payload = _fetch(url)
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise DownloadError(
            f"data file missing: {dest}\n"
            f"  could not download it from {url} ({err.__class__.__name__}: {getattr(err, 'reason', err)}).\n"
            f"  Fix: download that URL yourself and put the file at exactly {dest}"
            + (f" (the member {extract!r} of the zip archive)" if extract else "")
            + ", or set GPTFT_DATA_DIR to a folder holding "
            f"{relpath}, or pass data.path=FILE to use your own file."
        ) from None

    if extract is not None:
        try:
            with zipfile.ZipFile(io.BytesIO(payload)) as zf:
                payload = zf.read(extract)
        except zipfile.BadZipFile:
            raise DownloadError(f"{url} did not return a zip archive; cannot extract {extract!r} for {dest}") from None
        except KeyError:
            raise DownloadError(f"the zip archive from {url} has no member {extract!r} (needed for {dest})") from None

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        _check_digest(Path(tmp), sha256, f"the file downloaded from {url} for {dest} has unexpected contents",
                      "The server may have changed the file; download it yourself and check it, "
                      "or pass data.path=FILE to use your own file.")
        os.replace(tmp, dest)  # atomic: readers see the old state or the complete file
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return dest


def _check_digest(path: Path, expected: str | None, what: str, fix: str) -> None:
    if expected is None:
        return
    found = sha256_of(path)
    if found != expected.lower():
        raise DownloadError(f"{what}: sha256 expected {expected}, found {found}. {fix}")


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
        total = int(resp.headers.get("Content-Length") or 0) or None
        bar = _progress(total, url)
        chunks = []
        for chunk in iter(lambda: resp.read(1 << 16), b""):
            chunks.append(chunk)
            if bar is not None:
                bar.update(len(chunk))
        if bar is not None:
            bar.close()
    return b"".join(chunks)


def _progress(total: int | None, url: str):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm comes with lightning, but is not essential
        return None
    # disable=None hides the bar when stderr is not a terminal (CI logs)
    return tqdm(total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1], disable=None)
