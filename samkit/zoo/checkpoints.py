"""Safe checkpoint loading: file -> state dict -> architecture -> strictly loaded :class:`Sam`.

Loading never runs code from a file: ``torch.load(..., weights_only=True)`` with no fallback, or
safetensors. Accepted layouts: a plain state dict with Meta's key names, the same wrapped under
``"model"`` or ``"state_dict"`` (optionally with a ``"samkit_config"`` architecture record, as
samkit writes), and ``.safetensors`` files (architecture record in the metadata).
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..models import Sam
from .config_bounds import min_parameters
from .download import cache_dir, ensure_weights
from .registry import (
    ENCODER_KINDS,
    EncoderKind,
    ModelConfig,
    Variant,
    detect_kind,
    get_variant,
    infer_config,
    match_variant,
    stored_kind,
    variant_for_filename,
)

_PREFIXES = ("image_encoder.", "prompt_encoder.", "mask_decoder.")
_MAX_HEADER = 100_000_000  # bytes of safetensors JSON header accepted
_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2,
    "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
_LOG = logging.getLogger("samkit")
_SAFETENSORS_CONFIG_KEY = "samkit_config"


@dataclass
class LoadedCheckpoint:
    """A checkpoint read from disk: its tensors, architecture and where it came from."""

    path: Path
    state_dict: dict[str, torch.Tensor]
    config: ModelConfig
    variant: Variant | None
    #: what the file holds that the model does not use (SAM 2's video modules), or None
    unused: str | None = None


def map_keys(state_dict: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Map foreign key layouts onto Meta's names (DataParallel ``module.`` / ``model.`` prefixes).

    Non-tensor entries are dropped.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            continue
        for prefix in ("module.", "model.", "sam."):
            if key.startswith(prefix) and key[len(prefix) :].startswith(_PREFIXES):
                key = key[len(prefix) :]
                break
        out[key] = value
    return out


def _is_safetensors(path: Path) -> bool:
    if path.suffix == ".safetensors":
        return True
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9:
        return False
    header_len = int.from_bytes(head[:8], "little")
    return 0 < header_len < 100_000_000 and head[8:9] == b"{"


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    from safetensors import safe_open

    _check_safetensors_header(path)
    try:
        tensors = {}
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            for key in f.keys():  # noqa: SIM118 (safe_open is not iterable)
                tensors[key] = f.get_tensor(key)
    except Exception as e:  # any failure of the parser on untrusted bytes means a bad file
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    config = None
    if _SAFETENSORS_CONFIG_KEY in meta:
        config = _parse_config_json(path, meta[_SAFETENSORS_CONFIG_KEY])
    return tensors, config


def _parse_config_json(path: Path, text: Any) -> dict[str, Any]:
    """The ``samkit_config`` record: a JSON object, else :class:`CheckpointError`."""
    try:
        config = json.loads(text)
    except (TypeError, ValueError, RecursionError) as e:
        raise CheckpointError(
            f"{path}: the '{_SAFETENSORS_CONFIG_KEY}' metadata is not valid JSON "
            f"({type(e).__name__}: {str(e)[:100]}); re-save the file with samkit"
        ) from None
    if not isinstance(config, dict):
        raise CheckpointError(
            f"{path}: the '{_SAFETENSORS_CONFIG_KEY}' metadata must be a JSON object, got "
            f"{type(config).__name__}"
        )
    return config


def _check_safetensors_header(path: Path) -> None:
    """Before reading any tensor: the header fits in the file and every tensor's byte range
    (and its shape x dtype size) lies inside the file's data section."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if n <= 0 or n > min(_MAX_HEADER, size - 8):
            raise CheckpointError(
                f"{path}: the safetensors header length {n} does not fit the {size}-byte file "
                "(truncated or not a safetensors file)"
            )
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise CheckpointError(
            f"{path}: unreadable safetensors header ({type(e).__name__})"
        ) from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: the safetensors header is not a JSON object")
    data = size - 8 - n
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, end = (int(v) for v in info["data_offsets"])
            shape = [int(v) for v in info["shape"]]
            item = _DTYPE_BYTES.get(info["dtype"])  # None: a newer dtype, offsets checked only
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: tensor {name!r} has a malformed header entry") from None
        if min(shape, default=0) < 0 or not 0 <= begin <= end <= data:
            raise CheckpointError(
                f"{path}: tensor {name!r} claims bytes {begin}..{end} (shape {shape}) beyond the "
                f"file's {data} bytes of data (truncated or crafted file)"
            )
        if item is not None and math.prod(shape) * item != end - begin:
            raise CheckpointError(
                f"{path}: tensor {name!r} of shape {shape} ({info['dtype']}) does not match its "
                f"{end - begin} bytes"
            )


