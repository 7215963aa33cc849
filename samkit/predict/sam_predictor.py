"""Meta-style low-level predictor: cache one image embedding, then decode many prompts.

Two levels: :meth:`SamPredictor.predict_torch` takes tensors already in the model's input frame
(batched, ``B`` prompts at once); :meth:`SamPredictor.predict` takes NumPy prompts in original
image pixels and returns NumPy arrays, exactly like ``segment_anything.SamPredictor``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ImageError, PromptError
from ..models import Sam
from ..models.mask_decoder import MaskDecoder
from .base import MetaPredictMixin
from .fast_decode import PointDecoder, UpscaleRest
from .precision import encode, resolve_precision
from .prompt_checks import ObjectPrompt, check_image
from .threads import cpu_policy
from .transforms import resize_longest_side, scale_boxes, scale_coords


@dataclass(frozen=True)
class ImageEmbedding:
    """One encoded image: ``features`` ``1 x C x h x w`` (fp32) and its sizes ``(H, W)``.

    ``original_size`` is the image's size, ``input_size`` its resized size before padding.
    """

    features: torch.Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]


class SamPredictor(MetaPredictMixin):
    """Computes the image embedding once (:meth:`set_image`) and answers prompts against it.

    ``precision`` of the image encoder: ``"fp32"`` (the reference, default), ``"bf16"``, or
    ``"auto"`` (bf16 where the device computes it natively); see :mod:`samkit.predict.precision`.
    Prompt encoding and mask decoding always run in fp32.

    ``fast_decoder=True`` (default) decodes prompts without a mask input through
    :class:`~samkit.predict.fast_decode.PointDecoder`, which computes the image side of the first
    decoder block once per image and re-associates the attention products: the module
    decoder's values up to float rounding (logits ~1e-6 relative), 3-4x less work per prompt.
    ``False`` runs Meta's module decoder for every call.
    """

    features: torch.Tensor | None  # 1 x C x h x w, fp32

    def __init__(self, sam_model: Sam, precision: str = "fp32", fast_decoder: bool = True) -> None:
        self.model = sam_model
        self.precision = resolve_precision(precision, sam_model.device)
        self.fast_decoder = fast_decoder
        self.reset_image()

    # -- image -----------------------------------------------------------------------------
    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """Encode an ``H x W x 3`` uint8 image (``image_format`` "RGB" or "BGR")."""
        image = self._check_image(image, image_format)
        self.set_torch_image(self._to_input(image, image_format), image.shape[:2])

    @staticmethod
    def _check_image(image: np.ndarray, image_format: str) -> np.ndarray:
        if image_format not in ("RGB", "BGR"):
            raise ImageError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        return check_image(image)

    def _to_input(self, image: np.ndarray, image_format: str) -> torch.Tensor:
        """Resized ``1 x 3 x h x w`` uint8 tensor of a checked RGB/BGR image."""
        if image_format != self.model.image_format:
            image = image[..., ::-1]
        resized = resize_longest_side(image, self.model.image_size)
        return torch.as_tensor(resized, device=self.device).permute(2, 0, 1).contiguous()[None]

    @torch.inference_mode()
    def set_torch_image(
        self, transformed_image: torch.Tensor, original_image_size: tuple[int, ...]
    ) -> None:
        """Encode a resized ``1 x 3 x h x w`` image (long side = model input size, 0-255 values)."""
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
        with cpu_policy("encoder", self.device):
            features = encode(self.model.image_encoder, x, self.precision)
        self._hold_embedding(
            features,
            (int(original_image_size[0]), int(original_image_size[1])),
            (int(transformed_image.shape[-2]), int(transformed_image.shape[-1])),
        )

    def encode_images(
        self, images: Sequence[np.ndarray], image_format: str = "RGB", batch_size: int = 4
    ) -> list[ImageEmbedding]:
        """Encode several ``H x W x 3`` uint8 images, ``batch_size`` at a time through the encoder.

        The current image is not changed; pass a result to :meth:`set_embedding` to prompt it.
        """
        if batch_size < 1:
            raise ImageError(f"batch_size must be >= 1, got {batch_size}")
        inputs = []
        for i, image in enumerate(images):
            try:
                image = self._check_image(image, image_format)
            except ImageError as e:
                raise ImageError(f"image {i}: {e}") from None
            inputs.append((self._to_input(image, image_format), image.shape[:2]))
        out = []
        for start in range(0, len(inputs), batch_size):
            chunk = inputs[start : start + batch_size]
            x = torch.cat([self.model.preprocess(t.to(self.device)) for t, _ in chunk])
            with cpu_policy("encoder", self.device):
                features = encode(self.model.image_encoder, x, self.precision)
            for j, (t, size) in enumerate(chunk):
                out.append(
                    ImageEmbedding(
                        features[j : j + 1].clone(),
                        (int(size[0]), int(size[1])),
                        (int(t.shape[-2]), int(t.shape[-1])),
                    )
                )
        return out

    def set_embedding(self, embedding: ImageEmbedding) -> None:
        """Make an embedding from :meth:`encode_images` the current image.

        Anything with ``features``, ``original_size`` and ``input_size`` will do (such as
        :class:`samkit.predict.embedding.Embedding`).
        """
        self.reset_image()
        self._hold_embedding(
            embedding.features.to(self.device), embedding.original_size, embedding.input_size
        )

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def transform_sizes(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """``(original_size, input_size)`` of the current image."""
        self._require_image()
        return self.original_size, self.input_size

    @property
    def mask_input_size(self) -> tuple[int, int]:
        """``(h, w)`` of the low-res mask logits (``mask_input`` and ``low_res_logits``)."""
        return self.model.prompt_encoder.mask_input_size

    # -- prompts ---------------------------------------------------------------------------
    # predict(point_coords, point_labels, box, mask_input, multimask_output, return_logits):
    # checked by MetaPredictMixin, then decoded here.
    def _predict_checked(
        self, prompt: ObjectPrompt, multimask_output: bool, return_logits: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        coords_t = labels_t = box_t = mask_t = None
        if prompt.coords is not None:
            coords = scale_coords(prompt.coords, self.original_size, self.input_size)
            coords_t = torch.as_tensor(coords, dtype=torch.float, device=self.device)[None]
            labels_t = torch.as_tensor(prompt.labels, dtype=torch.int, device=self.device)[None]
        if prompt.box is not None:
            b = scale_boxes(prompt.box.reshape(1, 4), self.original_size, self.input_size)
            box_t = torch.as_tensor(b, dtype=torch.float, device=self.device)
        if prompt.mask_input is not None:
            mask_t = torch.as_tensor(prompt.mask_input, device=self.device)[None]
        masks, iou, low_res = self.predict_torch(
            coords_t, labels_t, box_t, mask_t, multimask_output, return_logits
        )
        return (
            masks[0].float().cpu().numpy() if return_logits else masks[0].cpu().numpy(),
            iou[0].float().cpu().numpy(),
            low_res[0].float().cpu().numpy(),
        )

    @torch.inference_mode()
    def predict_torch(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Decode ``B`` prompts at once; inputs are in the model's input frame (resized pixels).

        Args:
            point_coords: ``B x N x 2``; point_labels: ``B x N``; boxes: ``B x 4`` XYXY;
            mask_input: ``B x 1 x 256 x 256`` logits.
        Returns:
            ``(masks B x C x H x W, iou B x C, low_res_logits B x C x 256 x 256)``.
        """
        self._require_image()
        with cpu_policy("prompts", self.device):
            low_res, iou = self.decode(
                point_coords, point_labels, boxes, mask_input, multimask_output
            )
            masks = self.model.postprocess_masks(low_res, self.input_size, self.original_size)
            if not return_logits:
                masks = masks > self.model.mask_threshold
        return masks, iou, low_res

    @torch.inference_mode()
    def decode(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        region: tuple[int, int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Low-res logits ``B x C x 256 x 256`` and IoU ``B x C``, without upsampling.

        ``region = (h, w)`` returns only ``logits[..., :h, :w]``; the fast decoder then computes
        only those (the output upscaling is per pixel), the module decoder crops its output.
        """
        sparse, dense = self._encode_prompts(point_coords, point_labels, boxes, mask_input)
        if mask_input is None and self.uses_fast_decoder():
            decoder = self._shared_decoder()
            return decoder.decode_sparse(sparse, multimask_output, chunk=2, region=region)
        model = self.model
        low_res, iou = model.mask_decoder(
            self.features, model.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output
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
        return self._shared_decoder().decode_sparse_split(sparse, multimask_output, region, chunk=2)

    def _encode_prompts(self, point_coords, point_labels, boxes, mask_input):
        """Sparse and dense prompt embeddings of input-frame prompt tensors."""
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
        return self.model.prompt_encoder(points, boxes, mask_input)

    def uses_fast_decoder(self) -> bool:
        """Whether prompts without a mask input, decoded now, go through the fast decoder (the
        option is on, the module decoder is SAM's own, fp32 features, no autocast active)."""
        self._require_image()
        dev = self.features.device.type
        return (
            self.fast_decoder
            and type(self.model.mask_decoder) is MaskDecoder  # not a replaced/customised module
            and self.features.shape[0] == 1
            and self.features.dtype == torch.float32
            and not torch.is_autocast_enabled(dev)
        )

    def _shared_decoder(self) -> PointDecoder:
        """The :class:`~samkit.predict.fast_decode.PointDecoder` holding this image's shared work."""
        cached = getattr(self, "_point_decoder", None)
        if cached is None or cached[0] is not self.features:
            decoder = PointDecoder(self.model)
            decoder.set_features(self.features)
            cached = self._point_decoder = (self.features, decoder)
        return cached[1]
