"""Guarded file and network I/O shared by every reader and writer of untrusted input.

One place for the guards that keep a hostile or unlucky input from losing data, escaping the
output folder or running forever:

* :func:`safe_name`: an output file name derived from any input name (unsafe characters
  replaced, long names shortened with a hash so they stay unique and under the 255-byte limit).
* :func:`safe_subdir` / :func:`check_inside`: folders inside an output tree are created
  component by component and refused when one is a symbolic link (``O_NOFOLLOW``-style), so a
  pre-placed link cannot redirect writes or deletions outside the chosen folder.
* :func:`write_atomic`: a synced temporary file in the target folder, renamed into place; an
  ``OSError`` (read-only folder, full disk) becomes :class:`~samkit.errors.OutputError` naming
  the path.
* :func:`open_url` / :func:`read_body`: http(s) only (redirects too, never https -> http),
  an overall deadline on top of the per-read socket timeout, and a size cap.
* :func:`same_file`: input/output comparison by resolved path (files and folders).
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from ..errors import OutputError
from .atomic import atomic_write

__all__ = [
    "ALLOWED_SCHEMES",
    "Deadline",
    "check_inside",
    "open_url",
    "read_body",
    "safe_name",
    "safe_subdir",
    "same_file",
    "write_atomic",
]

ALLOWED_SCHEMES = ("http", "https")
#: Longest output file name (bytes, UTF-8) that :func:`safe_name` produces, suffix included.
MAX_NAME_BYTES = 180
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_USER_AGENT = "samkit/1.0 (+python-urllib)"


# -- names -----------------------------------------------------------------------------------
def safe_name(name: str, suffix: str = "", max_bytes: int = MAX_NAME_BYTES) -> str:
    """A file name for outputs derived from ``name`` (any string): ``[A-Za-z0-9._-]`` only, no
    leading dot, and at most ``max_bytes`` with ``suffix``; a longer one keeps its start and gets
    ``-<12 hex digits of its SHA-1>`` so different long names stay different."""
    stem = _UNSAFE.sub("_", str(name)).lstrip(".") or "image"
    room = max_bytes - len(suffix.encode())
    if len(stem) > room:
        digest = hashlib.sha1(str(name).encode("utf-8", "surrogatepass")).hexdigest()[:12]
        stem = stem[: max(1, room - 13)] + "-" + digest
    return stem + suffix


def shorten_component(name: str, max_bytes: int = 240) -> str:
    """``name`` unchanged when it fits in ``max_bytes`` (UTF-8), else its start + a hash."""
    if len(name.encode("utf-8", "surrogatepass")) <= max_bytes:
        return name
    digest = hashlib.sha1(name.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    head = name.encode("utf-8", "surrogatepass")[: max_bytes - 13].decode("utf-8", "ignore")
    return f"{head}-{digest}"


# -- paths -----------------------------------------------------------------------------------
def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when ``a`` and ``b`` are the same file or folder (resolved paths, links followed)."""
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    try:
        if pa.exists() and pb.exists():
            return os.path.samefile(pa, pb)
    except OSError:
        pass
    return pa.resolve() == pb.resolve()


def is_inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """True when ``path`` (resolved) is ``folder`` or inside it."""
    p, f = Path(path).expanduser().resolve(), Path(folder).expanduser().resolve()
    return p == f or f in p.parents


def check_inside(root: Path, path: Path) -> None:
    """Raise :class:`OutputError` when a folder between ``root`` and ``path`` is a symbolic link
    or not a folder (``root`` itself, the user's choice, may be a link)."""
    rel = path.relative_to(root)
    here = root
    for part in rel.parts[:-1]:
        here = here / part
        try:
            st = os.lstat(here)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(st.st_mode):
            raise OutputError(
                f"{here} is a symbolic link inside the output folder {root}; samkit does not "
                "write through links there. Remove the link or choose another output folder"
            )
        if not stat.S_ISDIR(st.st_mode):
            raise OutputError(f"{here} is in the way: a folder is needed there; remove it")


