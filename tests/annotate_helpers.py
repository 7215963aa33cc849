"""Helpers for the auto-annotation tests: image folders, reference masks, a box-shaped decoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from samkit import SamPredictor
from samkit.ops import polygons_to_mask
from samkit.predict.transforms import scale_boxes

from .conftest import synthetic_image, tiny_model

# Small images keep the tiny model's speckled masks (and the polygon merging) cheap.
SIZES = [(60, 80), (72, 64), (56, 90), (64, 64), (80, 60), (50, 70)]


def make_folder(folder: Path, n: int = 4) -> list[np.ndarray]:
    """``im0.png`` ... synthetic RGB images; returns them in file order."""
    folder.mkdir(parents=True, exist_ok=True)
    images = []
    for i in range(n):
        img = synthetic_image(*SIZES[i % len(SIZES)], seed=i)
        Image.fromarray(img).save(folder / f"im{i}.png")
        images.append(img)
    return images


def boxes_for(image: np.ndarray) -> np.ndarray:
    """Three XYXY pixel boxes inside ``image`` (depending on its size)."""
    h, w = image.shape[:2]
    return np.array(
        [[2, 3, w // 2, h // 2], [w // 3, h // 4, w - 3, h - 2], [5, h // 2, w // 2 + 4, h - 4]],
        dtype=np.float64,
    )


class BoxDetector:
    """A callable detector: ``boxes_for(image)`` with classes (2, 0, 1), no boxes for 64x64
    images; counts its calls."""

    names = ["zero", "one", "two"]

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, image: np.ndarray):
        self.calls += 1
        if image.shape[:2] == (64, 64):
            return np.zeros((0, 4)), np.zeros(0)
        return boxes_for(image), [2, 0, 1], [0.9, 0.8, 0.7]


def reference_masks(sam, image: np.ndarray, boxes_xyxy: np.ndarray, with_iou: bool = False):
    """SAM's single masks for the boxes from the Python API (``SamPredictor``), N x H x W
    (and the N predicted IoUs with ``with_iou``)."""
    predictor = SamPredictor(sam)
    predictor.set_image(image)
    scaled = scale_boxes(np.asarray(boxes_xyxy, np.float64), *predictor.transform_sizes)
    masks, ious, _ = predictor.predict_torch(
        None, None, torch.as_tensor(scaled), multimask_output=False
    )
    return (masks[:, 0].numpy(), ious[:, 0].numpy()) if with_iou else masks[:, 0].numpy()


def parse_yolo(path: Path, h: int, w: int) -> list[tuple[int, np.ndarray]]:
    """``(class, rasterized bool mask)`` per line of a YOLO segmentation label file."""
    out = []
    for line in path.read_text().splitlines():
        values = line.split()
        xy = np.array(values[1:], dtype=np.float64).reshape(-1, 2) * [w, h]
        out.append((int(values[0]), polygons_to_mask([xy], h, w)))
    return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) by relative path, with its bytes."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


class BoxMaskDecoder(nn.Module):
    """A stand-in mask decoder whose mask is the prompt box itself (so the right answer is
    known), and empty for boxes narrower than ``min_width`` input pixels (a mask SAM "drops").

    It reads the boxes from a forward pre-hook on the prompt encoder.
    """

    def __init__(self, sam, min_width: float) -> None:
        super().__init__()
        self.min_width = min_width
        self.boxes: torch.Tensor | None = None
        self.low_res = 4 * sam.prompt_encoder.image_embedding_size[0]
        self.scale = sam.image_size / self.low_res
        sam.prompt_encoder.register_forward_pre_hook(self._grab)

    def _grab(self, module, args):
        self.boxes = args[1]

    def forward(self, image_embeddings, image_pe, sparse, dense, multimask_output):
        n = sparse.shape[0]
        logits = torch.full((n, 1, self.low_res, self.low_res), -10.0)
        yy, xx = torch.meshgrid(
            (torch.arange(self.low_res) + 0.5) * self.scale,
            (torch.arange(self.low_res) + 0.5) * self.scale,
            indexing="ij",
        )
        for i, (x1, y1, x2, y2) in enumerate(self.boxes.tolist()):
            if x2 - x1 >= self.min_width:
                inside = (xx >= x1) & (xx <= x2) & (yy >= y1) & (yy <= y2)
                logits[i, 0][inside] = 10.0
        return logits, torch.linspace(0.5, 0.9, n)[:, None]


def box_mask_sam(min_width: float):
    """A tiny SAM whose masks are the prompt boxes (see :class:`BoxMaskDecoder`)."""
    sam = tiny_model()
    sam.mask_decoder = BoxMaskDecoder(sam, min_width)
    return sam


def box_to_mask(box: np.ndarray, h: int, w: int) -> np.ndarray:
    x1, y1, x2, y2 = box
    yy, xx = np.mgrid[:h, :w]
    return (xx >= x1) & (xx < x2) & (yy >= y1) & (yy < y2)
