"""SAM 2's image encoder: a Hiera trunk and an FPN neck (feature pyramid to one width).

Only the three finest levels are returned (Meta's ``scalp=1``); the coarsest (stride 32) level
still feeds the stride-16 level through the top-down path. The neck's sine position encodings
are used only by the video memory modules and are not computed here.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .hiera import Hiera


class FpnNeck(nn.Module):
    """1 x 1 lateral convolutions to ``d_model`` channels plus a nearest-neighbour top-down path.

    ``convs.0`` takes the coarsest trunk level (``backbone_channel_list`` is coarsest first).
    ``top_down_levels`` are the level indices (0 = finest) that add the 2x upsampled coarser
    level; the others use their lateral features alone.
    """

    def __init__(
        self,
        d_model: int,
        backbone_channel_list: Sequence[int],
        top_down_levels: Sequence[int] = (2, 3),
    ) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Sequential(OrderedDict(conv=nn.Conv2d(dim, d_model, kernel_size=1)))
            for dim in backbone_channel_list
        )
        self.top_down_levels = tuple(top_down_levels)

    def forward(self, xs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Trunk levels finest first -> neck levels finest first, each ``B x d_model x H x W``."""
        n = len(self.convs) - 1
        if len(xs) != n + 1:
            raise ValueError(f"expected {n + 1} feature levels, got {len(xs)}")
        out: list[torch.Tensor] = [xs[0]] * (n + 1)
        prev = None
        for i in range(n, -1, -1):
            lateral = self.convs[n - i](xs[i])
            if prev is not None and i in self.top_down_levels:
                up = F.interpolate(prev.float(), scale_factor=2.0, mode="nearest")
                prev = lateral + up
            else:
                prev = lateral
            out[i] = prev
        return out


class Sam2ImageEncoder(nn.Module):
    """Hiera trunk + FPN neck: ``B x 3 x S x S`` -> ``[B x C x S/4.., S/8.., S/16..]``."""

    def __init__(self, trunk: Hiera, neck: FpnNeck, scalp: int = 1, img_size: int = 1024) -> None:
        super().__init__()
        self.trunk = trunk
        self.neck = neck
        self.scalp = scalp
        self.img_size = img_size

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.neck(self.trunk(x))
        return feats[: len(feats) - self.scalp] if self.scalp else feats
