"""Masks on the wire of ``samkit serve``: compressed COCO RLE and the compact box RLE.

Two formats for the masks that ``/decode`` and ``/everything`` return (``mask_format``):

- ``"coco"`` (the default): ``{"size": [H, W], "counts": str}``, pycocotools' compressed RLE of
  the whole image (column-major runs, starting with a run of zeros).
- ``"box"``: ``{"box": [x, y, w, h], "counts": str}``: the runs of the mask inside its bounding
  box only (integer pixels, ``x`` right and ``y`` down), **row-major** (``x`` fastest, so a
  browser fills each run straight into an ``ImageData`` row), starting with a run of zeros,
  written in the same counts alphabet as COCO's (``samkit.ops`` and pycocotools decode it as an
  RLE of size ``[w, h]`` whose transpose is the box). An empty mask is ``box [0, 0, 0, 0]`` and
  ``counts ""``. The page asks for it: it is smaller and decodes without scattering pixels.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

MASK_FORMATS = ("coco", "box")


def rle_encoder() -> Callable[[np.ndarray], dict]:
    """A column-major compressed RLE encoder of ``H x W`` masks: pycocotools' C encoder when
    installed (same output, much faster on ragged masks), else samkit's own."""
    try:
        from pycocotools import mask as mask_util
    except ImportError:
        from ..ops import encode_coco_rle

        return encode_coco_rle

    def encode(m: np.ndarray) -> dict:
        rle = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
        return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}

    return encode


def box_rle(m: np.ndarray, box: tuple[int, int, int, int], encode: Callable | None = None) -> dict:
    """The box RLE of ``H x W`` mask ``m`` whose set pixels lie in ``box`` = ``(x, y, w, h)``.

    Row-major runs of ``m[y:y+h, x:x+w]``: the column-major runs of its transpose."""
    x, y, w, h = box
    if w == 0 or h == 0:
        return {"box": [0, 0, 0, 0], "counts": ""}
    crop = m[y : y + h, x : x + w]
    counts = (encode or rle_encoder())(crop.T)["counts"]
    return {"box": [int(x), int(y), int(w), int(h)], "counts": counts}


def masks_out(
    masks: np.ndarray, scores: np.ndarray, limit: int | None = None, mask_format: str = "coco"
) -> list[dict]:
    """The response entries of ``M x H x W`` bool ``masks``: ``{"rle"}`` (``mask_format``
    ``"coco"``) or ``{"box_rle"}`` (``"box"``), plus ``score``, ``area`` (pixels) and ``bbox``
    (COCO XYWH, floats)."""
    if mask_format not in MASK_FORMATS:
        raise ValueError(f"mask_format must be one of {MASK_FORMATS}, got {mask_format!r}")
    encode = rle_encoder()
    out = []
    for m, s in list(zip(masks, scores))[:limit]:
        cols, rows = np.flatnonzero(m.any(0)), np.flatnonzero(m.any(1))
        if cols.size:
            box = (
                int(cols[0]),
                int(rows[0]),
                int(cols[-1] - cols[0] + 1),
                int(rows[-1] - rows[0] + 1),
            )
        else:
            box = (0, 0, 0, 0)
        entry: dict = {"score": float(s), "area": int(m.sum()), "bbox": [float(v) for v in box]}
        if mask_format == "box":
            entry["box_rle"] = box_rle(m, box, encode)
        else:
            entry["rle"] = encode(m)
        out.append(entry)
    return out
