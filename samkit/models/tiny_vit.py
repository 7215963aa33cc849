"""TinyViT image encoder as used by MobileSAM, with MobileSAM's state-dict key names.

Stage 0 is convolutional (MBConv blocks); stages 1.. are windowed-attention blocks with a learned
per-offset attention bias and a depthwise "local" convolution. Patch merging halves the
resolution between stages except before the last stage, so a 1024 input ends at 64 x 64.
The checkpoint's classifier (``norm_head``, ``head``) is kept so it loads strictly; it is unused.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerNorm2d


class ConvBN(nn.Sequential):
    """Conv2d without bias followed by BatchNorm (keys ``c.*`` and ``bn.*``)."""

    def __init__(
        self, c_in: int, c_out: int, kernel: int = 1, stride: int = 1, pad: int = 0, groups: int = 1
    ) -> None:
        super().__init__()
        self.add_module("c", nn.Conv2d(c_in, c_out, kernel, stride, pad, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(c_out))


class PatchEmbed(nn.Module):
    """Two stride-2 3x3 convolutions: ``B x 3 x S x S`` -> ``B x C x S/4 x S/4``."""

    def __init__(self, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            ConvBN(in_chans, embed_dim // 2, 3, 2, 1),
            nn.GELU(),
            ConvBN(embed_dim // 2, embed_dim, 3, 2, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand, 3x3 depthwise, 1x1 project, residual, GELU."""

    def __init__(self, dim: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = ConvBN(dim, hidden, 1)
        self.conv2 = ConvBN(hidden, hidden, 3, 1, 1, groups=hidden)
        self.conv3 = ConvBN(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.gelu(self.conv1(x))
        y = F.gelu(self.conv2(y))
        return F.gelu(self.conv3(y) + x)


class PatchMerging(nn.Module):
    """1x1 conv, strided depthwise 3x3 conv, 1x1 conv; returns tokens ``B x L x C_out``."""

    def __init__(self, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.conv1 = ConvBN(dim, out_dim, 1)
        self.conv2 = ConvBN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim, 1)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if x.ndim == 3:
            x = x.transpose(1, 2).reshape(x.shape[0], -1, size[0], size[1])
        x = F.gelu(self.conv1(x))
        x = F.gelu(self.conv2(x))
        x = self.conv3(x)
        return x.flatten(2).transpose(1, 2)


class Mlp(nn.Module):
    """LayerNorm then fc1 -> GELU -> fc2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(self.norm(x))))


def attention_offset_index(window: int) -> tuple[torch.Tensor, int]:
    """Index ``N x N`` (``N = window^2``) of each token pair's (|dy|, |dx|) offset, in first-seen order."""
    points = list(itertools.product(range(window), range(window)))
    offsets: dict[tuple[int, int], int] = {}
    idxs = []
    for p1 in points:
        for p2 in points:
            off = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
            idxs.append(offsets.setdefault(off, len(offsets)))
    n = len(points)
    return torch.tensor(idxs, dtype=torch.long).view(n, n), len(offsets)


class WindowAttention(nn.Module):
    """Attention within a window, with a learned bias per head and relative offset."""

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * self.head_dim * num_heads)
        self.proj = nn.Linear(self.head_dim * num_heads, dim)
        index, n_offsets = attention_offset_index(window)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, n_offsets))
        self.register_buffer("attention_bias_idxs", index, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        x = self.norm(x)
        qkv = self.qkv(x).view(b, n, self.num_heads, 3 * self.head_dim).permute(0, 2, 1, 3)
        q, k, v = qkv.split(self.head_dim, dim=3)
        bias = self.attention_biases[:, self.attention_bias_idxs].to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.unsqueeze(0))
        return self.proj(out.transpose(1, 2).reshape(b, n, -1))


