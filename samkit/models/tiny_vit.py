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

from .common import LayerNorm2d, pad_with


class ConvBN(nn.Sequential):
    """Conv2d without bias followed by BatchNorm (keys ``c.*`` and ``bn.*``).

    In eval mode the BatchNorm is folded into the convolution on the fly (the state dict is
    untouched), and a 1x1 convolution of a channels-last input runs as a matrix product.
    """

    def __init__(
        self, c_in: int, c_out: int, kernel: int = 1, stride: int = 1, pad: int = 0, groups: int = 1
    ) -> None:
        super().__init__()
        self.add_module("c", nn.Conv2d(c_in, c_out, kernel, stride, pad, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(c_out))

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Weight and bias of the one convolution equal to conv followed by eval-mode BN."""
        bn = self.bn
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        return self.c.weight * scale[:, None, None, None], bn.bias - bn.running_mean * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return super().forward(x)
        weight, bias = self.folded()
        c = self.c
        pointwise = c.kernel_size == (1, 1) and c.stride == (1, 1) and c.groups == 1
        if pointwise and x.is_contiguous(memory_format=torch.channels_last):
            y = F.linear(x.permute(0, 2, 3, 1), weight.flatten(1), bias)
            return y.permute(0, 3, 1, 2)
        return F.conv2d(x, weight, bias, c.stride, c.padding, c.dilation, c.groups)


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
        if x.ndim == 3:  # tokens B x L x C -> a channels-last B x C x H x W view
            x = x.view(x.shape[0], size[0], size[1], -1).permute(0, 3, 1, 2)
        x = F.gelu(self.conv1(x))
        x = F.gelu(self.conv2(x))
        x = self.conv3(x)
        return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, x.shape[1])


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
        """Attention within each window of ``B x N x C`` tokens (the reference's interface)."""
        b, n, _ = x.shape
        qkv = self.qkv(self.norm(x)).view(b, n, self.num_heads, 3, self.head_dim)
        q, k, v = qkv.permute(3, 0, 2, 1, 4).unbind(0)
        out = self.attend(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, -1))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``B x heads x N x d`` each -> ``B x heads x N x d``, with the learned offset bias."""
        bias = self.attention_biases[:, self.attention_bias_idxs].to(q.dtype)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias.unsqueeze(0))

    def split_windows(self, qkv: torch.Tensor, window: int) -> torch.Tensor:
        """``B x Hp x Wp x (heads * 3 * d)`` -> ``3 x (B * nW) x heads x window^2 x d``."""
        b, hp, wp, _ = qkv.shape
        nh, nw = hp // window, wp // window
        qkv = qkv.view(b, nh, window, nw, window, self.num_heads, 3, self.head_dim)
        qkv = qkv.permute(6, 0, 1, 3, 5, 2, 4, 7)
        return qkv.reshape(3, b * nh * nw, self.num_heads, window * window, self.head_dim)


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
        x = x + self.window_attention(x.view(b, h, w, c)).reshape(b, n, c)
        # B x N x C tokens are a channels-last B x C x h x w image: no copies around the conv.
        x = self.local_conv(x.view(b, h, w, c).permute(0, 3, 1, 2))
        x = x.permute(0, 2, 3, 1).reshape(b, n, c)
        return x + self.mlp(x)

    def window_attention(self, x: torch.Tensor) -> torch.Tensor:
        """``B x h x w x C`` -> ``B x h x w x C``: the reference's function with less work.

        The reference zero-pads h and w to multiples of the window, then normalizes and
        projects every token. A zero token's qkv is ``qkv(norm.bias)``, so qkv is computed on
        the real tokens and padded with that vector, and ``proj`` runs after cropping.
        """
        attn, ws = self.attn, self.window
        b, h, w, _ = x.shape
        qkv = attn.qkv(attn.norm(x))
        pad_value = F.linear(attn.norm.bias, attn.qkv.weight, attn.qkv.bias)
        qkv = pad_with(qkv, ws, pad_value)
        hp, wp = qkv.shape[1], qkv.shape[2]
        q, k, v = attn.split_windows(qkv, ws).unbind(0)
        out = attn.attend(q, k, v)  # (B nW) x heads x ws^2 x d
        out = out.view(b, hp // ws, wp // ws, attn.num_heads, ws, ws, -1)
        out = out.permute(0, 1, 4, 2, 5, 3, 6).reshape(b, hp, wp, -1)[:, :h, :w]
        return attn.proj(out)


class ConvStage(nn.Module):
    def __init__(self, dim: int, depth: int, expand_ratio: float, downsample: nn.Module | None):
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand_ratio) for _ in range(depth))
        self.downsample = downsample

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        if self.downsample is not None:
            return self.downsample(x, size)
        return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, x.shape[1])


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
        # Channels-last throughout: depthwise convs run faster and 1x1 convs become matmuls.
        x = self.patch_embed(x.contiguous(memory_format=torch.channels_last))
        for i, stage in enumerate(self.layers):
            r = self.resolutions[i]
            x = stage(x, (r, r))
        r = self.resolutions[-1]
        b, _, c = x.shape
        x = x.view(b, r, r, c).permute(0, 3, 1, 2)
        return self.neck(x).contiguous()
