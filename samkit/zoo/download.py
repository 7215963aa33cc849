"""Checkpoint cache and verified downloads.

Cache location
    :func:`cache_dir` returns the directory checkpoints are cached in. The first of these wins:
    the ``override`` argument, the ``SAMKIT_CACHE_DIR`` environment variable,
    ``$XDG_CACHE_HOME/samkit`` (only if ``XDG_CACHE_HOME`` is an absolute path, as the XDG spec
    requires) and ``~/.cache/samkit``. The directory is created when :func:`cache_dir` is called,
    never at import time.

Describing a file
    :class:`WeightsFile` names a checkpoint: its file name in the cache, the URL to fetch it from
    and what is known about its content (size in bytes, the MD5 prefix Meta puts in its file
    names, optionally a full SHA-256). :func:`md5_prefix_from_filename` extracts that prefix, e.g.
    ``"01ec64"`` from ``sam_vit_b_01ec64.pth``.

Downloading
    :func:`download_file` streams a URL with :mod:`urllib` (only ``http`` and ``https``; other
    schemes, and redirects to them or from https to http, are refused) into a temporary file
    ``<dest name>.part-<random>`` next to ``dest``, showing a tqdm progress bar on stderr. MD5 and
    SHA-256 are computed while streaming. The size is checked against the ``Content-Length``
    header and the expected size, then the checksums. Only when everything matches is the file
    fsynced and moved onto ``dest`` with :func:`os.replace`, so ``dest`` never holds a partial or
    wrong file. On any failure the temporary file is deleted and :class:`~samkit.errors.DownloadError`
    is raised, naming the URL, the reason and ``dest`` (where the file can be put by hand). A
    ``KeyboardInterrupt`` also deletes the temporary file, but is re-raised as is so that Ctrl-C
    still stops the program. ``timeout`` applies to connecting and to each read; ``deadline``
    bounds the whole transfer, a transfer averaging under ``min_rate`` after a minute is
    abandoned, and without a known size at most ``max_bytes`` are accepted. Without a checksum,
    the finished file must still be a sound checkpoint container (:func:`check_checkpoint_file`:
    no HTML error page, no truncated archive) before it is renamed into place. Stale
    ``.part-*`` files of killed downloads are deleted when the next download of that file starts.

Ensuring a checkpoint is present
    :func:`ensure_weights` returns the cached file if it exists (checking only its size, which is
    cheap; a cached file of the wrong size raises :class:`~samkit.errors.DownloadError` and is left
    alone), and downloads it otherwise. With ``download=False`` or the environment variable
    ``SAMKIT_OFFLINE`` set to ``1``/``true``/``yes``/``on``, a missing file raises
    :class:`~samkit.errors.DownloadError` at once, without touching the network.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import secrets
import sys
import time
import urllib.error
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from ..data.safeio import ALLOWED_SCHEMES as _ALLOWED_SCHEMES
from ..data.safeio import Deadline, open_url, read_chunks
from ..data.safeio import _HttpOnlyRedirectHandler as _HttpOnlyRedirectHandler  # noqa: F401
from ..errors import DownloadError

__all__ = [
    "WeightsFile",
    "cache_dir",
    "download_file",
    "ensure_weights",
    "is_offline",
    "md5_prefix_from_filename",
]

_MD5_SUFFIX = re.compile(r"_([0-9a-fA-F]{6})\.[A-Za-z0-9]+$")
_HEX = re.compile(r"^[0-9a-fA-F]+$")
#: Stale ``<name>.part-*`` files (left by a killed download) older than this are deleted.
STALE_PART_SECONDS = 3600


# --------------------------------------------------------------------------------------------
# Cache directory
# --------------------------------------------------------------------------------------------


def cache_dir(override: str | os.PathLike[str] | None = None, *, create: bool = True) -> Path:
    """Return the checkpoint cache directory, creating it unless ``create`` is false.

    Precedence: ``override``, ``$SAMKIT_CACHE_DIR``, ``$XDG_CACHE_HOME/samkit``,
    ``~/.cache/samkit``. Empty environment variables count as unset.
    """
    if override is not None and str(override) != "":
        path = Path(override).expanduser()
    elif os.environ.get("SAMKIT_CACHE_DIR"):
        path = Path(os.environ["SAMKIT_CACHE_DIR"]).expanduser()
    elif os.environ.get("XDG_CACHE_HOME") and os.path.isabs(os.environ["XDG_CACHE_HOME"]):
        path = Path(os.environ["XDG_CACHE_HOME"]) / "samkit"
    else:
        path = Path.home() / ".cache" / "samkit"
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DownloadError(f"Cannot create the cache directory {path}: {exc}") from exc
    return path


def is_offline() -> bool:
    """True when ``SAMKIT_OFFLINE`` is set to 1/true/yes/on (any case)."""
    return os.environ.get("SAMKIT_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


# --------------------------------------------------------------------------------------------
# File descriptions
# --------------------------------------------------------------------------------------------


def md5_prefix_from_filename(name: str | os.PathLike[str]) -> str | None:
    """Return the 6-hex-digit MD5 prefix in a name like ``sam_vit_b_01ec64.pth`` (lower case).

    Returns ``None`` when the file name has no ``_xxxxxx.<ext>`` suffix.
    """
    match = _MD5_SUFFIX.search(Path(name).name)
    return match.group(1).lower() if match else None


def _normalize_hex(value: str | None, what: str, max_len: int, exact: bool) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _HEX.match(value):
        raise ValueError(f"{what} must be a hexadecimal string, got {value!r}")
    if len(value) > max_len or (exact and len(value) != max_len):
        need = f"exactly {max_len}" if exact else f"at most {max_len}"
        raise ValueError(f"{what} must have {need} hex digits, got {len(value)}")
    return value.lower()


def _normalize_md5_prefix(value: str | None) -> str | None:
    return _normalize_hex(value, "md5_prefix", 32, exact=False)


def _normalize_sha256(value: str | None) -> str | None:
    return _normalize_hex(value, "sha256", 64, exact=True)


def _check_size(size: int | None) -> int | None:
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError(f"size must be a non-negative int or None, got {size!r}")
    return size


@dataclass(frozen=True)
class WeightsFile:
    """A downloadable checkpoint.

    ``filename`` is the plain file name used in the cache (no directories). ``size`` is in bytes;
    ``md5_prefix`` is the leading hex digits of the file's MD5 (what Meta puts in its file names);
    ``sha256`` is the full SHA-256 hex digest. Any of them may be ``None`` when unknown.
    """

    filename: str
    url: str
    size: int | None
    md5_prefix: str | None
    sha256: str | None = None

    def __post_init__(self) -> None:
        name = self.filename
        if (
            not isinstance(name, str)
            or name in ("", ".", "..")
            or "/" in name
            or "\\" in name
            or "\0" in name
        ):
            raise ValueError(f"WeightsFile.filename must be a plain file name, got {name!r}")
        _check_size(self.size)
        object.__setattr__(self, "md5_prefix", _normalize_md5_prefix(self.md5_prefix))
        object.__setattr__(self, "sha256", _normalize_sha256(self.sha256))


# --------------------------------------------------------------------------------------------
# Download
# --------------------------------------------------------------------------------------------


def _open_url(url: str, timeout: float):
    """Open ``url`` for reading (a separate function so tests can forbid network use)."""
    return open_url(url, timeout)


def _error(url: str, dest: Path, reason: str) -> DownloadError:
    reason = reason.rstrip(". ")
    return DownloadError(
        f"Could not download {url} to {dest}: {reason}. "
        f"To install the file by hand, download it from {url} and save it as {dest}"
    )


def _describe(exc: BaseException, timeout: float) -> str:
    """A one-line, human-readable reason for a network or file error."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP error {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        inner = exc.reason
        if isinstance(inner, TimeoutError):
            return f"connection timed out after {timeout:g} s"
        return f"cannot connect: {inner}" if isinstance(inner, OSError) else str(inner)
    if isinstance(exc, TimeoutError):
        return f"no data received for {timeout:g} s (timed out)"
    if isinstance(exc, http.client.IncompleteRead):
        return f"connection closed early after {len(exc.partial)} more bytes"
    if isinstance(exc, http.client.InvalidURL):
        return f"malformed URL: {exc}"
    if isinstance(exc, http.client.HTTPException):
        return f"HTTP protocol error: {type(exc).__name__}: {exc}"
    return f"{type(exc).__name__}: {exc}"


