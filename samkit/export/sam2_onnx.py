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
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ExportError
from ..models.sam2 import Sam2
from ..models.sam2_decoder import select_masks
from .graphs import DecoderGraph
from .metadata import write_metadata
from .onnx import (
    DEFAULT_OPSET,
    _check_name,
    _cpu_float32,
    _declare_output_shapes,
    _finish,
    _prepare_dir,
    _torch_export,
    weights_fingerprint,
)
from .spec import (
    DECODER_OUTPUTS,
    SAM2_DECODER_INPUTS,
    SAM2_ENCODER_INPUT,
    SAM2_ENCODER_OUTPUTS,
    SAM2_MASK_OUTPUTS,
    GraphMeta,
)

SAM2_DECODER_OUTPUTS = DECODER_OUTPUTS
IMAGENET_MEAN_255 = (123.675, 116.28, 103.53)
IMAGENET_STD_255 = (58.395, 57.12, 57.375)


class Sam2EncoderGraph(nn.Module):
    """Preprocessed ``1 x 3 x S x S`` -> ``(high_res_feats_0, high_res_feats_1, image_embed)``."""

    def __init__(self, sam: Sam2) -> None:
        super().__init__()
        self.sam = sam

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        embed, (s0, s1) = self.sam.encode(image)
        return s0, s1, embed


class Sam2DecoderGraph(nn.Module):
    """Prompts + the encoder's three outputs -> masks, IoU, low-res masks (module docstring)."""

    def __init__(self, sam: Sam2, mask_output: str = "all") -> None:
        super().__init__()
        if mask_output not in SAM2_MASK_OUTPUTS:
            raise ValueError(f"mask_output must be one of {sorted(SAM2_MASK_OUTPUTS)}")
        self.sam = sam
        self.prompt_encoder = sam.prompt_encoder  # what DecoderGraph's helpers use
        self.mask_output = mask_output

    embed_points = DecoderGraph.embed_points
    embed_mask = DecoderGraph.embed_mask

    def forward(
        self,
        image_embed: torch.Tensor,
        high_res_feats_0: torch.Tensor,
        high_res_feats_1: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
        orig_im_size: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        sparse = self.embed_points(point_coords, point_labels)
        dense = self.embed_mask(mask_input, has_mask_input)
        masks, iou, _ = self.sam.mask_decoder(
            image_embed,
            self.prompt_encoder.get_dense_pe(),
            sparse,
            dense,
            (high_res_feats_0, high_res_feats_1),
        )
        single, single_iou = select_masks(masks, iou, multimask_output=False)
        if self.mask_output == "single":
            low, iou = single, single_iou
        elif self.mask_output == "multi":
            low, iou = masks[:, 1:], iou[:, 1:]
        else:
            low = torch.cat([single, masks[:, 1:]], dim=1)
            iou = torch.cat([single_iou, iou[:, 1:]], dim=1)
        size = orig_im_size.to(torch.int64)
        full = F.interpolate(low, size=(size[0], size[1]), mode="bilinear", align_corners=False)
        return full, iou, low.clamp(-32.0, 32.0)


def export_sam2_onnx(
    model: Any,
    output_dir: str | os.PathLike = ".",
    *,
    name: str | None = None,
    opset: int = DEFAULT_OPSET,
    mask_output: str = "all",
    encoder: bool = True,
    decoder: bool = True,
) -> dict[str, Path]:
    """Export a SAM 2 model (a :class:`~samkit.SAM` or :class:`~samkit.models.Sam2`).

    Writes ``<name>_encoder.onnx``, ``<name>_decoder.onnx`` and ``<name>_onnx.json`` into
    ``output_dir`` (staged in a private temporary folder there, moved when complete).
    """
    sam = model if isinstance(model, Sam2) else getattr(model, "model", None)
    if not isinstance(sam, Sam2):
        raise ExportError("export_sam2_onnx needs a SAM 2 model")
    config = getattr(model, "config", None)
    if mask_output not in SAM2_MASK_OUTPUTS:
        raise ExportError(
            f"mask_output for SAM 2 must be one of {', '.join(SAM2_MASK_OUTPUTS)}, got "
            f"{mask_output!r}"
        )
    ckpt = getattr(model, "checkpoint", None)
    stem = Path(ckpt.path).stem if ckpt is not None and getattr(ckpt, "path", None) else None
    name = _check_name(name or stem or getattr(model, "name", "sam2"))
    out = _prepare_dir(output_dir)
    base = GraphMeta(
        fingerprint=weights_fingerprint(sam),
        variant=getattr(model, "name", "sam2"),
        image_size=sam.image_size,
        pixel_mean=IMAGENET_MEAN_255,
        pixel_std=IMAGENET_STD_255,
    )
    written: dict[str, Path] = {}
    tmp = Path(tempfile.mkdtemp(prefix=".samkit-export-", dir=out))
    try:
        with _cpu_float32(sam), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if encoder:
                _export_encoder(sam, tmp / "encoder.onnx", opset)
                meta = replace(base, role="encoder")
                written.update(_finish(tmp / "encoder.onnx", out, name, "encoder", meta))
            if decoder:
                _export_decoder(sam, tmp / "decoder.onnx", opset, mask_output)
                meta = replace(base, role="decoder", mask_output=mask_output)
                written.update(_finish(tmp / "decoder.onnx", out, name, "decoder", meta))
        written["metadata"] = write_metadata(
            out / f"{name}_onnx.json", written, base, config, opset, mask_output, None
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return written


def _export_encoder(sam: Sam2, path: Path, opset: int) -> None:
    s = sam.image_size
    _torch_export(
        Sam2EncoderGraph(sam).eval(),
        (torch.zeros(1, 3, s, s),),
        path,
        opset,
        input_names=[SAM2_ENCODER_INPUT],
        output_names=list(SAM2_ENCODER_OUTPUTS),
    )


def _export_decoder(sam: Sam2, path: Path, opset: int, mask_output: str) -> None:
    pe = sam.prompt_encoder
    gh, gw = pe.image_embedding_size
    mh, mw = pe.mask_input_size
    c = pe.embed_dim
    args = (
        torch.zeros(1, c, gh, gw),
        torch.zeros(1, c // 8, 4 * gh, 4 * gw),
        torch.zeros(1, c // 4, 2 * gh, 2 * gw),
        torch.tensor([[[10.0, 10.0], [0.0, 0.0]]]),
        torch.tensor([[1.0, -1.0]]),
        torch.zeros(1, 1, mh, mw),
        torch.zeros(1),
        torch.tensor([float(sam.image_size), float(sam.image_size)]),
    )
    points = {1: "num_points"}
    _torch_export(
        Sam2DecoderGraph(sam, mask_output).eval(),
        args,
        path,
        opset,
        input_names=list(SAM2_DECODER_INPUTS),
        output_names=list(SAM2_DECODER_OUTPUTS),
        dynamic_axes={
            "point_coords": points,
            "point_labels": points,
            "masks": {2: "image_height", 3: "image_width"},
        },
    )
    m = SAM2_MASK_OUTPUTS[mask_output]
    _declare_output_shapes(
        path,
        {
            "masks": [1, m, "image_height", "image_width"],
            "iou_predictions": [1, m],
            "low_res_masks": [1, m, mh, mw],
        },
    )