def _check_torch_container(path: Path) -> None:
    """Before unpickling: a torch zip archive whose entries fit in the file (no compressed
    entry that inflates beyond it), or a legacy torch pickle; anything else is refused."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PK"):
        size = path.stat().st_size
        try:
            with zipfile.ZipFile(path) as zf:
                expanded = sum(i.file_size for i in zf.infolist())
        except Exception as e:  # zipfile parses untrusted bytes (NotImplementedError, ...)
            raise CheckpointError(
                f"{path}: cannot read the checkpoint; the zip archive is truncated or corrupt "
                f"({e}). Download it again."
            ) from None
        if expanded > size:
            raise CheckpointError(
                f"{path}: the archive's entries expand to {expanded} bytes, more than the "
                f"{size}-byte file (compressed entries); torch never writes such files"
            )
        return
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return  # legacy torch.save format (a pickle stream), read with weights_only=True
    raise CheckpointError(
        f"{path}: not a checkpoint: neither a torch file (zip archive or pickle) nor a "
        f"safetensors file (it starts with bytes {head.hex(' ')})"
    )


def _check_storage(path: Path, state_dict: Mapping[str, Any]) -> None:
    """Refuse tensors that view more elements than their storage holds (stride 0 / expanded
    or overlapping views): building a model from their shapes would allocate far more memory
    than the file holds."""
    for key, t in state_dict.items():
        if not isinstance(t, torch.Tensor) or t.numel() == 0:
            continue
        needed = t.numel() * t.element_size()
        held = t.untyped_storage().nbytes()
        if needed > held or 0 in t.stride():
            raise CheckpointError(
                f"{path}: tensor {key!r} of shape {tuple(t.shape)} is an expanded view "
                f"(strides {t.stride()}) backed by only {held} bytes; a real checkpoint stores "
                "every value. Re-save it with contiguous tensors"
            )


def _read_torch(path: Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    _check_torch_container(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        if "Weights only load failed" in text or "Unsupported global" in text:
            raise CheckpointError(
                f"{path}: refused to load. The file contains pickled Python objects or code, not "
                "only tensors, and samkit never unpickles arbitrary code (weights_only=True). If "
                "you trust the file, re-save its state dict with "
                "torch.save(model.state_dict(), 'clean.pt') or convert it to .safetensors."
            ) from None
        raise CheckpointError(f"{path}: not a checkpoint file ({text.splitlines()[0]})") from None
    except Exception as e:  # torch.load parses untrusted bytes: any failure means a bad file
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(
            f"{path}: cannot read the checkpoint; the file is truncated or corrupt ({first}). "
            "Download it again."
        ) from None
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{path}: expected a state dict (a mapping of names to tensors), found {type(obj).__name__}"
        )
    config = None
    for wrapper in ("model", "state_dict"):
        if isinstance(obj.get(wrapper), Mapping):
            config = obj.get(_SAFETENSORS_CONFIG_KEY)
            obj = obj[wrapper]
            break
    if isinstance(config, (str, bytes)):
        config = _parse_config_json(path, config)
    elif config is not None and not isinstance(config, Mapping):
        raise CheckpointError(
            f"{path}: '{_SAFETENSORS_CONFIG_KEY}' must be a mapping, got {type(config).__name__}"
        )
    _check_storage(path, obj)
    return dict(obj), config


def read_checkpoint(path: str | os.PathLike) -> LoadedCheckpoint:
    """Read a checkpoint file and infer its architecture (no model is built)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory; pass the checkpoint file inside it")
    if not path.is_file():
        raise CheckpointError(
            f"{path} is not a regular file (a pipe, socket or device); pass a checkpoint file"
        )
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty (0 bytes); download it again")
    if _is_safetensors(path):
        raw, config_dict = _read_safetensors(path)
    else:
        raw, config_dict = _read_torch(path)
    state_dict = map_keys(raw)
    if not state_dict:
        raise CheckpointError(f"{path}: holds no tensors (keys: {list(raw)[:5]}); not a checkpoint")
    kind = detect_kind(state_dict)
    _check_stored_kind(path, kind, config_dict)
    try:
        config = ModelConfig.from_dict(config_dict) if config_dict else infer_config(state_dict)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    unused = None
    if kind is not None and kind.model_tensors is not None:  # e.g. SAM 2's video modules
        state_dict, unused = kind.model_tensors(state_dict)
        if unused:
            _LOG.info("%s: %s", path, unused)
    held = sum(t.numel() for t in state_dict.values())
    needed = min_parameters(config)
    if held < needed:  # checked before anything is allocated for the model
        raise CheckpointError(
            f"{path}: its architecture record describes a model of at least {needed} "
            f"parameters but the file holds only {held} values; the file is corrupt or crafted"
        )
    return LoadedCheckpoint(path, state_dict, config, match_variant(config), unused)


