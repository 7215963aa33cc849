"""SAM 2 / 2.1 on onnxruntime alone: an exported three-output encoder + decoder pair.

>>> predictor = Sam2OnnxPredictor.from_export("sam2_onnx")   # folder written by model.export()
>>> predictor.set_image("photo.jpg")                         # path, URL, NumPy (BGR) or PIL
>>> r = predictor(bboxes=[[100, 80, 400, 300]])              # Results
>>> masks, scores, logits = predictor.predict(box=np.array([100, 80, 400, 300]))

Torch is never imported. Pre-processing is SAM 2's (square antialiased float resize, ImageNet
statistics; :func:`samkit.predict.geometry.resize_square_float`), prompts are scaled per axis, and each
object's feed is SAM 2's point list: a box as two points labelled 2 / 3 first, then the clicks,
then one padding point. The graphs' layout is described in :mod:`samkit.export.sam2_onnx`.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from ..errors import ExportError, ImageError, PromptError
from ..predict.base import ResultsPredictMixin
from ..predict.geometry import resize_square_float, scale_points_square_np
from ..predict.prompt_checks import ObjectPrompt
from ..predict.prompts import Prompts, binary_masks_to_logits
from ..results import Results
from .runtime import _graph_meta, _session, export_files, onnxruntime
from .spec import (
    DECODER_OUTPUTS,
    SAM2_DECODER_INPUTS,
    SAM2_ENCODER_INPUT,
    SAM2_ENCODER_OUTPUTS,
)

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


class Sam2OnnxPredictor(ResultsPredictMixin):
    """Encode an image once, decode prompts, with onnxruntime (SAM 2 graphs).

    A decoder exported with ``mask_output="multi"`` serves only ``multimask_output=True``,
    ``"single"`` only False; ``"all"`` (default) serves both.
    """

    mask_threshold: float = 0.0

    def __init__(
        self,
        encoder: str | os.PathLike | None,
        decoder: str | os.PathLike,
        *,
        image_format: str = "BGR",
        providers: list[Any] | None = None,
        session_options: Any = None,
    ) -> None:
        ort = onnxruntime()
        providers = providers or ["CPUExecutionProvider"]
        self.encoder = (
            _session(ort, encoder, providers, session_options) if encoder is not None else None
        )
        self.decoder = _session(ort, decoder, providers, session_options)
        dec_inputs = {i.name: i for i in self.decoder.get_inputs()}
        if any(n not in dec_inputs for n in SAM2_DECODER_INPUTS):
            raise ExportError(
                f"{decoder} does not have the SAM 2 decoder interface (inputs "
                f"{', '.join(SAM2_DECODER_INPUTS)})"
            )
        if self.encoder is not None:
            outs = [o.name for o in self.encoder.get_outputs()]
            if sorted(outs) != sorted(SAM2_ENCODER_OUTPUTS):
                raise ExportError(
                    f"{encoder} is not a SAM 2 encoder (outputs {outs}, expected "
                    f"{', '.join(SAM2_ENCODER_OUTPUTS)})"
                )
            enc_meta, dec_meta = _graph_meta(self.encoder), _graph_meta(self.decoder)
            if enc_meta.fingerprint and dec_meta.fingerprint != enc_meta.fingerprint:
                raise ExportError(
                    f"{encoder} and {decoder} were exported from different weights; use a pair "
                    "from one export"
                )
        meta = _graph_meta(self.decoder)
        self.mask_output = meta.mask_output
        self.embed_shape = tuple(int(d) for d in dec_inputs["image_embed"].shape[1:])
        self.mask_input_size = tuple(int(d) for d in dec_inputs["mask_input"].shape[2:])
        self.image_size = int(meta.image_size or 16 * self.embed_shape[-1])
        self.image_format = image_format
        self.high_res: tuple[np.ndarray, np.ndarray] | None = None
        self.reset_image()

    @classmethod
    def from_export(cls, path: str | os.PathLike, **options: Any) -> Sam2OnnxPredictor:
        """The pair listed by an export's ``*_onnx.json`` (or the folder holding one)."""
        encoder, decoder = export_files(path, False)
        return cls(encoder, decoder, **options)

    # -- image ---------------------------------------------------------------------------
    def set_rgb(self, image_rgb: np.ndarray, path: str = "image0", frame: int | None = None):
        """Encode an ``H x W x 3`` RGB uint8 image; returns the encoding time in ms."""
        if self.encoder is None:
            raise ImageError("this predictor has no encoder: pass encoder= to the constructor")
        t0 = time.perf_counter()
        x = (resize_square_float(image_rgb, self.image_size) - IMAGENET_MEAN) / IMAGENET_STD
        x = np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)
        outs = dict(
            zip(
                [o.name for o in self.encoder.get_outputs()],
                self.encoder.run(None, {SAM2_ENCODER_INPUT: x}),
            )
        )
        self.reset_image()
        self.high_res = (outs["high_res_feats_0"], outs["high_res_feats_1"])
        size = (self.image_size, self.image_size)
        self._hold_embedding(outs["image_embed"], tuple(image_rgb.shape[:2]), size)
        self._set_source(image_rgb, path, frame)
        return (time.perf_counter() - t0) * 1e3

    def reset_image(self) -> None:
        super().reset_image()
        self.high_res = None
        self._set_source(None)

    # -- prompts -------------------------------------------------------------------------
    def decode_fitted(self, fitted: Prompts, multimask_output: bool = False) -> Results:
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
        coords = labels = mask = None
        if fitted.points is not None:
            coords, labels = fitted.points[i], fitted.labels[i]
        if fitted.masks is not None:
            if fitted.mask_kind == "binary":
                s = self.image_size
                mask = binary_masks_to_logits(
                    fitted.masks[i : i + 1], (s, s), s, self.mask_input_size[0]
                )[0]
            else:
                mask = fitted.masks[i][None]
        box = None if fitted.boxes is None else fitted.boxes[i]
        return self._feed(coords, labels, box, mask)

    def _predict_checked(
        self, prompt: ObjectPrompt, multimask_output: bool, return_logits: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        feed = self._feed(prompt.coords, prompt.labels, prompt.box, prompt.mask_input)
        masks, iou, low_res = self._decode(feed, multimask_output)
        return (masks if return_logits else masks > self.mask_threshold), iou, low_res

    def _feed(self, coords, labels, box, mask) -> dict[str, np.ndarray]:
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
        has_mask = np.array([0.0 if mask is None else 1.0], np.float32)
        if mask is None:
            mask = np.zeros((1, *self.mask_input_size), np.float32)
        return {
            "image_embed": self.features,
            "high_res_feats_0": self.high_res[0],
            "high_res_feats_1": self.high_res[1],
            "point_coords": np.concatenate(parts)[None].astype(np.float32),
            "point_labels": np.concatenate(labs)[None].astype(np.float32),
            "mask_input": np.asarray(mask, np.float32)[None],
            "has_mask_input": has_mask,
            "orig_im_size": np.array(self.original_size, np.float32),
        }

    def _decode(self, feed: dict[str, np.ndarray], multimask_output: bool) -> tuple:
        masks, iou, low_res = self.decoder.run(list(DECODER_OUTPUTS), feed)
        count = iou.shape[1]
        mode = self.mask_output or {4: "all", 3: "multi", 1: "single"}.get(count)
        if mode == "all":
            keep = slice(1, 4) if multimask_output else slice(0, 1)
        elif (mode == "multi") == bool(multimask_output):
            keep = slice(None)
        else:
            raise PromptError(
                f"this decoder was exported with mask_output={mode!r}; call with "
                f"multimask_output={mode == 'multi'}, or export with mask_output='all'"
            )
        return masks[0, keep], iou[0, keep], low_res[0, keep]
