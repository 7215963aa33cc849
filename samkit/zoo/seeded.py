"""Deterministic "seeded" weights for any state dict with Meta's key names.

The recipe (shared with the parity fixtures made with Meta's reference): every floating-point
tensor is drawn from ``np.random.default_rng(zlib.crc32(key))`` as ``standard_normal(shape)``
(float64, cast to float32) and scaled by the first matching rule below; integer tensors are
zeros. Seeded models let tests and benchmarks run offline, with no real checkpoint.
"""

from __future__ import annotations

import math
import os
import secrets
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from ..errors import SamkitError


def seeded_tensor(key: str, shape: tuple[int, ...]) -> torch.Tensor:
    """The seeded float32 value of the tensor called ``key``."""
    n = np.random.default_rng(zlib.crc32(key.encode())).standard_normal(shape)
    if "rel_pos" in key or "pos_embed" in key:
        v = 0.02 * n
    elif key.endswith("positional_encoding_gaussian_matrix"):
        v = n
    elif key.endswith("running_var"):
        v = 1 + 0.1 * np.abs(n)
    elif key.endswith("running_mean"):
        v = 0.02 * n
    elif key.endswith("weight") and len(shape) >= 2:
        v = n / math.sqrt(math.prod(shape[1:]))
    elif key.endswith("weight") and len(shape) == 1:
        v = 1 + 0.1 * n
    else:
        v = 0.02 * n
    return torch.from_numpy(np.asarray(v).astype(np.float32))


def seeded_state_dict(
    template: Mapping[str, torch.Tensor] | torch.nn.Module,
) -> dict[str, torch.Tensor]:
    """Seeded values for every entry of ``template`` (a state dict or a module's state dict).

    A SAM 2 module is seeded under Meta's key names (``sam_mask_decoder.*``, ...), so its
    weights equal those of Meta's model seeded by the same recipe.
    """
    rename = _meta_key_of(template)
    if isinstance(template, torch.nn.Module):
        template = template.state_dict()
    out = {}
    for key, t in template.items():
        if t.is_floating_point():
            out[key] = seeded_tensor(rename(key), tuple(t.shape))
        else:
            out[key] = torch.zeros(t.shape, dtype=t.dtype)
    return out


def _meta_key_of(template):
    from ..models.sam2 import Sam2

    if isinstance(template, Sam2):
        from .sam2 import to_meta_key

        return to_meta_key
    return lambda key: key


def seeded_model(name_or_config):
    """A :class:`~samkit.models.Sam` of a named variant (or config) with seeded weights."""
    from .registry import ModelConfig, get_variant

    config = name_or_config
    if not isinstance(config, ModelConfig):
        variant = get_variant(str(name_or_config))
        if variant is None:
            raise ValueError(f"unknown variant {name_or_config!r}")
        config = variant.config
    model = config.build()
    model.load_state_dict(seeded_state_dict(model), strict=True)
    return model


def write_seeded_checkpoint(name: str, path: str | os.PathLike) -> Path:
    """Write a stand-in checkpoint of variant ``name`` (``sam_b``, ``mobile_sam``, ...) to ``path``.

    The file is a plain state dict with Meta's key names and seeded (deterministic, random-like)
    values, so it loads wherever the real file does (``SAM(path)``, or placed in the cache under
    an official name for offline trials of code written for the real weights). Its masks mean
    nothing. Written atomically (a temporary file renamed into place); returns ``path``.
    """
    from .registry import VARIANTS, get_variant

    variant = get_variant(str(name))
    if variant is None:
        raise SamkitError(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}")
    dest = Path(path).expanduser()
    if dest.is_dir():
        raise SamkitError(
            f"{dest} is a directory; give the file to write, e.g. {dest / 'sam_b.pt'}"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    state = seeded_state_dict(variant.config.build())
    tmp = dest.parent / f".{dest.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return dest
