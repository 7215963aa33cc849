"""The composite SAM model, built from injected parts."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .input_spec import SAM_PIXEL_MEAN, SAM_PIXEL_STD
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder


class Sam(nn.Module):
    """Image encoder + prompt encoder + mask decoder, with SAM's pre- and post-processing.

    ``image_encoder`` is any module mapping ``B x 3 x S x S`` normalized images to
    ``B x C x S/16 x S/16`` embeddings and exposing ``img_size`` (ViT, TinyViT, ...).
    """

    mask_threshold: float = 0.0
    image_format: str = "RGB"

    def __init__(
        self,
        image_encoder: nn.Module,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
        pixel_mean: Sequence[float] = SAM_PIXEL_MEAN,
        pixel_std: Sequence[float] = SAM_PIXEL_STD,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def image_size(self) -> int:
        """Side of the square model input (1024 for the official models)."""
        return int(self.image_encoder.img_size)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize ``B x 3 x h x w`` 0-255 pixels and zero-pad bottom/right to the input size."""
        x = (x - self.pixel_mean) / self.pixel_std
        h, w = x.shape[-2:]
        size = self.image_size
        return F.pad(x, (0, size - w, 0, size - h))

    def postprocess_masks(
        self,
        masks: torch.Tensor,
        input_size: tuple[int, int],
        original_size: tuple[int, int],
    ) -> torch.Tensor:
        """Low-res logits ``B x C x 4h x 4w`` -> logits ``B x C x H x W`` at the original size.

        Upsample to the padded model input, crop the padding (``input_size`` is the resized image
        size before padding), then upsample to ``original_size``; bilinear, align_corners=False.
        """
        size = self.image_size
        masks = F.interpolate(masks, (size, size), mode="bilinear", align_corners=False)
        masks = masks[..., : input_size[0], : input_size[1]]
        return F.interpolate(masks, original_size, mode="bilinear", align_corners=False)
