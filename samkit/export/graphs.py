"""Export wrappers: one ``nn.Module`` per exported ONNX graph, with the tools' interface.

:class:`EncoderGraph` maps the preprocessed image to the embedding. :class:`DecoderGraph`
follows the convention of Meta's ONNX decoder (used by CVAT, X-AnyLabeling, Label Studio and
browser demos): prompts arrive as padded points in the model's input frame, the mask prompt is
switched by a flag instead of control flow, and masks are upsampled to the original image size
inside the graph. :class:`Sam2EncoderGraph` and :class:`Sam2DecoderGraph` are the SAM 2 / 2.1
pair (three encoder outputs; layout in :mod:`samkit.export.sam2_onnx`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models import Sam
from ..models.sam2 import Sam2
from ..models.sam2_decoder import select_masks
from .spec import MASK_TOKENS, SAM2_MASK_OUTPUTS


class EncoderGraph(nn.Module):
    """``image`` ``1 x 3 x S x S`` (normalized, zero-padded) -> ``image_embeddings 1 x C x S/16 x S/16``."""

    def __init__(self, sam: Sam) -> None:
        super().__init__()
        self.image_encoder = sam.image_encoder

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.image_encoder(image)


class DecoderGraph(nn.Module):
    """Prompts + embedding -> ``(masks, iou_predictions, low_res_masks)``.

    Inputs: ``image_embeddings 1 x C x h x w``; ``point_coords 1 x N x 2`` float (x, y) in the
    resized ``S``-frame pixels; ``point_labels 1 x N`` float (1 fg, 0 bg, 2 / 3 box top-left /
    bottom-right corner, -1 padding); ``mask_input 1 x 1 x 4h x 4w`` logits; ``has_mask_input 1``
    (1.0 to use ``mask_input``, else 0.0); ``orig_im_size 2`` float ``(H, W)``.
    Outputs: ``masks 1 x M x H x W`` logits, ``iou_predictions 1 x M``, ``low_res_masks
    1 x M x 4h x 4w`` with ``M`` = 4 / 3 / 1 for ``mask_output`` all / multi / single, best.
    """

    def __init__(self, sam: Sam, mask_output: str = "all") -> None:
        super().__init__()
        if mask_output not in MASK_TOKENS:
            raise ValueError(f"mask_output must be one of {sorted(MASK_TOKENS)}")
        self.prompt_encoder = sam.prompt_encoder
        self.mask_decoder = sam.mask_decoder
        self.image_size = sam.image_size
        self.mask_output = mask_output
        self.tokens = list(MASK_TOKENS[mask_output])

    def embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Sparse embeddings ``1 x N x C``; padding points (-1) get ``not_a_point_embed``."""
        pe = self.prompt_encoder
        h, w = pe.input_image_size
        scale = torch.tensor([1.0 / w, 1.0 / h], dtype=coords.dtype)
        emb = pe.pe_layer._encode((coords + 0.5) * scale)
        labels = labels.unsqueeze(-1)
        is_pad = (labels == -1).to(emb.dtype)
        emb = emb * (1 - is_pad) + is_pad * pe.not_a_point_embed.weight
        for value in range(4):
            emb = emb + (labels == value).to(emb.dtype) * pe.point_embeddings[value].weight
        return emb

    def embed_mask(self, mask_input: torch.Tensor, has_mask_input: torch.Tensor) -> torch.Tensor:
        """Dense embedding ``1 x C x h x w``: the downscaled mask or ``no_mask_embed``."""
        pe = self.prompt_encoder
        no_mask = pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
        flag = has_mask_input.reshape(1, 1, 1, 1)
        return flag * pe.mask_downscaling(mask_input) + (1 - flag) * no_mask

    def select_best(
        self, masks: torch.Tensor, iou: torch.Tensor, point_labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Meta's ``return_single_mask`` rule, without control flow.

        With at most 2 prompt points (one click + padding, or a box's two corners) the
        best-scoring multimask output wins; with more, the single-mask token 0.
        """
        num_points = torch.ones_like(point_labels).sum(dim=1, keepdim=True)
        weight = torch.tensor([1000.0] + [0.0] * (iou.shape[1] - 1), dtype=iou.dtype)
        best = torch.argmax(iou + (num_points - 2.5) * weight, dim=1)
        return masks[:, best, :, :], iou[:, best]

    def postprocess(self, low_res: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
        """Upsample to ``S x S``, crop the padding, upsample to ``orig_im_size`` (bilinear)."""
        s = self.image_size
        masks = F.interpolate(low_res, (s, s), mode="bilinear", align_corners=False)
        orig = orig_im_size.to(torch.float64)  # the reference rounds in float64
        scale = s / torch.max(orig)
        resized = torch.floor(orig * scale + 0.5).to(torch.int64)
        masks = masks[..., : resized[0], : resized[1]]
        size = orig_im_size.to(torch.int64)
        return F.interpolate(masks, size=(size[0], size[1]), mode="bilinear", align_corners=False)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
        orig_im_size: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        sparse = self.embed_points(point_coords, point_labels)
        dense = self.embed_mask(mask_input, has_mask_input)
        dense_pe = self.prompt_encoder.get_dense_pe()
        low_res, iou = self.mask_decoder.predict_masks(
            image_embeddings, dense_pe, sparse, dense, self.tokens
        )
        if self.mask_output == "best":
            low_res, iou = self.select_best(low_res, iou, point_labels)
        return self.postprocess(low_res, orig_im_size), iou, low_res


class Sam2EncoderGraph(nn.Module):
    """Preprocessed ``1 x 3 x S x S`` -> ``(high_res_feats_0, high_res_feats_1, image_embed)``."""

    def __init__(self, sam: Sam2) -> None:
        super().__init__()
        self.sam = sam

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        embed, (s0, s1) = self.sam.encode(image)
        return s0, s1, embed


class Sam2DecoderGraph(nn.Module):
    """Prompts + the encoder's three outputs -> masks, IoU, low-res masks (see
    :mod:`samkit.export.sam2_onnx`). Prompt embedding as :class:`DecoderGraph`'s."""

    def __init__(self, sam: Sam2, mask_output: str = "all") -> None:
        super().__init__()
        if mask_output not in SAM2_MASK_OUTPUTS:
            raise ValueError(f"mask_output must be one of {sorted(SAM2_MASK_OUTPUTS)}")
        self.sam = sam
        self.prompt_encoder = sam.prompt_encoder  # what DecoderGraph's helpers use
        self.mask_output = mask_output

    embed_points = DecoderGraph.embed_points
    embed_mask = DecoderGraph.embed_mask

    def decode(
        self,
        image_embed: torch.Tensor,
        high_res_feats: tuple[torch.Tensor, torch.Tensor],
        prompt: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All four outputs of SAM 2's decoder: logits ``1 x 4 x 4h x 4w``, IoU ``1 x 4``.

        ``prompt``: ``(point_coords, point_labels, mask_input, has_mask_input)``.
        """
        coords, labels, mask_input, has_mask_input = prompt
        sparse = self.embed_points(coords, labels)
        dense = self.embed_mask(mask_input, has_mask_input)
        dense_pe = self.prompt_encoder.get_dense_pe()
        masks, iou, _ = self.sam.mask_decoder(image_embed, dense_pe, sparse, dense, high_res_feats)
        return masks, iou

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``inputs``: the eight of ``SAM2_DECODER_INPUTS`` (``image_embed``,
        ``high_res_feats_0``, ``high_res_feats_1``, then :class:`DecoderGraph`'s prompt inputs
        and ``orig_im_size``), in that order."""
        embed, feats_0, feats_1, coords, labels, mask_input, has_mask, orig_im_size = inputs
        masks, iou = self.decode(embed, (feats_0, feats_1), (coords, labels, mask_input, has_mask))
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
