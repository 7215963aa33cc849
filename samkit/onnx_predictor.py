"""SAM on onnxruntime alone: an exported encoder + decoder pair behind the predictor's API.

Needs only ``onnxruntime``, ``numpy`` and ``Pillow`` (``pip install 'samkit[onnx]'``); torch is
never imported, directly or through another samkit module. Pre-processing is the reference's
(:mod:`samkit.geometry`), so the same image and prompts give the same masks as
:class:`~samkit.SamPredictor` (within float32 rounding).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ExportError, ImageError, PromptError
from .export.spec import DECODER_INPUTS, DECODER_OUTPUTS, MASK_OUTPUT_COUNTS, GraphMeta
from .geometry import (
    PIXEL_MEAN,
    PIXEL_STD,
    normalize_and_pad,
    resize_longest_side,
    scale_boxes_np,
    scale_coords_np,
)
from .validate import check_box, check_image, check_mask_input, check_points

_MASK_OUTPUT_BY_COUNT = {4: "all", 3: "multi", 1: "single"}  # for graphs without samkit metadata


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError as e:
        raise ExportError(
            "the ONNX predictor needs onnxruntime: pip install 'samkit[onnx]' (or onnxruntime)"
        ) from e
    return onnxruntime


class OnnxPredictor:
    """Encode an image once (:meth:`set_image`), then decode prompts, with onnxruntime.

    Args:
        encoder: path of the image encoder ONNX (``1 x 3 x S x S`` normalized, padded input), or
            None to only decode embeddings given to :meth:`set_image_embedding`.
        decoder: path of the prompt decoder ONNX (Meta's interface, see ``samkit.export``).
        providers: onnxruntime execution providers (default ``["CPUExecutionProvider"]``).
        session_options: an ``onnxruntime.SessionOptions`` (threads, optimization level, ...).
    Raises:
        ExportError: a file is missing or unreadable, or the encoder and decoder do not belong
            together (exported from different weights, or embedding shapes that differ).
    """

    mask_threshold: float = 0.0
    image_format: str = "RGB"

    def __init__(
        self,
        encoder: str | os.PathLike | None,
        decoder: str | os.PathLike,
        *,
        providers: list[Any] | None = None,
        session_options: Any = None,
    ) -> None:
        ort = _onnxruntime()
        providers = providers or ["CPUExecutionProvider"]
        self.encoder = _session(ort, encoder, providers, session_options) if encoder else None
        self.decoder = _session(ort, decoder, providers, session_options)
        self.encoder_meta = _graph_meta(self.encoder) if self.encoder else GraphMeta()
        self.decoder_meta = _graph_meta(self.decoder)
        self._check_decoder()
        self._check_pair()
        self.reset_image()

    @classmethod
    def from_export(
        cls,
        path: str | os.PathLike,
        *,
        quantized: bool | str = False,
        providers: list[Any] | None = None,
        session_options: Any = None,
    ) -> OnnxPredictor:
        """The pair described by an export's ``*_onnx.json`` (or a folder holding one).

        ``quantized``: use the int8 files: ``True``/``"decoder"``, ``"encoder"`` or ``"all"``.
        """
        meta_path = _find_metadata(Path(path))
        try:
            files = json.loads(meta_path.read_text())["files"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ExportError(f"{meta_path} is not a samkit ONNX metadata file: {e}") from e
        choice = {False: (), True: ("decoder",), "decoder": ("decoder",), "encoder": ("encoder",)}
        choice["all"] = ("encoder", "decoder")
        if quantized not in choice:
            raise ExportError(
                f"quantized must be False, True, 'decoder', 'encoder' or 'all', got {quantized!r}"
            )
        chosen: dict[str, Path | None] = {}
        for role in ("encoder", "decoder"):
            key = f"{role}_int8" if role in choice[quantized] else role
            if key in files:
                chosen[role] = meta_path.parent / files[key]
            elif key == "encoder":
                chosen[role] = None  # a decoder-only export: use set_image_embedding()
            else:
                hint = f"quantize={role!r}" if key.endswith("_int8") else f"{role}=True"
                raise ExportError(f"{meta_path.name} lists no {key} file; export with {hint}")
        return cls(
            chosen["encoder"],
            chosen["decoder"],
            providers=providers,
            session_options=session_options,
        )

    # -- checks --------------------------------------------------------------------------
    def _check_decoder(self) -> None:
        inputs = {i.name: i for i in self.decoder.get_inputs()}
        outputs = [o.name for o in self.decoder.get_outputs()]
        missing = [n for n in DECODER_INPUTS if n not in inputs]
        if missing or outputs[: len(DECODER_OUTPUTS)] != list(DECODER_OUTPUTS):
            raise ExportError(
                f"the decoder does not have SAM's ONNX decoder interface (inputs "
                f"{', '.join(DECODER_INPUTS)}; outputs {', '.join(DECODER_OUTPUTS)}); "
                f"it has inputs {sorted(inputs)} and outputs {outputs}"
            )
        emb = inputs["image_embeddings"].shape
        mask = inputs["mask_input"].shape
        if not all(isinstance(d, int) for d in (*emb[1:], *mask[2:])):
            raise ExportError(f"the decoder's embedding / mask inputs need fixed sizes: {emb}")
        self.embedding_shape = tuple(int(d) for d in emb[1:])  # C, h, w
        self.mask_input_size = (int(mask[2]), int(mask[3]))
        self.image_size = self.decoder_meta.image_size or 16 * self.embedding_shape[1]
        count = self.decoder.get_outputs()[1].shape[1]
        # None: a foreign decoder with a dynamic mask count, resolved from its first output
        self.mask_output = self.decoder_meta.mask_output or _MASK_OUTPUT_BY_COUNT.get(count)
        meta = self.encoder_meta if self.encoder_meta.pixel_mean else self.decoder_meta
        self.pixel_mean = meta.pixel_mean or PIXEL_MEAN
        self.pixel_std = meta.pixel_std or PIXEL_STD

    def _check_pair(self) -> None:
        enc, dec = self.encoder_meta, self.decoder_meta
        if enc.fingerprint and dec.fingerprint and enc.fingerprint != dec.fingerprint:
            raise ExportError(
                f"the encoder ({enc.variant}, weights {enc.fingerprint}) and the decoder "
                f"({dec.variant}, weights {dec.fingerprint}) were exported from different "
                "models and do not belong together; use the pair written by one export"
            )
        if self.encoder is None:
            return
        enc_in = self.encoder.get_inputs()
        enc_out = self.encoder.get_outputs()
        if len(enc_in) != 1 or len(enc_in[0].shape) != 4 or len(enc_out) != 1:
            raise ExportError(
                "the encoder must take one 1 x 3 x S x S image and return one embedding; it has "
                f"inputs {[(i.name, i.shape) for i in enc_in]}"
            )
        self._encoder_input = enc_in[0].name
        in_shape, out_shape = tuple(enc_in[0].shape[1:]), tuple(enc_out[0].shape[1:])
        size = self.image_size
        if in_shape != (3, size, size) or out_shape != self.embedding_shape:
            raise ExportError(
                f"the encoder (input 1 x {in_shape}, embedding 1 x {out_shape}) does not fit the "
                f"decoder (image {size} x {size}, embedding 1 x {self.embedding_shape}); use the "
                "encoder exported with this decoder"
            )

    # -- image ---------------------------------------------------------------------------
    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """Encode an ``H x W x 3`` uint8 image (``image_format`` "RGB" or "BGR")."""
        if self.encoder is None:
            raise ImageError(
                "this predictor has no encoder: pass encoder= or use set_image_embedding()"
            )
        image = check_image(image, image_format)
        if image_format != self.image_format:
            image = image[..., ::-1]
        resized = resize_longest_side(image, self.image_size)
        x = normalize_and_pad(resized, self.image_size, self.pixel_mean, self.pixel_std)
        features = self.encoder.run(None, {self._encoder_input: x})[0]
        self.set_image_embedding(features, image.shape[:2])

    def set_image_embedding(self, embedding: np.ndarray, original_size: tuple[int, int]) -> None:
        """Use an embedding computed elsewhere (``1 x C x h x w``) for an ``H x W`` image."""
        emb = np.asarray(embedding, dtype=np.float32)
        if emb.shape != (1, *self.embedding_shape):
            raise ImageError(
                f"the embedding must be 1 x {' x '.join(map(str, self.embedding_shape))}, got "
                f"{emb.shape}"
            )
        h, w = (int(v) for v in original_size)
        if h < 1 or w < 1:
            raise ImageError(f"original_size must be positive (H, W), got {original_size}")
        scale = self.image_size / max(h, w)
        self.reset_image()
        self.features = emb
        self.original_size = (h, w)
        self.input_size = (int(h * scale + 0.5), int(w * scale + 0.5))
        self.is_image_set = True

    def reset_image(self) -> None:
        """Forget the current image and its embedding."""
        self.is_image_set = False
        self.features: np.ndarray | None = None
        self.original_size: tuple[int, int] | None = None
        self.input_size: tuple[int, int] | None = None

    def get_image_embedding(self) -> np.ndarray:
        """The cached embedding, ``1 x C x h x w`` float32."""
        self._require_image()
        return self.features

    def _require_image(self) -> None:
        if not self.is_image_set:
            raise PromptError("no image is set: call set_image(image) before predicting")

    # -- prompts -------------------------------------------------------------------------
    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for one object from prompts in original-image pixels (as ``SamPredictor``).

        Args:
            point_coords: ``N x 2`` (x, y) points. point_labels: ``N`` (1 fg, 0 bg).
            box: ``4`` XYXY box. mask_input: ``1 x 256 x 256`` low-res logits of an earlier call.
            multimask_output: 3 masks (True) or 1; a decoder exported with
                ``mask_output="multi"`` serves only True, ``"single"``/``"best"`` only False.
        Returns:
            ``(masks C x H x W bool (float32 logits if return_logits), iou C,
            low_res_logits C x 256 x 256)``.
        """
        self._require_image()
        feeds = self.decoder_inputs(point_coords, point_labels, box, mask_input)
        masks, iou, low_res = self.decoder.run(list(DECODER_OUTPUTS), feeds)
        keep = self._mask_slice(multimask_output, iou.shape[1])
        masks, iou, low_res = masks[0, keep], iou[0, keep], low_res[0, keep]
        if not return_logits:
            masks = masks > self.mask_threshold
        return masks, iou, low_res

    def decoder_inputs(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """The decoder's input feed for prompts in original-image pixels."""
        self._require_image()
        coords = np.zeros((0, 2), np.float32)
        labels = np.zeros((0,), np.float32)
        if point_coords is not None:
            pts, lab = check_points(point_coords, point_labels)
            coords = scale_coords_np(pts, self.original_size, self.input_size)
            labels = lab.astype(np.float32)
        if box is not None:
            corners = scale_boxes_np(check_box(box), self.original_size, self.input_size)
            coords = np.concatenate([coords, corners.reshape(2, 2)])
            labels = np.concatenate([labels, np.array([2, 3], np.float32)])
        elif point_coords is not None:  # no box: one padding point, as Meta's convention
            coords = np.concatenate([coords, np.zeros((1, 2), np.float32)])
            labels = np.concatenate([labels, np.array([-1], np.float32)])
        if mask_input is not None:
            mask = check_mask_input(mask_input, self.mask_input_size)[None]
            has_mask = np.ones(1, np.float32)
        else:
            mask = np.zeros((1, 1, *self.mask_input_size), np.float32)
            has_mask = np.zeros(1, np.float32)
        return {
            "image_embeddings": self.features,
            "point_coords": coords[None].astype(np.float32),
            "point_labels": labels[None].astype(np.float32),
            "mask_input": mask,
            "has_mask_input": has_mask,
            "orig_im_size": np.array(self.original_size, np.float32),
        }

    def _mask_slice(self, multimask_output: bool, count: int) -> slice:
        mode = self.mask_output or _MASK_OUTPUT_BY_COUNT.get(count)
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


def _session(ort: Any, path: str | os.PathLike, providers: list[Any], options: Any) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"ONNX file not found: {path}")
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as e:  # onnxruntime raises its own exception types
        raise ExportError(f"onnxruntime cannot load {path}: {e}") from e


def _graph_meta(session: Any) -> GraphMeta:
    return GraphMeta.from_props(session.get_modelmeta().custom_metadata_map)


def _find_metadata(path: Path) -> Path:
    if path.is_dir():
        found = sorted(path.glob("*_onnx.json"))
        if len(found) != 1:
            raise ExportError(
                f"{path} holds {len(found)} samkit ONNX metadata files (*_onnx.json); pass the "
                "one to use"
            )
        return found[0]
    if not path.is_file():
        raise ExportError(f"no such export metadata file or folder: {path}")
    return path
