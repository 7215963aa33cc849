"""Choosing a torch device from a user string, with a clear error when it is not available."""

from __future__ import annotations

import torch

from ..errors import SamkitError


def resolve_device(device: str | torch.device | None, default: torch.device | None = None):
    """``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``, an int (CUDA index) or None -> torch.device.

    None returns ``default`` (or the CPU). Raises :class:`SamkitError` for an unavailable device.
    """
    if device is None:
        return default if default is not None else torch.device("cpu")
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
