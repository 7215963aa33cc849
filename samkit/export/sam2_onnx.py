"""ONNX export of SAM 2 / 2.1: an encoder with three outputs and a decoder that takes them.

Layout of the annotation tools (X-AnyLabeling, samexporter):

- encoder: ``image`` ``1 x 3 x S x S`` (RGB / 255 resized square with antialias, ImageNet
  mean / std) -> ``high_res_feats_0`` ``1 x C/8 x S/4 x S/4``, ``high_res_feats_1``
  ``1 x C/4 x S/8 x S/8``, ``image_embed`` ``1 x C x S/16 x S/16`` (``no_mem_embed`` added).
- decoder: ``image_embed``, ``high_res_feats_0``, ``high_res_feats_1``, ``point_coords``
  ``1 x N x 2`` (the ``S x S`` frame, x scaled by ``S / W`` and y by ``S / H``; a box as two
  points labelled 2 / 3 first; always one ``(0, 0)`` padding point labelled -1 last, as SAM 2
  does), ``point_labels`` ``1 x N`` float, ``mask_input`` ``1 x 1 x 4h x 4w``, ``has_mask_input``
  ``1``, ``orig_im_size`` ``2`` float ``(H, W)`` -> ``masks`` ``1 x M x H x W`` logits (one
  bilinear upsample), ``iou_predictions`` ``1 x M``, ``low_res_masks`` ``1 x M x 4h x 4w``
  (clamped to [-32, 32]).

``mask_output``: ``"all"`` (M = 4: SAM 2's single-mask answer, i.e. token 0 or, when its
stability is below 0.98, the best multimask output, then the 3 multimask outputs), ``"multi"``
(3) or ``"single"`` (1, the single-mask answer).

The code is shared with SAM's export: the graphs are in :mod:`samkit.export.graphs`, the export
in :mod:`samkit.export.onnx`; this module keeps the SAM 2 names where they were.
"""

from __future__ import annotations

from .graphs import Sam2DecoderGraph, Sam2EncoderGraph
from .onnx import IMAGENET_MEAN_255, IMAGENET_STD_255, export_sam2_onnx
from .spec import DECODER_OUTPUTS

SAM2_DECODER_OUTPUTS = DECODER_OUTPUTS

__all__ = [
    "IMAGENET_MEAN_255",
    "IMAGENET_STD_255",
    "SAM2_DECODER_OUTPUTS",
    "Sam2DecoderGraph",
    "Sam2EncoderGraph",
    "export_sam2_onnx",
]
