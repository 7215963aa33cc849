"""The high-level, Ultralytics-style entry point: ``SAM("sam_b.pt")``."""

from __future__ import annotations

import os

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

    # -- validation and training (samkit.val, samkit.train) ---------------------------------
    def val(
        self,
        data,
        prompt: str = "box",
        *,
        split: str = "val",
        image_dir: str | os.PathLike | None = None,
        **kwargs,
    ):
        """Per-instance mIoU on a YOLO (``data.yaml``) or COCO (``.json``) dataset with prompts
        simulated from the ground truth: ``"box"``, ``"point"`` or ``"points3"``.

        Prints a table (all / small / medium / large) and returns :class:`samkit.val.ValResults`.
        Keyword arguments go to :func:`samkit.val.validate` (``multimask``, ``max_images``, ...).
        """
        from .datasets import load_dataset
        from .val import SamBackend, validate

        dataset = load_dataset(data, split, image_dir=image_dir)
        self.model.eval()
        return validate(SamBackend(self.model), dataset, prompt, **kwargs)

    def train(self, data, **kwargs):
        """Fine-tune this model on ``data`` (see :func:`samkit.train.train_sam` for arguments:
        ``epochs``, ``batch``, ``lr``, ``freeze=("image_encoder",)``, ...).

        Afterwards the model holds the best epoch's weights (``results.best``); returns
        :class:`samkit.train.TrainResults`.
        """
        from .checkpoints import load_into, read_checkpoint
        from .train import train_sam

        results = train_sam(self.model, self.config, data, **kwargs)
        ckpt = read_checkpoint(results.best)
        load_into(self.model, ckpt)
        self.checkpoint = ckpt
        self.model.eval()
        return results
