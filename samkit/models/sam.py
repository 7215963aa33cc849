"""The composite SAM model, built from injected parts."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.upsample import upsample_logits
from .common import PromptableModel
from .input_spec import InputSpec
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder


class Sam(PromptableModel):
    """Image encoder + prompt encoder + mask decoder, with the pre- and post-processing of its
    :class:`InputSpec`.

    ``image_encoder`` is any module mapping ``B x 3 x S x S`` normalized images to
    ``B x C x S/16 x S/16`` embeddings and exposing ``img_size`` (ViT, TinyViT, ...). An encoder
    may instead return ``(features, high_res_feats)`` with a tuple of higher-resolution maps
    (SAM 2); :meth:`encode_image` passes them on. ``input_spec`` defaults to SAM v1's at the
    encoder's ``img_size``; ``pixel_mean`` / ``pixel_std`` (on the spec's scale) override its
    statistics, as in Meta's constructor.
    """

    def __init__(
        self,
        image_encoder: nn.Module,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
        pixel_mean: Sequence[float] | None = None,
        pixel_std: Sequence[float] | None = None,
        input_spec: InputSpec | None = None,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        spec = input_spec or InputSpec(image_size=int(image_encoder.img_size))
        if pixel_mean is not None:
            spec = dataclasses.replace(spec, pixel_mean=tuple(float(v) for v in pixel_mean))
        if pixel_std is not None:
            spec = dataclasses.replace(spec, pixel_std=tuple(float(v) for v in pixel_std))
        self._input_spec = spec
        self.register_buffer("pixel_mean", torch.tensor(spec.pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(spec.pixel_std).view(-1, 1, 1), False)

    # device, image_size, mask_threshold, image_format: PromptableModel

    @property
    def input_spec(self) -> InputSpec:
        """How images are prepared for this model and masks brought back (its image size is
        the encoder's ``img_size``)."""
        spec = self._input_spec
        if spec.image_size != self.image_size:
            spec = self._input_spec = dataclasses.replace(spec, image_size=self.image_size)
        return spec

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize ``B x 3 x h x w`` resized pixels (on the spec's ``pixel_scale``: 0-255 for
        SAM v1) and zero-pad bottom/right to the input size (when the spec pads)."""
        x = (x - self.pixel_mean) / self.pixel_std
        if self.input_spec.pad == "none":
            return x
        h, w = x.shape[-2:]
        size = self.image_size
        return F.pad(x, (0, size - w, 0, size - h))

    def encode_image(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """``B x 3 x S x S`` preprocessed images -> ``(features B x C x h x w, high_res_feats)``;
        ``high_res_feats`` is None for encoders with one output map."""
        out = self.image_encoder(x)
        if isinstance(out, torch.Tensor):
            return out, None
        features, high_res = out
        return features, tuple(high_res)

    def postprocess_masks(
        self,
        masks: torch.Tensor,
        input_size: tuple[int, int],
        original_size: tuple[int, int],
    ) -> torch.Tensor:
        """Low-res logits ``B x C x 4h x 4w`` -> logits ``B x C x H x W`` at the original size.

        SAM v1: upsample to the padded model input, crop the padding (``input_size`` is the
        resized image size before padding), then upsample to ``original_size``; bilinear,
        align_corners=False (see :func:`~samkit.ops.upsample.upsample_logits`).
        """
        mode = self.input_spec.mask_upsample
        return upsample_logits(masks, self.image_size, input_size, original_size, mode=mode)
