"""Downloading a file whose SHA-256 is known: streamed to a temporary file beside the target while it is
hashed, its size and SHA-256 checked, and only then renamed into place - a truncated or corrupted transfer
never appears under the target's name. Network failures and short transfers are retried; a complete file with
the wrong SHA-256 is refused at once (the source changed or a proxy altered it: retrying would not help).

HTTP is the standard library's ``urllib`` (one GET per file, no extra dependency); written here because the
download has to be verified while it streams, which no pinned library does.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from .. import __version__
from ..common.errors import DataError
from ..common.files import temp_path

CHUNK = 1 << 20
TIMEOUT_S = 60.0  # per socket operation, not per file
ATTEMPTS = 3
RETRY_DELAY_S = 1.0  # doubled after every failed try


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def mirrored(url: str, mirror: str | None) -> str:
    """``url`` as served by a mirror laid out like ``wget -x`` (``MIRROR/host/path``), or ``url`` itself."""
    if not mirror:
        return url
    parts = urllib.parse.urlsplit(url)
    return f"{mirror.rstrip('/')}/{parts.netloc}{parts.path}"


def _short(digest: str) -> str:
    return digest[:16] + "..."


def _stream(url: str, part: Path, progress: Callable[[int], None] | None) -> tuple[int, str, int | None]:
    """GET ``url`` into ``part``: (bytes received, their SHA-256, the Content-Length the server announced)."""
    request = urllib.request.Request(url, headers={"User-Agent": f"detzoo/{__version__}"})
    digest, received = hashlib.sha256(), 0
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response, open(part, "wb") as handle:
        announced = response.headers.get("Content-Length")
        while chunk := response.read(CHUNK):  # a connection closed early ends the loop: the count tells
            handle.write(chunk)
            digest.update(chunk)
            received += len(chunk)
            if progress is not None:
                progress(len(chunk))
        handle.flush()
        os.fsync(handle.fileno())
    return received, digest.hexdigest(), int(announced) if announced and announced.isdigit() else None


def download(url: str, dest: str | Path, sha256: str, size: int | None = None, mirror: str | None = None,
             progress: Callable[[int], None] | None = None, attempts: int = ATTEMPTS) -> Path:
    """Fetch ``url`` (through ``mirror`` when given) to ``dest``, which appears only when the file has ``size``
    bytes and this ``sha256``; raises DataError in one line otherwise (the partial file is removed).
    ``progress`` receives the byte count of every chunk (a retry counts its bytes again)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = temp_path(dest)
    source = mirrored(url, mirror)
    problem = "not tried"
    try:
        for attempt in range(attempts):
            if attempt:
                time.sleep(RETRY_DELAY_S * 2 ** (attempt - 1))
            try:
                received, digest, announced = _stream(source, part, progress)
            except urllib.error.HTTPError as exc:
                if exc.code < 500:  # 404, 403: asking again gives the same answer
                    raise DataError(f"{source}: HTTP {exc.code} {exc.reason}") from None
                problem = f"HTTP {exc.code} {exc.reason}"
                continue
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                problem = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
                continue
            if announced is not None and received != announced:
                problem = f"truncated transfer: {received} bytes instead of {announced}"
                continue
            if size is not None and received != size:  # complete, but not the file the manifest lists
                raise DataError(f"{source}: {received} bytes instead of {size}: not the file expected (changed at "
                                "the source?); nothing was kept")
            if digest != sha256:
                raise DataError(f"{source}: SHA-256 {_short(digest)} instead of {_short(sha256)} ({received} "
                                "bytes): corrupted, or changed at the source; nothing was kept")
            os.replace(part, dest)
            return dest
        raise DataError(f"{source}: {problem} (tried {attempts} time(s)); nothing was kept")
    finally:
        part.unlink(missing_ok=True)