def _check_stored_kind(
    path: Path, found: EncoderKind | None, config_dict: Mapping[str, Any] | None
) -> None:
    """A family with its own whole-model config (SAM 2) is never read as another one: its keys
    (kind ``found``) with another family's stored config, or its stored config without its
    keys, are refused."""
    said = ENCODER_KINDS.get(stored_kind(config_dict)) if config_dict else None
    if found is not None and found.whole_model and config_dict and said is not found:
        raise CheckpointError(
            f"{path}: the file's config is not a {found.label} config but its keys are"
        )
    if said is not None and said.whole_model and said is not found:
        raise CheckpointError(
            f"{path}: the file says {said.label} but holds no {said.label} image encoder keys"
        )


def _summarize(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def load_into(model: Sam, ckpt: LoadedCheckpoint) -> Sam:
    """Strictly load ``ckpt`` into ``model``; errors name the missing, unexpected and mis-shaped keys."""
    expected = model.state_dict()
    found = ckpt.state_dict
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    mis_shaped = [
        f"{k} (file {tuple(found[k].shape)}, model {tuple(v.shape)})"
        for k, v in expected.items()
        if k in found and found[k].shape != v.shape
    ]
    if missing or unexpected or mis_shaped:
        arch = ckpt.variant.name if ckpt.variant else ckpt.config.describe()
        parts = [f"{ckpt.path}: does not match the architecture inferred from it ({arch})."]
        if missing:
            parts.append(f"Missing keys: {_summarize(missing)}.")
        if unexpected:
            parts.append(f"Unexpected keys: {_summarize(unexpected)}.")
        if mis_shaped:
            parts.append(f"Wrong shapes: {_summarize(mis_shaped, 4)}.")
        raise CheckpointError(" ".join(parts))
    bad = [k for k, v in found.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(
            f"{ckpt.path}: {len(bad)} tensor(s) hold NaN or infinite values ({_summarize(bad, 4)}); "
            "the weights are corrupt (or training diverged): use another checkpoint"
        )
    model.load_state_dict(found, strict=True)
    return model


def resolve_checkpoint(
    source: str | os.PathLike, *, cache: str | os.PathLike | None = None, download: bool = True
) -> Path:
    """Find the file for ``source``: an existing path, an official file name, or a variant name.

    Official names and variant names that are not found locally are looked up in (and, unless
    offline, downloaded into) the cache directory.
    """
    path = Path(source).expanduser()
    if path.exists():
        return path
    name = path.name
    variant = get_variant(str(source))
    if variant is not None and str(source) == name:
        if variant.packaged is not None:
            return packaged_file(variant.packaged)
        weights = variant.default_file
    else:
        found = variant_for_filename(name)
        if found is None:
            known = sorted(
                {v.name for v in _variants()} | {f.filename for v in _variants() for f in v.files}
            )
            raise CheckpointError(
                f"checkpoint not found: {path}. Pass the path of a SAM checkpoint file, or one of "
                f"the known names: {', '.join(known)}"
            )
        variant, weights = found  # e.g. sam_h.pt, not published by Ultralytics -> Meta's ViT-H
    # Any official file of the variant already in the cache will do (sam_b.pt and Meta's
    # sam_vit_b_01ec64.pth hold the same weights); the requested one first.
    directory = cache_dir(cache)
    for name in _cached_names(variant, weights.filename):
        if (directory / name).is_file():
            return directory / name
    return ensure_weights(weights, cache=cache, download=download)


def _cached_names(variant: Variant, first: str) -> list[str]:
    """File names under which ``variant``'s weights may sit in the cache, ``first`` first."""
    names = [first, *(f.filename for f in variant.files), f"{variant.name}.pt"]
    return list(dict.fromkeys(names))


def packaged_file(filename: str) -> Path:
    """Path of a weights file shipped in ``samkit/assets``."""
    path = Path(__file__).resolve().parents[1] / "assets" / filename
    if not path.is_file():
        raise CheckpointError(
            f"the packaged weights file {path} is missing; reinstall samkit (pip install samkit)"
        )
    return path


def _variants() -> list[Variant]:
    from .registry import VARIANTS

    return list(VARIANTS.values())


def build_sam(
    source: str | os.PathLike | None = None,
    *,
    config: ModelConfig | None = None,
    cache: str | os.PathLike | None = None,
    download: bool = True,
) -> tuple[Sam, LoadedCheckpoint | None]:
    """Build a SAM model from a checkpoint (path / official name / variant) or a bare config."""
    if source is None:
        if config is None:
            raise CheckpointError("give a checkpoint path, a variant name, or a config")
        return config.build(), None
    ckpt = read_checkpoint(resolve_checkpoint(source, cache=cache, download=download))
    model = (config or ckpt.config).build()
    return load_into(model, ckpt), ckpt
