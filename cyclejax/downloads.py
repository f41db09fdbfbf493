"""Files fetched once from the web and kept in a local cache, checked on every use.

The cache is `cache_dir`, else the folder in $CYCLEJAX_CACHE, else ~/.cache/cyclejax. Beside
each file, `<filename>.sha256` records its sha256 from the first download (or from the first
use of a file put there by hand); a cached file that no longer matches it, or that does not
start with the expected sha256 prefix, is damaged and is fetched again. A download goes to a
temporary file in the same folder and is renamed into place only once complete and checked,
so an interrupted or failed download never leaves a partial file under the final name.
"""
from __future__ import annotations

import hashlib
import http.client
import logging
import os
import secrets
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO, Callable

from tqdm import tqdm

from cyclejax.errors import UserError

TIMEOUT_S = 30
_CHUNK = 1 << 20


class DownloadError(UserError):
    """A file that could not be downloaded, or that is not the expected one."""


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """`cache_dir`, else $CYCLEJAX_CACHE, else ~/.cache/cyclejax."""
    return Path(cache_dir or os.environ.get("CYCLEJAX_CACHE") or Path.home() / ".cache" / "cyclejax").expanduser()


def cached_file(url: str, filename: str, sha256_prefix: str | None = None, cache_dir: str | Path | None = None,
                progress: bool | None = None, check: Callable[[Path], None] | None = None) -> Path:
    """The path of `<cache>/<filename>`, downloaded from `url` unless cached and intact.

    `filename` may hold subfolders ("pretrained/horse2zebra.pth"). `sha256_prefix`, when
    given, must begin the file's sha256. `check`, when given, reads the downloaded file
    before it enters the cache and raises (any exception, its message kept) if it is not
    what was asked for: a server or proxy answering with an HTML page, say, where no sha256
    is known. `progress` shows a progress bar (default: when stderr is a terminal). Raises
    `DownloadError` when the URL cannot be fetched or the file is not the expected one.
    """
    path = cache_root(cache_dir) / filename
    sidecar = path.with_name(path.name + ".sha256")
    if path.is_file() and _intact(path, sidecar, sha256_prefix, url):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.part")
    try:
        with open(tmp, "xb") as out:
            digest = _download(url, out, path, sys.stderr.isatty() if progress is None else progress)
        if not _matches(digest, sha256_prefix):
            raise DownloadError(f"the file at {url} is not the expected one: its sha256 should start with "
                                f"{sha256_prefix}, it is {digest}")
        if check is not None:
            try:
                check(tmp)
            except Exception as e:  # noqa: BLE001 - whatever the reader raises, the download is refused
                raise DownloadError(f"the file at {url} is not the expected one ({e}); nothing was cached") from e
        sidecar.write_text(digest + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # after os.replace: already gone
    return path


def recorded_sha256(path: Path) -> str:
    """The sha256 recorded for a file `cached_file` returned; computed for a file with no record (one
    in huggingface_hub's cache, which checks its files itself)."""
    sidecar = path.with_name(path.name + ".sha256")
    return sidecar.read_text().strip() if sidecar.is_file() else _sha256(path)


def _intact(path: Path, sidecar: Path, sha256_prefix: str | None, url: str) -> bool:
    """Whether the cached `path` still has its recorded sha256 (and the expected prefix); warns if not."""
    digest = _sha256(path)
    recorded = sidecar.read_text().strip() if sidecar.is_file() else None
    if recorded is None and _matches(digest, sha256_prefix):
        sidecar.write_text(digest + "\n")  # put there by hand: record it now
        return True
    if digest == recorded and _matches(digest, sha256_prefix):
        return True
    expected = recorded if recorded not in (None, digest) else sha256_prefix
    logging.warning("%s is damaged (its sha256 %s... is not the expected %s...); downloading it again from %s",
                    path, digest[:16], expected[:16], url)
    return False


def _matches(digest: str, prefix: str | None) -> bool:
    return prefix is None or digest.startswith(prefix.lower())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _download(url: str, out: BinaryIO, dest: Path, progress: bool) -> str:
    """Writes the body at `url` to `out` and returns its sha256; network failures are DownloadErrors."""
    h, received = hashlib.sha256(), 0
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name,
                      disable=not progress) as bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    h.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError, ValueError) as e:
        raise _unreachable(url, _reason(e), dest) from e
    if total is not None and received != total:
        raise _unreachable(url, f"the connection closed after {received} of {total} bytes", dest)
    return h.hexdigest()


def _reason(e: Exception) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    reason = e.reason if isinstance(e, urllib.error.URLError) else e
    if isinstance(reason, TimeoutError):
        return f"no answer within {TIMEOUT_S} s"
    return str(reason) or type(reason).__name__


def _unreachable(url: str, reason: str, dest: Path) -> DownloadError:
    return DownloadError(f"could not download {url} ({reason}). Check the network, or download the file by hand "
                         f"into {dest}")
