"""Meta-style low-level predictor for SAM 2 / 2.1 (``SAM2ImagePredictor``'s API and numbers).

>>> predictor = Sam2Predictor(model)                 # a samkit.models.Sam2
>>> predictor.set_image(image_rgb)                   # H x W x 3 uint8 (or PIL)
>>> masks, iou, low_res = predictor.predict(point_coords=..., point_labels=..., box=...,
...                                         mask_input=..., multimask_output=True)

Pre- and post-processing are SAM 2's (:mod:`samkit.models.sam2`); prompts are scaled per axis
(x by ``S / W``, y by ``S / H``) in float32 as the reference does; a box is two points labelled
2 / 3 before the clicks; low-res logits are returned clamped to [-32, 32] while the full-size
masks come from the unclamped logits. ``max_hole_area`` / ``max_sprinkle_area`` clean the low-res
logits with OpenCV (what the reference's CUDA-only kernel intends; see :mod:`samkit.ops.regions`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..errors import ImageError, PromptError
from ..models.sam2 import Sam2, box_to_points
from ..models.sam2_decoder import Sam2MaskDecoder
from .base import ModelPredictMixin
from .embedding import Embedding, encode_batch
from .precision import dtype_of, resolve_precision
from .prompt_checks import ObjectPrompt, check_box, check_image, check_mask_input, check_points
from .sam2_fast_decode import Sam2PointDecoder
from .threads import cpu_policy

LOW_RES_CLAMP = 32.0


#: SAM 2 embeddings are :class:`~samkit.predict.embedding.Embedding` s with two high-res maps.
Sam2Embedding = Embedding


def image_tensor(image_rgb: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """``H x W x 3`` uint8 RGB -> ``1 x 3 x H x W`` uint8 tensor (no copy when possible)."""
    if not image_rgb.flags.writeable:
        image_rgb = image_rgb.copy()
    return torch.from_numpy(image_rgb).to(device).permute(2, 0, 1)[None]


@torch.inference_mode()
def encode_images_sam2(
    model: Sam2, images_rgb: Sequence[np.ndarray], dtype: torch.dtype = torch.float32
) -> list[Sam2Embedding]:
    """Encode ``H x W x 3`` RGB uint8 images in one forward pass (SAM 2's preprocessing).

    Features are returned in float32 whatever ``dtype`` the encoder ran in.
    """
    if not images_rgb:
        return []
    size = model.image_size
    x = torch.cat([model.preprocess(image_tensor(im, model.device)) for im in images_rgb])
    embed, (s0, s1) = encode_batch(model, x, dtype)  # samkit's one encoder call (CPU policy)
    out = []
    for i, im in enumerate(images_rgb):
        one = len(images_rgb) == 1
        out.append(
            Embedding(
                embed if one else embed[i : i + 1].clone(),
                (int(im.shape[0]), int(im.shape[1])),
                (size, size),
                (s0, s1) if one else (s0[i : i + 1].clone(), s1[i : i + 1].clone()),
            )
        )
    return out


def scale_points(coords: torch.Tensor, original_size: tuple[int, int], size: int) -> torch.Tensor:
    """``... x 2`` (x, y) original-image pixels -> the ``size x size`` frame, per axis, float32
    (divide by the image side, then multiply by ``size``, as the reference does)."""
    h, w = original_size
    out = coords.to(torch.float32).clone()
    out[..., 0] = out[..., 0] / w
    out[..., 1] = out[..., 1] / h
    return out * size


class Sam2Predictor(ModelPredictMixin):
    """Computes a SAM 2 image's features once (:meth:`set_image`) and answers prompts.

    Args:
        sam_model: a :class:`~samkit.models.Sam2`.
        precision: image encoder precision, "fp32" (default), "bf16" or "auto".
        mask_threshold: logit threshold of the returned masks (0.0).
        max_hole_area, max_sprinkle_area: fill background holes / remove foreground specks of at
            most this many low-res pixels before upsampling (0 = off, the reference's default).
    """

    def __init__(
        self,
        sam_model: Sam2,
        precision: str = "fp32",
        mask_threshold: float = 0.0,
        max_hole_area: float = 0.0,
        max_sprinkle_area: float = 0.0,
    ) -> None:
        if not isinstance(sam_model, Sam2):
            raise TypeError(f"Sam2Predictor needs a SAM 2 model, got {type(sam_model).__name__}")
        self.model = sam_model
        self.precision = resolve_precision(precision, sam_model.device, sam_model)
        self.mask_threshold = float(mask_threshold)
        self.max_hole_area = float(max_hole_area)
        self.max_sprinkle_area = float(max_sprinkle_area)
        self.reset_image()

    # -- image -------------------------------------------------------------------------------
    def set_image(self, image: Any, image_format: str = "RGB") -> None:
        """Encode an ``H x W x 3`` uint8 image (``image_format`` "RGB" or "BGR") or a PIL image."""
        if image_format not in ("RGB", "BGR"):
            raise ImageError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        if hasattr(image, "convert") and hasattr(image, "size"):  # PIL
            image, image_format = np.asarray(image.convert("RGB")), "RGB"
        image = check_image(image)
        if image_format == "BGR":
            image = np.ascontiguousarray(image[..., ::-1])
        dtype = dtype_of(self.precision)
        self.set_embedding(encode_images_sam2(self.model, [image], dtype)[0])

    def encode_images(
        self, images: Sequence[np.ndarray], image_format: str = "RGB", batch_size: int = 4
    ) -> list[Sam2Embedding]:
        """Encode several images, ``batch_size`` at a time; the current image is unchanged."""
        checked = self._checked_images(images, image_format, batch_size)
        dtype = dtype_of(self.precision)
        out: list[Sam2Embedding] = []
        for start in range(0, len(checked), batch_size):
            out += encode_images_sam2(self.model, checked[start : start + batch_size], dtype)
        return out

    # set_embedding(embedding), device, transform_sizes (input: the square frame),
    # mask_input_size: ModelPredictMixin

    @property
    def high_res(self) -> tuple[torch.Tensor, ...] | None:
        """The current image's two high-resolution feature maps (``high_res_feats``)."""
        return self.high_res_feats

    def uses_fast_decoder(self) -> bool:
        """SAM 2 prompts always go through the module decoder."""
        return False

    # -- prompts -----------------------------------------------------------------------------
    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        normalize_coords: bool = True,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks from prompts in original-image pixels (Meta's ``SAM2ImagePredictor.predict``).

        Args:
            point_coords: ``N x 2`` (x, y), or ``B x N x 2`` with ``B`` boxes; point_labels:
                ``N`` / ``B x N`` (1 fg, 0 bg). box: ``4`` or ``B x 4`` XYXY.
            mask_input: ``1 x 256 x 256`` (or ``B x 1 x 256 x 256``) low-res logits.
            normalize_coords: True: coordinates are pixels of the image; False: already
                normalized to [0, 1].
        Returns:
            ``(masks C x H x W, iou C, low_res C x 256 x 256)``, or with a leading ``B`` for
            several boxes; C = 3 with ``multimask_output`` else 1; low-res clamped to [-32, 32].
        """
        self._require_image()
        coords_t = labels_t = box_t = mask_t = None
        boxes = None if box is None else np.asarray(box, dtype=np.float64)
        batched = boxes is not None and boxes.ndim == 2 and boxes.shape[0] > 1
        if batched:
            boxes = np.stack([check_box(b) for b in boxes])
        elif boxes is not None:
            boxes = check_box(boxes)[None]
        if point_coords is not None:
            pc = np.asarray(point_coords, dtype=np.float64)
            pl = np.asarray(point_labels) if point_labels is not None else None
            if pc.ndim == 3:
                if pl is None or pl.shape != pc.shape[:2]:
                    raise PromptError("point_labels must be B x N for B x N x 2 point_coords")
                checked = [check_points(c, lab) for c, lab in zip(pc, pl)]
                coords = np.stack([c for c, _ in checked])
                labels = np.stack([lab for _, lab in checked])
            else:
                c, lab = check_points(pc, pl)
                coords, labels = c[None], lab[None]
            coords_t = torch.as_tensor(coords, dtype=torch.float32, device=self.device)
            labels_t = torch.as_tensor(labels, dtype=torch.int, device=self.device)
        if mask_input is not None:
            m = np.asarray(mask_input, dtype=np.float32)
            if m.ndim == 4:
                m = np.stack([check_mask_input(x, self.mask_input_size) for x in m])
            else:
                m = check_mask_input(m, self.mask_input_size)[None]
            mask_t = torch.as_tensor(m, device=self.device)
        if boxes is not None:
            box_t = torch.as_tensor(boxes, dtype=torch.float32, device=self.device)
        size = self.model.image_size
        if normalize_coords:
            if coords_t is not None:
                coords_t = scale_points(coords_t, self.original_size, size)
            if box_t is not None:
                box_t = scale_points(box_t.reshape(-1, 2, 2), self.original_size, size)
        else:
            coords_t = None if coords_t is None else coords_t * size
            box_t = None if box_t is None else box_t.reshape(-1, 2, 2) * size
        masks, iou, low_res = self.predict_torch(
            coords_t, labels_t, box_t, mask_t, multimask_output, return_logits
        )
        if not batched:
            masks, iou, low_res = masks[0], iou[0], low_res[0]
        masks = masks.float().cpu().numpy() if return_logits else masks.cpu().numpy()
        return masks, iou.float().cpu().numpy(), low_res.float().cpu().numpy()

    def _predict_checked(
        self, prompt: ObjectPrompt, multimask_output: bool, return_logits: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.predict(
            prompt.coords,
            prompt.labels,
            prompt.box,
            prompt.mask_input,
            multimask_output,
            return_logits,
        )

    # predict_torch(...) and decode(...): ModelPredictMixin, through these three hooks
    def _prompt_threads(self):
        return cpu_policy("prompts", self.device)

    def _to_image(self, low_res, iou, return_logits):
        """Full-size masks from the unclamped logits; low-res logits clamped to [-32, 32]."""
        masks = self.model.postprocess_masks(self.clean_low_res(low_res), self.original_size)
        if not return_logits:
            masks = masks > self.mask_threshold
        return masks, iou, low_res.clamp(-LOW_RES_CLAMP, LOW_RES_CLAMP)

    def _decode(self, points, boxes, mask_input, multimask_output, region):
        """Unclamped low-res logits and IoU; a box becomes two points (labels 2, 3) before the
        clicks; ``region`` is not used (SAM 2 has no padding to skip)."""
        if points is not None:
            points = (points[0].float(), points[1])
        if boxes is not None:
            boxes = boxes.float().reshape(-1, 4)
        points = box_to_points(boxes, points)
        if mask_input is not None:
            mask_input = mask_input.float()
        if mask_input is None and points is not None and self._fast_ok():
            sparse, _ = self._encode_prompt_tensors(points, None, None)
            return self._shared_decoder().decode_sparse(sparse, multimask_output)
        low_res, iou, _ = self.model.decode(
            self.features, self.high_res, points, mask_input, multimask_output
        )
        return low_res.float(), iou.float()

    def _fast_ok(self) -> bool:
        """Prompts without a mask input go through :class:`Sam2PointDecoder` (the module
        decoder's values, its per-image work shared across prompts and calls) unless the
        decoder module was replaced, the features are a batch, or an autocast other than bf16
        is on (under bf16 autocast the point decoder runs in its own bf16 mode)."""
        return (
            type(self.model.mask_decoder) is Sam2MaskDecoder
            and self.features.shape[0] == 1
            and self._fast_decoder_dtype() is not None
        )

    # _shared_decoder(): ModelPredictMixin, through these two hooks
    def _new_point_decoder(self, dtype: torch.dtype) -> Sam2PointDecoder:
        return Sam2PointDecoder(self.model, dtype=dtype, chunk=2)

    def _set_decoder_features(self, decoder: Sam2PointDecoder) -> None:
        decoder.set_features(self.features, self.high_res)

    def clean_low_res(self, low_res: torch.Tensor) -> torch.Tensor:
        """Fill small holes / remove small specks of the low-res masks (if configured)."""
        if self.max_hole_area <= 0 and self.max_sprinkle_area <= 0:
            return low_res
        from ..ops.regions import fill_holes_and_sprinkles

        return fill_holes_and_sprinkles(
            low_res, self.mask_threshold, self.max_hole_area, self.max_sprinkle_area
        )


#: Meta's class name, for code written against ``sam2``
SAM2ImagePredictor = Sam2Predictor
