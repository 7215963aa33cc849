"""Atomic file writes: a temporary file next to the target (or in a given folder), synced, then
renamed over the target, so readers see the old file or the whole new one, never a part.

Standard library only (imported by the checkpoint downloader and the writers alike).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

#: Name of the temporary file: ``{name}`` is the target's file name, ``{token}`` random hex.
TEMP_PATTERN = ".{name}.{token}.tmp"


@contextlib.contextmanager
def atomic_output(
    path: str | os.PathLike,
    mode: str = "wb",
    *,
    tmp_dir: str | os.PathLike | None = None,
    pattern: str = TEMP_PATTERN,
    encoding: str | None = None,
) -> Iterator[IO[Any]]:
    """Open a temporary file for writing; on a clean exit it replaces ``path``.

    The file is created exclusively with mode ``0o666`` less the umask (like ``open``), in
    ``tmp_dir`` (same file system as ``path``; default: ``path``'s folder, created if needed),
    flushed and ``fsync``-ed before the rename. On any exception (including
    KeyboardInterrupt) the temporary file is removed and ``path`` is left as it was.
    ``mode`` is ``"wb"`` or ``"w"`` (text: ``encoding`` default UTF-8, ``\\n`` line ends).
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tmp_dir) if tmp_dir is not None else path.parent
    folder.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        # at most 64 characters of the target's name: a long name must not overflow NAME_MAX
        tmp = folder / pattern.format(name=path.name[:64], token=secrets.token_hex(4))
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(f"could not create a unique temporary file in {folder}")
    try:
        if mode == "w":
            f = os.fdopen(fd, "w", encoding=encoding or "utf-8", newline="\n")
        else:
            f = os.fdopen(fd, "wb")
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write(
    path: str | os.PathLike, data: bytes | str, *, tmp_dir: str | os.PathLike | None = None
) -> Path:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` atomically; returns ``path``."""
    text = isinstance(data, str)
    with atomic_output(path, "w" if text else "wb", tmp_dir=tmp_dir) as f:
        f.write(data)
    return Path(path)
