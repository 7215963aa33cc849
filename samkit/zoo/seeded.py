"""Deterministic "seeded" weights for any state dict with Meta's key names.

The recipe (shared with the parity fixtures made with Meta's reference): every floating-point
tensor is drawn from ``np.random.default_rng(zlib.crc32(key))`` as ``standard_normal(shape)``
(float64, cast to float32) and scaled by the first matching rule below; integer tensors are
zeros. Seeded models let tests and benchmarks run offline, with no real checkpoint.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping

import numpy as np
import torch


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
    """Seeded values for every entry of ``template`` (a state dict or a module's state dict)."""
    if isinstance(template, torch.nn.Module):
        template = template.state_dict()
    out = {}
    for key, t in template.items():
        if t.is_floating_point():
            out[key] = seeded_tensor(key, tuple(t.shape))
        else:
            out[key] = torch.zeros(t.shape, dtype=t.dtype)
    return out


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
