"""Meta-style low-level predictor: cache one image embedding, then decode many prompts.

Two levels: :meth:`SamPredictor.predict_torch` takes tensors already in the model's input frame
(batched, ``B`` prompts at once); :meth:`SamPredictor.predict` takes NumPy prompts in original
image pixels and returns NumPy arrays, exactly like ``segment_anything.SamPredictor``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..errors import ImageError, SamkitError
from ..models import Sam
from ..models.mask_decoder import MaskDecoder
from .base import ModelPredictMixin
from .decode import decode_prompts
from .embedding import Embedding, encode_batch, encode_images
from .fast_decode import PointDecoder, UpscaleRest
from .precision import dtype_of, resolve_precision
from .prompt_checks import ObjectPrompt
from .prompts import Prompts
from .threads import cpu_policy
from .transforms import resize_to_input

#: The embedding type of earlier versions (one type serves both predictors now).
ImageEmbedding = Embedding


class SamPredictor(ModelPredictMixin):
    """Computes the image embedding once (:meth:`set_image`) and answers prompts against it.

    ``precision`` of the image encoder: ``"fp32"`` (the reference, default), ``"bf16"``, or
    ``"auto"`` (bf16 where the device computes it natively); see :mod:`samkit.precision`.
    Prompt encoding and mask decoding always run in fp32.

    ``fast_decoder=True`` (default) decodes prompts without a mask input through
    :class:`~samkit.fast_decode.PointDecoder`, which computes the image side of the first
    decoder block once per image and re-associates the attention products: the module
    decoder's values up to float rounding (logits ~1e-6 relative), 3-4x less work per prompt.
    ``False`` runs Meta's module decoder for every call.
    """

    features: torch.Tensor | None  # 1 x C x h x w, fp32
    high_res_feats: tuple[torch.Tensor, ...] | None  # extra maps of encoders that have them

    def __init__(self, sam_model: Sam, precision: str = "fp32", fast_decoder: bool = True) -> None:
        inner = getattr(sam_model, "model", None)
        if not isinstance(sam_model, Sam) and isinstance(inner, Sam):
            sam_model = inner  # a samkit.SAM: its module
        if not isinstance(sam_model, Sam):
            raise SamkitError(
                "SamPredictor needs a samkit Sam module or a samkit.SAM, got "
                f"{type(sam_model).__name__}"
            )
        self.model = sam_model
        self.precision = resolve_precision(precision, sam_model.device, sam_model)
        self.fast_decoder = fast_decoder
        self.reset_image()

    # -- image -----------------------------------------------------------------------------
    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """Encode an ``H x W x 3`` uint8 image (``image_format`` "RGB" or "BGR")."""
        image = self._check_image(image, image_format)
        if image_format != self.model.image_format:
            image = image[..., ::-1]
        self.reset_image()
        self.set_embedding(encode_images(self.model, [image], dtype_of(self.precision))[0])

    def _to_input(self, image: np.ndarray, image_format: str) -> torch.Tensor:
        """Resized ``1 x 3 x h x w`` tensor of a checked RGB/BGR image (the model's
        :class:`~samkit.models.InputSpec`; uint8 for SAM v1)."""
        if image_format != self.model.image_format:
            image = image[..., ::-1]
        return resize_to_input(image, self.model.input_spec, self.device)

    @torch.inference_mode()
    def set_torch_image(
        self, transformed_image: torch.Tensor, original_image_size: tuple[int, ...]
    ) -> None:
        """Encode a resized ``1 x 3 x h x w`` image (long side = model input size, values on the
        model's pixel scale: 0-255 for SAM v1)."""
        if transformed_image.ndim != 4 or transformed_image.shape[1] != 3:
            raise ImageError(
                f"expected a 1 x 3 x h x w tensor, got {tuple(transformed_image.shape)}"
            )
        if max(transformed_image.shape[2:]) != self.model.image_size:
            raise ImageError(
                f"the long side of the transformed image must be {self.model.image_size}, got "
                f"{tuple(transformed_image.shape[2:])}"
            )
        self.reset_image()
        x = self.model.preprocess(transformed_image.to(self.device))
        features, high_res = encode_batch(self.model, x, dtype_of(self.precision))
        self._hold_embedding(
            features,
            (int(original_image_size[0]), int(original_image_size[1])),
            (int(transformed_image.shape[-2]), int(transformed_image.shape[-1])),
            high_res,
        )

    def encode_images(
        self, images: Sequence[np.ndarray], image_format: str = "RGB", batch_size: int = 4
    ) -> list[Embedding]:
        """Encode several ``H x W x 3`` uint8 images, ``batch_size`` at a time through the encoder.

        The current image is not changed; pass a result to :meth:`set_embedding` to prompt it.
        """
        rgb = self._checked_images(images, image_format, batch_size)
        return encode_images(self.model, rgb, dtype_of(self.precision), batch_size)

    # set_embedding(embedding), device, transform_sizes, mask_input_size: ModelPredictMixin
    # -- prompts ---------------------------------------------------------------------------
    # predict(point_coords, point_labels, box, mask_input, multimask_output, return_logits):
    # checked by MetaPredictMixin, then decoded here.
    def _predict_checked(
        self, prompt: ObjectPrompt, multimask_output: bool, return_logits: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        prompts = Prompts(
            n=1,
            points=None if prompt.coords is None else prompt.coords[None],
            labels=None if prompt.labels is None else prompt.labels[None],
            boxes=None if prompt.box is None else prompt.box.reshape(1, 4),
            masks=prompt.mask_input,
            mask_kind=None if prompt.mask_input is None else "logits",
        )
        with self._prompt_threads():
            out = decode_prompts(self, prompts, multimask_output, return_logits=return_logits)
        return out.masks, out.scores, out.low_res_logits

    # predict_torch(...) and decode(...): ModelPredictMixin, through these three hooks
    def _prompt_threads(self):
        return cpu_policy("prompts", self.device)

    def _to_image(self, low_res, iou, return_logits):
        masks = self.model.postprocess_masks(low_res, self.input_size, self.original_size)
        if not return_logits:
            masks = masks > self.model.mask_threshold
        return masks, iou, low_res

    def _decode(self, points, boxes, mask_input, multimask_output, region):
        sparse, dense = self._encode_prompt_tensors(points, boxes, mask_input)
        if mask_input is None and self.uses_fast_decoder():
            decoder = self._shared_decoder()
            return decoder.decode_sparse(sparse, multimask_output, chunk=2, region=region)
        model = self.model
        extra = {} if self.high_res_feats is None else {"high_res_features": self.high_res_feats}
        low_res, iou = model.mask_decoder(
            self.features,
            model.prompt_encoder.get_dense_pe(),
            sparse,
            dense,
            multimask_output,
            **extra,
        )
        if region is not None:
            low_res = low_res[..., : region[0], : region[1]]
        return low_res, iou

    @torch.inference_mode()
    def decode_split(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        multimask_output: bool,
        region: tuple[int, int],
    ) -> tuple[torch.Tensor, torch.Tensor, UpscaleRest | None]:
        """Fast decoder only (:meth:`uses_fast_decoder`): the logits of ``region``, the IoU, and
        what :meth:`PointDecoder.complete` needs for the rest of the low-res frame."""
        if not self.uses_fast_decoder():
            raise RuntimeError("decode_split needs the fast decoder (see uses_fast_decoder)")
        sparse, _ = self._encode_prompts(point_coords, point_labels, boxes, None)
        decoder = self._shared_decoder()
        return decoder.decode_sparse_split(sparse, multimask_output, region, chunk=2)

    def _encode_prompts(self, point_coords, point_labels, boxes, mask_input):
        """Sparse and dense prompt embeddings of input-frame prompt tensors."""
        points, boxes, mask_input = self._prompt_tensors(
            point_coords, point_labels, boxes, mask_input
        )
        return self._encode_prompt_tensors(points, boxes, mask_input)

    def uses_fast_decoder(self) -> bool:
        """Whether prompts without a mask input, decoded now, go through the fast decoder (the
        option is on, the module decoder is SAM's own, fp32 features, and no autocast or a bf16
        one, which the fast decoder follows in its own bf16 mode)."""
        self._require_image()
        return (
            self.fast_decoder
            and type(self.model.mask_decoder) is MaskDecoder  # not a replaced/customised module
            and self.high_res_feats is None
            and self.features.shape[0] == 1
            and self.features.dtype == torch.float32
            and self._fast_decoder_dtype() is not None
        )

    # _shared_decoder(): ModelPredictMixin, through these two hooks
    def _new_point_decoder(self, dtype: torch.dtype) -> PointDecoder:
        return PointDecoder(self.model, dtype=dtype)

    def _set_decoder_features(self, decoder: PointDecoder) -> None:
        decoder.set_features(self.features)
