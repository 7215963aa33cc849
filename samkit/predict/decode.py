"""Decode checked prompts against the image set in a :class:`SamPredictor`, in batches.

All prompts of one call go through the mask decoder together (``chunk_size`` prompts per
forward pass, to bound memory), with exactly the prompt scaling of ``SamPredictor.predict``, so
the numbers equal the low-level predictor's.

With ``defer_low_res`` (and the fast decoder in use) the output upscaling runs only for the part
of the low-res frame that the upsampled masks read (the resized image, not its padding: 56 % of
the frame for a 16:9 image); the whole-frame ``low_res_logits`` are computed when first read.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import PromptError
from ..models import Sam
from ..models.sam2 import Sam2
from ..ops.boxes import masks_to_boxes_xyxy
from ..ops.upsample import upsample_logits, upsample_region
from ..results import DeferredRows
from .fast_decode import PointDecoder, UpscaleRest, rest_block
from .prompts import Prompts, binary_masks_to_logits
from .sam2_predictor import LOW_RES_CLAMP, scale_points
from .transforms import scale_boxes, scale_coords

if TYPE_CHECKING:
    from .sam_predictor import SamPredictor

#: Prompts per decoder forward pass (the decoder's activations grow linearly with it).
DEFAULT_CHUNK_SIZE = 64
#: Masks upsampled to full size together (bounds the float32 full-size logits in memory).
UPSAMPLE_GROUP = 4

#: Largest output of one decode call (bool masks + low-res logits), bytes. More prompts than
#: fit are refused with a pointer to ``Predictor.stream`` (masks per chunk, bounded memory).
MAX_RESULT_BYTES = 2**30


def check_result_size(masks: int, h: int, w: int, s: int, store_low_res: bool = True) -> None:
    """Raise :class:`PromptError` when ``masks`` masks of ``h x w`` (plus ``s x s`` float32
    logits) would exceed :data:`MAX_RESULT_BYTES` at once."""
    need = masks * (h * w + (4 * s * s if store_low_res else 0))
    if need > MAX_RESULT_BYTES:
        raise PromptError(
            f"{masks} masks of {w} x {h} would hold {need / 2**30:.1f} GiB at once (limit "
            f"{MAX_RESULT_BYTES / 2**30:g} GiB): stream them per chunk with "
            "predictor.stream(bboxes=..., chunk=256), or pass fewer prompts per call"
        )


@dataclass
class DecodedGroup:
    """Mask rows ``row .. row + k`` of a :func:`decode_groups` call: ``masks`` ``k x H x W``
    (bool, or float32 logits), ``scores`` ``k`` predicted IoU, ``low_res`` ``k x s x s`` logits
    (only the upsampled region of the frame when deferred)."""

    row: int
    masks: torch.Tensor
    scores: np.ndarray
    low_res: torch.Tensor


@dataclass
class Decoded:
    """Masks ``N x H x W`` bool, scores ``N``, boxes ``N x 4`` XYXY, prompt_index ``N``,
    low_res_logits ``N x 256 x 256`` (SAM's models) with N = prompts x (3 if multimask else 1)."""

    masks: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray
    prompt_index: np.ndarray
    low_res_logits: np.ndarray | DeferredRows


#: Image tokens (bytes) that a deferred call may keep so that reading its ``low_res_logits``
#: only upscales the padding part of the frame (~3 ms per prompt); calls with more prompts
#: decode them again when read (~20 ms per prompt).
REST_BYTES = 32 * 2**20


class DeferredLowRes(DeferredRows):
    """Whole-frame low-res logits of sparse prompts, completed when first read.

    Either from the region logits ``part`` (``n x c`` mask rows) and the kept image tokens
    ``rest`` (per prompt) of :meth:`PointDecoder.decode_sparse_split`, or, when those were not
    kept, by decoding the prompts again from ``features`` (the predictor's tensor, not a copy:
    4 MB for SAM's models) and ``tensors`` (the prompts in the model's input frame). ``rows``
    are mask rows ``prompt * c + k``, ``c = 3`` for multimask output.
    """

    def __init__(
        self,
        model: Sam,
        multimask_output: bool,
        rows: np.ndarray,
        *,
        part: torch.Tensor | None = None,
        rest: UpscaleRest | None = None,
        features: torch.Tensor | None = None,
        tensors: tuple[torch.Tensor | None, ...] | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if (rest is None) == (features is None):
            raise ValueError("give either part and rest, or features and tensors")
        self.model, self.multimask_output = model, multimask_output
        self.rows = np.asarray(rows, dtype=np.int64)
        self.part, self.rest = part, rest
        self.features, self.tensors = features, tensors
        self.dtype = dtype  # the point decoder's, as in the call

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, rows: np.ndarray) -> DeferredLowRes:
        new = copy.copy(self)
        new.rows = self.rows[rows]
        return new

    @torch.inference_mode()
    def compute(self) -> np.ndarray:
        # the point decoder in the dtype of the call, whatever autocast context the reader is in
        device = (self.part if self.rest is not None else self.features).device
        with torch.autocast(device.type, enabled=False):
            return self._compute(device)

    def _compute(self, device: torch.device) -> np.ndarray:
        c = 3 if self.multimask_output else 1
        if not len(self.rows):
            return np.zeros((0, *self.model.prompt_encoder.mask_input_size), np.float32)
        prompts, where = np.unique(self.rows // c, return_inverse=True)
        sel = torch.as_tensor(prompts, device=device)
        decoder = PointDecoder(self.model, dtype=self.dtype)
        if self.rest is not None:
            idx = torch.as_tensor(prompts[:, None] * c + np.arange(c), device=device).flatten()
            low = decoder.complete(
                self.part[idx].unflatten(0, (len(prompts), c)), self.rest.take(sel)
            )
        else:
            coords, labels, boxes = (None if t is None else t[sel] for t in self.tensors)
            points = None if coords is None else (coords, labels)
            sparse, _ = self.model.prompt_encoder(points, boxes, None)
            decoder.set_features(self.features)
            low, _ = decoder.decode_sparse(sparse, self.multimask_output, chunk=2)
        return low[where, self.rows % c].float().cpu().numpy()


def _rest_bytes(features: torch.Tensor, region: tuple[int, int]) -> int:
    """Bytes of float32 image tokens per prompt outside ``region`` (0: the whole frame)."""
    _, ch, gh, gw = features.shape
    split = rest_block((gh, gw), region)
    if split is None:
        return 0
    axis, start = split
    tokens = (gh - start) * gw if axis == 0 else gh * (gw - start)
    return tokens * ch * 4


def prompt_tensors(
    predictor: SamPredictor, prompts: Prompts
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Fitted prompts in original pixels -> tensors in the model's input frame."""
    orig, inp = predictor.original_size, predictor.input_size
    dev = predictor.device
    coords = labels = boxes = mask_input = None
    if isinstance(predictor.model, Sam2):  # per-axis float32 scaling, as SAM 2's reference
        size = predictor.model.image_size
        if prompts.points is not None:
            coords = scale_points(torch.as_tensor(prompts.points, device=dev), orig, size)
            labels = torch.as_tensor(prompts.labels, dtype=torch.int, device=dev)
        if prompts.boxes is not None:
            b = torch.as_tensor(prompts.boxes, device=dev).reshape(-1, 2, 2)
            boxes = scale_points(b, orig, size).reshape(-1, 4)
    if prompts.points is not None and coords is None:
        coords = torch.as_tensor(scale_coords(prompts.points, orig, inp), device=dev)
        labels = torch.as_tensor(prompts.labels, dtype=torch.int, device=dev)
    if prompts.boxes is not None and boxes is None:
        boxes = torch.as_tensor(scale_boxes(prompts.boxes, orig, inp), device=dev)
    if prompts.masks is not None:
        if prompts.mask_kind == "binary":
            model = predictor.model
            size = model.prompt_encoder.mask_input_size[0]
            logits = binary_masks_to_logits(prompts.masks, inp, model.image_size, size)
        else:
            logits = prompts.masks[:, None]
        mask_input = torch.as_tensor(logits, dtype=torch.float32, device=dev)
    return coords, labels, boxes, mask_input


def decode_groups(
    predictor: SamPredictor,
    prompts: Prompts,
    multimask_output: bool = False,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    *,
    return_logits: bool = False,
    defer: bool = False,
    rests: list[UpscaleRest] | None = None,
    parts: list[torch.Tensor] | None = None,
) -> Iterator[DecodedGroup]:
    """The prompt -> masks path: :class:`DecodedGroup` s of up to ``UPSAMPLE_GROUP`` mask rows.

    Prompts (in original pixels) are scaled as ``SamPredictor.predict`` scales them and decoded
    ``chunk_size`` at a time (the fast decoder where :meth:`SamPredictor.uses_fast_decoder`);
    the low-res logits are upsampled by :func:`~samkit.ops.upsample.upsample_logits` as the
    model's :class:`~samkit.models.InputSpec` says, a group at a time, so a caller that
    consumes the groups keeps only ``UPSAMPLE_GROUP`` full-size masks in memory.

    ``return_logits``: float32 logits instead of bool masks. ``defer``: the output upscaling
    covers only the image part of the low-res frame (``low_res`` is then that region);
    ``rests``/``parts``: lists that collect what :class:`DeferredLowRes` completes the frame from.
    """
    h, w = predictor.original_size
    tensors = prompt_tensors(predictor, prompts)
    model = predictor.model
    spec = model.input_spec
    clamp = LOW_RES_CLAMP if isinstance(model, Sam2) else None  # SAM 2 returns clamped logits
    s = model.prompt_encoder.mask_input_size[0]
    region = upsample_region(s, predictor.input_size, spec.image_size)
    row = 0
    for start in range(0, prompts.n, max(1, int(chunk_size))):
        part = [None if t is None else t[start : start + chunk_size] for t in tensors]
        with torch.inference_mode():
            if rests is not None:
                low, iou, rest = predictor.decode_split(*part[:3], multimask_output, region)
                rests.append(rest)
            else:
                low, iou = predictor.decode(
                    *part, multimask_output=multimask_output, region=region if defer else None
                )
            low = low.float().flatten(0, 1)  # (prompts x c) x s x s (or x region)
            scores = iou.flatten().float().cpu().numpy()
        if parts is not None:
            parts.append(low)
        for g in range(0, low.shape[0], UPSAMPLE_GROUP):
            with torch.inference_mode():  # not held across the yield
                logits = upsample_logits(
                    low[g : g + UPSAMPLE_GROUP, None],
                    spec.image_size,
                    predictor.input_size,
                    (h, w),
                    frame=s,
                    mode=spec.mask_upsample,
                )[:, 0]
                out = logits if return_logits else logits > model.mask_threshold
            k = out.shape[0]
            kept = low[g : g + k] if clamp is None else low[g : g + k].clamp(-clamp, clamp)
            yield DecodedGroup(row, out, scores[g : g + k], kept)
            row += k


def decode_prompts(
    predictor: SamPredictor,
    prompts: Prompts,
    multimask_output: bool = False,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    defer_low_res: bool = False,
    return_logits: bool = False,
) -> Decoded:
    """Masks for ``prompts`` (already checked by :func:`~samkit.prompts.fit_prompts`).

    ``defer_low_res``: return :class:`DeferredLowRes` instead of computed ``low_res_logits``
    when the fast decoder decodes these prompts (see the module docstring).
    ``return_logits``: ``masks`` holds the float32 logits (``boxes`` are still those of the
    thresholded masks).
    """
    h, w = predictor.original_size
    c = 3 if multimask_output else 1
    n = prompts.n
    s = predictor.model.prompt_encoder.mask_input_size[0]
    mask_dtype = np.float32 if return_logits else bool
    if n == 0:
        return Decoded(
            np.zeros((0, h, w), mask_dtype),
            np.zeros(0, np.float32),
            np.zeros((0, 4), np.float32),
            np.zeros(0, np.int64),
            np.zeros((0, s, s), np.float32),
        )
    region = upsample_region(s, predictor.input_size, predictor.model.input_spec.image_size)
    per_prompt = _rest_bytes(predictor.features, region)
    # deferring pays only when the image does not fill the square frame
    defer = bool(
        defer_low_res
        and per_prompt
        and prompts.masks is None
        and predictor.model.input_spec.mask_upsample == "via_input"
        and predictor.uses_fast_decoder()
    )
    keep_rest = defer and n * per_prompt <= REST_BYTES
    check_result_size(n * c, h, w, s, store_low_res=not defer)
    parts: list[torch.Tensor] = []
    rests: list[UpscaleRest] = []
    # Preallocated outputs; the full-size logits exist only UPSAMPLE_GROUP masks at a time
    # (a 1280 x 720 float mask is 3.7 MB: 64 at once would be 236 MB of fresh pages).
    masks = np.empty((n * c, h, w), dtype=mask_dtype)
    boxes = np.empty((n * c, 4), dtype=np.float32)
    scores = np.empty(n * c, dtype=np.float32)
    low_res = None if defer else np.empty((n * c, s, s), dtype=np.float32)
    groups = decode_groups(
        predictor,
        prompts,
        multimask_output,
        chunk_size,
        return_logits=return_logits,
        defer=defer,
        rests=rests if keep_rest else None,
        parts=parts if keep_rest else None,
    )
    with torch.inference_mode():
        for grp in groups:
            rows = slice(grp.row, grp.row + len(grp.scores))
            m = grp.masks > predictor.model.mask_threshold if return_logits else grp.masks
            boxes[rows] = masks_to_boxes_xyxy(m).cpu().numpy()
            masks[rows] = grp.masks.cpu().numpy()
            scores[rows] = grp.scores
            if low_res is not None:
                low_res[rows] = grp.low_res.cpu().numpy()
    prompt_index = np.repeat(np.arange(n, dtype=np.int64), c)
    if keep_rest:
        low_res = DeferredLowRes(
            predictor.model,
            multimask_output,
            np.arange(n * c),
            part=torch.cat(parts),
            rest=UpscaleRest.cat(rests),
            dtype=predictor._fast_decoder_dtype(),
        )
    elif defer:
        low_res = DeferredLowRes(
            predictor.model,
            multimask_output,
            np.arange(n * c),
            features=predictor.features,
            tensors=prompt_tensors(predictor, prompts)[:3],
            dtype=predictor._fast_decoder_dtype(),
        )
    return Decoded(masks, scores, boxes, prompt_index, low_res)
