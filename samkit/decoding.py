"""Decode checked prompts against the image set in a :class:`SamPredictor`, in batches.

All prompts of one call go through the mask decoder together (``chunk_size`` prompts per
forward pass, to bound memory), with exactly the prompt scaling of ``SamPredictor.predict``, so
the numbers equal the low-level predictor's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .ops.boxes import masks_to_boxes_xyxy
from .predictor import SamPredictor
from .prompts import Prompts, binary_masks_to_logits
from .transforms import scale_boxes, scale_coords

#: Prompts per decoder forward pass (the decoder's activations grow linearly with it).
DEFAULT_CHUNK_SIZE = 64


@dataclass
class Decoded:
    """Masks ``N x H x W`` bool, scores ``N``, boxes ``N x 4`` XYXY, prompt_index ``N``,
    low_res_logits ``N x 256 x 256`` with N = prompts x (3 if multimask else 1)."""

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
            logits = binary_masks_to_logits(prompts.masks, inp, predictor.model.image_size)
        else:
            logits = prompts.masks[:, None]
        mask_input = torch.as_tensor(logits, dtype=torch.float32, device=dev)
    return coords, labels, boxes, mask_input


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
        return Decoded(
            np.zeros((0, h, w), bool),
            np.zeros(0, np.float32),
            np.zeros((0, 4), np.float32),
            np.zeros(0, np.int64),
            np.zeros((0, 256, 256), np.float32),
        )
    tensors = prompt_tensors(predictor, prompts)
    masks, scores, boxes, low_res = [], [], [], []
    for start in range(0, n, max(1, int(chunk_size))):
        part = [None if t is None else t[start : start + chunk_size] for t in tensors]
        m, iou, low = predictor.predict_torch(*part, multimask_output=multimask_output)
        m = m.flatten(0, 1)
        boxes.append(masks_to_boxes_xyxy(m).float().cpu())
        masks.append(m.cpu())
        scores.append(iou.flatten().float().cpu())
        low_res.append(low.flatten(0, 1).float().cpu())
    return Decoded(
        torch.cat(masks).numpy(),
        torch.cat(scores).numpy(),
        torch.cat(boxes).numpy(),
        np.repeat(np.arange(n, dtype=np.int64), c),
        torch.cat(low_res).numpy(),
    )
