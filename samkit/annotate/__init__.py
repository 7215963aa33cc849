"""Auto-annotation: boxes from a detector or label files -> SAM masks -> YOLO / COCO labels.

:mod:`.run` (``auto_annotate``), :mod:`.detectors` (box sources), :mod:`.labels` (label and
names readers), :mod:`.writers` (YOLO and COCO writers)."""

from .run import AnnotateFailure, AnnotateSummary, auto_annotate, segment_detections

__all__ = ["AnnotateFailure", "AnnotateSummary", "auto_annotate", "segment_detections"]
