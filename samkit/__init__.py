"""samkit: a fast, safe, standalone toolkit for the Segment Anything Model family.

The public API is imported lazily, so that ``import samkit`` is fast and torch-free parts
(the onnxruntime predictor, result converters) work where torch is not installed.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

__version__ = "0.1.0"


def _passive_openmp_waiting() -> None:
    """``OMP_WAIT_POLICY=PASSIVE`` unless set, torch is loaded already (libgomp read its
    environment then) or ``SAMKIT_CPU_POLICY=off``; see :mod:`samkit.runtime` for why."""
    policy = os.environ.get("SAMKIT_CPU_POLICY", "auto").strip().lower()
    if policy in ("off", "0", "false", "no") or "torch" in sys.modules:
        return
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        os.environ["SAMKIT_SET_OMP_WAIT_POLICY"] = "1"


_passive_openmp_waiting()

# public name -> module that defines it
_EXPORTS = {
    "SAM": "samkit.model",
    "SamPredictor": "samkit.predictor",
    "OnnxPredictor": "samkit.onnx_predictor",
    "Predictor": "samkit.interactive",
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
