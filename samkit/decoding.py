"""Decode checked prompts against the image set in a :class:`SamPredictor`, in batches.

All prompts of one call go through the mask decoder together (``chunk_size`` prompts per
forward pass, to bound memory), with exactly the prompt scaling of ``SamPredictor.predict``, so
the numbers equal the low-level predictor's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .ops.boxes import masks_to_boxes_xyxy
from .predictor import SamPredictor
from .prompts import Prompts, binary_masks_to_logits
from .transforms import scale_boxes, scale_coords

#: Prompts per decoder forward pass (the decoder's activations grow linearly with it).
DEFAULT_CHUNK_SIZE = 64
#: Masks upsampled to full size together (bounds the float32 full-size logits in memory).
UPSAMPLE_GROUP = 4


@dataclass
class Decoded:
    """Masks ``N x H x W`` bool, scores ``N``, boxes ``N x 4`` XYXY, prompt_index ``N``,
    low_res_logits ``N x 256 x 256`` (SAM's models) with N = prompts x (3 if multimask else 1)."""

    masks: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray
    prompt_index: np.ndarray
    low_res_logits: np.ndarray


def prompt_tensors(
    predictor: SamPredictor, prompts: Prompts
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Fitted prompts in original pixels -> tensors in the model's input frame."""
    orig, inp = predictor.original_size, predictor.input_size
    dev = predictor.device
    coords = labels = boxes = mask_input = None
    if prompts.points is not None:
        coords = torch.as_tensor(scale_coords(prompts.points, orig, inp), device=dev)
        labels = torch.as_tensor(prompts.labels, dtype=torch.int, device=dev)
    if prompts.boxes is not None:
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


def upsample_logits(
    low_res: torch.Tensor, input_size: tuple[int, int], original_size: tuple[int, int], size: int
) -> torch.Tensor:
    """``B x C x s x s`` low-res logits -> ``B x C x H x W`` logits at the original size.

    Bit-identical to ``Sam.postprocess_masks`` (bilinear to the ``size`` model input, crop the
    padding, bilinear to the original size) but the first step only computes the rows and
    columns the crop keeps: with the integer factor ``size / s`` and a one-sample margin the
    bilinear weights and neighbours of every kept pixel are the same.
    """
    s = low_res.shape[-1]
    if size % s:
        raise ValueError(f"model input {size} is not a multiple of the low-res size {s}")
    f = size // s
    rows = min(s, math.ceil(input_size[0] / f) + 1)
    cols = min(s, math.ceil(input_size[1] / f) + 1)
    x = F.interpolate(
        low_res[..., :rows, :cols], scale_factor=f, mode="bilinear", align_corners=False
    )
    x = x[..., : input_size[0], : input_size[1]]
    return F.interpolate(x, original_size, mode="bilinear", align_corners=False)


def decode_prompts(
    predictor: SamPredictor,
    prompts: Prompts,
    multimask_output: bool = False,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Decoded:
    """Masks for ``prompts`` (already checked by :func:`~samkit.prompts.fit_prompts`)."""
    h, w = predictor.original_size
    c = 3 if multimask_output else 1
    n = prompts.n
    if n == 0:
        s = predictor.model.prompt_encoder.mask_input_size[0]
        return Decoded(
            np.zeros((0, h, w), bool),
            np.zeros(0, np.float32),
            np.zeros((0, 4), np.float32),
            np.zeros(0, np.int64),
            np.zeros((0, s, s), np.float32),
        )
    tensors = prompt_tensors(predictor, prompts)
    model = predictor.model
    s = model.prompt_encoder.mask_input_size[0]
    # Preallocated outputs; the full-size logits exist only UPSAMPLE_GROUP masks at a time
    # (a 1280 x 720 float mask is 3.7 MB: 64 at once would be 236 MB of fresh pages).
    masks = np.empty((n * c, h, w), dtype=bool)
    boxes = np.empty((n * c, 4), dtype=np.float32)
    scores = np.empty(n * c, dtype=np.float32)
    low_res = np.empty((n * c, s, s), dtype=np.float32)
    row = 0
    for start in range(0, n, max(1, int(chunk_size))):
        part = [None if t is None else t[start : start + chunk_size] for t in tensors]
        with torch.inference_mode():
            low, iou = predictor.decode(*part, multimask_output=multimask_output)
            low = low.float().flatten(0, 1)  # (prompts x c) x s x s
            k = low.shape[0]
            scores[row : row + k] = iou.flatten().float().cpu().numpy()
            low_res[row : row + k] = low.cpu().numpy()
            for g in range(0, k, UPSAMPLE_GROUP):
                logits = upsample_logits(
                    low[g : g + UPSAMPLE_GROUP, None],
                    predictor.input_size,
                    (h, w),
                    model.image_size,
                )[:, 0]
                m = logits > model.mask_threshold
                end = row + g + m.shape[0]
                boxes[row + g : end] = masks_to_boxes_xyxy(m).cpu().numpy()
                masks[row + g : end] = m.cpu().numpy()
        row += k
    return Decoded(masks, scores, boxes, np.repeat(np.arange(n, dtype=np.int64), c), low_res)
