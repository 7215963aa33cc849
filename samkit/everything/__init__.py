"""Segment everything: the engine (:mod:`.engine`, plain functions over a predictor) and its two
APIs, :func:`segment_everything` (Ultralytics' names) and
:class:`~samkit.everything.automatic.SamAutomaticMaskGenerator` (Meta's)."""

from .segment import EverythingOutput, resolve_dtype, segment_everything

__all__ = ["EverythingOutput", "resolve_dtype", "segment_everything"]
