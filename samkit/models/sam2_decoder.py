"""SAM 2's mask decoder: SAM's two-way transformer plus high-resolution features and an
object-score token.

Differences from SAM v1 (:class:`~samkit.models.MaskDecoder`): the output tokens are
``[object score, IoU, 4 mask tokens]`` (the object-score token comes first); the 4x upscaling
adds the stride-8 and stride-4 image features (after ``conv_s1`` / ``conv_s0``) after each
transposed convolution; the IoU head ends in a sigmoid; a single-mask request may fall back to
the best multimask output (:func:`select_masks`).
"""

from __future__ import annotations

import torch

from .mask_decoder import MaskDecoderParts


class Sam2MaskDecoder(MaskDecoderParts):
    """Prompt tokens + image features -> 4 low-res mask logits, 4 IoUs, 1 object score per prompt.

    ``conv_s0`` / ``conv_s1`` are applied once per image by the caller (:meth:`project_high_res`);
    :meth:`forward` takes the projected maps. Built as ``Sam2MaskDecoder(transformer_dim,
    transformer, num_multimask_outputs=3, iou_head_depth=3, iou_head_hidden_dim=256)``.
    """

    object_score = True
    high_res_skips = True
    iou_sigmoid = True

    def project_high_res(
        self, feat_s4: torch.Tensor, feat_s8: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Neck levels ``B x C x 4h x 4w`` and ``B x C x 2h x 2w`` -> ``C/8`` and ``C/4`` channels."""
        return self.conv_s0(feat_s4), self.conv_s1(feat_s8)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        high_res_features: tuple[torch.Tensor, torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Decode B prompts against one image (batch 1 features are broadcast) or B images.

        Args:
            image_embeddings: ``1|B x C x h x w`` (with ``no_mem_embed`` already added).
            image_pe: ``1 x C x h x w``.
            sparse_prompt_embeddings: ``B x N x C``; dense_prompt_embeddings: ``1|B x C x h x w``.
            high_res_features: projected ``(1|B x C/8 x 4h x 4w, 1|B x C/4 x 2h x 2w)``.
        Returns:
            ``(masks B x 4 x 4h x 4w logits, iou B x 4 in [0, 1], object score B x 1 logits)``;
            mask 0 is the single-mask output, 1-3 the multimask outputs.
        """
        hs, src = self._run_transformer(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings
        )
        obj_token_out = hs[:, 0]
        iou_token_out = hs[:, 1]
        mask_tokens_out = hs[:, 2 : 2 + self.num_mask_tokens]

        feat_s0, feat_s1 = high_res_features
        dc1, ln1, act1, dc2, act2 = self.output_upscaling
        up = act1(ln1(dc1(src) + feat_s1))
        up = act2(dc2(up) + feat_s0)
        masks = self._hyper_masks(mask_tokens_out, up, list(range(self.num_mask_tokens)))
        iou = self.iou_prediction_head(iou_token_out)
        obj = self.pred_obj_score_head(obj_token_out)
        return masks, iou, obj


def stability_scores(logits: torch.Tensor, delta: float = 0.05) -> torch.Tensor:
    """``area(logits > delta) / area(logits > -delta)`` over the last two dims (1 when empty)."""
    flat = logits.flatten(-2)
    inter = (flat > delta).sum(-1).float()
    union = (flat > -delta).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def select_masks(
    masks: torch.Tensor,
    iou: torch.Tensor,
    multimask_output: bool,
    dynamic_fallback: bool = True,
    stability_thresh: float = 0.98,
    stability_delta: float = 0.05,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM 2's output selection from all ``B x 4`` decoder outputs.

    Multimask: masks 1-3. Single mask: mask 0, unless (``dynamic_fallback``) its stability score
    is below ``stability_thresh``; then the multimask output with the highest predicted IoU.
    Returns ``(B x M x h x w, B x M)`` with M = 3 or 1.
    """
    if multimask_output:
        return masks[:, 1:], iou[:, 1:]
    single, single_iou = masks[:, :1], iou[:, :1]
    if not dynamic_fallback:
        return single, single_iou
    best = iou[:, 1:].argmax(dim=-1)
    rows = torch.arange(masks.shape[0], device=masks.device)
    best_masks = masks[:, 1:][rows, best][:, None]
    best_iou = iou[:, 1:][rows, best][:, None]
    stable = stability_scores(single) >= stability_thresh  # B x 1
    return (
        torch.where(stable[..., None, None], single, best_masks),
        torch.where(stable, single_iou, best_iou),
    )
