"""The high-level, Ultralytics-style entry point: ``SAM("sam_b.pt")``."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .checkpoints import LoadedCheckpoint, build_sam
from .info import ModelInfo, model_info
from .models import Sam
from .registry import ModelConfig, match_variant
from .seeded import seeded_state_dict


class SAM:
    """A SAM model loaded from a checkpoint file, an official file name or a variant name.

    ``SAM("sam_b.pt")``, ``SAM("/path/to/sam_vit_h_4b8939.pth")``, ``SAM("mobile_sam")``. Files
    not found locally under an official name are downloaded into the cache directory
    (``cache_dir=`` or ``$SAMKIT_CACHE_DIR``). The architecture is read from the weights.
    """

    def __init__(
        self,
        model: str | os.PathLike = "sam_b.pt",
        *,
        device: str | torch.device | None = None,
        cache_dir: str | os.PathLike | None = None,
        download: bool = True,
    ) -> None:
        sam, ckpt = build_sam(model, cache=cache_dir, download=download)
        self._setup(sam, ckpt.config, ckpt, device)

    @classmethod
    def from_config(
        cls, config: ModelConfig, *, seeded: bool = False, device: str | torch.device | None = None
    ) -> SAM:
        """A model of architecture ``config`` with default init, or seeded weights (offline tests)."""
        self = cls.__new__(cls)
        sam = config.build()
        if seeded:
            sam.load_state_dict(seeded_state_dict(sam), strict=True)
        self._setup(sam, config, None, device)
        return self

    @classmethod
    def from_module(cls, sam: Sam, config: ModelConfig, *, device=None) -> SAM:
        """Wrap an already built :class:`~samkit.models.Sam`."""
        self = cls.__new__(cls)
        self._setup(sam, config, None, device)
        return self

    def _setup(self, sam: Sam, config: ModelConfig, ckpt: LoadedCheckpoint | None, device) -> None:
        self.model = sam.eval()
        self.config = config
        self.checkpoint = ckpt
        variant = match_variant(config)
        self.variant = variant
        self.name = variant.name if variant else "custom"
        if device is not None:
            self.to(device)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def to(self, device: str | torch.device) -> SAM:
        self.model.to(device)
        return self

    def info(self, verbose: bool = True) -> ModelInfo:
        """Layers, parameters (total and per part) and encoder GFLOPs; printed as a table."""
        ckpt = str(self.checkpoint.path) if self.checkpoint else None
        info = model_info(self.model, self.config, self.name, ckpt)
        if verbose:
            print(info.table())
        return info

    def __repr__(self) -> str:
        return f"SAM({self.name}: {self.config.describe()})"

    def export(
        self, format: str = "onnx", output_dir: str | os.PathLike = ".", **options
    ) -> dict[str, Path]:
        """Export to ``format`` (``"onnx"``: image encoder + prompt decoder pair).

        Options as :func:`samkit.export.export_onnx` (``opset``, ``mask_output``, ``quantize``,
        ``name``, ...). Returns the written paths (``encoder``, ``decoder``, ``metadata``, ...).
        """
        from .export import export

        return export(self, format, output_dir, **options)
