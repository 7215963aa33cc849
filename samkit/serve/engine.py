"""The model side of ``samkit serve``: one SAM, its embedding cache, and a lock around them.

Only samkit's public API is used (``SAM``, ``model.predictor()``, ``Results``). The predictor
holds one image at a time; every request that uses it takes :attr:`Engine.lock`, sets its image
(free when it is already the current one, an embedding-cache hit when it was encoded before)
and decodes. The next image of the folder is encoded ahead of time on a background thread.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..predict.embedding import Embedding, EmbeddingCache
from ..predict.predictor import Predictor

ImageLoader = Callable[[], np.ndarray]


@dataclass
class Decoded:
    """Masks for one object: ``masks`` ``M x H x W`` bool, ``scores`` ``M`` predicted IoU,
    ``ms`` the decode time (milliseconds)."""

    masks: np.ndarray
    scores: np.ndarray
    ms: float


class LockedCache(EmbeddingCache):
    """An :class:`EmbeddingCache` safe to share between threads."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()

    def get(self, key: str) -> Embedding | None:
        with self._lock:
            return super().get(key)

    def put(self, key: str, emb: Embedding) -> None:
        with self._lock:
            super().put(key, emb)

    def clear(self) -> None:
        with self._lock:
            super().clear()


class Engine:
    """A :class:`~samkit.SAM` model serving one image at a time to many requests.

    Args:
        model: a loaded ``samkit.SAM``.
        max_images: decoded RGB images kept in memory (LRU).
    """

    def __init__(self, model: Any, max_images: int = 4) -> None:
        self.model = model
        # one embedding cache, shared by the serving predictor and the prefetching one
        self.cache = LockedCache(max_items=getattr(model.embedding_cache, "max_items", 16))
        self.predictor = Predictor(model, image_format="RGB", cache=self.cache)
        self._prefetcher = Predictor(model, image_format="RGB", cache=self.cache)
        self._futures: dict[str, Future] = {}
        self.lock = threading.Lock()
        self.current: str | None = None
        self.encoding: dict[str, float] = {}  # key -> start time
        self.encoded: dict[str, float] = {}  # key -> encode ms (first encode)
        self._images: OrderedDict[str, np.ndarray] = OrderedDict()
        self._max_images = max_images
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="samkit-prefetch")
        self._decoder_onnx: dict[str, bytes] = {}
        self._onnx_lock = threading.Lock()

    @property
    def image_size(self) -> int:
        """Side ``S`` of the model's square input (prompts go to the ``S``-frame in ONNX)."""
        return int(self.predictor.model.image_size)

    # -- images -------------------------------------------------------------------------------
    def rgb(self, key: str, load: ImageLoader) -> np.ndarray:
        """The ``H x W x 3`` RGB image ``key``, loaded with ``load`` on a cache miss."""
        with self.lock:
            img = self._images.get(key)
            if img is not None:
                self._images.move_to_end(key)
                return img
        img = load()
        with self.lock:
            self._images[key] = img
            while len(self._images) > self._max_images:
                self._images.popitem(last=False)
        return img

    def _set(self, key: str, load: ImageLoader) -> float:
        """Make ``key`` the predictor's image (call with the lock held); returns encode ms."""
        if self.current == key:
            return 0.0
        img = self._images.get(key)
        if img is None:
            img = load()
            self._images[key] = img
            while len(self._images) > self._max_images:
                self._images.popitem(last=False)
        self.encoding.setdefault(key, time.perf_counter())
        try:
            ms = self.predictor.set_rgb(img, path=key)
        finally:
            self.encoding.pop(key, None)
        self.current = key
        if key not in self.encoded:
            self.encoded[key] = ms
        return ms

    def encode(self, key: str, load: ImageLoader) -> float:
        """Encode image ``key`` now (a cache hit is free); returns the encode time in ms."""
        pending = self._futures.get(key)
        if pending is not None:  # being encoded ahead of time: wait for it, then a cache hit
            with contextlib.suppress(Exception):
                pending.result()
        with self.lock:
            return self._set(key, load)

    def prefetch(self, key: str, load: ImageLoader) -> None:
        """Encode ``key`` on a background thread into the embedding cache. It uses its own
        predictor, so prompts on the current image are not held up meanwhile."""
        if key in self.encoded or key in self._futures:
            return

        def work() -> None:
            self.encoding.setdefault(key, time.perf_counter())
            try:
                img = self.rgb(key, load)
                ms = self._prefetcher.set_rgb(img, path=key)
                self.encoded.setdefault(key, ms)
                self._prefetcher.reset_image()
            finally:
                self.encoding.pop(key, None)
                self._futures.pop(key, None)

        self._futures[key] = self._pool.submit(work)

    def status(self, key: str) -> dict[str, Any]:
        """``{"state": "ready" | "encoding" | "not_encoded", ...}`` of image ``key``."""
        if key in self.encoding:
            return {"state": "encoding", "seconds": time.perf_counter() - self.encoding[key]}
        if key in self.encoded:
            return {"state": "ready", "encode_ms": self.encoded[key]}
        return {"state": "not_encoded"}

    # -- prompts ------------------------------------------------------------------------------
    def decode(
        self,
        key: str,
        load: ImageLoader,
        points: list | None,
        labels: list | None,
        box: list | None,
        mask: np.ndarray | None,
        multimask: bool,
    ) -> Decoded:
        """Masks for one object's prompts (image pixels). Raises ``PromptError`` on bad ones."""
        kwargs: dict[str, Any] = {"multimask_output": multimask}
        if points:
            kwargs["points"] = [points]
            kwargs["labels"] = [labels if labels is not None else [1] * len(points)]
        if box is not None:
            kwargs["bboxes"] = [box]
        if mask is not None:
            kwargs["masks"] = mask[None]
        with self.lock:
            self._set(key, load)
            t0 = time.perf_counter()
            results = self.predictor(**kwargs)
            ms = (time.perf_counter() - t0) * 1e3
        return Decoded(results.masks, results.scores, ms)

    def everything(self, key: str, load: ImageLoader, points_stride: int) -> Decoded:
        """Segment everything (``points_stride`` points per side); masks largest first."""
        img = self.rgb(key, load)
        with self.lock:
            t0 = time.perf_counter()
            results = self.model(img, image_format="RGB", points_stride=points_stride)[0]
            ms = (time.perf_counter() - t0) * 1e3
        return Decoded(results.masks, results.scores, ms)

    def embedding_npy(self, key: str, load: ImageLoader) -> tuple[bytes, tuple[int, int]]:
        """The image embedding as float32 ``.npy`` bytes (``1 x C x h x w``) and ``(H, W)``."""
        with self.lock:
            self._set(key, load)
            feats = self.predictor.features.detach().float().cpu().numpy()
            size = tuple(int(v) for v in self.predictor.original_size)
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(feats, dtype=np.float32))
        return buf.getvalue(), size  # type: ignore[return-value]

    def decoder_onnx(self, mask_output: str = "all") -> bytes:
        """The prompt decoder as ONNX (Meta's interface). ``mask_output``: "all" (4 masks:
        token 0 + multimask 1-3), "single" (token 0) or "multi" (tokens 1-3); exported once."""
        with self._onnx_lock:
            if mask_output not in self._decoder_onnx:
                with tempfile.TemporaryDirectory(prefix="samkit-serve-") as tmp:
                    with self.lock:
                        written = self.model.export(
                            "onnx", tmp, encoder=False, name="decoder", mask_output=mask_output
                        )
                    self._decoder_onnx[mask_output] = Path(written["decoder"]).read_bytes()
            return self._decoder_onnx[mask_output]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def read_upload(data: bytes, max_pixels: int) -> np.ndarray:
    """Decode uploaded image bytes as ``H x W x 3`` RGB uint8 (``ImageError`` when unreadable or
    over ``max_pixels``)."""
    import warnings

    from PIL import Image

    from ..data.sources import load_image
    from ..errors import ImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            pil = Image.open(io.BytesIO(data))
            w, h = pil.size
    except Exception as exc:
        raise ImageError(f"uploaded file is not a readable image ({type(exc).__name__})") from None
    if w * h > max_pixels:
        raise ImageError(
            f"uploaded image is {w}x{h} = {w * h} pixels, over the cap of {max_pixels}"
        )
    return load_image(pil, "RGB", max_pixels=max_pixels)
