"""The model side of ``samkit serve``: one SAM, its embedding cache, and a lock around them.

Only samkit's public API is used (``SAM``, ``model.predictor()``, ``Results``). The predictor
holds one image at a time; every request that uses it takes :attr:`Engine.lock`, sets its image
(free when it is already the current one, an embedding-cache hit when it was encoded before)
and decodes. The next image of the folder is encoded ahead of time.

All torch work runs on one thread, :class:`ModelThread` (requests first, encoding ahead of time
when no request waits). The reason is OpenMP: libgomp lets a waiting worker spin briefly (samkit
sets ``GOMP_SPINCOUNT``), which saves a wake-up at each of a prompt's ~300 parallel regions, but
only while the process has no more OpenMP threads than cores; every thread that runs torch
brings its own team, so requests on the web server's thread pool had them sleep at every
region. Measured on 2 cores (MobileSAM, one click with 3 masks, 1280 x 720): 24 ms with all torch
work on one thread, 36-39 ms from a pool thread. Pass the model by name (``create_app("mobile_sam",
...)``) so that it is also loaded on that thread.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future
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


class ModelThread:
    """One thread that runs every call given to it: :meth:`call` (a request, waited for) before
    :meth:`submit` ``(background=True)`` work, which runs only when no request waits."""

    def __init__(self, name: str = "samkit-model") -> None:
        self._cv = threading.Condition()
        self._urgent: deque = deque()
        self._background: deque = deque()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], Any], background: bool = False) -> Future:
        fut: Future = Future()
        with self._cv:
            if self._closed:
                raise RuntimeError("the model thread is closed")
            (self._background if background else self._urgent).append((fut, fn))
            self._cv.notify()
        return fut

    def call(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` on the model thread (inline when called from it), its result or exception."""
        if threading.current_thread() is self._thread:
            return fn()
        return self.submit(fn).result()

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not (self._urgent or self._background or self._closed):
                    self._cv.wait()
                if not (self._urgent or self._background):
                    return  # closed and drained
                fut, fn = (self._urgent or self._background).popleft()
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except BaseException as exc:  # handed to the waiting request
                fut.set_exception(exc)

    def close(self) -> None:
        """Cancel background work not started; requests already queued still run."""
        with self._cv:
            self._closed = True
            while self._background:
                self._background.popleft()[0].cancel()
            self._cv.notify()


class Engine:
    """A :class:`~samkit.SAM` model serving one image at a time to many requests.

    Args:
        model: a loaded ``samkit.SAM``, or a callable returning one (called on the model
            thread: the fastest prompts, see the module docstring).
        max_images: decoded RGB images kept in memory (LRU).
    """

    def __init__(self, model: Any, max_images: int = 4) -> None:
        self._worker = ModelThread()
        if not hasattr(model, "predictor"):  # a loader: load on the model thread
            try:
                model = self._worker.call(model)
            except BaseException:
                self._worker.close()
                raise
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

        return self._locked(lambda: self._set(key, load))

    def prefetch(self, key: str, load: ImageLoader) -> None:
        """Encode ``key`` into the embedding cache when the model thread has no request to
        run. It uses its own predictor, so the current image stays set."""
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

        with contextlib.suppress(RuntimeError):  # (closed: nothing to prefetch for)
            self._futures[key] = self._worker.submit(work, background=True)

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

        def work() -> Decoded:
            self._set(key, load)
            t0 = time.perf_counter()
            results = self.predictor(**kwargs)
            return Decoded(results.masks, results.scores, (time.perf_counter() - t0) * 1e3)

        return self._locked(work)

    def everything(self, key: str, load: ImageLoader, points_stride: int) -> Decoded:
        """Segment everything (``points_stride`` points per side); masks largest first."""
        img = self.rgb(key, load)

        def work() -> Decoded:
            t0 = time.perf_counter()
            results = self.model(img, image_format="RGB", points_stride=points_stride)[0]
            return Decoded(results.masks, results.scores, (time.perf_counter() - t0) * 1e3)

        return self._locked(work)

    def embedding_npy(self, key: str, load: ImageLoader) -> tuple[bytes, tuple[int, int]]:
        """The image embedding as float32 ``.npy`` bytes (``1 x C x h x w``) and ``(H, W)``."""

        def work() -> tuple[np.ndarray, tuple[int, ...]]:
            self._set(key, load)
            feats = self.predictor.features.detach().float().cpu().numpy()
            return feats, tuple(int(v) for v in self.predictor.original_size)

        feats, size = self._locked(work)
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(feats, dtype=np.float32))
        return buf.getvalue(), size  # type: ignore[return-value]

    def decoder_onnx(self, mask_output: str = "all") -> bytes:
        """The prompt decoder as ONNX (Meta's interface). ``mask_output``: "all" (4 masks:
        token 0 + multimask 1-3), "single" (token 0) or "multi" (tokens 1-3); exported once."""
        with self._onnx_lock:
            if mask_output not in self._decoder_onnx:
                with tempfile.TemporaryDirectory(prefix="samkit-serve-") as tmp:
                    written = self._locked(
                        lambda: self.model.export(
                            "onnx", tmp, encoder=False, name="decoder", mask_output=mask_output
                        )
                    )
                    self._decoder_onnx[mask_output] = Path(written["decoder"]).read_bytes()
            return self._decoder_onnx[mask_output]

    def _locked(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` on the model thread with :attr:`lock` held (never wait for the model thread
        while holding the lock: its look-ahead work takes the lock too)."""

        def locked() -> Any:
            with self.lock:
                return fn()

        return self._worker.call(locked)

    def close(self) -> None:
        self._worker.close()


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
