"""SAM's mask decoder: prompt tokens + image embedding -> low-res mask logits and IoU scores."""

from __future__ import annotations

import torch
from torch import nn

from .common import MLP, LayerNorm2d
from .transformer import TwoWayTransformer


class MaskDecoder(nn.Module):
    """Predicts ``num_multimask_outputs + 1`` masks per prompt at 4x the embedding resolution.

    Token 0 is the single-mask output, tokens 1.. the multimask outputs (the reference's order).
    """

    def __init__(
        self,
        transformer_dim: int,
        transformer: TwoWayTransformer,
        num_multimask_outputs: int = 3,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
    ) -> None:
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3)
            for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(
            transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth
        )

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
        b = sparse_prompt_embeddings.shape[0]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        output_tokens = output_tokens.to(sparse_prompt_embeddings.dtype)
        tokens = torch.cat(
            [output_tokens.unsqueeze(0).expand(b, -1, -1), sparse_prompt_embeddings], 1
        )

        if image_embeddings.shape[0] != b:
            image_embeddings = image_embeddings.expand(b, -1, -1, -1)
        src = image_embeddings + dense_prompt_embeddings
        pos_src = image_pe.expand(b, -1, -1, -1)
        _, c, h, w = src.shape

        hs, src = self.transformer(src, pos_src, tokens)
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens, :]

        upscaled = self.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        hyper_in = torch.stack(
            [self.output_hypernetworks_mlps[i](mask_tokens_out[:, i, :]) for i in token_indices],
            dim=1,
        )
        _, c_up, h_up, w_up = upscaled.shape
        masks = (hyper_in @ upscaled.reshape(b, c_up, h_up * w_up)).reshape(b, -1, h_up, w_up)
        iou_pred = self.iou_prediction_head(iou_token_out)[:, token_indices]
        return masks, iou_pred