def safe_subdir(root: Path, rel: str | os.PathLike) -> Path:
    """``root / rel`` created folder by folder, refusing symbolic links below ``root``."""
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the output folder {root}: {_why(exc)}") from exc
    here = root
    for part in Path(rel).parts:
        here = here / part
        try:
            os.mkdir(here)
        except FileExistsError:
            st = os.lstat(here)
            if stat.S_ISLNK(st.st_mode):
                raise OutputError(
                    f"{here} is a symbolic link inside the output folder {root}; samkit does not "
                    "write through links there. Remove the link or choose another output folder"
                ) from None
            if not stat.S_ISDIR(st.st_mode):
                raise OutputError(f"{here} exists and is not a folder; remove it") from None
        except OSError as exc:
            raise OutputError(f"cannot create the folder {here}: {_why(exc)}") from exc
    return here


def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def write_atomic(
    path: Path, data: bytes | str, *, root: Path | None = None, tmp_dir: Path | None = None
) -> None:
    """Write ``data`` to ``path`` atomically (:func:`samkit.data.atomic.atomic_write`: a synced
    temporary file, created exclusively, renamed into place).

    ``root``: the output folder ``path`` must stay in (links below it are refused). An
    ``OSError`` (read-only folder, full disk) becomes :class:`OutputError` naming ``path``.
    """
    path = Path(path)
    if root is not None:
        check_inside(Path(root), path)
        safe_subdir(Path(root), path.parent.relative_to(root))
    try:
        atomic_write(path, data, tmp_dir=tmp_dir)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {_why(exc)}") from exc


# -- network ---------------------------------------------------------------------------------
class Deadline:
    """An overall time limit: ``check()`` raises ``TimeoutError`` once ``seconds`` have passed."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.end = None if seconds is None else time.monotonic() + float(seconds)

    def check(self) -> None:
        if self.end is not None and time.monotonic() > self.end:
            raise TimeoutError(f"not finished within the overall limit of {self.seconds:g} s")


class _HttpOnlyRedirectHandler(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to http(s), and never from https down to http."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        old_scheme = urllib.parse.urlsplit(req.full_url).scheme.lower()
        new_scheme = urllib.parse.urlsplit(newurl).scheme.lower()
        if new_scheme not in ALLOWED_SCHEMES or (old_scheme == "https" and new_scheme == "http"):
            fp.close()
            raise urllib.error.URLError(f"refusing to follow redirect (HTTP {code}) to {newurl}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def build_opener() -> urllib.request.OpenerDirector:
    """An opener with http(s) handlers only (no file:, ftp:, data:), redirects checked."""
    opener = urllib.request.OpenerDirector()
    handlers = [
        urllib.request.ProxyHandler(),
        urllib.request.UnknownHandler(),
        urllib.request.HTTPHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        _HttpOnlyRedirectHandler(),
        urllib.request.HTTPErrorProcessor(),
    ]
    if hasattr(urllib.request, "HTTPSHandler"):  # absent only when Python lacks ssl
        handlers.append(urllib.request.HTTPSHandler())
    for handler in handlers:
        opener.add_handler(handler)
    return opener


def open_url(url: str, timeout: float):
    """Open an http(s) ``url`` for reading; ``timeout`` bounds connecting and each read."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise urllib.error.URLError(f"refusing URL scheme {scheme or '(none)'}: only http(s)")
    request = urllib.request.Request(
        url, headers={"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    )
    return build_opener().open(request, timeout=timeout)


def read_chunks(response, deadline: Deadline, chunk_size: int = 1 << 20):
    """Yield the body of ``response`` as it arrives (``read1``: a slow sender cannot hold one
    read open), checking ``deadline`` after every piece."""
    read = getattr(response, "read1", None) or response.read
    while True:
        deadline.check()
        chunk = read(chunk_size)
        if not chunk:
            return
        yield chunk


def read_body(response, max_bytes: int, deadline: Deadline) -> bytes:
    """The whole body, at most ``max_bytes`` (``ValueError`` beyond), within ``deadline``."""
    declared = response.headers.get("Content-Length") if hasattr(response, "headers") else None
    if declared is not None and declared.strip().isdigit() and int(declared) > max_bytes:
        raise ValueError(f"announces {int(declared)} bytes, more than the limit of {max_bytes}")
    parts, size = [], 0
    for chunk in read_chunks(response, deadline, 1 << 16):
        size += len(chunk)
        if size > max_bytes:
            raise ValueError(f"larger than the limit of {max_bytes} bytes")
        parts.append(chunk)
    return b"".join(parts)
