"""SAM model parts (``nn.Module`` s only), and :class:`InputSpec` (what a model expects as input).

Imported lazily (PEP 562), so that the torch-free :mod:`samkit.models.input_spec` can be used
where torch is not installed.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ImageEncoderViT": "vit",
    "InputSpec": "input_spec",
    "MaskDecoder": "mask_decoder",
    "PromptEncoder": "prompt_encoder",
    "Sam": "sam",
    "TinyViT": "tiny_vit",
    "TwoWayTransformer": "transformer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'samkit.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
