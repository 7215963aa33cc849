"""Numbered run directories: ``runs/predict``, ``runs/predict2``, ... (Ultralytics' habit)."""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import SamkitError


def increment_dir(parent: Path, name: str, exist_ok: bool) -> Path:
    """``parent/name``, or ``name2``, ``name3``, ... when it already exists (unless exist_ok).

    Nothing is created: callers make the directory when they first write into it, so a failed
    run leaves no empty directory behind. ``name`` must be a plain directory name.
    """
    if not re.fullmatch(r"[A-Za-z0-9._-]+", name) or name in (".", ".."):
        raise SamkitError(f"argument 'name': {name!r} must be a plain directory name")
    path = parent / name
    if exist_ok or not path.exists():
        return path
    n = 2
    while (parent / f"{name}{n}").exists():
        n += 1
    return parent / f"{name}{n}"
