"""Export wrappers for the annotation tools' variants of the ONNX interface.

- :class:`RawImageEncoderGraph`: the encoder with SAM's preprocessing inside the graph, fed a raw
  ``H x W x 3`` float32 RGB image (X-AnyLabeling's SAM loader, samexporter's
  ``--use-preprocess`` layout, input ``input_image``).
- :class:`ToolDecoderGraph`: Meta's decoder interface, but robust to the ways the tools fill
  ``point_coords``: padding points (label -1) are dropped and exactly one is appended when
  there is no box, which is what Meta's predictor does. X-AnyLabeling appends a padding point
  even after a box, CVAT's plugin never appends one, Meta's web demo does as the reference; all
  three then get the masks of samkit's (and Meta's) predictor.
- :class:`CvatDecoderGraph`: the above plus the outputs CVAT's SAM plugin reads: ``masks``
  uint8 0/1 cropped to the mask's box, and that box as ``xtl, ytl, xbr, ybr`` (inclusive).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models import Sam
from .graphs import DecoderGraph

MASK_THRESHOLD = 0.0  # SAM's threshold on mask logits


class RawImageEncoderGraph(nn.Module):
    """``input_image`` ``H x W x 3`` float32 RGB, 0-255 -> ``image_embeddings 1 x C x h x w``.

    Inside: resize so the long side is the model's input size ``S`` (size rounded as
    ``int(x * S / max(H, W) + 0.5)``; Pillow's bilinear filter, antialiased when shrinking,
    rounded to integer levels after each pass as Pillow does for the uint8 image samkit's
    predictor resizes), normalize, zero-pad
    bottom/right to ``S x S``. An image whose long side already is ``S`` passes unresized, so
    its embedding is the predictor's exactly.
    """

    def __init__(self, sam: Sam) -> None:
        super().__init__()
        self.sam = sam

    def forward(self, input_image: torch.Tensor) -> torch.Tensor:
        s = self.sam.image_size
        x = input_image.permute(2, 0, 1).unsqueeze(0)
        if self.sam.image_format == "BGR":
            x = x.flip(1)
        hw = _size_hw(x)
        new = torch.floor(hw * (s / hw.max()) + 0.5).to(torch.int64)
        # Pillow's bilinear resize of a uint8 image: horizontal pass, round to integer levels,
        # vertical pass, round (a dense weight matrix per axis; triangle filter widened by the
        # downscale factor = antialiasing; identity when the size does not change)
        wy = _resize_weights(hw[0], new[0])
        wx = _resize_weights(hw[1], new[1])
        resized = _round_levels(torch.matmul(x, wx.transpose(0, 1)))
        resized = _round_levels(torch.matmul(wy, resized))
        normed = (resized - self.sam.pixel_mean) / self.sam.pixel_std
        pad_h, pad_w = s - new[0], s - new[1]
        padded = F.pad(normed, (0, pad_w, 0, pad_h))
        return self.sam.image_encoder(padded)


def _size_hw(x: torch.Tensor) -> torch.Tensor:
    """``(H, W)`` of ``... x H x W`` as a float64 tensor computed in the graph (``x.shape``
    would be frozen into the trace as a constant)."""
    h = torch.ones_like(x[0, 0, :, 0], dtype=torch.float64).sum()
    w = torch.ones_like(x[0, 0, 0, :], dtype=torch.float64).sum()
    return torch.stack([h, w])


def _resize_weights(n_in: torch.Tensor, n_out: torch.Tensor) -> torch.Tensor:
    """``n_out x n_in`` weights of Pillow's bilinear filter (support 1, scaled when shrinking)."""
    scale = (n_in / n_out).to(torch.float32)
    support = torch.clamp(scale, min=1.0)
    centers = (torch.arange(n_out).to(torch.float32) + 0.5) * scale
    taps = torch.arange(n_in.to(torch.int64)).to(torch.float32) + 0.5
    w = torch.clamp(1.0 - torch.abs((taps[None, :] - centers[:, None]) / support), min=0.0)
    return w / w.sum(dim=1, keepdim=True)


def _round_levels(x: torch.Tensor) -> torch.Tensor:
    """Round half up and clip to 0..255, as Pillow stores each pass of a uint8 resize."""
    return torch.clamp(torch.floor(x + 0.5), 0.0, 255.0)


class ToolDecoderGraph(DecoderGraph):
    """:class:`DecoderGraph` with the padding rule applied inside the graph (see module doc)."""

    def normalize_points(
        self, coords: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Drop label -1 points; append one ``(0, 0)`` / -1 point when no box corner is given."""
        keep = torch.nonzero(labels[0] != -1).reshape(-1)
        coords, labels = coords[:, keep], labels[:, keep]
        is_corner = ((labels == 2) | (labels == 3)).any().to(torch.int64)
        pad_c = torch.zeros(1, 1, 2, dtype=coords.dtype)
        pad_l = torch.full((1, 1), -1.0, dtype=labels.dtype)
        coords = torch.cat([coords, pad_c], dim=1)
        labels = torch.cat([labels, pad_l], dim=1)
        count = torch.ones_like(labels[0], dtype=torch.int64).sum() - is_corner
        take = torch.arange(count)
        return coords[:, take], labels[:, take]

    def forward(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
        orig_im_size: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        coords, labels = self.normalize_points(point_coords, point_labels)
        return super().forward(
            image_embeddings, coords, labels, mask_input, has_mask_input, orig_im_size
        )


class CvatDecoderGraph(ToolDecoderGraph):
    """Outputs ``masks`` ``1 x 1 x h x w`` uint8 0/1 (the best mask, cropped to its box),
    ``iou_predictions 1 x 1``, ``low_res_masks 1 x 1 x 256 x 256`` (CVAT feeds it back as
    ``mask_input``), ``xtl, ytl, xbr, ybr`` int64 ``1`` (inclusive pixel box). An empty mask
    gives the whole image of zeros, which CVAT's plugin turns into an empty shape."""

    def __init__(self, sam: Sam) -> None:
        super().__init__(sam, "best")

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        masks, iou, low_res = super().forward(*inputs)
        m = masks[0, 0] > MASK_THRESHOLD
        cols, rows = m.any(dim=0).to(torch.int64), m.any(dim=1).to(torch.int64)
        w = torch.ones_like(cols).sum()
        h = torch.ones_like(rows).sum()
        xtl = torch.argmax(cols)
        xbr = w - 1 - torch.argmax(cols.flip(0))
        ytl = torch.argmax(rows)
        ybr = h - 1 - torch.argmax(rows.flip(0))
        crop = m[ytl : ybr + 1, xtl : xbr + 1].to(torch.uint8)[None, None]
        return (
            crop,
            iou,
            low_res,
            xtl.reshape(1),
            ytl.reshape(1),
            xbr.reshape(1),
            ybr.reshape(1),
        )
