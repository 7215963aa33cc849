"""The high-level predictor: ``set_image`` once, then many prompt calls returning Results.

>>> predictor = SAM("sam_b.pt").predictor()          # or samkit.Predictor(model)
>>> predictor.set_image("photo.jpg")                 # path, URL, NumPy (BGR) or PIL image
>>> r = predictor(bboxes=[[100, 80, 400, 300]])      # Results
>>> r = predictor(points=[[250, 190]], labels=[1])
>>> masks, scores, logits = predictor.predict(box=np.array([100, 80, 400, 300]))  # Meta style

NumPy arrays are BGR (OpenCV's order, like Ultralytics) unless ``image_format="RGB"``; PIL
images are RGB. Embeddings are cached by image content, so setting the same image again is free.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from ..models import Sam
from ..models.sam2 import Sam2
from ..results import Results
from .base import ResultsPredictMixin
from .decode import DEFAULT_CHUNK_SIZE, decode_prompts
from .device import resolve_device
from .embedding import Embedding, EmbeddingCache, encode_images, image_key
from .precision import autocast, resolve_parts
from .prompt_checks import ObjectPrompt
from .prompts import Prompts
from .sam2_predictor import Sam2Predictor
from .sam_predictor import SamPredictor
from .threads import cpu_policy


class Predictor(ResultsPredictMixin):
    """Prompted segmentation of one image at a time, on top of :class:`SamPredictor`.

    Args:
        model: a :class:`~samkit.SAM` or a :class:`~samkit.models.Sam` module.
        device: "cpu", "cuda", "cuda:N", "mps" or None (keep the model where it is).
        precision: "fp32", "bf16" or "auto" (bf16 on CPUs with native bf16, else fp32).
        image_format: channel order of NumPy images ("BGR" default, or "RGB").
        cache: an :class:`EmbeddingCache` to share (a SAM model passes its own).
        chunk_size: prompts per decoder pass.
        defer_low_res: with the fast decoder, the output upscaling covers only the image,
            not its padding (-3 ms per box at 1280 x 720), and ``Results.low_res_logits`` are
            completed when first read: from the padding's image tokens that the call kept (up
            to ``decode.REST_BYTES`` per call), else by decoding the prompts again, for which
            the Results keep a reference to the image features (4 MB for SAM's models).
    """

    no_prompt_hint = " (for segment-everything mode call the model on the image without prompts)"

    def __init__(
        self,
        model: Any,
        *,
        device: str | torch.device | None = None,
        precision: str | None = None,
        image_format: str = "BGR",
        cache: EmbeddingCache | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        defer_low_res: bool = True,
    ) -> None:
        sam = model if isinstance(model, (Sam, Sam2)) else model.model
        if cache is None:
            cache = getattr(model, "embedding_cache", None)
        if cache is None:
            cache = EmbeddingCache()
        if precision is None:
            precision = getattr(model, "precision", "auto")
        sam.eval()
        if device is not None:
            sam.to(resolve_device(device))
        self.model = sam
        self.sam_predictor = Sam2Predictor(sam) if isinstance(sam, Sam2) else SamPredictor(sam)
        self.precision = precision  # as requested (segment-everything resolves its own parts)
        self.parts = resolve_parts(precision, sam.device, sam)
        self.dtype = self.parts.dtype("encoder")
        self.decoder_dtype = self.parts.dtype("prompt_decoder")
        self.image_format = image_format
        self.cache = cache
        self.chunk_size = chunk_size
        self.defer_low_res = defer_low_res
        self.reset_image()

    # -- image --------------------------------------------------------------------------------
    def set_rgb(
        self, image_rgb: np.ndarray, path: str = "image0", frame: int | None = None
    ) -> float:
        """Use an ``H x W x 3`` RGB uint8 image; returns the encoding time in ms (0 if cached)."""
        key = self.cache_key(image_rgb)
        emb = self.cache.get(key)
        t0 = time.perf_counter()
        if emb is None:
            emb = encode_images(self.model, [image_rgb], self.dtype)[0]
            self.cache.put(key, emb)
        encode_ms = (time.perf_counter() - t0) * 1e3
        self.set_embedding(emb, image_rgb, path, frame)
        return encode_ms

    def cache_key(self, image_rgb: np.ndarray) -> str:
        """Content key of an RGB image for this model, device and precision."""
        return image_key(image_rgb, id(self.model), str(self.model.device), str(self.dtype))

    def set_embedding(
        self, emb: Embedding, image_rgb: np.ndarray, path: str = "image0", frame=None
    ) -> None:
        """Use an already computed embedding of ``image_rgb``."""
        self.sam_predictor.set_embedding(emb)
        self._set_source(image_rgb, path, frame)

    def reset_image(self) -> None:
        """Forget the current image (its embedding stays in the cache)."""
        self.sam_predictor.reset_image()
        self._set_source(None)

    @property
    def is_image_set(self) -> bool:
        return self.sam_predictor.is_image_set

    @property
    def features(self) -> torch.Tensor:
        return self.sam_predictor.get_image_embedding()

    @property
    def original_size(self) -> tuple[int, int] | None:
        """``(H, W)`` of the current image."""
        return self.sam_predictor.original_size

    @property
    def mask_input_size(self) -> tuple[int, int]:
        """``(h, w)`` of the low-res mask logits (256 x 256 for SAM's models)."""
        return self.sam_predictor.mask_input_size

    # -- prompts ------------------------------------------------------------------------------
    # __call__(bboxes=, points=, labels=, masks=) and predict_prompts(): ResultsPredictMixin
    @property
    def mask_size(self) -> int:
        """Side of the low-res logits (256 for SAM's models)."""
        return int(self.mask_input_size[0])

    def decode_fitted(self, fitted: Prompts, multimask_output: bool = False) -> Results:
        """Decode prompts already checked against the current image by ``fit_prompts``."""
        t0 = time.perf_counter()
        dev = self.model.device
        with cpu_policy("prompts", dev), autocast(dev, self.decoder_dtype):
            out = decode_prompts(
                self.sam_predictor, fitted, multimask_output, self.chunk_size, self.defer_low_res
            )
        return self._results(
            fitted,
            (time.perf_counter() - t0) * 1e3,
            masks=out.masks,
            scores=out.scores,
            boxes=out.boxes,
            prompt_index=out.prompt_index,
            low_res_logits=out.low_res_logits,
        )

    # predict(point_coords, point_labels, box, mask_input, ...): Meta's, from MetaPredictMixin
    def _predict_checked(
        self, prompt: ObjectPrompt, multimask_output: bool, return_logits: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with autocast(self.model.device, self.decoder_dtype):
            return self.sam_predictor._predict_checked(prompt, multimask_output, return_logits)
