"""SAM on onnxruntime alone: an exported encoder + decoder pair behind the predictor's API.

>>> predictor = OnnxPredictor.from_export("sam_b_onnx")    # folder written by model.export()
>>> predictor.set_image("photo.jpg")                       # path, URL, NumPy (BGR) or PIL image
>>> r = predictor(bboxes=[[100, 80, 400, 300]])            # Results, as samkit.Predictor
>>> masks, scores, logits = predictor.predict(box=np.array([100, 80, 400, 300]))  # Meta style

:class:`OnnxPredictor` runs SAM's graphs (Meta's interface); :class:`Sam2OnnxPredictor` the
SAM 2 / 2.1 pair (a three-output encoder, :mod:`samkit.export.sam2_onnx`). They share the
prompt and decode path and differ only in the family's preprocessing and point convention.

Needs only ``onnxruntime``, ``numpy``, Pillow and OpenCV; torch is never imported, directly or
through another samkit module. Pre-processing is the reference's (:mod:`samkit.predict.geometry`),
so the same image and prompts give the same masks as the torch predictors (float32 rounding
aside).
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from ..errors import ExportError, ImageError, PromptError
from ..predict.base import ResultsPredictMixin
from ..predict.geometry import (
    normalize_and_pad,
    resize_longest_side,
    resize_square_float,
    scale_boxes_np,
    scale_coords_np,
    scale_points_square_np,
)
from ..predict.prompt_checks import ObjectPrompt, check_prompt
from ..predict.prompts import Prompts, binary_masks_to_logits
from ..results import Results
from .runtime import export_files, load_pair
from .spec import DECODER_OUTPUTS, MASK_OUTPUT_COUNTS

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)  # SAM 2's statistics, 0-1 scale
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


class OnnxPredictor(ResultsPredictMixin):
    """Encode an image once (:meth:`set_image`), then decode prompts, with onnxruntime.

    A decoder exported with ``mask_output="multi"`` serves only ``multimask_output=True``,
    ``"single"``/``"best"`` only False (``"all"``, the default, serves both).

    Args:
        encoder: path of the image encoder ONNX (``1 x 3 x S x S`` normalized, padded input), or
            None to decode only embeddings given to :meth:`set_image_embedding`.
        decoder: path of the prompt decoder ONNX (Meta's interface, see ``samkit.export``).
        image_format: channel order of NumPy images ("BGR" default, like ``samkit.Predictor``,
            or "RGB").
        providers: onnxruntime execution providers (default ``["CPUExecutionProvider"]``).
        session_options: an ``onnxruntime.SessionOptions`` (threads, optimization level, ...).
    Raises:
        ExportError: a file is missing or unreadable, or the encoder and decoder do not belong
            together (exported from different weights, or embedding shapes that differ).
    """

    #: the model family whose graph interface the pair must have (``samkit.export.spec``)
    family: str = "sam"
    mask_threshold: float = 0.0
    features: np.ndarray | None  # 1 x C x h x w float32

    def __init__(
        self,
        encoder: str | os.PathLike | None,
        decoder: str | os.PathLike,
        *,
        image_format: str = "BGR",
        providers: list[Any] | None = None,
        session_options: Any = None,
    ) -> None:
        pair = load_pair(encoder, decoder, providers, session_options, self.family)
        self.pair = pair
        self.encoder, self.decoder = pair.encoder, pair.decoder
        self.encoder_meta, self.decoder_meta = pair.encoder_meta, pair.decoder_meta
        self.image_size, self.mask_output = pair.image_size, pair.mask_output
        self.mask_input_size = pair.mask_input_size
        self.image_format = image_format
        self.reset_image()

    @classmethod
    def from_export(
        cls, path: str | os.PathLike, *, quantized: bool | str = False, **options: Any
    ) -> OnnxPredictor:
        """The pair listed by an export's ``*_onnx.json`` (or the folder holding one).

        ``quantized``: use the int8 files: ``True``/``"decoder"``, ``"encoder"`` or ``"all"``.
        ``options`` as for the constructor.
        """
        encoder, decoder = export_files(path, quantized)
        return cls(encoder, decoder, **options)

    # -- image ---------------------------------------------------------------------------
    def set_rgb(
        self, image_rgb: np.ndarray, path: str = "image0", frame: int | None = None
    ) -> float:
        """Encode an ``H x W x 3`` RGB uint8 image; returns the encoding time in ms."""
        if self.encoder is None:
            raise ImageError(
                "this predictor has no encoder: pass encoder= or use set_image_embedding()"
            )
        t0 = time.perf_counter()
        features, high_res_feats = self._encode(image_rgb)
        self.set_image_embedding(
            features, image_rgb.shape[:2], image_rgb, path, frame, high_res_feats
        )
        return (time.perf_counter() - t0) * 1e3

    def _encode(self, image_rgb: np.ndarray) -> tuple[np.ndarray, tuple | None]:
        """The family's preprocessing and encoder run: ``(embedding, high-res maps or None)``."""
        resized = resize_longest_side(image_rgb, self.image_size)
        pair = self.pair
        x = normalize_and_pad(resized, self.image_size, pair.pixel_mean, pair.pixel_std)
        return self.encoder.run(None, {pair.encoder_input: x})[0], None

    def set_image_embedding(
        self,
        embedding: np.ndarray,
        original_size: tuple[int, int],
        image_rgb: np.ndarray | None = None,
        path: str = "image0",
        frame: int | None = None,
        high_res_feats: tuple[np.ndarray, ...] | None = None,
    ) -> None:
        """Use an embedding ``1 x C x h x w`` computed elsewhere for an ``H x W`` image.

        ``image_rgb`` (the image itself) is needed only by the :class:`Results` of ``__call__``;
        ``high_res_feats``: SAM 2's two high-resolution maps (``1 x C/8 x 4h x 4w``,
        ``1 x C/4 x 2h x 2w``), for a SAM 2 pair only.
        """
        emb = np.asarray(embedding, dtype=np.float32)
        if emb.shape != (1, *self.pair.embedding_shape):
            shape = " x ".join(map(str, self.pair.embedding_shape))
            raise ImageError(f"the embedding must be 1 x {shape}, got {emb.shape}")
        extra = len(self.pair.interface.embedding_inputs) - 1
        if len(high_res_feats or ()) != extra:
            raise ImageError(
                f"this decoder takes {extra} high-resolution feature map(s) with the embedding "
                f"(high_res_feats=), got {len(high_res_feats or ())}"
            )
        h, w = (int(v) for v in original_size)
        if h < 1 or w < 1:
            raise ImageError(f"original_size must be positive (H, W), got {original_size}")
        self.reset_image()
        maps = tuple(np.asarray(m, dtype=np.float32) for m in high_res_feats) if extra else None
        self._hold_embedding(emb, (h, w), self._input_size(h, w), maps)
        self._set_source(image_rgb, path, frame)

    def _input_size(self, h: int, w: int) -> tuple[int, int]:
        """``(h, w)`` of an ``H x W`` image inside the model input (long side resized to S)."""
        scale = self.image_size / max(h, w)
        return int(h * scale + 0.5), int(w * scale + 0.5)

    def reset_image(self) -> None:
        """Forget the current image and its embedding."""
        super().reset_image()
        self._set_source(None)

    # -- prompts, samkit.Predictor style -------------------------------------------------
    # __call__(bboxes=, points=, labels=, masks=) and predict_prompts(): ResultsPredictMixin
    def decode_fitted(self, fitted: Prompts, multimask_output: bool = False) -> Results:
        """Decode prompts already checked against the current image by ``fit_prompts``."""
        if self.image_rgb is None:
            raise ImageError(
                "Results need the image: pass image_rgb= to set_image_embedding(), or use predict()"
            )
        t0 = time.perf_counter()
        masks, scores, low_res = [], [], []
        for i in range(fitted.n):
            m, s, low = self._decode(self._object_feed(fitted, i), multimask_output)
            masks.append(m > self.mask_threshold)
            scores.append(s)
            low_res.append(low)
        c = 3 if multimask_output else 1
        (h, w), size = self.original_size, self.mask_input_size
        return self._results(
            fitted,
            (time.perf_counter() - t0) * 1e3,
            masks=np.concatenate(masks) if masks else np.zeros((0, h, w), bool),
            scores=np.concatenate(scores) if scores else np.zeros(0, np.float32),
            prompt_index=np.repeat(np.arange(fitted.n, dtype=np.int64), c),
            low_res_logits=np.concatenate(low_res) if low_res else np.zeros((0, *size), "f4"),
        )

    def _object_feed(self, fitted: Prompts, i: int) -> dict[str, np.ndarray]:
        """The decoder feed of object ``i`` of fitted prompts (points, box, mask)."""
        coords, labels, mask = None, None, None
        if fitted.points is not None:
            coords, labels = fitted.points[i], fitted.labels[i]
        if fitted.masks is not None:
            if fitted.mask_kind == "binary":
                mask = binary_masks_to_logits(
                    fitted.masks[i : i + 1],
                    self.input_size,
                    self.image_size,
                    self.mask_input_size[0],
                )[0]
            else:
                mask = fitted.masks[i][None]
        box = None if fitted.boxes is None else fitted.boxes[i]
        return self._feed(coords, labels, box, mask)

    # -- prompts, Meta's SamPredictor style ----------------------------------------------
    # predict(point_coords, point_labels, box, mask_input, ...): Meta's, from MetaPredictMixin
    def _predict_checked(
        self, prompt: ObjectPrompt, multimask_output: bool, return_logits: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        feed = self._feed(prompt.coords, prompt.labels, prompt.box, prompt.mask_input)
        masks, iou, low_res = self._decode(feed, multimask_output)
        return (masks if return_logits else masks > self.mask_threshold), iou, low_res

    def decoder_inputs(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """The decoder's input feed for one object's prompts in original-image pixels."""
        self._require_image()
        prompt = check_prompt(point_coords, point_labels, box, mask_input, self.mask_input_size)
        return self._feed(prompt.coords, prompt.labels, prompt.box, prompt.mask_input)

    def _feed(self, coords, labels, box, mask) -> dict[str, np.ndarray]:
        """The decoder feed of one object's prompts (``coords``, ``box`` in original pixels)."""
        coords, labels = self._prompt_points(coords, labels, box)
        has_mask = np.array([0.0 if mask is None else 1.0], np.float32)
        if mask is None:
            mask = np.zeros((1, *self.mask_input_size), np.float32)
        maps = (self.features, *(self.high_res_feats or ()))
        return {
            **dict(zip(self.pair.interface.embedding_inputs, maps)),
            "point_coords": np.asarray(coords, np.float32)[None],
            "point_labels": np.asarray(labels, np.float32)[None],
            "mask_input": np.asarray(mask, np.float32)[None],
            "has_mask_input": has_mask,
            "orig_im_size": np.array(self.original_size, np.float32),
        }

    def _prompt_points(self, coords, labels, box) -> tuple[np.ndarray, np.ndarray]:
        """Meta's point list in the resized frame: the clicks, then box corners labelled 2 / 3;
        without a box, clicks get one ``(0, 0)`` padding point labelled -1."""
        if coords is None:
            coords, labels = np.zeros((0, 2), np.float32), np.zeros((0,), np.float32)
        else:
            coords = scale_coords_np(coords, self.original_size, self.input_size)
        if box is not None:
            corners = scale_boxes_np(box, self.original_size, self.input_size).reshape(2, 2)
            coords = np.concatenate([coords, corners])
            labels = np.concatenate([labels, [2, 3]])
        elif len(coords):
            coords = np.concatenate([coords, np.zeros((1, 2), np.float32)])
            labels = np.concatenate([labels, [-1]])
        return coords, labels

    def _decode(self, feed: dict[str, np.ndarray], multimask_output: bool) -> tuple:
        """``(mask logits C x H x W, iou C, low-res logits C x 4h x 4w)`` for one object."""
        masks, iou, low_res = self.decoder.run(list(DECODER_OUTPUTS), feed)
        keep = self._mask_slice(multimask_output, iou.shape[1])
        return masks[0, keep], iou[0, keep], low_res[0, keep]

    def _mask_slice(self, multimask_output: bool, count: int) -> slice:
        mode = self.mask_output or self.pair.mode_for_count(count)
        if mode is None:
            raise ExportError(f"the decoder returned {count} masks; expected 4, 3 or 1")
        if mode == "all":
            return slice(1, 4) if multimask_output else slice(0, 1)
        if (mode == "multi") != bool(multimask_output):
            n = MASK_OUTPUT_COUNTS[mode]
            raise PromptError(
                f"this decoder was exported with mask_output={mode!r} and returns {n} mask(s); "
                f"call with multimask_output={mode == 'multi'}, or export with mask_output='all'"
            )
        return slice(None)


class Sam2OnnxPredictor(OnnxPredictor):
    """:class:`OnnxPredictor` for a SAM 2 / 2.1 pair (``samkit.export.sam2_onnx``).

    Pre-processing is SAM 2's (square antialiased float resize, ImageNet statistics;
    :func:`samkit.predict.geometry.resize_square_float`), prompts are scaled per axis, and each
    object's feed is SAM 2's point list: a box as two points labelled 2 / 3 first, then the
    clicks, then one padding point. A decoder exported with ``mask_output="multi"`` serves only
    ``multimask_output=True``, ``"single"`` only False; ``"all"`` (default) serves both.
    """

    family = "sam2"

    @property
    def high_res(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The current image's two high-resolution feature maps (None: no image)."""
        return self.high_res_feats

    def _encode(self, image_rgb: np.ndarray) -> tuple[np.ndarray, tuple]:
        x = (resize_square_float(image_rgb, self.image_size) - IMAGENET_MEAN) / IMAGENET_STD
        x = np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)
        names = [o.name for o in self.encoder.get_outputs()]
        outs = dict(zip(names, self.encoder.run(None, {self.pair.encoder_input: x})))
        return outs["image_embed"], (outs["high_res_feats_0"], outs["high_res_feats_1"])

    def _input_size(self, h: int, w: int) -> tuple[int, int]:
        return self.image_size, self.image_size  # a square resize: no padding

    def _prompt_points(self, coords, labels, box) -> tuple[np.ndarray, np.ndarray]:
        """SAM 2's point list in the ``S x S`` frame: box corners (2 / 3), clicks, padding."""
        size = self.image_size
        parts, labs = [], []
        if box is not None:
            parts.append(scale_points_square_np(np.reshape(box, (2, 2)), self.original_size, size))
            labs.append(np.array([2, 3], np.float32))
        if coords is not None:
            parts.append(scale_points_square_np(coords, self.original_size, size))
            labs.append(np.asarray(labels, np.float32))
        parts.append(np.zeros((1, 2), np.float32))
        labs.append(np.array([-1], np.float32))
        return np.concatenate(parts), np.concatenate(labs)
