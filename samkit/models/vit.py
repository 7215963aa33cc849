"""The ViT image encoder of SAM (ViT-B / ViT-L / ViT-H), with Meta's state-dict key names.

Input ``B x 3 x S x S`` (normalized, padded, ``S = img_size``), output ``B x out_chans x S/16 x S/16``.
Attention goes through ``scaled_dot_product_attention`` with the decomposed relative-position
bias passed as an additive mask, which computes the same function as the reference's explicit
``softmax(q k^T * scale + bias) v``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .attention import rel_pos_attention, relative_position_table
from .common import LayerNorm2d, MLPBlock, conv_to_tokens, pad_with


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> tokens, returned channels-last ``B x H x W x C``."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv_to_tokens(self.proj, x)


class Attention(nn.Module):
    """Multi-head self-attention with optional decomposed relative positions.

    ``forward`` maps ``B x h x w x C`` to ``B x h x w x C``. :class:`Block` calls the pieces
    (``qkv``, :meth:`attend`, ``proj``) itself, so that windowed blocks project only real tokens.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        use_rel_pos: bool = True,
        input_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            if input_size is None:
                raise ValueError("input_size is required with relative positions")
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))

    def attend(self, qkv: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """``qkv`` ``3 x G x N x d`` (``G = B x heads``, ``N = h * w``) -> ``G x N x d``."""
        q, k, v = qkv.unbind(0)
        if not self.use_rel_pos:
            return F.scaled_dot_product_attention(q[None], k[None], v[None])[0]
        table_h = relative_position_table(size[0], size[0], self.rel_pos_h)
        table_w = relative_position_table(size[1], size[1], self.rel_pos_w)
        return rel_pos_attention(q, k, v, table_h, table_w, size)

    def split_heads(self, qkv: torch.Tensor) -> torch.Tensor:
        """``B x h x w x 3C`` -> contiguous ``3 x (B * heads) x (h * w) x d``."""
        b, h, w, _ = qkv.shape
        qkv = qkv.reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        return qkv.reshape(3, b * self.num_heads, h * w, -1)

    def merge_heads(self, out: torch.Tensor, b: int, size: tuple[int, int]) -> torch.Tensor:
        """``(B * heads) x (h * w) x d`` -> ``B x h x w x C``."""
        out = out.view(b, self.num_heads, size[0], size[1], -1).permute(0, 2, 3, 1, 4)
        return out.reshape(b, size[0], size[1], -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        out = self.attend(self.split_heads(self.qkv(x)), (h, w))
        return self.proj(self.merge_heads(out, b, (h, w)))


class Block(nn.Module):
    """Transformer block: (windowed or global) attention then MLP, pre-norm, residuals."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        use_rel_pos: bool = True,
        window_size: int = 0,
        input_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        attn_size = (window_size, window_size) if window_size > 0 else input_size
        self.attn = Attention(dim, num_heads, qkv_bias, use_rel_pos, attn_size)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), nn.GELU)
        self.window_size = window_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """Windowed or global attention of the normalized ``B x H x W x C`` tokens.

        Same function as the reference (pad with zeros after the norm, partition, attend,
        project, unpartition, crop) with less work: qkv is computed before padding (a zero
        token's qkv is the qkv bias) and the projection after cropping.
        """
        attn, ws = self.attn, self.window_size
        b, h, w, _ = x.shape
        qkv = attn.qkv(x)
        if ws == 0:
            out = attn.attend(attn.split_heads(qkv), (h, w))
            return attn.proj(attn.merge_heads(out, b, (h, w)))
        qkv = pad_with(qkv, ws, attn.qkv.bias)
        hp, wp = qkv.shape[1], qkv.shape[2]
        nh, nw = hp // ws, wp // ws
        heads = attn.num_heads
        # B x nh x ws x nw x ws x 3 x heads x d -> 3 x (B nh nw heads) x (ws ws) x d
        qkv = qkv.view(b, nh, ws, nw, ws, 3, heads, -1).permute(5, 0, 1, 3, 6, 2, 4, 7)
        out = attn.attend(qkv.reshape(3, b * nh * nw * heads, ws * ws, -1), (ws, ws))
        out = out.view(b, nh, nw, heads, ws, ws, -1).permute(0, 1, 4, 2, 5, 3, 6)
        # (contiguous: a strided crop sent to the linear layer becomes a batched product with
        # the weight copied per image row, ~5x slower)
        out = out.reshape(b, hp, wp, -1)[:, :h, :w].contiguous()
        return attn.proj(out)


class ImageEncoderViT(nn.Module):
    """SAM's ViT backbone plus the neck that maps it to ``out_chans`` channels."""

    def __init__(
        self,
        img_size: int = 1024,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        out_chans: int = 256,
        qkv_bias: bool = True,
        use_abs_pos: bool = True,
        use_rel_pos: bool = True,
        window_size: int = 14,
        global_attn_indexes: Sequence[int] = (2, 5, 8, 11),
    ) -> None:
        super().__init__()
        self.img_size = img_size
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.pos_embed: nn.Parameter | None = None
        if use_abs_pos:
            self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim))
        self.blocks = nn.ModuleList(
            Block(
                embed_dim,
                num_heads,
                mlp_ratio,
                qkv_bias,
                use_rel_pos,
                window_size=0 if i in global_attn_indexes else window_size,
                input_size=(grid, grid),
            )
            for i in range(depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2)).contiguous()
