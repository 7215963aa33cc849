"""Numeric precision of the image encoder: ``"fp32"``, ``"bf16"`` or ``"auto"``.

``"fp32"`` is the reference path (the parity fixtures hold for it). ``"bf16"`` runs the encoder
under ``torch.autocast``: matrix products, convolutions and attention in bfloat16; the residual
stream, LayerNorm and softmax statistics and the output embedding stay fp32. ``"auto"`` picks
bf16 where the hardware computes it natively (x86 AVX512-BF16 / AMX, Arm BF16, CUDA with bf16)
and fp32 elsewhere: on CPUs without those instructions bf16 is emulated and much slower.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ..errors import SamkitError

PRECISIONS = ("fp32", "bf16", "auto")

# /proc/cpuinfo flags that mean native bf16 arithmetic (x86 AVX512-BF16 / AMX, Arm BF16).
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


class SlowPrecisionWarning(UserWarning):
    """bf16 was requested on hardware that only emulates it."""


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """CPU feature flags from ``/proc/cpuinfo`` (x86 ``flags``, Arm ``Features``); empty if unknown."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 arithmetic instructions (AVX512-BF16, AMX-BF16 or Arm BF16)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    for name in checks:
        check = getattr(torch.cpu, name, None)
        if check is not None and check():
            return True
    return bool(cpu_flags() & NATIVE_BF16_FLAGS)


def device_has_native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes bf16 natively (CPU instructions above, or CUDA bf16 support)."""
    device = torch.device(device)
    if device.type == "cpu":
        return cpu_has_native_bf16()
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return False


def resolve_precision(precision: str | None, device: torch.device | str = "cpu") -> str:
    """``"fp32"`` or ``"bf16"`` for a requested precision on ``device`` (None means fp32).

    ``"auto"`` means bf16 where the device computes it natively, else fp32. An explicit
    ``"bf16"`` on a device without native bf16 is honoured with a :class:`SlowPrecisionWarning`.
    """
    precision = "fp32" if precision is None else str(precision).lower()
    if precision not in PRECISIONS:
        raise SamkitError(
            f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}"
        )
    native = device_has_native_bf16(device)
    if precision == "auto":
        return "bf16" if native else "fp32"
    if precision == "bf16" and not native:
        warnings.warn(
            f"bf16 was requested but {torch.device(device)} has no native bf16 arithmetic; it is "
            "emulated and slower than fp32 here (use precision='auto' or 'fp32')",
            SlowPrecisionWarning,
            stacklevel=2,
        )
    return precision


@contextlib.contextmanager
def precision_context(precision: str, device: torch.device | str = "cpu") -> Iterator[None]:
    """Autocast to bf16 for ``"bf16"``; nothing for ``"fp32"`` (a resolved precision)."""
    if precision == "bf16":
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
            yield
    elif precision == "fp32":
        yield
    else:
        raise SamkitError(f"expected a resolved precision 'fp32' or 'bf16', got {precision!r}")


def dtype_of(precision: str) -> torch.dtype:
    """The torch dtype of a resolved precision (``"fp32"`` or ``"bf16"``)."""
    return torch.bfloat16 if precision == "bf16" else torch.float32


@contextlib.contextmanager
def autocast(device: torch.device | str, dtype: torch.dtype) -> Iterator[None]:
    """Run the block autocasting to ``dtype`` on ``device`` (nothing to do for float32)."""
    if dtype == torch.float32:
        yield
        return
    with torch.autocast(device_type=torch.device(device).type, dtype=dtype):
        yield


def encode(encoder: Any, images: torch.Tensor, precision: str) -> Any:
    """Run an image encoder on ``B x 3 x S x S`` preprocessed images; fp32 ``B x C x h x w`` out.

    ``precision`` is a resolved precision (``"fp32"`` or ``"bf16"``). ``encoder`` may also be
    ``Sam.encode_image``: its ``(features, high_res_feats)`` come back float32 likewise.
    """
    with torch.inference_mode(), precision_context(precision, images.device):
        out = encoder(images)
    if isinstance(out, torch.Tensor):
        return out.float()
    features, high_res = out
    return features.float(), None if high_res is None else tuple(t.float() for t in high_res)


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype of an active ``torch.autocast`` on ``device_type``, else None."""
    try:
        if torch.is_autocast_enabled(device_type):
            return torch.get_autocast_dtype(device_type)
    except TypeError:  # torch < 2.4
        if device_type == "cpu" and torch.is_autocast_cpu_enabled():
            return torch.get_autocast_cpu_dtype()
    return None


def resolve_dtype(precision: str | None, device: torch.device | str) -> torch.dtype:
    """``precision`` ("fp32", "bf16", "auto" or None) -> compute dtype, by the one rule of
    :func:`resolve_precision`; None follows an active ``torch.autocast`` context (bf16 if it
    autocasts to bf16), else fp32."""
    if precision is None:
        bf16 = _autocast_dtype(torch.device(device).type) == torch.bfloat16
        return torch.bfloat16 if bf16 else torch.float32
    return dtype_of(resolve_precision(precision, device))
