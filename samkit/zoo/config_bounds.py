"""Sane bounds on an architecture config, checked before any model is built from it.

A checkpoint's architecture comes from untrusted data (a ``samkit_config`` record in the file or
tensor shapes), so a 340-byte file could otherwise describe a model of billions of parameters
and make :meth:`ModelConfig.build` allocate gigabytes before any check fails. :func:`check_config`
rejects wrong types, non-positive or absurd sizes and inconsistent combinations;
:func:`min_parameters` is a lower bound on the parameter count, compared with the bytes a
checkpoint actually holds before building.
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import CheckpointError

#: Largest values accepted (several times the largest published SAM models).
LIMITS = {
    "dim": 8192,
    "depth": 128,
    "heads": 256,
    "img_size": 4096,
    "patch_size": 64,
    "window": 256,
    "ratio": 16.0,
    "classes": 100_000,
    "stages": 8,
    "outputs": 16,
    "parameters": 4_000_000_000,
}


def _int(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CheckpointError(f"config field {name} must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise CheckpointError(f"config field {name} = {value} is outside the sane range {lo}..{hi}")
    return value


def _ratio(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CheckpointError(f"config field {name} must be a number, got {value!r}")
    if not (math.isfinite(value) and 0 < value <= LIMITS["ratio"]):
        raise CheckpointError(f"config field {name} = {value} is outside (0, {LIMITS['ratio']}]")
    return float(value)


def _ints(name: str, values: Any, lo: int, hi: int, n: int | None = None) -> tuple[int, ...]:
    if not isinstance(values, tuple):
        raise CheckpointError(f"config field {name} must be a list of integers, got {values!r}")
    if n is not None and len(values) != n:
        raise CheckpointError(f"config field {name} needs {n} values, got {len(values)}")
    return tuple(_int(f"{name}[{i}]", v, lo, hi) for i, v in enumerate(values))


def check_config(config: Any) -> None:
    """Raise :class:`CheckpointError` naming the first field of ``config`` (a ``ModelConfig``)
    that is of the wrong type, out of range or inconsistent."""
    from .registry import TinyViTConfig, ViTConfig

    enc, dec = config.encoder, config.decoder
    L = LIMITS
    if isinstance(enc, ViTConfig):
        d = _int("encoder.embed_dim", enc.embed_dim, 1, L["dim"])
        depth = _int("encoder.depth", enc.depth, 1, L["depth"])
        heads = _int("encoder.num_heads", enc.num_heads, 1, L["heads"])
        if d % heads:
            raise CheckpointError(f"encoder.embed_dim {d} is not divisible by num_heads {heads}")
        patch = _int("encoder.patch_size", enc.patch_size, 1, L["patch_size"])
        size = _int("encoder.img_size", enc.img_size, patch, L["img_size"])
        if size % patch:
            raise CheckpointError(f"encoder.img_size {size} is not a multiple of patch {patch}")
        _int("encoder.window_size", enc.window_size, 1, max(1, size // patch))
        _ints("encoder.global_attn_indexes", enc.global_attn_indexes, 0, depth - 1)
        _ratio("encoder.mlp_ratio", enc.mlp_ratio)
        _int("encoder.out_chans", enc.out_chans, 1, L["dim"])
    elif isinstance(enc, TinyViTConfig):
        dims = enc.embed_dims
        if not isinstance(dims, tuple) or not 1 <= len(dims) <= L["stages"]:
            raise CheckpointError(f"encoder.embed_dims must list 1..{L['stages']} stage widths")
        n = len(dims)
        dims = _ints("encoder.embed_dims", dims, 2, L["dim"])
        _ints("encoder.depths", enc.depths, 1, L["depth"], n)
        heads = _ints("encoder.num_heads", enc.num_heads, 1, L["heads"], n)
        _ints("encoder.window_sizes", enc.window_sizes, 1, L["window"], n)
        for i in range(1, n):
            if dims[i] % heads[i]:
                raise CheckpointError(
                    f"encoder.embed_dims[{i}] {dims[i]} is not divisible by num_heads {heads[i]}"
                )
        _ratio("encoder.mlp_ratio", enc.mlp_ratio)
        _ratio("encoder.mbconv_expand_ratio", enc.mbconv_expand_ratio)
        size = _int("encoder.img_size", enc.img_size, 32, L["img_size"])
        if size % 32:
            raise CheckpointError(f"encoder.img_size {size} must be a multiple of 32 (TinyViT)")
        _int("encoder.out_chans", enc.out_chans, 1, L["dim"])
        _int("encoder.num_classes", enc.num_classes, 0, L["classes"])
    else:  # another registered encoder kind: every size field positive and bounded
        _check_generic(enc)
    td = _int("decoder.transformer_dim", dec.transformer_dim, 1, L["dim"])
    _int("decoder.depth", dec.depth, 1, L["depth"])
    rate = _int("decoder.attention_downsample_rate", dec.attention_downsample_rate, 1, td)
    dheads = _int("decoder.num_heads", dec.num_heads, 1, L["heads"])
    if td % dheads or (td // rate) % dheads:
        raise CheckpointError(
            f"decoder.transformer_dim {td} (and {td // rate} after downsampling by {rate}) must "
            f"be divisible by num_heads {dheads}"
        )
    if td % 8:
        raise CheckpointError(f"decoder.transformer_dim {td} must be a multiple of 8")
    _int("decoder.mlp_dim", dec.mlp_dim, 1, 16 * L["dim"])
    _int("decoder.num_multimask_outputs", dec.num_multimask_outputs, 1, L["outputs"])
    _int("decoder.iou_head_depth", dec.iou_head_depth, 1, L["depth"])
    _int("decoder.iou_head_hidden_dim", dec.iou_head_hidden_dim, 1, L["dim"])
    _int("decoder.mask_in_chans", dec.mask_in_chans, 4, L["dim"])
    params = min_parameters(config)
    if params > L["parameters"]:
        raise CheckpointError(
            f"the config describes a model of at least {params / 1e9:.1f} billion parameters, "
            f"over the limit of {L['parameters'] / 1e9:g} billion"
        )


def _check_generic(enc: Any) -> None:
    """Bounds for an encoder config of a kind this module does not know field by field."""
    import dataclasses

    if not dataclasses.is_dataclass(enc):
        return
    for f in dataclasses.fields(enc):
        value = getattr(enc, f.name)
        values = value if isinstance(value, tuple) else (value,)
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if isinstance(v, int) and not 0 <= v <= 16 * LIMITS["dim"]:
                raise CheckpointError(f"config field encoder.{f.name} = {v} is out of range")
            if isinstance(v, float) and not (math.isfinite(v) and 0 <= v <= 1e6):
                raise CheckpointError(f"config field encoder.{f.name} = {v} is out of range")


def min_parameters(config: Any) -> int:
    """A lower bound on the parameter count of ``config`` (linear layers and embeddings only);
    0 for the whole-model config of a family that has one (SAM 2: not counted)."""
    from .registry import ModelConfig, TinyViTConfig, ViTConfig

    if not isinstance(config, ModelConfig):
        return 0
    enc, dec = config.encoder, config.decoder
    if isinstance(enc, ViTConfig):
        d, grid = enc.embed_dim, enc.img_size // enc.patch_size
        n = enc.depth * int((4 + 2 * enc.mlp_ratio) * d * d) + grid * grid * d
        n += 3 * enc.patch_size**2 * d + d * enc.out_chans
    elif not isinstance(enc, TinyViTConfig):
        n = 0  # another encoder kind: its parameters are not counted
    else:
        n = sum(
            int((4 + 2 * enc.mlp_ratio) * dim * dim) * depth
            for dim, depth in zip(enc.embed_dims[1:], enc.depths[1:])
        )
        n += enc.depths[0] * int(enc.mbconv_expand_ratio * enc.embed_dims[0] ** 2)
    td = dec.transformer_dim
    n += dec.depth * 2 * td * dec.mlp_dim + (dec.num_multimask_outputs + 2) * td
    return n
