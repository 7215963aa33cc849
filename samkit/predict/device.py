"""Choosing a torch device from a user string, with a clear error when it is not available."""

from __future__ import annotations

import re

import torch

from ..errors import SamkitError


def resolve_device(device: str | torch.device | None, default: torch.device | None = None):
    """``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``, an int or digits (``"0"``, ``"0,1"``: the
    first CUDA index, as Ultralytics writes it), ``"auto"`` or ``""`` (CUDA if available, else
    the CPU), a torch.device, or None -> torch.device.

    None returns ``default`` (or the CPU). Raises :class:`SamkitError` for an unknown or
    unavailable device.
    """
    if device is None:
        return default if default is not None else torch.device("cpu")
    if isinstance(device, str):
        device = device.strip().lower()
        if device in ("", "auto"):
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if re.fullmatch(r"\d+(,\d+)*", device):
            device = int(device.split(",")[0])
    if isinstance(device, int):
        device = f"cuda:{device}"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise SamkitError(
            f"unknown device {device!r}: use 'cpu', 'cuda', 'cuda:N' or 'mps'"
        ) from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SamkitError(f"device {device!r} requested but CUDA is not available here")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SamkitError(
                f"device {device!r} requested but only {torch.cuda.device_count()} CUDA devices exist"
            )
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise SamkitError(f"device {device!r} requested but Apple MPS is not available here")
    elif dev.type != "cpu":
        raise SamkitError(f"unsupported device {device!r}: use 'cpu', 'cuda' or 'mps'")
    return dev
