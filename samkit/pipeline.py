"""Running SAM over a source: images encoded in batches (with the embedding cache), all prompts
of an image decoded together, one :class:`Results` per image.

In a multi-image source (folder, glob, list, video) an image that fails in any way (unreadable,
prompts that do not fit it, an error while encoding or decoding it) is logged, recorded in
``.errors`` and skipped, and the run goes on; a single image raises instead.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .data.sources import SourceItem, is_single_source, load_sources
from .errors import PromptError, SamkitError
from .everything.segment import segment_everything
from .models.sam2 import Sam2
from .predict.embedding import Embedding, encode_images
from .predict.precision import autocast
from .predict.predictor import Predictor
from .predict.prompts import Prompts, fit_prompts
from .results import Results

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


def check_everything_params(params: dict[str, Any], sam2: bool = False) -> None:
    """Raise :class:`SamkitError` for keyword arguments segment_everything does not take."""
    if not params:
        return
    if sam2:
        from .everything.sam2 import check_params

        try:
            check_params(params)
        except ValueError as e:
            raise SamkitError(str(e)) from None
        return
    accepted = list(inspect.signature(segment_everything).parameters)[2:]
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
    tile: int | bool | None = None,
    overlap: int | None = None,
) -> Iterator[Results]:
    """Yield Results for every readable image of ``source``; skipped ones go to ``errors``.

    With ``tile`` (not None/False) each image is segmented in tiles (:mod:`samkit.everything.tiling`)."""
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

    def fail(item: SourceItem, exc: Exception) -> None:
        # a multi-image source goes on whatever one image raises (KeyboardInterrupt still stops)
        if strict:
            raise exc
        skip(item, _reason(exc))

    pending: list[tuple[SourceItem, Prompts]] = []
    for item in items:
        if not item.ok:
            skip(item, item.error)
            continue
        if tile is not None and tile is not False:
            try:
                yield _tiled(
                    predictor, item, prompts, everything or {}, tile, overlap, multimask_output
                )
            except PromptError as exc:
                if strict:
                    raise
                skip(item, str(exc))
            continue
        if prompts.empty:
            try:
                result = _everything(predictor, item, everything or {})
            except Exception as exc:
                fail(item, exc)
                continue
            yield result
            continue
        try:
            fitted = fit_prompts(prompts, *item.image.shape[:2], predictor.mask_size)
        except Exception as exc:
            fail(item, exc)
            continue
        pending.append((item, fitted))
        if len(pending) >= batch:
            yield from _flush(predictor, pending, multimask_output, fail)
            pending = []
    yield from _flush(predictor, pending, multimask_output, fail)


def _reason(exc: BaseException) -> str:
    """A one-line reason for a skipped image: a samkit error's message, else type and text."""
    if isinstance(exc, SamkitError):
        return str(exc)
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _encode_isolated(predictor, images, fail_at) -> list[Embedding | None]:
    """Encode ``images`` in one batch; if that raises, one by one so only the bad ones fail."""
    try:
        return list(encode_images(predictor.model, images, predictor.dtype))
    except Exception as exc:
        if len(images) == 1:
            fail_at(0, exc)
            return [None]
    out: list[Embedding | None] = []
    for i, image in enumerate(images):
        try:
            out.append(encode_images(predictor.model, [image], predictor.dtype)[0])
        except Exception as exc:
            fail_at(i, exc)
            out.append(None)
    return out


def _flush(
    predictor: Predictor,
    pending: list[tuple[SourceItem, Prompts]],
    multimask_output: bool,
    fail: Callable[[SourceItem, Exception], None],
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
    failed: dict[str, Exception] = {}
    if missing:
        images = [pending[keys.index(k)][0].image for k in missing]
        t0 = time.perf_counter()

        def fail_at(i: int, exc: Exception) -> None:
            failed[missing[i]] = exc

        for key, emb in zip(missing, _encode_isolated(predictor, images, fail_at)):
            if emb is not None:
                found[key] = emb
                predictor.cache.put(key, emb)
        encode_ms = (time.perf_counter() - t0) * 1e3 / len(missing)
    encoded = set(missing)
    for key, (item, fitted) in zip(keys, pending):
        if key in failed:
            fail(item, failed[key])
            continue
        try:
            predictor.set_embedding(found[key], item.image, item.path, item.frame)
            result = predictor.decode_fitted(fitted, multimask_output)
        except Exception as exc:
            fail(item, exc)
            continue
        result.speed["encode"] = encode_ms if key in encoded else 0.0
        encoded.discard(key)
        yield result
    predictor.reset_image()


def _everything(predictor: Predictor, item: SourceItem, params: dict[str, Any]) -> Results:
    t0 = time.perf_counter()
    if isinstance(predictor.model, Sam2):  # SAM 2's generator semantics and defaults
        from .everything.sam2 import segment_everything_sam2

        # SAM 2's generator has no progress report: verbose= is accepted and has no effect there
        params = {k: v for k, v in params.items() if k != "verbose"}
        with autocast(predictor.model.device, predictor.dtype):
            out = segment_everything_sam2(predictor.sam_predictor, item.image, **params)
    else:
        params = {"precision": predictor.parts, **params}  # per part: encoder and grid decoder
        out = segment_everything(predictor.sam_predictor, item.image, **params)
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


def _tiled(
    predictor: Predictor,
    item: SourceItem,
    prompts: Prompts,
    params: dict[str, Any],
    tile: int | bool,
    overlap: int | None,
    multimask_output: bool,
) -> Results:
    """One image segmented in tiles: cropped masks made full-size for :class:`Results`."""
    from .everything.tiling import predict_tiled, segment_everything_tiled

    if prompts.masks is not None:
        raise PromptError("masks= prompts cannot be tiled; give boxes or points, or tile=None")
    model = predictor.sam_predictor.model
    precision = "bf16" if predictor.dtype == torch.bfloat16 else "fp32"
    t0 = time.perf_counter()
    if prompts.empty:
        out = segment_everything_tiled(
            model, item.image, tile, overlap, precision=precision, **params
        )
    else:
        out = predict_tiled(
            model,
            item.image,
            prompts.boxes,
            prompts.points,
            prompts.labels,
            tile=tile,
            multimask_output=multimask_output,
            precision=precision,
        )
    n = len(out)
    extra: dict[str, Any] = {}
    if prompts.empty:
        extra = {
            "stability_scores": out.stability,
            "prompt_points": out.points.reshape(n, 1, 2),
            "prompt_labels": np.ones((n, 1), dtype=np.int32),
        }
    else:
        extra = {
            "prompt_points": prompts.points,
            "prompt_labels": prompts.labels,
            "prompt_boxes": prompts.boxes,
        }
    return Results(
        orig_img=np.ascontiguousarray(item.image[..., ::-1]),
        path=item.path,
        masks=out.dense(),
        scores=out.scores,
        boxes=out.boxes_xyxy,
        prompt_index=out.prompt_index,
        frame=item.frame,
        speed={"tiled": (time.perf_counter() - t0) * 1e3},
        **extra,
    )
