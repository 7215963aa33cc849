"""The high-level, Ultralytics-style entry point: ``SAM("sam_b.pt")``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .errors import PromptError
from .models import Sam
from .pipeline import ResultsList, ResultsStream, check_everything_params, run
from .predict.device import resolve_device
from .predict.embedding import EmbeddingCache
from .predict.predictor import Predictor
from .predict.prompts import parse_prompts
from .zoo.checkpoints import LoadedCheckpoint, build_sam
from .zoo.info import ModelInfo, model_info
from .zoo.registry import ModelConfig, match_variant
from .zoo.seeded import seeded_state_dict

# keyword arguments of SAM.__call__ besides the prompts (the rest go to segment-everything)
_CALL_OPTIONS = ("batch", "vid_stride", "image_format", "max_pixels", "strict", "chunk_size")


class SAM:
    """A SAM model loaded from a checkpoint file, an official file name or a variant name.

    ``SAM("sam_b.pt")``, ``SAM("/path/to/sam_vit_h_4b8939.pth")``, ``SAM("mobile_sam")``. Files
    not found locally under an official name are downloaded into the cache directory
    (``cache_dir=`` or ``$SAMKIT_CACHE_DIR``). The architecture is read from the weights.

    ``model(source, bboxes=..., points=..., labels=..., masks=...)`` segments images (see
    :meth:`__call__`); ``model.predictor()`` encodes once for many prompt calls. ``precision``
    is "fp32", "bf16" or "auto" (bf16 on CPUs with native bf16 support, fp32 elsewhere).
    Image embeddings are cached by content (``cache_size`` images, LRU).
    """

    def __init__(
        self,
        model: str | os.PathLike = "sam_b.pt",
        *,
        device: str | torch.device | None = None,
        cache_dir: str | os.PathLike | None = None,
        download: bool = True,
        precision: str = "auto",
        cache_size: int = 16,
    ) -> None:
        sam, ckpt = build_sam(model, cache=cache_dir, download=download)
        self._setup(sam, ckpt.config, ckpt, device, precision, cache_size)

    @classmethod
    def from_config(
        cls,
        config: ModelConfig,
        *,
        seeded: bool = False,
        device: str | torch.device | None = None,
        precision: str = "auto",
        cache_size: int = 16,
    ) -> SAM:
        """A model of architecture ``config`` with default init, or seeded weights (offline tests)."""
        self = cls.__new__(cls)
        sam = config.build()
        if seeded:
            sam.load_state_dict(seeded_state_dict(sam), strict=True)
        self._setup(sam, config, None, device, precision, cache_size)
        return self

    @classmethod
    def from_module(
        cls, sam: Sam, config: ModelConfig, *, device=None, precision="auto", cache_size=16
    ) -> SAM:
        """Wrap an already built :class:`~samkit.models.Sam`."""
        self = cls.__new__(cls)
        self._setup(sam, config, None, device, precision, cache_size)
        return self

    def _setup(
        self,
        sam: Sam,
        config: ModelConfig,
        ckpt: LoadedCheckpoint | None,
        device,
        precision: str = "auto",
        cache_size: int = 16,
    ) -> None:
        self.precision = precision
        self.embedding_cache = EmbeddingCache(max_items=cache_size)
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
        """Move the model (a clear error for an unavailable device); a move drops the cached
        embeddings."""
        if isinstance(device, (str, int, torch.device)):
            device = resolve_device(device)
            if device == self.device:
                return self
        self.embedding_cache.clear()
        self.model.to(device)
        return self

    def predictor(
        self, *, device=None, precision: str | None = None, image_format: str = "BGR"
    ) -> Predictor:
        """A high-level :class:`~samkit.interactive.Predictor`: ``set_image`` once, prompt often."""
        if device is not None:
            self.to(device)
        return Predictor(self, precision=precision or self.precision, image_format=image_format)

    def __call__(
        self,
        source: Any,
        bboxes: Any = None,
        points: Any = None,
        labels: Any = None,
        masks: Any = None,
        multimask_output: bool = False,
        stream: bool = False,
        *,
        device: str | torch.device | None = None,
        precision: str | None = None,
        **kwargs: Any,
    ):
        """Segment every image of ``source``; returns a list of :class:`~samkit.results.Results`
        (with ``.errors`` listing skipped images), or an iterator with ``stream=True``.

        Prompts, in pixels of the original image (the same prompts for every image):
        ``points`` ``(N, 2)`` + ``labels`` ``(N,)``: N objects of one point each; ``points``
        ``(N, K, 2)`` + ``labels`` ``(N, K)``: N objects of K points (1 foreground, 0
        background, -1 padding; labels default to 1); ``bboxes`` ``(N, 4)`` XYXY (clipped to
        the image), optionally with ``points`` ``(N, K, 2)``; ``masks`` ``(N, H, W)`` binary or
        ``(N, 256, 256)`` low-res logits of an earlier call. No prompt at all: segment
        everything (``samkit.everything``; its options, e.g. ``points_stride=``, pass through).

        ``source``: path, folder, glob, URL, list, ``pathlib.Path``, NumPy array (BGR unless
        ``image_format="RGB"``), PIL image or video file (``vid_stride=``). Options:
        ``batch`` (images per encoder pass), ``device``, ``precision``, ``max_pixels``
        (decompression-bomb limit), ``strict`` (raise on a bad image instead of skipping it),
        ``chunk_size`` (prompts per decoder pass).
        """
        options = {k: kwargs.pop(k) for k in _CALL_OPTIONS if k in kwargs}
        prompts = parse_prompts(bboxes, points, labels, masks)
        if kwargs and not prompts.empty:
            raise PromptError(
                f"unknown argument(s) {', '.join(sorted(kwargs))}; segment-everything options "
                "are only used without prompts"
            )
        if prompts.empty:
            check_everything_params(kwargs)
        if device is not None:
            self.to(device)
        predictor = Predictor(
            self,
            precision=precision or self.precision,
            image_format=options.pop("image_format", "BGR"),
            chunk_size=options.pop("chunk_size", 64),
            defer_low_res=False,  # these Results outlive their image's features
        )

        def make(errors):
            return run(
                predictor,
                source,
                prompts,
                errors,
                multimask_output=multimask_output,
                everything=kwargs,
                **options,
            )

        if stream:
            return ResultsStream(make)
        out = ResultsList()
        out.errors = []
        out.extend(make(out.errors))
        return out

    def predict(self, source: Any, *args: Any, **kwargs: Any):
        """Same as calling the model: ``model.predict(source, bboxes=..., ...)``."""
        return self(source, *args, **kwargs)

    def clear_cache(self) -> None:
        """Drop all cached image embeddings (e.g. after changing the weights in place)."""
        self.embedding_cache.clear()

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
        from .data.datasets import load_dataset
        from .train.val import SamBackend, validate

        dataset = load_dataset(data, split, image_dir=image_dir)
        self.model.eval()
        return validate(SamBackend(self.model), dataset, prompt, **kwargs)

    def train(self, data, **kwargs):
        """Fine-tune this model on ``data`` (see :func:`samkit.train.train_sam` for arguments:
        ``epochs``, ``batch``, ``lr``, ``freeze=("image_encoder",)``, ...).

        Afterwards the model holds the best epoch's weights (``results.best``); returns
        :class:`samkit.train.TrainResults`.
        """
        from .train.loop import train_sam
        from .zoo.checkpoints import load_into, read_checkpoint

        results = train_sam(self.model, self.config, data, **kwargs)
        ckpt = read_checkpoint(results.best)
        load_into(self.model, ckpt)
        self.checkpoint = ckpt
        self.model.eval()
        return results