class TinyViTBlock(nn.Module):
    """Windowed attention (zero-padded windows), depthwise local conv, then MLP."""

    def __init__(self, dim: int, num_heads: int, window: int, mlp_ratio: float) -> None:
        super().__init__()
        self.window = window
        self.attn = WindowAttention(dim, num_heads, window)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.local_conv = ConvBN(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        h, w = size
        b, n, c = x.shape
        ws = self.window
        if h == ws and w == ws:
            y = self.attn(x)
        else:
            y = x.view(b, h, w, c)
            pad_b = (ws - h % ws) % ws
            pad_r = (ws - w % ws) % ws
            if pad_b or pad_r:
                y = F.pad(y, (0, 0, 0, pad_r, 0, pad_b))
            hp, wp = h + pad_b, w + pad_r
            nh, nw = hp // ws, wp // ws
            y = y.view(b, nh, ws, nw, ws, c).transpose(2, 3).reshape(b * nh * nw, ws * ws, c)
            y = self.attn(y)
            y = y.view(b, nh, nw, ws, ws, c).transpose(2, 3).reshape(b, hp, wp, c)
            if pad_b or pad_r:
                y = y[:, :h, :w]
            y = y.reshape(b, n, c)
        x = x + y
        x = self.local_conv(x.transpose(1, 2).reshape(b, c, h, w))
        x = x.view(b, c, n).transpose(1, 2)
        return x + self.mlp(x)


class ConvStage(nn.Module):
    def __init__(self, dim: int, depth: int, expand_ratio: float, downsample: nn.Module | None):
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand_ratio) for _ in range(depth))
        self.downsample = downsample

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return (
            self.downsample(x, size)
            if self.downsample is not None
            else x.flatten(2).transpose(1, 2)
        )


class AttentionStage(nn.Module):
    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window: int,
        mlp_ratio: float,
        downsample: nn.Module | None,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TinyViTBlock(dim, num_heads, window, mlp_ratio) for _ in range(depth)
        )
        self.downsample = downsample

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, size)
        return self.downsample(x, size) if self.downsample is not None else x


class TinyViT(nn.Module):
    """MobileSAM's image encoder: ``B x 3 x S x S`` -> ``B x out_chans x S/16 x S/16``."""

    def __init__(
        self,
        img_size: int = 1024,
        in_chans: int = 3,
        embed_dims: Sequence[int] = (64, 128, 160, 320),
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (2, 4, 5, 10),
        window_sizes: Sequence[int] = (7, 7, 14, 7),
        mlp_ratio: float = 4.0,
        mbconv_expand_ratio: float = 4.0,
        out_chans: int = 256,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        self.img_size = img_size
        n = len(embed_dims)
        self.patch_embed = PatchEmbed(in_chans, embed_dims[0])
        # Resolution entering each stage; merging halves it, except into the last stage.
        self.strides = [2 if i < n - 2 else 1 for i in range(n - 1)]
        res = [img_size // 4]
        for s in self.strides:
            res.append(res[-1] // s)
        self.resolutions = res
        self.layers = nn.ModuleList()
        for i in range(n):
            down = None
            if i < n - 1:
                down = PatchMerging(embed_dims[i], embed_dims[i + 1], self.strides[i])
            if i == 0:
                stage: nn.Module = ConvStage(embed_dims[0], depths[0], mbconv_expand_ratio, down)
            else:
                stage = AttentionStage(
                    embed_dims[i], depths[i], num_heads[i], window_sizes[i], mlp_ratio, down
                )
            self.layers.append(stage)
        if num_classes > 0:  # the ImageNet classifier MobileSAM's checkpoint carries (unused)
            self.norm_head = nn.LayerNorm(embed_dims[-1])
            self.head = nn.Linear(embed_dims[-1], num_classes)
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for i, stage in enumerate(self.layers):
            r = self.resolutions[i]
            x = stage(x, (r, r))
        r = self.resolutions[-1]
        b, _, c = x.shape
        x = x.view(b, r, r, c).permute(0, 3, 1, 2)
        return self.neck(x)
