"""Small building blocks shared by the SAM modules."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_to_tokens(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` as channels-last tokens ``B x H x W x C``, contiguous.

    The convolution runs on a channels-last input, so its output is channels-last in memory and
    the permute to ``B x H x W x C`` is a contiguous view. The plain ``conv(x).permute(...)``
    leaves tokens whose channels are ``H * W`` apart: every later elementwise op and layer norm
    then gathers across the whole map (in Hiera-T's first block, 256 x 256 x 96 tokens, a
    profile showed layer-norm copies and residual adds over it). ``benchmarks/bench_split_decode.py``, two runs: ViT-B encoder
    in bf16 3.65-3.77 -> 3.41-3.59 s, Hiera-T in fp32 1.85 -> 1.79-1.83 s. Same values up to the convolution's
    rounding."""
    return conv(x.contiguous(memory_format=torch.channels_last)).permute(0, 2, 3, 1)


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel dimension of a ``B x C x H x W`` tensor.

    Runs the fused ``layer_norm`` kernel on the channels-last view (no copy when the input is
    channels-last); half-precision inputs are normalized in fp32 and the result stays fp32.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype in (torch.bfloat16, torch.float16):
            x = x.float()
        weight, bias = self.weight.to(x.dtype), self.bias.to(x.dtype)
        y = F.layer_norm(x.permute(0, 2, 3, 1), weight.shape, weight, bias, self.eps)
        return y.permute(0, 3, 1, 2)


class MLPBlock(nn.Module):
    """Two linear layers with an activation in between (``lin1`` -> act -> ``lin2``)."""

    def __init__(self, embedding_dim: int, mlp_dim: int, act: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.lin1 = nn.Linear(embedding_dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, embedding_dim)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(x)))


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them (the decoder's hypernetwork/IoU head)."""

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        output_dim: int,
        num_layers: int,
        sigmoid_output: bool = False,
    ) -> None:
        super().__init__()
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims_in, dims_out))
        self.sigmoid_output = sigmoid_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = torch.relu(x)
        return torch.sigmoid(x) if self.sigmoid_output else x


class PromptableModel(nn.Module):
    """What SAM's and SAM 2's composite models share: RGB input, masks at logit 0, the device
    (that of the ``pixel_mean`` buffer the subclass registers) and the square input side."""

    mask_threshold: float = 0.0
    image_format: str = "RGB"
    image_encoder: nn.Module
    pixel_mean: torch.Tensor

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def image_size(self) -> int:
        """Side of the square model input (1024 for the official models)."""
        return int(self.image_encoder.img_size)


def pad_with(x: torch.Tensor, window: int, value: torch.Tensor | None) -> torch.Tensor:
    """Pad ``B x H x W x C`` bottom/right to multiples of ``window`` with ``value`` (``C``; None = 0)."""
    b, h, w, c = x.shape
    # (positive operands only: ONNX integer division truncates instead of flooring)
    hp, wp = h + (window - h % window) % window, w + (window - w % window) % window
    fill = x.new_zeros(c) if value is None else value.to(x.dtype)
    if wp > w:
        x = torch.cat([x, fill.expand(b, h, wp - w, c)], dim=2)
    if hp > h:
        x = torch.cat([x, fill.expand(b, hp - h, wp, c)], dim=1)
    return x