def _create_temp(dest: Path) -> tuple[Path, int]:
    """Create ``<dest.name>.part-<random>`` exclusively in dest's directory (mode 0666 & ~umask)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = dest.with_name(f"{dest.name}.part-{secrets.token_hex(4)}")
        try:
            return tmp, os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a unique temporary file next to {dest}")


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable on POSIX; harmless no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _parse_content_length(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        length = int(value.strip())
    except ValueError:
        return None
    return length if length >= 0 else None


#: Largest download accepted when neither the caller nor the server says how large it is.
MAX_UNKNOWN_BYTES = 8 * 2**30
#: Default overall time limit of one download (seconds), on top of the per-read ``timeout``.
DEFAULT_DEADLINE = 4 * 3600.0
#: A transfer slower than this on average (bytes/s) after ``SLOW_GRACE`` seconds is abandoned.
MIN_RATE = 16 * 1024
SLOW_GRACE = 60.0

Validator = Callable[[Path], "str | None"]


def download_file(
    url: str,
    dest: str | os.PathLike[str],
    *,
    size: int | None = None,
    md5_prefix: str | None = None,
    sha256: str | None = None,
    progress: bool = True,
    timeout: float = 30.0,
    chunk_size: int = 1 << 20,
    deadline: float | None = DEFAULT_DEADLINE,
    min_rate: float = MIN_RATE,
    max_bytes: int = MAX_UNKNOWN_BYTES,
    validate: Validator | None = None,
) -> Path:
    """Download ``url`` to ``dest`` atomically and verify it; return ``dest`` as a :class:`Path`.

    ``size`` (bytes), ``md5_prefix`` (leading hex digits of the MD5) and ``sha256`` (full hex
    digest) are checked when given. An existing ``dest`` is replaced only by a fully verified
    file. Raises :class:`DownloadError` on any network, HTTP, size or checksum failure (the
    message contains the URL, the reason and ``dest``) and :class:`ValueError` on malformed
    arguments. ``timeout`` (seconds) bounds connecting and each read; ``deadline`` (seconds) the
    whole transfer; a transfer averaging under ``min_rate`` bytes/s after a minute is abandoned;
    without a known size at most ``max_bytes`` are accepted. ``validate(temp_path)`` returns a
    reason to refuse the finished file (e.g. an HTML error page), or None. Stale
    ``<dest>.part-*`` files of killed downloads are deleted first.
    """
    dest = Path(dest).expanduser()
    size = _check_size(size)
    md5_prefix = _normalize_md5_prefix(md5_prefix)
    sha256 = _normalize_sha256(sha256)
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")

    try:
        scheme = urllib.parse.urlsplit(url).scheme.lower()
    except ValueError as exc:
        raise _error(url, dest, f"malformed URL: {exc}") from exc
    if scheme not in _ALLOWED_SCHEMES:
        raise _error(
            url,
            dest,
            f"refusing URL scheme {scheme + ':' if scheme else '(none)'}; "
            "only http and https are allowed",
        )
    if dest.is_dir():
        raise _error(url, dest, "the destination is a directory")

    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_parts(dest)
        tmp, fd = _create_temp(dest)
    except OSError as exc:
        raise _error(url, dest, f"cannot create a file in {dest.parent}: {exc}") from exc

    limits = _Limits(Deadline(deadline), min_rate, size if size is not None else max_bytes)
    try:
        with os.fdopen(fd, "wb") as out:
            _hold_lock(out.fileno())
            md5, sha = _stream(url, out, dest, size, progress, timeout, chunk_size, limits)
            if md5_prefix is not None and not md5.startswith(md5_prefix):
                raise _error(
                    url,
                    dest,
                    f"MD5 mismatch: expected {md5_prefix}..., got {md5} (corrupted or wrong file)",
                )
            if sha256 is not None and sha != sha256:
                raise _error(
                    url,
                    dest,
                    f"SHA-256 mismatch: expected {sha256}, got {sha} (corrupted or wrong file)",
                )
            out.flush()
            os.fsync(out.fileno())
            reason = validate(tmp) if validate is not None else None
            if reason:
                raise _error(url, dest, reason)
        os.replace(tmp, dest)
    except BaseException as exc:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        except OSError:
            pass  # nothing more we can do; the original error matters more
        if isinstance(exc, DownloadError | KeyboardInterrupt | SystemExit | GeneratorExit):
            raise
        if isinstance(exc, urllib.error.HTTPError):
            exc.close()  # an HTTPError holds the open response; don't leak its socket
        if isinstance(exc, OSError | http.client.HTTPException):
            raise _error(url, dest, _describe(exc, timeout)) from exc
        raise
    _fsync_dir(dest.parent)
    return dest


@dataclass
class _Limits:
    deadline: Deadline
    min_rate: float
    max_bytes: int


def _hold_lock(fd: int) -> None:
    """Lock a temporary file while it is written, so :func:`clean_stale_parts` of another
    process leaves it alone (POSIX; elsewhere the file's age decides)."""
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (ImportError, OSError):
        pass


def clean_stale_parts(dest: Path, max_age: float = STALE_PART_SECONDS) -> list[Path]:
    """Delete ``<dest name>.part-*`` files no live download holds (unlocked on POSIX, else
    older than ``max_age`` seconds); returns the deleted paths."""
    removed = []
    try:
        import fcntl
    except ImportError:
        fcntl = None
    for part in dest.parent.glob(f"{glob_escape(dest.name)}.part-*"):
        try:
            if not part.is_file() or part.is_symlink():
                continue
            if fcntl is not None:
                fd = os.open(part, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # a download in progress holds it
                finally:
                    os.close(fd)
            elif time.time() - part.stat().st_mtime < max_age:
                continue
            part.unlink()
            removed.append(part)
        except OSError:
            continue
    return removed


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def _stream(url, out, dest, size, progress, timeout, chunk_size, limits=None) -> tuple[str, str]:
    """Copy the response body of ``url`` into ``out``; return (md5 hex, sha256 hex)."""
    limits = limits or _Limits(Deadline(None), 0.0, size if size is not None else MAX_UNKNOWN_BYTES)
    md5 = hashlib.md5(usedforsecurity=False)
    sha = hashlib.sha256()
    received = 0
    start = time.monotonic()
    with _open_url(url, timeout) as response:
        status = getattr(response, "status", 200)
        if status != 200:
            raise _error(url, dest, f"unexpected HTTP status {status} (expected 200)")
        ctype = (response.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype in ("text/html", "application/xhtml+xml"):
            raise _error(url, dest, f"the server sent a web page ({ctype}), not a checkpoint")
        declared = _parse_content_length(response.headers.get("Content-Length"))
        if size is not None and declared is not None and declared != size:
            raise _error(
                url, dest, f"size mismatch: server announces {declared} bytes, expected {size}"
            )
        if declared is not None and declared > limits.max_bytes:
            raise _error(
                url,
                dest,
                f"the server announces {declared} bytes, over the limit of "
                f"{limits.max_bytes} (pass max_bytes= if this is right)",
            )
        total = size if size is not None else declared
        with tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=dest.name,
            file=sys.stderr,
            disable=not progress,
            dynamic_ncols=True,
        ) as bar:
            for chunk in read_chunks(response, limits.deadline, chunk_size):
                received += len(chunk)
                if size is not None and received > size:
                    raise _error(
                        url, dest, f"size mismatch: received more than the expected {size} bytes"
                    )
                if received > limits.max_bytes:
                    raise _error(
                        url,
                        dest,
                        f"more than {limits.max_bytes} bytes received and the size "
                        "is unknown; refused (pass max_bytes= if this is right)",
                    )
                elapsed = time.monotonic() - start
                if elapsed > SLOW_GRACE and received < limits.min_rate * elapsed:
                    raise _error(
                        url,
                        dest,
                        f"too slow: {received} bytes in {elapsed:.0f} s (under "
                        f"{limits.min_rate / 1024:g} KiB/s)",
                    )
                md5.update(chunk)
                sha.update(chunk)
                out.write(chunk)
                bar.update(len(chunk))
    if declared is not None and received != declared:
        raise _error(url, dest, f"connection closed early: received {received} of {declared} bytes")
    if size is not None and received != size:
        raise _error(url, dest, f"size mismatch: received {received} bytes, expected {size}")
    return md5.hexdigest(), sha.hexdigest()


def check_checkpoint_file(path: Path) -> str | None:
    """Why the file at ``path`` cannot be a checkpoint (None when its structure is sound).

    Checks the container only, cheaply: a torch zip archive whose directory is intact (a
    truncated download loses it) and whose entries fit in the file, a safetensors header whose
    tensors fit in the file, or a legacy torch pickle. An HTML or text error page is refused.
    """
    import json
    import zipfile

    try:
        file_size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as exc:
        return f"cannot read the downloaded file ({exc})"
    if not head:
        return "the server sent an empty file"
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype", b"<html", b"<?xml", b"<head", b"<body", b'{"', b"<")):
        return "the server sent a web page or text, not a checkpoint (an error page?)"
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as zf:
                total = sum(i.compress_size for i in zf.infolist())
                if total > file_size:
                    return "the archive's entries are larger than the file (corrupt)"
        except Exception as exc:  # zipfile parses untrusted bytes (NotImplementedError, ...)
            return f"the file is not a complete torch archive (truncated?): {exc}"
        return None
    if head[:1] == b"\x80":  # legacy (non-zip) torch.save: a pickle stream
        return None
    if len(head) >= 9 and head[8:9] == b"{":
        n = int.from_bytes(head[:8], "little")
        if 8 + n > file_size:
            return "the safetensors header is larger than the file (truncated)"
        try:
            with open(path, "rb") as f:
                f.seek(8)
                header = json.loads(f.read(n))
            ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
        except (ValueError, KeyError, TypeError, RecursionError, OSError) as exc:
            return f"the safetensors header is unreadable ({type(exc).__name__})"
        if 8 + n + max(ends, default=0) > file_size:
            return "the safetensors data is shorter than its header says (truncated)"
        return None
    return "the file is neither a torch checkpoint nor a safetensors file"


# --------------------------------------------------------------------------------------------
# Cache lookup
# --------------------------------------------------------------------------------------------


def ensure_weights(
    weights: WeightsFile,
    *,
    cache: str | os.PathLike[str] | None = None,
    progress: bool = True,
    download: bool = True,
) -> Path:
    """Return the path of ``weights`` in the cache, downloading it first if it is missing.

    An existing cached file is trusted after a size check only (hashing gigabytes on every load
    would be slow); if its size is wrong a :class:`DownloadError` says so and the file is left
    untouched. With ``download=False`` or ``SAMKIT_OFFLINE`` set, a missing file raises
    :class:`DownloadError` without any network access.
    """
    path = cache_dir(cache, create=False) / weights.filename
    if path.exists():
        if not path.is_file():
            raise DownloadError(
                f"The cached checkpoint path {path} exists but is not a regular file. "
                f"Remove it, or put the file downloaded from {weights.url} there."
            )
        actual = path.stat().st_size
        if weights.size is not None and actual != weights.size:
            raise DownloadError(
                f"The cached checkpoint {path} has {actual} bytes but {weights.size} were "
                f"expected, so it is probably incomplete or a different file. Delete it to "
                f"download it again from {weights.url}, or replace it with the right file."
            )
        return path

    if not download or is_offline():
        why = "download=False" if not download else "SAMKIT_OFFLINE is set"
        raise DownloadError(
            f"The checkpoint {weights.filename} is not in the cache and downloading is "
            f"disabled ({why}). Download {weights.url} yourself and save it as {path}"
            + (", or unset SAMKIT_OFFLINE." if download else ".")
        )
    return download_file(
        weights.url,
        path,
        size=weights.size,
        md5_prefix=weights.md5_prefix,
        sha256=weights.sha256,
        progress=progress,
        # a checksum proves the content; without one, at least the container must be sound
        validate=None if weights.md5_prefix or weights.sha256 else check_checkpoint_file,
    )
