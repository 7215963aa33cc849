"""Dataset jobs over image folders: auto-annotation (boxes from a detector or label files ->
SAM masks -> YOLO / COCO labels), segment-everything and embedding precomputation.

:mod:`.run` (``auto_annotate``), :mod:`.folder_jobs` (``segment_folder``, ``embed_folder``),
:mod:`.jobs` (the per-image job and the local engine), :mod:`.ray_engine` (the Ray Data engine),
:mod:`.detectors` (box sources), :mod:`.labels` (label and names readers), :mod:`.writers`
(YOLO and COCO writers)."""

from .run import AnnotateFailure, AnnotateSummary, auto_annotate, segment_detections

__all__ = ["AnnotateFailure", "AnnotateSummary", "auto_annotate", "segment_detections"]
