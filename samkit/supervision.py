"""Converters between samkit and Roboflow's ``supervision`` (``sv.Detections``).

``to_supervision(results)`` gives the masks, XYXY boxes, predicted IoU as ``confidence`` and
class ids to supervision's annotators, trackers and dataset writers; ``from_supervision(dets)``
turns a detector's ``sv.Detections`` into box prompts (and the class ids to carry over).
supervision is optional (``pip install "samkit[supervision]"``) and imported only here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import DependencyError, PromptError

if TYPE_CHECKING:  # pragma: no cover
    import supervision as sv

    from .results import Results

INSTALL_HINT = 'supervision is not installed: pip install "samkit[supervision]"'


def _sv() -> Any:
    try:
        import supervision
    except ImportError as e:
        raise DependencyError(INSTALL_HINT) from e
    return supervision


def _class_ids(results: Results, class_ids: Any) -> np.ndarray:
    """``N`` int64 class ids: one id for all, one per mask, or one per prompt."""
    n = len(results)
    if class_ids is None:
        return np.zeros(n, dtype=np.int64)
    ids = np.asarray(class_ids)
    if ids.dtype.kind not in "iub" and not (
        ids.dtype.kind == "f" and np.all(np.isfinite(ids)) and np.all(ids == np.round(ids))
    ):
        raise PromptError(f"class_ids must be integers, got {ids.dtype} values")
    ids = ids.astype(np.int64).reshape(-1) if ids.ndim else ids.astype(np.int64)
    if ids.ndim == 0:
        return np.full(n, int(ids), dtype=np.int64)
    if len(ids) == n:
        return ids
    prompts = _num_prompts(results)
    if n and len(ids) == prompts:
        return ids[results.prompt_index]
    raise PromptError(
        f"class_ids has {len(ids)} values: give one per mask ({n}), one per prompt "
        f"({prompts}), or a single id"
    )


def _num_prompts(results: Results) -> int:
    for given in (results.prompt_boxes, results.prompt_points):
        if given is not None:
            return len(given)
    return int(results.prompt_index.max()) + 1 if len(results) else 0


def to_supervision(
    results: Results,
    class_ids: int | Sequence[int] | np.ndarray | None = None,
    names: Mapping[int, str] | Sequence[str] | None = None,
) -> sv.Detections:
    """``sv.Detections`` of ``results``: ``mask`` ``N x H x W`` bool, ``xyxy`` ``N x 4`` float32
    (inclusive pixel boxes of the masks, supervision's own convention), ``confidence`` = the
    predicted IoU, ``class_id`` ``N`` int.

    ``class_ids``: one id for all masks, one per mask, or one per prompt (mapped through
    ``results.prompt_index``, e.g. the detector's class of each box prompt); unknown classes
    are ``0``. ``names`` (``{id: name}`` or a list) fills ``data["class_name"]``.
    ``data`` also holds ``prompt_index`` and, in segment-everything mode, ``stability_score``.
    """
    sv = _sv()
    ids = _class_ids(results, class_ids)
    data: dict[str, np.ndarray] = {"prompt_index": results.prompt_index.copy()}
    if results.stability_scores is not None:
        data["stability_score"] = results.stability_scores.copy()
    if names is not None:
        lookup = dict(enumerate(names)) if not isinstance(names, Mapping) else dict(names)
        data["class_name"] = np.array([str(lookup.get(int(i), i)) for i in ids])
    return sv.Detections(
        xyxy=results.boxes.astype(np.float32).reshape(-1, 4),
        mask=results.masks.copy(),
        confidence=results.scores.astype(np.float32).copy(),
        class_id=ids,
        data=data,
    )


def from_supervision(detections: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """Box prompts from ``sv.Detections``: ``(boxes_xyxy N x 4 float32 pixels, class_ids N
    int64 or None)``. Pass the boxes as ``bboxes=`` and the ids to :func:`to_supervision`::

        boxes, ids = from_supervision(detector_detections)
        dets = model(image, bboxes=boxes)[0].to_supervision(class_ids=ids)
    """
    xyxy = getattr(detections, "xyxy", None)
    if xyxy is None:
        raise PromptError(
            f"from_supervision needs an sv.Detections (with .xyxy), got {type(detections).__name__}"
        )
    boxes = np.asarray(xyxy, dtype=np.float32)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or not np.all(np.isfinite(boxes)):
        raise PromptError(f"detections.xyxy must be N x 4 finite numbers, got {boxes.shape}")
    cls = getattr(detections, "class_id", None)
    return boxes, None if cls is None else np.asarray(cls, dtype=np.int64).reshape(-1)
