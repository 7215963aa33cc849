"""Running SAM over a source: images encoded in batches (with the embedding cache), all prompts
of an image decoded together, one :class:`Results` per image.

In a multi-image source (folder, glob, list, video) an unreadable image, or prompts that do not
fit one image, is logged, recorded in ``.errors`` and skipped; a single image raises instead.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .embeddings import Embedding, encode_images
from .errors import PromptError, SamkitError
from .interactive import Predictor
from .prompts import Prompts, fit_prompts
from .results import Results
from .sources import SourceItem, is_single_source, load_sources

log = logging.getLogger("samkit")


@dataclass(frozen=True)
class SkippedItem:
    """An image of the source that produced no Results, and why."""

    path: str
    frame: int | None
    reason: str


class ResultsList(list):
    """A list of :class:`Results`; ``errors`` lists the skipped images (:class:`SkippedItem`)."""

    errors: list[SkippedItem]


class ResultsStream:
    """An iterator of :class:`Results` (``stream=True``); ``errors`` grows as images are skipped."""

    def __init__(self, make: Callable[[list[SkippedItem]], Iterator[Results]]) -> None:
        self.errors: list[SkippedItem] = []
        self._it = make(self.errors)

    def __iter__(self) -> ResultsStream:
        return self

    def __next__(self) -> Results:
        return next(self._it)


def everything_function() -> Callable[..., Any]:
    """``samkit.everything.segment_everything``, imported on first use."""
    try:
        module = importlib.import_module("samkit.everything")
    except ModuleNotFoundError as exc:
        if exc.name != "samkit.everything":
            raise
        raise SamkitError(
            "segment-everything mode (a call without bboxes=, points= or masks=) needs the "
            "module samkit.everything, which this installation lacks; pass prompts instead"
        ) from exc
    return module.segment_everything


def check_everything_params(params: dict[str, Any]) -> None:
    """Raise :class:`SamkitError` for keyword arguments segment_everything does not take."""
    if not params:
        return
    accepted = list(inspect.signature(everything_function()).parameters)[2:]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise SamkitError(
            f"unknown argument(s) {', '.join(unknown)} for segment-everything mode; accepted: "
            f"{', '.join(accepted)}"
        )


def run(
    predictor: Predictor,
    source: Any,
    prompts: Prompts,
    errors: list[SkippedItem],
    *,
    multimask_output: bool = False,
    batch: int = 1,
    vid_stride: int = 1,
    max_pixels: int | None = None,
    strict: bool | None = None,
    everything: dict[str, Any] | None = None,
) -> Iterator[Results]:
    """Yield Results for every readable image of ``source``; skipped ones go to ``errors``."""
    if int(batch) < 1:
        raise SamkitError(f"batch must be a positive integer, got {batch!r}")
    strict = is_single_source(source) if strict is None else strict
    kw = {} if max_pixels is None else {"max_pixels": max_pixels}
    items = load_sources(
        source, vid_stride=vid_stride, image_format=predictor.image_format, strict=strict, **kw
    )

    def skip(item: SourceItem, reason: str) -> None:
        where = item.path if item.frame is None else f"{item.path} (frame {item.frame})"
        log.warning("skipped %s: %s", where, reason)
        errors.append(SkippedItem(item.path, item.frame, reason))

    pending: list[tuple[SourceItem, Prompts]] = []
    for item in items:
        if not item.ok:
            skip(item, item.error)
            continue
        if prompts.empty:
            yield _everything(predictor, item, everything or {})
            continue
        try:
            fitted = fit_prompts(prompts, *item.image.shape[:2], predictor.mask_size)
        except PromptError as exc:
            if strict:
                raise
            skip(item, str(exc))
            continue
        pending.append((item, fitted))
        if len(pending) >= batch:
            yield from _flush(predictor, pending, multimask_output)
            pending = []
    yield from _flush(predictor, pending, multimask_output)


def _flush(
    predictor: Predictor, pending: list[tuple[SourceItem, Prompts]], multimask_output: bool
) -> Iterator[Results]:
    """Encode the images not in the cache in one batch, then decode each image's prompts."""
    if not pending:
        return
    keys = [predictor.cache_key(item.image) for item, _ in pending]
    found: dict[str, Embedding] = {}
    for key in dict.fromkeys(keys):
        emb = predictor.cache.get(key)
        if emb is not None:
            found[key] = emb
    missing = [k for k in dict.fromkeys(keys) if k not in found]
    encode_ms = 0.0
    if missing:
        images = [pending[keys.index(k)][0].image for k in missing]
        t0 = time.perf_counter()
        for key, emb in zip(missing, encode_images(predictor.model, images, predictor.dtype)):
            found[key] = emb
            predictor.cache.put(key, emb)
        encode_ms = (time.perf_counter() - t0) * 1e3 / len(missing)
    encoded = set(missing)
    for key, (item, fitted) in zip(keys, pending):
        predictor.set_embedding(found[key], item.image, item.path, item.frame)
        result = predictor.decode_fitted(fitted, multimask_output)
        result.speed["encode"] = encode_ms if key in encoded else 0.0
        encoded.discard(key)
        yield result
    predictor.reset_image()


def _everything(predictor: Predictor, item: SourceItem, params: dict[str, Any]) -> Results:
    fn = everything_function()
    t0 = time.perf_counter()
    params = {"precision": predictor.parts, **params}  # per part: encoder and grid decoder
    out = fn(predictor.sam_predictor, item.image, **params)
    n = len(out.masks)
    return Results(
        orig_img=np.ascontiguousarray(item.image[..., ::-1]),
        path=item.path,
        masks=out.masks,
        scores=out.scores,
        boxes=out.boxes,
        stability_scores=out.stability,
        prompt_points=np.asarray(out.points, dtype=np.float64).reshape(n, 1, 2),
        prompt_labels=np.ones((n, 1), dtype=np.int32),
        frame=item.frame,
        speed={"everything": (time.perf_counter() - t0) * 1e3},
    )
