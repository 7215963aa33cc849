"""What the torch and onnxruntime predictors share: the prompt API, on top of a few hooks.

Torch-free (the onnxruntime predictor builds on it where torch is not installed).

- :class:`MetaPredictMixin`: the current image's embedding and sizes, and Meta's
  ``predict(point_coords, point_labels, box, mask_input, ...)`` with the checks of
  :mod:`samkit.predict.prompt_checks`; a predictor implements :meth:`_predict_checked`.
- :class:`ModelPredictMixin`: what the torch predictors (SAM v1's and SAM 2's) read from the
  model module they hold (device, mask size), embeddings made elsewhere, image batch checks.
- :class:`ResultsPredictMixin`: ``set_image``, ``predictor(bboxes=, points=, labels=, masks=)``
  and :meth:`predict_prompts` returning :class:`~samkit.results.Results`; a predictor implements
  ``set_rgb`` and ``decode_fitted``.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..data.sources import load_image
from ..errors import ImageError, PromptError
from ..results import Results
from .prompt_checks import ObjectPrompt, check_image, check_prompt
from .prompts import Prompts, fit_prompts, parse_prompts

if TYPE_CHECKING:
    import torch


class MetaPredictMixin:
    """Meta's ``SamPredictor.predict`` for a predictor with an image set.

    Holds the current image as ``features`` (``1 x C x h x w`` embedding), ``original_size``
    ``(H, W)``, ``input_size`` (``(h, w)`` after the long-side resize) and ``is_image_set``.
    The predictor provides ``mask_input_size`` (``h, w`` of the low-res logits) and
    :meth:`_predict_checked`.
    """

    is_image_set: bool
    original_size: tuple[int, int] | None
    input_size: tuple[int, int] | None
    mask_input_size: tuple[int, int]

    def reset_image(self) -> None:
        """Forget the current image and its embedding."""
        self._hold_embedding(None, None, None)

    def _hold_embedding(
        self,
        features: Any,
        original_size: tuple[int, int] | None,
        input_size: tuple[int, int] | None,
        high_res_feats: Any = None,
    ) -> None:
        """Make ``features`` of an ``original_size`` image the current one (None: no image);
        ``high_res_feats``: the extra maps of encoders that have them (SAM 2), else None."""
        self.features = features
        self.high_res_feats = high_res_feats
        self.original_size = original_size
        self.input_size = input_size
        self.is_image_set = features is not None

    def get_image_embedding(self) -> Any:
        """The cached embedding, ``1 x C x h x w``."""
        self._require_image()
        return self.features

    def _require_image(self) -> None:
        if not self.is_image_set:
            raise PromptError("no image is set: call set_image(image) before prompting")

    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for one object from prompts in original-image pixels.

        Args:
            point_coords: ``N x 2`` (x, y) points. point_labels: ``N`` (1 fg, 0 bg).
            box: ``4`` XYXY box. mask_input: ``1 x 256 x 256`` low-res logits of an earlier call.
            multimask_output: 3 masks (True) or 1.
            return_logits: return the mask logits (float32) instead of bool masks.
        Returns:
            ``(masks C x H x W bool (float32 logits if return_logits), iou C,
            low_res_logits C x 256 x 256)`` with C = 3 when ``multimask_output`` else 1.
        Raises:
            PromptError: no image is set, or a prompt is malformed (see :mod:`samkit.predict.prompt_checks`).
        """
        self._require_image()
        prompt = check_prompt(point_coords, point_labels, box, mask_input, self.mask_input_size)
        return self._predict_checked(prompt, multimask_output, return_logits)

    def _predict_checked(
        self, prompt: ObjectPrompt, multimask_output: bool, return_logits: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`predict` for prompts already checked against the current image."""
        raise NotImplementedError


class ModelPredictMixin(MetaPredictMixin):
    """:class:`MetaPredictMixin` for a predictor holding a samkit model module as ``self.model``
    (:class:`~samkit.models.Sam` or :class:`~samkit.models.Sam2`).

    Torch-free itself (it only calls methods of the tensors it is given); the onnxruntime
    predictors do not use it and set ``mask_input_size`` as a plain attribute instead.
    """

    model: Any

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def transform_sizes(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """``(original_size, input_size)`` of the current image (input: after the resize)."""
        self._require_image()
        return self.original_size, self.input_size

    @property
    def mask_input_size(self) -> tuple[int, int]:
        """``(h, w)`` of the low-res mask logits (``mask_input`` and ``low_res_logits``)."""
        return self.model.prompt_encoder.mask_input_size

    def set_embedding(self, embedding: Any) -> None:
        """Make an :class:`~samkit.predict.embedding.Embedding` (from ``encode_images`` or the
        cache) the current image. Anything with ``features``, ``original_size`` and
        ``input_size`` (and optionally ``high_res_feats``) will do."""
        self.reset_image()
        high_res = getattr(embedding, "high_res_feats", None)
        if high_res is not None:
            high_res = tuple(t.to(self.device) for t in high_res)
        self._hold_embedding(
            embedding.features.to(self.device),
            tuple(embedding.original_size),
            tuple(embedding.input_size),
            high_res,
        )

    # -- the fast point decoder: per-image work shared by prompts and calls --------------------
    def _fast_decoder_dtype(self) -> torch.dtype | None:
        """The dtype the fast point decoder runs prompts in now: float32, or bfloat16 inside a
        bf16 ``torch.autocast`` (the ``prompt_decoder`` precision part); None under another
        autocast dtype (the module decoder runs those)."""
        import torch

        dev = self.features.device.type
        if not torch.is_autocast_enabled(dev):
            return torch.float32
        return torch.bfloat16 if torch.get_autocast_dtype(dev) == torch.bfloat16 else None

    def _shared_decoder(self) -> Any:
        """The point decoder (:meth:`_new_point_decoder`) of the current dtype holding the
        current image's shared work: built once per dtype, its features set once per image."""
        dtype = self._fast_decoder_dtype()
        if dtype is None:
            raise RuntimeError("the fast decoder does not run under this autocast dtype")
        decoders = self.__dict__.setdefault("_point_decoders", {})
        held = decoders.get(dtype)
        if held is None:
            held = decoders[dtype] = [None, self._new_point_decoder(dtype)]
        if held[0] is not self.features:
            self._set_decoder_features(held[1])
            held[0] = self.features  # (held, so that identity means the same image)
        return held[1]

    def _encode_prompt_tensors(self, points: Any, boxes: Any, mask_input: Any) -> tuple[Any, Any]:
        """The prompt encoder's ``(sparse, dense)`` embeddings, always in float32: the Fourier
        features of coordinates lose whole pixels in bf16, and the encoder costs nothing."""
        import torch

        with torch.autocast(self.features.device.type, enabled=False):
            return self.model.prompt_encoder(points, boxes, mask_input)

    def _new_point_decoder(self, dtype: torch.dtype) -> Any:
        """A point decoder of this predictor's model computing in ``dtype``."""
        raise NotImplementedError

    def _set_decoder_features(self, decoder: Any) -> None:
        """Give ``decoder`` the current image's features."""
        raise NotImplementedError

    @staticmethod
    def _check_image(image: np.ndarray, image_format: str) -> np.ndarray:
        """A checked ``H x W x 3`` uint8 image; ``image_format`` must be "RGB" or "BGR"."""
        if image_format not in ("RGB", "BGR"):
            raise ImageError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        return check_image(image)

    def _checked_images(
        self, images: Sequence[np.ndarray], image_format: str, batch_size: int
    ) -> list[np.ndarray]:
        """``images`` checked (errors name the image's index) and in the model's channel order
        (``model.image_format``; flipped images are contiguous copies)."""
        if batch_size < 1:
            raise ImageError(f"batch_size must be >= 1, got {batch_size}")
        out = []
        for i, image in enumerate(images):
            try:
                image = self._check_image(image, image_format)
            except ImageError as e:
                raise ImageError(f"image {i}: {e}") from None
            flip = image_format != self.model.image_format
            out.append(np.ascontiguousarray(image[..., ::-1]) if flip else image)
        return out

    # -- the torch-level prompt API: decode() -> _decode(), predict_torch() -> _to_image() --------
    def predict_torch(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Decode ``B`` prompts at once; inputs are in the model's input frame (resized pixels;
        SAM 2: the ``S x S`` frame).

        Args:
            point_coords: ``B x N x 2``; point_labels: ``B x N``; boxes: ``B x 4`` XYXY (SAM 2
                also ``B x 2 x 2``); mask_input: ``B x 1 x 256 x 256`` logits.
        Returns:
            ``(masks B x C x H x W (bool, or logits with return_logits), iou B x C,
            low_res_logits B x C x 256 x 256)`` (SAM 2: low-res logits clamped to [-32, 32]).
        """
        self._require_image()
        with _inference_mode(), self._prompt_threads():
            low_res, iou = self.decode(
                point_coords, point_labels, boxes, mask_input, multimask_output
            )
            return self._to_image(low_res, iou, return_logits)

    def decode(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        region: tuple[int, int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Low-res logits ``B x C x 256 x 256`` and IoU ``B x C`` of input-frame prompts (as for
        :meth:`predict_torch`), without upsampling.

        ``region = (h, w)``: only ``logits[..., :h, :w]`` are needed (the v1 fast decoder
        computes only those, the module decoder crops its output; SAM 2 has no padding to skip).
        """
        with _inference_mode():
            points, boxes, mask_input = self._prompt_tensors(
                point_coords, point_labels, boxes, mask_input
            )
            return self._decode(points, boxes, mask_input, multimask_output, region)

    def _prompt_threads(self) -> contextlib.AbstractContextManager:
        """The CPU thread policy :meth:`predict_torch` decodes under (none by default)."""
        return contextlib.nullcontext()

    def _decode(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        mask_input: torch.Tensor | None,
        multimask_output: bool,
        region: tuple[int, int] | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`decode` of prompt tensors already on the model's device."""
        raise NotImplementedError

    def _to_image(
        self, low_res: torch.Tensor, iou: torch.Tensor, return_logits: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`predict_torch`'s ``(masks, iou, low_res)`` from the decoder's outputs."""
        raise NotImplementedError

    def _prompt_tensors(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        mask_input: torch.Tensor | None,
    ) -> tuple[Any, Any, Any]:
        """Model-frame prompt tensors on the model's device: ``((coords, labels) or None,
        boxes, mask_input)``; raises :class:`PromptError` when no image is set or coordinates
        come without labels."""
        self._require_image()
        points = None
        if point_coords is not None:
            if point_labels is None:
                raise PromptError("point_labels must be given with point_coords")
            points = (point_coords.to(self.device), point_labels.to(self.device))
        if boxes is not None:
            boxes = boxes.to(self.device)
        if mask_input is not None:
            mask_input = mask_input.to(self.device)
        return points, boxes, mask_input


def _inference_mode() -> contextlib.AbstractContextManager:
    """``torch.inference_mode()``, imported when first used (only torch predictors get here)."""
    import torch

    return torch.inference_mode()


class ResultsPredictMixin(MetaPredictMixin):
    """Ultralytics-style prompting returning :class:`Results`, plus Meta's ``predict``.

    The predictor provides ``image_format``, ``original_size`` ``(H, W)``, ``set_rgb(image_rgb,
    path)`` and ``decode_fitted(fitted, multimask_output)``; it keeps the current image with
    :meth:`_set_source`.
    """

    image_format: str
    original_size: tuple[int, int] | None
    #: Appended to the "no prompt given" error.
    no_prompt_hint: str = ""

    def set_image(self, image: Any, image_format: str | None = None) -> None:
        """Encode ``image`` (path, URL, ``H x W x 3`` NumPy array in ``image_format``, PIL)."""
        rgb = load_image(image, image_format or self.image_format)
        path = str(image) if isinstance(image, str) or hasattr(image, "__fspath__") else "image0"
        self.set_rgb(rgb, path)

    def set_rgb(self, image_rgb: np.ndarray, path: str = "image0", frame: int | None = None):
        raise NotImplementedError

    def _set_source(
        self, image_rgb: np.ndarray | None, path: str = "image0", frame: int | None = None
    ) -> None:
        """Remember the current image (``H x W x 3`` RGB uint8), where it came from and its frame."""
        self.image_rgb, self.path, self.frame = image_rgb, path, frame
        self._image_bgr: np.ndarray | None = None  # made on first use, shared by all calls

    @property
    def image_bgr(self) -> np.ndarray:
        """The current image, ``H x W x 3`` uint8 BGR (what ``Results.orig_img`` holds)."""
        if self._image_bgr is None:
            self._image_bgr = np.ascontiguousarray(self.image_rgb[..., ::-1])
        return self._image_bgr

    def __call__(
        self,
        bboxes: Any = None,
        points: Any = None,
        labels: Any = None,
        masks: Any = None,
        multimask_output: bool = False,
    ) -> Results:
        """Masks for the prompts (original-image pixels; see :func:`samkit.predict.prompts.parse_prompts`).

        ``bboxes`` ``(N, 4)`` XYXY; ``points`` ``(N, 2)`` or ``(N, K, 2)`` with ``labels``;
        ``masks`` ``(N, H, W)`` binary or ``(N, 256, 256)`` logits. With
        ``multimask_output=True`` each prompt gives 3 masks (``Results.prompt_index`` says which
        prompt; ``Results.best()`` keeps the best one per prompt).
        """
        prompts = parse_prompts(bboxes, points, labels, masks)
        if prompts.empty:
            raise PromptError(
                f"no prompt given: pass bboxes=, points= or masks={self.no_prompt_hint}"
            )
        return self.predict_prompts(prompts, multimask_output)

    def stream(
        self,
        bboxes: Any = None,
        points: Any = None,
        labels: Any = None,
        masks: Any = None,
        multimask_output: bool = False,
        *,
        chunk: int = 256,
        progress: bool = False,
    ) -> Iterator[Results]:
        """Like calling the predictor, but yields one :class:`Results` per ``chunk`` prompts, so
        memory stays bounded for any number of prompts (10,000 boxes on a 1280 x 720 image:
        ~240 MB of masks per chunk of 256 instead of 9 GB at once). ``prompt_index`` counts
        from the first prompt of the call; ``progress`` shows a bar on stderr. All prompts are
        checked before the first chunk is decoded."""
        if int(chunk) < 1:
            raise PromptError(f"chunk must be a positive integer, got {chunk!r}")
        prompts = parse_prompts(bboxes, points, labels, masks)
        if prompts.empty:
            raise PromptError(
                f"no prompt given: pass bboxes=, points= or masks={self.no_prompt_hint}"
            )
        self._require_image()
        h, w = self.original_size
        fitted = fit_prompts(prompts, h, w, self.mask_input_size[0])
        return self._stream(fitted, multimask_output, int(chunk), progress)

    def _stream(self, fitted: Prompts, multimask_output: bool, chunk: int, progress: bool):
        from tqdm import tqdm

        with tqdm(total=fitted.n, unit="prompt", disable=not progress, file=sys.stderr) as bar:
            for start in range(0, fitted.n, chunk):
                part = self.decode_fitted(fitted.take(start, start + chunk), multimask_output)
                part.prompt_index = part.prompt_index + start
                bar.update(min(chunk, fitted.n - start))
                yield part

    def predict_prompts(self, prompts: Prompts, multimask_output: bool = False) -> Results:
        """Decode parsed :class:`Prompts` (checked against the current image) into Results."""
        self._require_image()
        h, w = self.original_size
        fitted = fit_prompts(prompts, h, w, self.mask_input_size[0])
        return self.decode_fitted(fitted, multimask_output)

    def decode_fitted(self, fitted: Prompts, multimask_output: bool = False) -> Results:
        """Decode prompts already checked against the current image by ``fit_prompts``."""
        raise NotImplementedError

    def _results(self, fitted: Prompts, decode_ms: float, **outputs: Any) -> Results:
        """Results of the current image for ``fitted`` prompts; ``outputs``: masks, scores, ..."""
        return Results(
            orig_img=self.image_bgr,
            path=self.path,
            prompt_points=fitted.points,
            prompt_labels=fitted.labels,
            prompt_boxes=fitted.boxes,
            frame=self.frame,
            speed={"decode": decode_ms},
            **outputs,
        )
