"""samkit: a fast, safe, standalone toolkit for the Segment Anything Model family.

The public API is imported lazily, so that ``import samkit`` is fast and torch-free parts
(the onnxruntime predictor, result converters) work where torch is not installed.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import os
import sys
from typing import Any

__version__ = "0.1.0"


#: libgomp spin iterations before a waiting OpenMP thread sleeps (see samkit.predict.threads)
SPINCOUNT = "100000"


def _bounded_openmp_waiting() -> None:
    """``GOMP_SPINCOUNT`` (bounded spinning, then sleep) unless a wait policy is set, torch is
    loaded already (libgomp read its environment then) or ``SAMKIT_CPU_POLICY=off``; see
    :mod:`samkit.predict.threads` for why."""
    policy = os.environ.get("SAMKIT_CPU_POLICY", "auto").strip().lower()
    if policy in ("off", "0", "false", "no") or "torch" in sys.modules:
        return
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["GOMP_SPINCOUNT"] = SPINCOUNT
        os.environ["SAMKIT_SET_OMP_WAIT_POLICY"] = "1"


_bounded_openmp_waiting()

# public name -> module that defines it
_EXPORTS = {
    "SAM": "samkit.model",
    "SamPredictor": "samkit.predict.sam_predictor",
    "OnnxPredictor": "samkit.export.onnx_predictor",
    "Predictor": "samkit.predict.predictor",
    "SAMPredictor": "samkit.ultralytics_predictor",
    "Results": "samkit.results",
    "from_supervision": "samkit.supervision",
    "load_sources": "samkit.data.sources",
    "SamAutomaticMaskGenerator": "samkit.everything.automatic",
    "segment_everything": "samkit.everything.segment",
    "EverythingOutput": "samkit.everything.segment",
    "ModelConfig": "samkit.zoo.registry",
    "SegDataset": "samkit.data.datasets",
    "load_dataset": "samkit.data.datasets",
    "ValResults": "samkit.train.val",
    "TrainResults": "samkit.train.loop",
    "VARIANTS": "samkit.zoo.registry",
    "segment_everything_tiled": "samkit.everything.tiling",
    "predict_tiled": "samkit.everything.tiling",
    "CroppedMasks": "samkit.everything.tiling.masks",
    "SamkitError": "samkit.errors",
    "CheckpointError": "samkit.errors",
    "DownloadError": "samkit.errors",
    "ImageError": "samkit.errors",
    "PromptError": "samkit.errors",
    "ExportError": "samkit.errors",
    "DatasetError": "samkit.errors",
    "DependencyError": "samkit.errors",
    "Sam2Predictor": "samkit.predict.sam2_predictor",
    "SAM2ImagePredictor": "samkit.predict.sam2_predictor",
    "Sam2AutomaticMaskGenerator": "samkit.everything.sam2",
    "SAM2AutomaticMaskGenerator": "samkit.everything.sam2",
    "Sam2OnnxPredictor": "samkit.export.onnx_sam2_predictor",
    "auto_annotate": "samkit.annotate.run",
    "AnnotateSummary": "samkit.annotate.run",
    "segment_folder": "samkit.annotate.folder_jobs",
    "embed_folder": "samkit.annotate.folder_jobs",
    "load_embedding": "samkit.annotate.folder_jobs",
    "FolderSummary": "samkit.annotate.jobs",
    "write_seeded_checkpoint": "samkit.zoo.seeded",
}

__all__ = ["__version__", *_EXPORTS]

# Module paths of the flat layout before the layers (old path -> module that holds the code
# now): ``import samkit.predictor`` gives the very module ``samkit.predict.sam_predictor``.
# samkit.annotate, samkit.cli, samkit.everything and samkit.train became packages that
# re-export the old modules' public names.
MOVED_MODULES = {
    "samkit.inference": "samkit.pipeline",
    "samkit.plotting": "samkit.ops.plotting",
    "samkit.registry": "samkit.zoo.registry",
    "samkit.checkpoints": "samkit.zoo.checkpoints",
    "samkit.download": "samkit.zoo.download",
    "samkit.seeded": "samkit.zoo.seeded",
    "samkit.info": "samkit.zoo.info",
    "samkit.geometry": "samkit.predict.geometry",
    "samkit.transforms": "samkit.predict.transforms",
    "samkit.prompts": "samkit.predict.prompts",
    "samkit.device": "samkit.predict.device",
    "samkit.precision": "samkit.predict.precision",
    "samkit.fast_decode": "samkit.predict.fast_decode",
    "samkit.validate": "samkit.predict.prompt_checks",
    "samkit.runtime": "samkit.predict.threads",
    "samkit.predictor": "samkit.predict.sam_predictor",
    "samkit.interactive": "samkit.predict.predictor",
    "samkit.predictor_base": "samkit.predict.base",
    "samkit.decoding": "samkit.predict.decode",
    "samkit.embeddings": "samkit.predict.embedding",
    "samkit.everything_core": "samkit.everything.engine",
    "samkit.automatic": "samkit.everything.automatic",
    "samkit.sources": "samkit.data.sources",
    "samkit.datasets": "samkit.data.datasets",
    "samkit.synthetic": "samkit.data.synthetic",
    "samkit.image_files": "samkit.data.files",
    "samkit.annotate_writers": "samkit.annotate.writers",
    "samkit.detectors": "samkit.annotate.detectors",
    "samkit.datasets_io": "samkit.annotate.labels",
    "samkit.val": "samkit.train.val",
    "samkit.losses": "samkit.train.losses",
    "samkit.onnx_predictor": "samkit.export.onnx_predictor",
    "samkit.cli_args": "samkit.cli.args",
    "samkit.cli_commands": "samkit.cli.commands",
    "samkit.benchmark": "samkit.cli.benchmark",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves an old module path of :data:`MOVED_MODULES` to the module that replaced it."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name in MOVED_MODULES:
            return importlib.util.spec_from_loader(name, self)
        return None

    def create_module(self, spec: Any) -> Any:
        return importlib.import_module(MOVED_MODULES[spec.name])

    def exec_module(self, module: Any) -> None:
        pass  # the target module is already executed


if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _MovedModuleFinder())


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'samkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
