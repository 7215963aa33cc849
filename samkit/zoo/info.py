"""Model summaries: layers, parameters per part, and image-encoder FLOPs counted on meta tensors."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import lru_cache

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .registry import EncoderConfig

PARTS = ("image_encoder", "prompt_encoder", "mask_decoder")


@dataclass
class ModelInfo:
    """What :meth:`samkit.SAM.info` reports."""

    name: str
    architecture: str
    layers: int
    parameters: int
    parameters_per_part: dict[str, int] = field(default_factory=dict)
    encoder_gflops: float = 0.0
    input_size: int = 1024
    checkpoint: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        rows = [
            ("model", self.name),
            ("architecture", self.architecture),
            ("checkpoint", self.checkpoint or "-"),
            ("layers", f"{self.layers:,}"),
            ("parameters", f"{self.parameters:,}"),
        ]
        rows += [(f"  {part}", f"{n:,}") for part, n in self.parameters_per_part.items()]
        rows.append(
            (f"encoder GFLOPs @{self.input_size}x{self.input_size}", f"{self.encoder_gflops:,.1f}")
        )
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def count_layers(module: nn.Module) -> int:
    """Number of modules that hold parameters of their own (convs, linears, norms, embeddings)."""
    return sum(1 for m in module.modules() if any(True for _ in m.parameters(recurse=False)))


@lru_cache(maxsize=16)
def encoder_flops(config: EncoderConfig) -> int:
    """FLOPs (multiply and add counted separately) of one image-encoder forward pass.

    Counted with ``torch.utils.flop_counter`` on meta tensors, so no real compute is done.
    """
    with torch.device("meta"):
        encoder = config.build()
        x = torch.empty(1, 3, config.img_size, config.img_size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        encoder(x)
    return int(counter.get_total_flops())


def model_info(model: nn.Module, config, name: str, checkpoint: str | None = None) -> ModelInfo:
    per_part = {part: sum(p.numel() for p in getattr(model, part).parameters()) for part in PARTS}
    return ModelInfo(
        name=name,
        architecture=config.describe(),
        layers=count_layers(model),
        parameters=sum(per_part.values()),
        parameters_per_part=per_part,
        encoder_gflops=encoder_flops(config.encoder) / 1e9,
        input_size=config.encoder.img_size,
        checkpoint=checkpoint,
    )
