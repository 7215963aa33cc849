"""Numeric precision per part of the model: ``"fp32"``, ``"bf16"`` or ``"auto"``.

``"fp32"`` is the reference path (the parity fixtures hold for it). ``"bf16"`` runs a part
under ``torch.autocast``: matrix products, convolutions and attention in bfloat16; the residual
stream, LayerNorm and softmax statistics and the output embedding stay fp32.

Three parts are chosen separately (:class:`PartPrecision`): the image ``encoder``, the
``prompt_decoder`` (boxes and clicks after ``set_image``) and the ``everything_decoder`` (the
point grid of segment-everything). ``"auto"`` picks, per part, what is faster on the device:

* encoder: bf16 where the hardware computes it natively (x86 AVX512-BF16 / AMX, Arm BF16, CUDA
  with bf16), else fp32 (emulated bf16 is ~10x slower). Its large products (ViT-B: ~0.97 TFLOP
  per image, matrices of 4096 x 768 and more) run at the bf16 rate.
* prompt decoder: bf16 on CPUs with native bf16, else fp32. Prompts go through the fast point
  decoder (:mod:`samkit.predict.fast_decode`) in its bf16 mode: its per-image tensors are cast
  once per image, so a box reads half the bytes. ``benchmarks/bench_precision.py`` (seeded
  weights, 1280 x 720, Zen 4 with AVX512-BF16, 2 threads): one box after ``set_image`` 13.8 ms
  against 19.1 ms in fp32, 100 boxes 1.09 s against 1.54 s (ViT-B; MobileSAM 14.4 / 17.3 ms and
  1.11 / 1.50 s), masks at mean IoU 0.992 (ViT-B) / 0.988 (MobileSAM) with fp32's. (Under plain autocast the module decoder made
  a box 2-4x slower than fp32: issue 22's table.)
* everything decoder: bf16 on CPUs with native bf16 (64 points per pass share one cast of the
  image tokens, and the output upscaling of the passing masks is a convolution-sized product),
  else fp32. ``benchmarks/bench_precision.py`` times every part in both precisions.

* narrow models (mask decoder narrower than :data:`MIN_BF16_WIDTH` = 256 channels, e.g. the
  shipped demo model at 128): fp32 for every part, where a resolver is given the model. The
  demo model on the same Zen 4 (``bench_precision.py --model samkit-demo``): encoder 18.8 vs
  18.7 ms, one box 4.2 vs 5.3 ms, 100 boxes 226 vs 292 ms, everything decoder 349 vs 435 ms.

A mapping (or :class:`PartPrecision`) sets the parts one by one, e.g.
``{"encoder": "bf16", "prompt_decoder": "fp32"}`` (parts left out are ``"auto"``).
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import SamkitError

PRECISIONS = ("fp32", "bf16", "auto")
PARTS = ("encoder", "prompt_decoder", "everything_decoder")

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


def resolve_precision(
    precision: str | None, device: torch.device | str = "cpu", model: Any = None
) -> str:
    """The image encoder's ``"fp32"`` or ``"bf16"`` for a requested precision on ``device``
    (None means fp32; a per-part mapping gives its encoder part).

    ``"auto"`` means bf16 where the device computes it natively, else fp32. An explicit
    ``"bf16"`` on a device without native bf16 is honoured with a :class:`SlowPrecisionWarning`.
    """
    if isinstance(precision, (Mapping, PartPrecision)):
        return resolve_parts(precision, device, model).encoder
    precision = "fp32" if precision is None else str(precision).lower()
    if precision not in PRECISIONS:
        raise SamkitError(
            f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}"
        )
    native = device_has_native_bf16(device)
    if precision == "auto":
        return auto_part("encoder", device, model)
    if precision == "bf16" and not native:
        warnings.warn(
            f"bf16 was requested but {torch.device(device)} has no native bf16 arithmetic; it is "
            "emulated and slower than fp32 here (use precision='auto' or 'fp32')",
            SlowPrecisionWarning,
            stacklevel=2,
        )
    return precision


@dataclass(frozen=True)
class PartPrecision:
    """Resolved precision (``"fp32"`` or ``"bf16"``) of each part of the model."""

    encoder: str = "fp32"
    prompt_decoder: str = "fp32"
    everything_decoder: str = "fp32"

    def dtype(self, part: str) -> torch.dtype:
        """The torch dtype of ``part`` (one of :data:`PARTS`)."""
        return dtype_of(getattr(self, part))

    def __str__(self) -> str:
        values = {getattr(self, p) for p in PARTS}
        if len(values) == 1:
            return values.pop()
        return ", ".join(f"{p}={getattr(self, p)}" for p in PARTS)


#: Models whose mask decoder is narrower than this stay in fp32 under "auto" even with native
#: bf16: their products are too small for the casts to pay (module docstring).
MIN_BF16_WIDTH = 256


def model_width(model: Any) -> int | None:
    """The mask decoder's transformer width of a model (``Sam`` / ``Sam2`` or a wrapper holding
    one as ``.model``), or None when unknown."""
    module = getattr(model, "model", model)
    width = getattr(getattr(module, "mask_decoder", None), "transformer_dim", None)
    return int(width) if isinstance(width, int) else None


def auto_part(part: str, device: torch.device | str = "cpu", model: Any = None) -> str:
    """What ``"auto"`` means for ``part`` on ``device`` (the rule in the module docstring);
    ``model`` (optional) lets a narrow model stay in fp32."""
    if part not in PARTS:
        raise SamkitError(f"unknown model part {part!r}; parts are {', '.join(PARTS)}")
    if not device_has_native_bf16(device):
        return "fp32"
    width = None if model is None else model_width(model)
    if width is not None and width < MIN_BF16_WIDTH:
        return "fp32"
    if part == "encoder":
        return "bf16"
    # the decoders: bf16 measured faster on CPUs (module docstring); CUDA not measured: fp32
    return "bf16" if torch.device(device).type == "cpu" else "fp32"


def resolve_parts(
    precision: Any, device: torch.device | str = "cpu", model: Any = None
) -> PartPrecision:
    """Per-part precision of a request: ``"fp32"`` / ``"bf16"`` (every part), ``"auto"`` (each
    part by :func:`auto_part`), None (fp32 everywhere), a mapping part -> precision (missing
    parts ``"auto"``), or a :class:`PartPrecision` (returned as is).

    An explicit bf16 on a device without native bf16 warns (:class:`SlowPrecisionWarning`).
    """
    if isinstance(precision, PartPrecision):
        return precision
    if precision is None:
        return PartPrecision()
    if isinstance(precision, Mapping):
        unknown = sorted(set(precision) - set(PARTS))
        if unknown:
            raise SamkitError(
                f"unknown model part(s) {', '.join(map(repr, unknown))} in precision; parts "
                f"are {', '.join(PARTS)}"
            )
        wanted = {p: precision.get(p, "auto") for p in PARTS}
    else:
        wanted = dict.fromkeys(PARTS, precision)
    asked = {part: _check(value) for part, value in wanted.items()}
    if "bf16" in asked.values():
        _warn_if_emulated(device)
    return PartPrecision(
        **{part: auto_part(part, device, model) if p == "auto" else p for part, p in asked.items()}
    )


def _check(precision: Any) -> str:
    p = str(precision).lower()
    if p not in PRECISIONS:
        raise SamkitError(
            f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}"
        )
    return p


def _warn_if_emulated(device: torch.device | str) -> None:
    if not device_has_native_bf16(device):
        warnings.warn(
            f"bf16 was requested but {torch.device(device)} has no native bf16 arithmetic; it is "
            "emulated and slower than fp32 here (use precision='auto' or 'fp32')",
            SlowPrecisionWarning,
            stacklevel=3,
        )


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


def resolve_dtype(
    precision: str | None, device: torch.device | str, model: Any = None
) -> torch.dtype:
    """``precision`` ("fp32", "bf16", "auto" or None) -> compute dtype, by the one rule of
    :func:`resolve_precision`; None follows an active ``torch.autocast`` context (bf16 if it
    autocasts to bf16), else fp32."""
    if precision is None:
        bf16 = _autocast_dtype(torch.device(device).type) == torch.bfloat16
        return torch.bfloat16 if bf16 else torch.float32
    return dtype_of(resolve_precision(precision, device, model))


def everything_dtypes(
    precision: Any, device: torch.device | str, model: Any = None
) -> tuple[torch.dtype, torch.dtype]:
    """``(encoder dtype, grid decoder dtype)`` of a segment-everything ``precision``.

    ``precision``: "fp32", "bf16", "auto" (per part, :func:`samkit.predict.precision.resolve_parts`:
    on CPUs with native bf16 both in bf16, else fp32), a mapping part -> precision, a
    :class:`~samkit.predict.precision.PartPrecision`, or None: follow an active ``torch.autocast``
    (bf16 for both if it autocasts to bf16), else fp32.
    """
    if precision is None:
        bf16 = _autocast_dtype(torch.device(device).type) == torch.bfloat16
        dt = torch.bfloat16 if bf16 else torch.float32
        return dt, dt
    parts = resolve_parts(precision, device, model)
    return parts.dtype("encoder"), parts.dtype("everything_decoder")
