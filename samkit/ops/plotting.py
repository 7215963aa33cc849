"""Overlay drawing for :class:`~samkit.results.Results`: masks, boxes, scores and prompts (OpenCV).

Torch-free. Images are ``H x W x 3`` uint8; colours are chosen per mask index (stable order).
"""

from __future__ import annotations

import colorsys
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from ..results import Results

FOREGROUND_RGB = (40, 220, 40)
BACKGROUND_RGB = (230, 30, 30)
PROMPT_BOX_RGB = (255, 255, 255)


def color_rgb(i: int) -> tuple[int, int, int]:
    """A distinct saturated colour for index ``i`` (golden-ratio hue steps)."""
    h = (0.1 + i * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def plot_results(
    results: Results,
    *,
    masks: bool = True,
    boxes: bool = True,
    prompts: bool = True,
    scores: bool = False,
    contours: bool = True,
    alpha: float = 0.5,
    line_width: int | None = None,
    image_format: str = "BGR",
) -> np.ndarray:
    """Draw the results over the original image; returns ``H x W x 3`` uint8 in ``image_format``."""
    if image_format not in ("BGR", "RGB"):
        raise ValueError(f"image_format must be 'BGR' or 'RGB', got {image_format!r}")
    canvas = np.ascontiguousarray(results.orig_img[..., ::-1])  # draw in RGB
    h, w = canvas.shape[:2]
    lw = line_width or max(1, round((h + w) / 2 * 0.003))
    n = len(results)
    if masks and n:
        order = np.argsort(-results.masks.reshape(n, -1).sum(1), kind="stable")  # big first
        blended = canvas.astype(np.float32)
        for i in order:
            m = results.masks[i]
            color = np.array(color_rgb(int(i)), dtype=np.float32)
            blended[m] = blended[m] * (1 - alpha) + color * alpha
        canvas = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
        if contours:
            for i in order:
                found, _ = cv2.findContours(
                    results.masks[i].astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
                )
                cv2.drawContours(canvas, found, -1, color_rgb(int(i)), max(1, lw // 2))
    if (boxes or scores) and n:
        for i in range(n):
            if not results.masks[i].any():
                continue
            x1, y1, x2, y2 = (int(round(v)) for v in results.boxes[i])
            color = color_rgb(i)
            if boxes:
                cv2.rectangle(canvas, (x1, y1), (x2, y2), color, lw)
            if scores:
                _label(canvas, f"{results.scores[i]:.2f}", (x1, y1), color, lw)
    if prompts:
        _draw_prompts(canvas, results, lw)
    return canvas if image_format == "RGB" else np.ascontiguousarray(canvas[..., ::-1])


def _label(canvas: np.ndarray, text: str, xy: tuple[int, int], color, lw: int) -> None:
    scale = max(0.4, lw / 3)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    x, y = xy
    y = max(y, th + base)
    cv2.rectangle(canvas, (x, y - th - base), (x + tw, y), color, -1)
    cv2.putText(canvas, text, (x, y - base), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1)


def _draw_prompts(canvas: np.ndarray, results: Results, lw: int) -> None:
    if results.prompt_boxes is not None:
        for box in results.prompt_boxes:
            x1, y1, x2, y2 = (int(round(v)) for v in box)
            cv2.rectangle(canvas, (x1, y1), (x2, y2), PROMPT_BOX_RGB, max(1, lw // 2))
    if results.prompt_points is not None:
        radius = max(3, lw * 3)
        labels = results.prompt_labels
        for obj, pts in enumerate(results.prompt_points):
            for k, (x, y) in enumerate(pts):
                label = 1 if labels is None else int(labels[obj, k])
                if label == -1:
                    continue
                color = FOREGROUND_RGB if label == 1 else BACKGROUND_RGB
                center = (int(round(x)), int(round(y)))
                cv2.circle(canvas, center, radius, color, -1, cv2.LINE_AA)
                cv2.circle(canvas, center, radius, (255, 255, 255), max(1, lw // 2), cv2.LINE_AA)
