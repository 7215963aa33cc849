"""Hiera: the hierarchical image trunk of SAM 2 (four stages, windowed attention, query pooling).

Layout of the state dict (Meta's names, kept as they are): ``patch_embed.proj``, ``pos_embed``
(a small background grid, bicubic-resized to the token grid), ``pos_embed_window`` (tiled once per
window of the first stage) and ``blocks.N`` with ``norm1 / attn.qkv / attn.proj / norm2 /
mlp.layers.0-1`` and, at the first block of each later stage, ``proj`` (the widened shortcut).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .common import conv_to_tokens


def _pool2x(x: torch.Tensor, stride: int) -> torch.Tensor:
    """Max-pool a ``B x H x W x C`` grid by ``stride`` (floor, no padding)."""
    return F.max_pool2d(x.permute(0, 3, 1, 2), stride, stride).permute(0, 2, 3, 1)


def to_windows(x: torch.Tensor, size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """``B x H x W x C`` -> ``(B * nH * nW) x size x size x C``, zero-padding bottom/right.

    Returns the windows and the padded grid size ``(Hp, Wp)``.
    """
    b, h, w, c = x.shape
    hp, wp = h + (size - h % size) % size, w + (size - w % size) % size
    if (hp, wp) != (h, w):
        x = F.pad(x, (0, 0, 0, wp - w, 0, hp - h))
    x = x.reshape(b, hp // size, size, wp // size, size, c).transpose(2, 3)
    return x.reshape(-1, size, size, c), (hp, wp)


def from_windows(
    windows: torch.Tensor, size: int, padded: tuple[int, int], out: tuple[int, int]
) -> torch.Tensor:
    """Inverse of :func:`to_windows`: back to ``B x H x W x C`` cropped to ``out = (H, W)``."""
    hp, wp = padded
    nh, nw = hp // size, wp // size
    c = windows.shape[-1]
    x = windows.reshape(-1, nh, nw, size, size, c).transpose(2, 3).reshape(-1, hp, wp, c)
    if (hp, wp) != tuple(out):
        x = x[:, : out[0], : out[1]]
    return x


class HieraMLP(nn.Module):
    """``layers.0`` -> GELU -> ``layers.1`` (the Hiera block's MLP)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(dim, hidden), nn.Linear(hidden, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers[1](F.gelu(self.layers[0](x)))


class PoolingAttention(nn.Module):
    """Multi-head attention over ``B x H x W x C`` tokens, queries optionally max-pooled.

    With ``q_stride`` the output grid is ``H / q_stride x W / q_stride`` (keys and values keep the
    full grid); the width changes from ``dim`` to ``dim_out``.
    """

    def __init__(self, dim: int, dim_out: int, num_heads: int, q_stride: int = 0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q_stride = q_stride
        self.qkv = nn.Linear(dim, dim_out * 3)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        heads = self.num_heads
        qkv = self.qkv(x).reshape(b, h * w, 3, heads, -1)
        q, k, v = qkv.unbind(2)  # each b x N x heads x d
        if self.q_stride:
            q = _pool2x(q.reshape(b, h, w, -1), self.q_stride)
            h, w = q.shape[1:3]
            q = q.reshape(b, h * w, heads, -1)
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        )
        return self.proj(out.transpose(1, 2).reshape(b, h, w, -1))


class HieraBlock(nn.Module):
    """Pre-norm transformer block on a ``B x H x W x C`` grid.

    ``window`` > 0 runs attention inside non-overlapping windows (0 = global). With ``q_stride``
    the block halves the grid and widens the channels; its shortcut is ``proj(norm1(x))`` pooled.
    """

    def __init__(
        self,
        dim: int,
        dim_out: int,
        num_heads: int,
        window: int,
        q_stride: int = 0,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        self.dim, self.dim_out = dim, dim_out
        self.window = window
        self.q_stride = q_stride
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = PoolingAttention(dim, dim_out, num_heads, q_stride)
        self.norm2 = nn.LayerNorm(dim_out, eps=1e-6)
        self.mlp = HieraMLP(dim_out, int(dim_out * mlp_ratio))
        if dim != dim_out:
            self.proj = nn.Linear(dim, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.dim != self.dim_out:
            shortcut = self.proj(x)
            if self.q_stride:
                shortcut = _pool2x(shortcut, self.q_stride)
        if self.window > 0:
            windows, _ = to_windows(x, self.window)
            y = self.attn(windows)
            size = self.window // self.q_stride if self.q_stride else self.window
            h, w = shortcut.shape[1:3]
            padded = (h + (size - h % size) % size, w + (size - w % size) % size)
            y = from_windows(y, size, padded, (h, w))
        else:
            y = self.attn(x)
        x = shortcut + y
        return x + self.mlp(self.norm2(x))


class Hiera(nn.Module):
    """Hiera trunk: ``B x 3 x S x S`` -> four ``B x C_i x S/4^..`` maps (strides 4, 8, 16, 32).

    Args:
        embed_dim, num_heads: width and heads of stage 1 (doubled at each later stage).
        stages: blocks per stage.
        global_att_blocks: indices of blocks with global attention.
        window_spec: window side per stage (a stage's first block uses the previous stage's).
        window_pos_embed_bkg_spatial_size: side of the learned background position grid.
    Returns (forward): the last block output of each stage, finest first, ``B x C x H x W``.
    """

    def __init__(
        self,
        embed_dim: int = 96,
        num_heads: int = 1,
        stages: Sequence[int] = (2, 3, 16, 3),
        global_att_blocks: Sequence[int] = (12, 16, 20),
        window_spec: Sequence[int] = (8, 4, 14, 7),
        window_pos_embed_bkg_spatial_size: Sequence[int] = (14, 14),
        q_pool: int = 3,
        q_stride: int = 2,
    ) -> None:
        super().__init__()
        if len(window_spec) != len(stages):
            raise ValueError("window_spec needs one window size per stage")
        self.stage_ends = [sum(stages[: i + 1]) - 1 for i in range(len(stages))]
        pool_blocks = [end + 1 for end in self.stage_ends[:-1]][:q_pool]
        self.patch_embed = _PatchEmbed(embed_dim)
        bkg = tuple(window_pos_embed_bkg_spatial_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_dim, *bkg))
        self.pos_embed_window = nn.Parameter(
            torch.zeros(1, embed_dim, window_spec[0], window_spec[0])
        )
        blocks = []
        stage = 0
        dim = embed_dim
        for i in range(sum(stages)):
            window = 0 if i in global_att_blocks else window_spec[stage]
            dim_out = dim
            if i - 1 in self.stage_ends:
                dim_out, num_heads, stage = dim * 2, num_heads * 2, stage + 1
            blocks.append(
                HieraBlock(dim, dim_out, num_heads, window, q_stride if i in pool_blocks else 0)
            )
            dim = dim_out
        self.blocks = nn.ModuleList(blocks)
        self.channel_list = [self.blocks[i].dim_out for i in self.stage_ends[::-1]]

    def position_embedding(self, hw: tuple[int, int]) -> torch.Tensor:
        """``1 x H x W x C``: background grid resized bicubically plus the tiled window grid."""
        pos = F.interpolate(self.pos_embed, size=hw, mode="bicubic")
        win = self.pos_embed_window
        reps = (hw[0] // win.shape[-2], hw[1] // win.shape[-1])
        pos = pos + win.tile((1, 1, *reps))
        return pos.permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(x)
        x = x + self.position_embedding(tuple(x.shape[1:3])).to(x.dtype)
        outs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.stage_ends:
                outs.append(x.permute(0, 3, 1, 2))
        return outs


class _PatchEmbed(nn.Module):
    """7 x 7 convolution with stride 4 (padding 3): ``B x 3 x S x S`` -> ``B x S/4 x S/4 x C``."""

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=7, stride=4, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv_to_tokens(self.proj, x)
