"""samkit: a fast, safe, standalone toolkit for the Segment Anything Model family.

The public API is imported lazily, so that ``import samkit`` is fast and torch-free parts
(the onnxruntime predictor, result converters) work where torch is not installed.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "SAM": "samkit.model",
    "SamPredictor": "samkit.predictor",
    "OnnxPredictor": "samkit.onnx_predictor",
    "Predictor": "samkit.interactive",
    "SAMPredictor": "samkit.ultralytics_predictor",
    "Results": "samkit.results",
    "load_sources": "samkit.sources",
    "SamAutomaticMaskGenerator": "samkit.automatic",
    "segment_everything": "samkit.everything",
    "EverythingOutput": "samkit.everything",
    "ModelConfig": "samkit.registry",
    "SegDataset": "samkit.datasets",
    "load_dataset": "samkit.datasets",
    "ValResults": "samkit.val",
    "TrainResults": "samkit.train",
    "VARIANTS": "samkit.registry",
    "SamkitError": "samkit.errors",
    "CheckpointError": "samkit.errors",
    "DownloadError": "samkit.errors",
    "ImageError": "samkit.errors",
    "PromptError": "samkit.errors",
    "ExportError": "samkit.errors",
    "DatasetError": "samkit.errors",
    "DependencyError": "samkit.errors",
    "auto_annotate": "samkit.annotate",
    "AnnotateSummary": "samkit.annotate",
    "write_seeded_checkpoint": "samkit.seeded",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'samkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
