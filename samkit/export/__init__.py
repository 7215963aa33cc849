"""Export SAM models to deployment formats: an ONNX image encoder + prompt decoder pair.

``export(model, format="onnx", output_dir=..., **options)`` checks the format and options and
calls the format's exporter (:func:`export_onnx`); with ``preset=`` (``"xanylabeling"``,
``"cvat"``, ``"webdemo"``) it writes the files a labeling tool loads
(:func:`samkit.export.presets.export_preset`). Imported lazily: :mod:`samkit.export.spec`
is torch-free and used by the onnxruntime predictor.
"""

from __future__ import annotations

import importlib
import inspect
import os
from pathlib import Path
from typing import Any

from ..errors import ExportError
from .spec import PRESETS  # torch-free

FORMATS = ("onnx",)

_EXPORTS = {
    "export_onnx": "samkit.export.onnx",
    "weights_fingerprint": "samkit.export.onnx",
    "verify_export": "samkit.export.verify",
    "export_preset": "samkit.export.presets",
    "save_embedding_npy": "samkit.export.presets",
}

__all__ = ["FORMATS", "PRESETS", "export", *_EXPORTS]


def export(
    model: Any,
    format: str = "onnx",
    output_dir: str | os.PathLike = ".",
    preset: str | None = None,
    **options: Any,
) -> dict[str, Path]:
    """Export ``model`` (a :class:`~samkit.SAM`) to ``format``; returns the written paths.

    ``options`` are those of the format's exporter (for ONNX: :func:`export_onnx`); with
    ``preset`` those of :func:`~samkit.export.presets.export_preset`.
    """
    fmt = str(format).lower().lstrip(".")
    if fmt not in FORMATS:
        raise ExportError(
            f"unsupported export format {format!r}: samkit exports {', '.join(FORMATS)} "
            "(an image encoder + prompt decoder pair for onnxruntime and the annotation tools)"
        )
    if preset is not None:
        if str(preset).lower() not in PRESETS:
            raise ExportError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
        from .presets import export_preset as exporter

        options["preset"] = str(preset).lower()
    else:
        from .onnx import export_onnx as exporter

        if type(getattr(model, "model", model)).__name__ == "Sam2":  # SAM 2: three-output encoder
            from .onnx import export_sam2_onnx as exporter
    accepted = [
        p.name for p in inspect.signature(exporter).parameters.values() if p.kind == p.KEYWORD_ONLY
    ]
    unknown = sorted(set(options) - set(accepted) - {"preset"})
    if unknown:
        raise ExportError(
            f"unknown {fmt} export option(s) {', '.join(unknown)}; accepted: {', '.join(accepted)}"
        )
    return exporter(model, output_dir, **options)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'samkit.export' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
