"""The SAM 2 image model: Hiera + FPN encoder, SAM prompt encoder, SAM 2 mask decoder.

Image use only. Pre- and post-processing are SAM 2's: RGB / 255, a square bilinear resize with
antialiasing to ``image_size`` (aspect ratio not kept, no padding), ImageNet mean / std; prompt
coordinates scaled per axis; one bilinear upsample of the low-res logits to the original size.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .common import PromptableModel
from .input_spec import IMAGENET_MEAN, IMAGENET_STD, SAM2_INPUT, InputSpec
from .prompt_encoder import PromptEncoder
from .sam2_decoder import Sam2MaskDecoder, select_masks
from .sam2_neck import Sam2ImageEncoder


class Sam2(PromptableModel):
    """SAM 2 for images: ``encode`` once per image, ``decode`` per batch of prompts."""

    def __init__(
        self,
        image_encoder: Sam2ImageEncoder,
        prompt_encoder: PromptEncoder,
        mask_decoder: Sam2MaskDecoder,
        pixel_mean: Sequence[float] = IMAGENET_MEAN,
        pixel_std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, mask_decoder.transformer_dim))
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    # device, image_size, mask_threshold, image_format: PromptableModel

    @property
    def input_spec(self) -> InputSpec:
        """SAM 2's pre- and post-processing (:data:`~samkit.models.input_spec.SAM2_INPUT`) at
        this model's input size and pixel statistics."""
        return dataclasses.replace(
            SAM2_INPUT,
            image_size=self.image_size,
            pixel_mean=tuple(float(v) for v in self.pixel_mean.flatten()),
            pixel_std=tuple(float(v) for v in self.pixel_std.flatten()),
        )

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """``B x 3 x H x W`` RGB 0-255 (any dtype) -> ``B x 3 x S x S`` normalized float32.

        Divides by 255, resizes to ``S x S`` (bilinear, antialias, on float), then normalizes.
        """
        x = images.to(self.device, torch.float32) / 255.0
        size = self.image_size
        if tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x, (size, size), mode="bilinear", align_corners=False, antialias=True)
        return (x - self.pixel_mean) / self.pixel_std

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Preprocessed ``B x 3 x S x S`` -> ``(image_embed B x C x S/16 x S/16, high_res)``.

        ``image_embed`` includes ``no_mem_embed``; ``high_res`` are the stride-4 and stride-8
        levels after ``conv_s0`` / ``conv_s1`` (``C/8`` and ``C/4`` channels).
        """
        s4, s8, s16 = self.image_encoder(x)
        embed = s16 + self.no_mem_embed.to(s16.dtype).reshape(1, -1, 1, 1)
        return embed, self.mask_decoder.project_high_res(s4, s8)

    def decode(
        self,
        image_embed: torch.Tensor,
        high_res: tuple[torch.Tensor, torch.Tensor],
        points: tuple[torch.Tensor, torch.Tensor] | None,
        mask_input: torch.Tensor | None,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Prompts in the model frame -> ``(low-res logits B x M x 4h x 4w, iou B x M, obj B x 1)``.

        ``points``: ``(coords B x N x 2, labels B x N)`` in input-frame pixels, boxes already
        turned into two points labelled 2 / 3 placed first (:func:`box_to_points`); a padding
        point is appended by the prompt encoder. ``mask_input``: ``B x 1 x 4h x 4w`` logits.
        Logits are not clamped here.
        """
        sparse, dense = self.prompt_encoder(points, None, mask_input)
        masks, iou, obj = self.mask_decoder(
            image_embed, self.prompt_encoder.get_dense_pe(), sparse, dense, high_res
        )
        masks, iou = select_masks(masks, iou, multimask_output)
        return masks, iou, obj

    def postprocess_masks(
        self, low_res: torch.Tensor, original_size: tuple[int, int]
    ) -> torch.Tensor:
        """Low-res logits ``B x C x h x w`` -> ``B x C x H x W`` (one bilinear upsample)."""
        return F.interpolate(
            low_res.float(), tuple(original_size), mode="bilinear", align_corners=False
        )


def box_to_points(
    boxes: torch.Tensor | None,
    points: tuple[torch.Tensor, torch.Tensor] | None,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Merge ``B x 4`` XYXY boxes into the point prompt as two corners labelled 2 and 3, first.

    ``points``: ``(B x N x 2, B x N)`` or None. Returns ``(B x (2+N) x 2, B x (2+N))`` int labels.
    """
    if boxes is None:
        return points
    corners = boxes.reshape(-1, 2, 2)
    labels = torch.tensor([[2, 3]], dtype=torch.int, device=boxes.device).repeat(len(corners), 1)
    if points is None:
        return corners, labels
    coords, plabels = points
    if coords.shape[0] != corners.shape[0]:
        if coords.shape[0] == 1:
            coords, plabels = coords.expand(len(corners), -1, -1), plabels.expand(len(corners), -1)
        else:
            raise ValueError(
                f"{corners.shape[0]} boxes and {coords.shape[0]} point sets: counts must match"
            )
    return torch.cat([corners, coords], dim=1), torch.cat([labels, plabels.to(labels.dtype)], 1)
