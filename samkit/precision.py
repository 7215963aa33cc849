"""Numeric precision of inference: "fp32", "bf16" or "auto", and the matching autocast context.

Minimal version written for the high-level predictor (the speed work may extend it):
``"auto"`` picks bfloat16 on CPUs with native bf16 instructions (AVX512-BF16, AMX, ARM BF16)
and float32 everywhere else.
"""

from __future__ import annotations

import contextlib
import functools
import platform
from collections.abc import Iterator

import torch

from .errors import SamkitError

PRECISIONS = ("fp32", "bf16", "auto")


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when this CPU executes bfloat16 math natively (AVX512-BF16, AMX, ARM BF16)."""
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        if getattr(torch.cpu, probe, lambda: False)():
            return True
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return False
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    if platform.machine().lower() in ("aarch64", "arm64"):
        return "bf16" in flags
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def resolve_precision(precision: str | None, device: torch.device | str) -> torch.dtype:
    """The compute dtype for ``precision`` ("fp32", "bf16", "auto"; None = "fp32") on ``device``."""
    p = "fp32" if precision is None else str(precision).lower()
    if p not in PRECISIONS:
        raise SamkitError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    device = torch.device(device)
    if p == "auto":
        return torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else torch.float32
    return torch.bfloat16 if p == "bf16" else torch.float32


@contextlib.contextmanager
def autocast(device: torch.device | str, dtype: torch.dtype) -> Iterator[None]:
    """Run the block with ``dtype`` autocasting on ``device`` (nothing to do for float32)."""
    if dtype == torch.float32:
        yield
        return
    with torch.autocast(device_type=torch.device(device).type, dtype=dtype):
        yield
