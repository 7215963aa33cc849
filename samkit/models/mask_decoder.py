"""SAM's mask decoder: prompt tokens + image embedding -> low-res mask logits and IoU scores.

:class:`MaskDecoderParts` holds what SAM's and SAM 2's decoders (:mod:`samkit.models.sam2_decoder`)
share: the IoU and mask tokens, the two-way transformer pass, the 4x output upscaling, one
hypernetwork MLP per mask token and the IoU head, under Meta's state-dict names.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import MLP, LayerNorm2d
from .transformer import TwoWayTransformer


class MaskDecoderParts(nn.Module):
    """The parts of SAM's and SAM 2's mask decoders, built in the reference's registration order
    (which seeds the default initialization); a subclass turns on SAM 2's extras and writes
    ``forward``.

    Class flags (all False for SAM v1, True for SAM 2): ``object_score``: an ``obj_score_token``
    and a ``pred_obj_score_head`` MLP; ``high_res_skips``: 1x1 convolutions ``conv_s0`` /
    ``conv_s1`` of the stride-4 / stride-8 image features; ``iou_sigmoid``: the IoU head ends in a
    sigmoid.
    """

    object_score: bool = False
    high_res_skips: bool = False
    iou_sigmoid: bool = False

    def __init__(
        self,
        transformer_dim: int,
        transformer: TwoWayTransformer,
        num_multimask_outputs: int = 3,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
    ) -> None:
        super().__init__()
        dim = transformer_dim
        self.transformer_dim = dim
        self.transformer = transformer
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, dim)
        if self.object_score:
            self.obj_score_token = nn.Embedding(1, dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        if self.high_res_skips:
            self.conv_s0 = nn.Conv2d(dim, dim // 8, kernel_size=1)
            self.conv_s1 = nn.Conv2d(dim, dim // 4, kernel_size=1)
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(dim, dim, dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(
            dim,
            iou_head_hidden_dim,
            self.num_mask_tokens,
            iou_head_depth,
            sigmoid_output=self.iou_sigmoid,
        )
        if self.object_score:
            self.pred_obj_score_head = MLP(dim, dim, 1, 3)

    def _run_transformer(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The two-way transformer on the output tokens (``[object score (SAM 2), IoU, mask
        tokens]``) followed by the ``B x N x C`` prompt tokens, against ``1|B x C x h x w``
        image embeddings (broadcast to ``B``) plus the dense prompt embeddings.

        Returns ``(tokens B x (T + N) x C, image B x C x h x w)``, ``T`` output tokens.
        """
        b = sparse_prompt_embeddings.shape[0]
        weights = [self.iou_token.weight, self.mask_tokens.weight]
        if self.object_score:
            weights.insert(0, self.obj_score_token.weight)
        output_tokens = torch.cat(weights, dim=0).to(sparse_prompt_embeddings.dtype)
        tokens = torch.cat(
            [output_tokens.unsqueeze(0).expand(b, -1, -1), sparse_prompt_embeddings], 1
        )
        if image_embeddings.shape[0] != b:
            image_embeddings = image_embeddings.expand(b, -1, -1, -1)
        src = image_embeddings + dense_prompt_embeddings
        pos_src = image_pe.expand(b, -1, -1, -1)
        _, c, h, w = src.shape
        hs, src = self.transformer(src, pos_src, tokens)
        return hs, src.transpose(1, 2).reshape(b, c, h, w)

    def _hyper_masks(
        self, mask_tokens_out: torch.Tensor, upscaled: torch.Tensor, token_indices: list[int]
    ) -> torch.Tensor:
        """Mask logits ``B x M x 4h x 4w``: each mask token of ``token_indices`` (``M`` of the
        ``B x num_mask_tokens x C`` outputs) through its hypernetwork MLP, dotted with the
        ``B x C/8 x 4h x 4w`` upscaled image per pixel."""
        hyper_in = torch.stack(
            [self.output_hypernetworks_mlps[i](mask_tokens_out[:, i, :]) for i in token_indices],
            dim=1,
        )
        b, c_up, h_up, w_up = upscaled.shape
        return (hyper_in @ upscaled.reshape(b, c_up, h_up * w_up)).reshape(b, -1, h_up, w_up)


class MaskDecoder(MaskDecoderParts):
    """Predicts ``num_multimask_outputs + 1`` masks per prompt at 4x the embedding resolution.

    Token 0 is the single-mask output, tokens 1.. the multimask outputs (the reference's order).
    """

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode B prompts against one image (``image_embeddings`` 1 x C x h x w) or B images.

        Returns ``(masks B x M x 4h x 4w, iou B x M)`` with M = 3 (multimask) or 1.
        """
        tokens = self.mask_token_indices(multimask_output)
        return self.predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, tokens
        )

    def mask_token_indices(self, multimask_output: bool) -> list[int]:
        return list(range(1, self.num_mask_tokens)) if multimask_output else [0]

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        token_indices: list[int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks and IoU scores for the mask tokens in ``token_indices`` (all when None)."""
        if token_indices is None:
            token_indices = list(range(self.num_mask_tokens))
        hs, src = self._run_transformer(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings
        )
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens, :]
        masks = self._hyper_masks(mask_tokens_out, self.output_upscaling(src), token_indices)
        iou_pred = self.iou_prediction_head(iou_token_out)[:, token_indices]
        return masks, iou_pred
