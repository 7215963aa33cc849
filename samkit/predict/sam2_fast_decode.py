"""Many point prompts against one SAM 2 image embedding: :class:`PointDecoder`'s work sharing
for SAM 2's mask decoder.

SAM 2's decoder is SAM's two-way transformer with three differences, handled here:

* the output tokens are ``[object score, IoU, 4 mask tokens]`` (the IoU token is second);
* the output upscaling adds the projected stride-8 features after the first transposed
  convolution (before its layer norm) and the stride-4 features after the second (before its
  GELU); both are per output pixel, so they are laid out once per image in the order in which
  :meth:`PointDecoder.upscale_grid` produces pixels (each image token's 4 x 4 block);
* the IoU head ends in a sigmoid (inside the head module, as in the module decoder).

Everything else (the first block's image-side projections shared by all prompts, the
re-associated attentions, IoU before upscaling so that only prompts with a mask above the
threshold are upscaled) is :class:`PointDecoder`'s. The object score is not computed: SAM 2's
image predictor and automatic mask generator do not use it.
"""

from __future__ import annotations

import numpy as np
import torch

from ..models.sam2 import Sam2
from ..models.sam2_decoder import select_masks
from .fast_decode import PointDecoder, own_dtype

__all__ = ["Sam2PointDecoder"]


class Sam2PointDecoder(PointDecoder):
    """Decode single foreground points (multimask) against one SAM 2 image embedding.

    Args:
        sam: the SAM 2 model (its prompt encoder and mask decoder are used, not modified).
        dtype: compute dtype, ``torch.float32`` (the module decoder's values up to rounding) or
            ``torch.bfloat16``.
        chunk: prompts processed together (about 20 MB per prompt in float32).
    """

    iou_index = 1
    mask_offset = 2

    def __init__(self, sam: Sam2, dtype: torch.dtype = torch.float32, chunk: int = 4) -> None:
        if not isinstance(sam, Sam2):
            raise TypeError(f"Sam2PointDecoder needs a SAM 2 model, got {type(sam).__name__}")
        super().__init__(sam, dtype, chunk)

    @own_dtype
    def set_features(  # type: ignore[override]
        self, features: torch.Tensor, high_res: tuple[torch.Tensor, torch.Tensor]
    ) -> None:
        """Cache ``1 x C x h x w`` image features (``no_mem_embed`` included, as
        :meth:`Sam2.encode` returns them) and the projected high-resolution features
        ``(1 x C/8 x 4h x 4w, 1 x C/4 x 2h x 2w)``."""
        super().set_features(features)
        s0, s1 = high_res
        gh, gw = self.grid
        c1 = s1.shape[1]
        c2 = s0.shape[1]
        if tuple(s1.shape[-2:]) != (2 * gh, 2 * gw) or tuple(s0.shape[-2:]) != (4 * gh, 4 * gw):
            raise ValueError(
                f"high-res features {tuple(s0.shape)} / {tuple(s1.shape)} do not match the "
                f"{gh} x {gw} image features"
            )
        # stride 8: pixel (2i + a, 2j + b) -> row (i, j, a, b)
        t1 = s1[0].permute(1, 2, 0).reshape(gh, 2, gw, 2, c1).permute(0, 2, 1, 3, 4)
        self.s1_rows = t1.reshape(gh * gw * 4, c1).to(self.dtype).contiguous()
        # stride 4: pixel (4i + 2a + a2, 4j + 2b + b2) -> row (i, j, a, b, a2, b2)
        t0 = s0[0].permute(1, 2, 0).reshape(gh, 2, 2, gw, 2, 2, c2).permute(0, 3, 1, 4, 2, 5, 6)
        self.s0_rows = t0.reshape(gh * gw * 16, c2).to(self.dtype).contiguous()

    def _features_missing(self) -> bool:
        return not hasattr(self, "s0_rows")

    def point_tokens(self, coords: torch.Tensor | np.ndarray) -> torch.Tensor:
        """``B x T x C`` tokens for ``B x 2`` (x, y) foreground points in the input frame, made
        by the prompt encoder exactly as the module path makes them (float32 coordinates)."""
        pe_enc = self.prompt_encoder
        device = pe_enc.no_mask_embed.weight.device
        pts = torch.as_tensor(np.asarray(coords), dtype=torch.float32, device=device)
        pts = pts.reshape(-1, 1, 2)
        labels = torch.ones((pts.shape[0], 1), dtype=torch.int, device=device)
        return self._with_output_tokens(pe_enc.embed_points(pts, labels, pad=True))

    def _with_output_tokens(self, prompt: torch.Tensor) -> torch.Tensor:
        """The object-score, IoU and mask tokens in front of ``B x T x C`` prompt tokens."""
        dec = self.dec
        out = torch.cat([dec.obj_score_token.weight, dec.iou_token.weight, dec.mask_tokens.weight])
        out = out.float()
        return torch.cat([out.expand(prompt.shape[0], -1, -1), prompt.float()], 1).to(self.dtype)

    @own_dtype
    def decode_sparse(
        self,
        sparse: torch.Tensor,
        multimask_output: bool,
        chunk: int | None = None,
        region: tuple[int, int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode any prompts without a mask input as SAM 2's module decoder does.

        Args:
            sparse: ``B x T x C`` sparse prompt embeddings from the prompt encoder (points, box
                corners as points, the padding point), the same ``T`` for every prompt.
            multimask_output: the three multimask outputs; else SAM 2's single mask, with its
                dynamic fallback to the best multimask output when the single mask is unstable
                (:func:`~samkit.models.sam2_decoder.select_masks`), for which all four masks are
                computed.
            region: the whole frame only (SAM 2's square frame has no padding to skip).
        Returns:
            ``(low-res logits B x M x 4h x 4w float32, iou B x M float32)``, M = 3 or 1,
            unclamped, on the features' device.
        """
        gh, gw = self.grid
        if region is not None and tuple(region) != (4 * gh, 4 * gw):
            raise ValueError("SAM 2's decoder computes the whole low-res frame (no padding)")
        indices = self.token_indices if multimask_output else [0, *self.token_indices]
        low, iou = super().decode_sparse(sparse, indices, chunk)
        if multimask_output:
            return low, iou
        return select_masks(low, iou, multimask_output=False)

    def decode_sparse_split(self, *args, **kwargs):  # type: ignore[override]
        """Not for SAM 2: the split serves a padded frame, which SAM 2 does not have."""
        raise NotImplementedError("SAM 2's frame has no padding: use decode_sparse")

    def _whole(self, block: tuple[int, int]) -> None:
        if tuple(block) != tuple(self.grid):
            raise ValueError("SAM 2's upscaling needs the whole grid (its frame has no padding)")

    def _add_stride8(self, y: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
        self._whole(block)
        return y + self.s1_rows

    def _add_stride4(self, z: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
        self._whole(block)
        return z.add_(self.s0_rows)
