"""Request and response bodies of the ``samkit serve`` HTTP API (they make its OpenAPI schema).

Coordinates are pixels of the original image, ``x`` right and ``y`` down; boxes are XYXY.
Masks travel as compressed COCO RLE (``{"size": [H, W], "counts": str}``, pycocotools' format
with ``counts`` as text); ``/decode`` and ``/everything`` can answer with the compact box RLE
instead (``mask_format="box"``, see :mod:`samkit.serve.masks`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_POINTS = 64
MAX_RLE_CHARS = 8_000_000
MaskFormat = Literal["coco", "box"]
MASK_FORMAT_DOC = (
    "masks as 'coco' (compressed COCO RLE of the image, in 'rle') or 'box' (row-major runs "
    "inside the mask's bounding box, in 'box_rle': smaller, quick to draw)"
)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Rle(Strict):
    """Compressed COCO RLE of an ``H x W`` mask (column-major runs, starting with zeros)."""

    size: list[int] = Field(min_length=2, max_length=2, description="[height, width]")
    counts: str = Field(max_length=MAX_RLE_CHARS)


class DecodeRequest(Strict):
    """Prompts of one object. At least one of ``points``, ``box`` or ``mask`` is needed."""

    points: list[list[float]] | None = Field(
        None, max_length=MAX_POINTS, description="[[x, y], ...] in image pixels"
    )
    labels: list[int] | None = Field(
        None, max_length=MAX_POINTS, description="per point: 1 foreground, 0 background"
    )
    box: list[float] | None = Field(None, description="[x1, y1, x2, y2] in image pixels")
    mask: Rle | None = Field(None, description="a binary mask of the image size (refine it)")
    multimask: bool = Field(False, description="3 candidate masks instead of 1")
    mask_format: MaskFormat = Field("coco", description=MASK_FORMAT_DOC)


class BoxRle(BaseModel):
    """A mask as the runs inside its bounding box: row-major (``x`` fastest), starting with a
    run of zeros, in COCO's compressed counts alphabet. Empty mask: box ``[0, 0, 0, 0]``."""

    box: list[int] = Field(min_length=4, max_length=4, description="[x, y, w, h], pixels")
    counts: str


class MaskOut(BaseModel):
    rle: Rle | None = Field(None, description="the mask (mask_format 'coco')")
    box_rle: BoxRle | None = Field(None, description="the mask (mask_format 'box')")
    score: float = Field(description="predicted IoU")
    area: int = Field(description="pixels set")
    bbox: list[float] = Field(description="[x, y, width, height] of the mask (COCO XYWH)")


class DecodeResponse(BaseModel):
    masks: list[MaskOut]
    decode_ms: float
    width: int
    height: int


class EverythingRequest(Strict):
    points_stride: int = Field(16, ge=2, le=64, description="grid points per image side")
    max_masks: int = Field(64, ge=1, le=512)
    mask_format: MaskFormat = Field("coco", description=MASK_FORMAT_DOC)


class AddObject(Strict):
    label: str = Field(min_length=1, max_length=100, description="class name")
    mask: Rle
    score: float = Field(1.0, ge=0.0, le=1.0)


class Relabel(Strict):
    label: str = Field(min_length=1, max_length=100)


class ObjectOut(BaseModel):
    id: str
    label: str
    category_id: int
    segmentation: Rle
    area: int
    bbox: list[float]
    predicted_iou: float | None = None


class ObjectsResponse(BaseModel):
    image_id: str
    revision: int
    objects: list[ObjectOut]
    names: list[str]


class ImageEntry(BaseModel):
    id: str
    file_name: str
    objects: int


class ImageList(BaseModel):
    images: list[ImageEntry]
    annotated: int
    total: int


class ImageInfo(BaseModel):
    id: str
    file_name: str
    width: int
    height: int
    revision: int
    status: dict


class UploadResponse(BaseModel):
    id: str
    width: int
    height: int


class Info(BaseModel):
    model: str
    image_size: int = Field(description="side S of the model input; ONNX prompts are in S-frame")
    images: int
    names: list[str]
    output: str
    browser_decoder: bool = Field(description="onnxruntime-web files are served under /ort/")
    version: str


class ExportFormat(BaseModel):
    format: Literal["coco", "yolo"]
