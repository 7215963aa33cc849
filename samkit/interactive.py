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

from .decoding import DEFAULT_CHUNK_SIZE, decode_prompts
from .device import resolve_device
from .embeddings import Embedding, EmbeddingCache, attach, encode_images, image_key
from .errors import PromptError
from .models import Sam
from .precision import autocast, dtype_of, resolve_precision
from .predictor import SamPredictor
from .prompts import Prompts, fit_prompts, parse_prompts
from .results import Results
from .sources import load_image


class Predictor:
    """Prompted segmentation of one image at a time, on top of :class:`SamPredictor`.

    Args:
        model: a :class:`~samkit.SAM` or a :class:`~samkit.models.Sam` module.
        device: "cpu", "cuda", "cuda:N", "mps" or None (keep the model where it is).
        precision: "fp32", "bf16" or "auto" (bf16 on CPUs with native bf16, else fp32).
        image_format: channel order of NumPy images ("BGR" default, or "RGB").
        cache: an :class:`EmbeddingCache` to share (a SAM model passes its own).
    """

    def __init__(
        self,
        model: Any,
        *,
        device: str | torch.device | None = None,
        precision: str | None = None,
        image_format: str = "BGR",
        cache: EmbeddingCache | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        sam = model if isinstance(model, Sam) else model.model
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
        self.sam_predictor = SamPredictor(sam)
        self.dtype = dtype_of(resolve_precision(precision, sam.device))
        self.image_format = image_format
        self.cache = cache
        self.chunk_size = chunk_size
        self.reset_image()

    # -- image --------------------------------------------------------------------------------
    def set_image(self, image: Any, image_format: str | None = None) -> None:
        """Encode ``image`` (path, URL, ``H x W x 3`` NumPy array, PIL image); cached by content."""
        rgb = load_image(image, image_format or self.image_format)
        path = str(image) if isinstance(image, str) or hasattr(image, "__fspath__") else "image0"
        self.set_rgb(rgb, path)

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
        attach(self.sam_predictor, emb)
        self.image_rgb, self.path, self.frame = image_rgb, path, frame
        self._image_bgr: np.ndarray | None = None  # made on first use, shared by all calls

    def reset_image(self) -> None:
        """Forget the current image (its embedding stays in the cache)."""
        self.sam_predictor.reset_image()
        self.image_rgb: np.ndarray | None = None
        self._image_bgr = None
        self.path = "image0"
        self.frame: int | None = None

    @property
    def image_bgr(self) -> np.ndarray:
        """The current image, ``H x W x 3`` uint8 BGR (what ``Results.orig_img`` holds)."""
        if self._image_bgr is None:
            self._image_bgr = np.ascontiguousarray(self.image_rgb[..., ::-1])
        return self._image_bgr

    @property
    def is_image_set(self) -> bool:
        return self.sam_predictor.is_image_set

    @property
    def features(self) -> torch.Tensor:
        return self.sam_predictor.get_image_embedding()

    # -- prompts ------------------------------------------------------------------------------
    def __call__(
        self,
        bboxes: Any = None,
        points: Any = None,
        labels: Any = None,
        masks: Any = None,
        multimask_output: bool = False,
    ) -> Results:
        """Masks for the prompts (original-image pixels; see :func:`samkit.prompts.parse_prompts`).

        With ``multimask_output=True`` each prompt gives 3 masks (``Results.prompt_index``
        says which prompt; ``Results.best()`` keeps the best one per prompt).
        """
        prompts = parse_prompts(bboxes, points, labels, masks)
        if prompts.empty:
            raise PromptError(
                "no prompt given: pass bboxes=, points= or masks= (for segment-everything mode "
                "call the model on the image without prompts)"
            )
        return self.predict_prompts(prompts, multimask_output)

    def predict_prompts(self, prompts: Prompts, multimask_output: bool = False) -> Results:
        """Decode parsed :class:`Prompts` (checked against the current image) into Results."""
        if not self.is_image_set:
            raise PromptError("no image is set: call set_image(image) before prompting")
        h, w = self.sam_predictor.original_size
        return self.decode_fitted(fit_prompts(prompts, h, w, self.mask_size), multimask_output)

    @property
    def mask_size(self) -> int:
        """Side of the low-res logits (256 for SAM's models)."""
        return int(self.model.prompt_encoder.mask_input_size[0])

    def decode_fitted(self, fitted: Prompts, multimask_output: bool = False) -> Results:
        """Decode prompts already checked against the current image by ``fit_prompts``."""
        t0 = time.perf_counter()
        with autocast(self.model.device, self.dtype):
            out = decode_prompts(self.sam_predictor, fitted, multimask_output, self.chunk_size)
        decode_ms = (time.perf_counter() - t0) * 1e3
        return Results(
            orig_img=self.image_bgr,
            path=self.path,
            masks=out.masks,
            scores=out.scores,
            boxes=out.boxes,
            prompt_index=out.prompt_index,
            low_res_logits=out.low_res_logits,
            prompt_points=fitted.points,
            prompt_labels=fitted.labels,
            prompt_boxes=fitted.boxes,
            frame=self.frame,
            speed={"decode": decode_ms},
        )

    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Meta's ``SamPredictor.predict`` on the cached embedding (one object; see there)."""
        with autocast(self.model.device, self.dtype):
            return self.sam_predictor.predict(
                point_coords, point_labels, box, mask_input, multimask_output, return_logits
            )
