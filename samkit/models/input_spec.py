"""What a model expects as input: size, resize mode, pixel statistics and their scale, padding.

Torch-free (the onnxruntime predictor reads it too). Every encoder kind of the registry
(:mod:`samkit.zoo.registry`) gives its :class:`InputSpec`; the predictors ask it instead of
assuming SAM's 1024 / longest side / ImageNet-on-0-255.
"""

from __future__ import annotations

from dataclasses import dataclass

RESIZE_MODES = ("longest", "square")
PAD_MODES = ("bottom_right", "none")
MASK_UPSAMPLE_MODES = ("via_input", "direct")

# SAM's pixel statistics (RGB, 0-255 scale): ImageNet's mean and std times 255.
SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class InputSpec:
    """Pre- and post-processing of one model family.

    Attributes:
        image_size: side ``S`` of the square model input, pixels.
        resize: ``"longest"``: the long side to ``S`` (aspect kept), Pillow bilinear on uint8,
            as SAM v1; ``"square"``: both sides to ``S`` (aspect not kept), bilinear with
            antialias on float 0-1 values, as SAM 2.
        pixel_mean, pixel_std: per RGB channel, on the scale ``0..pixel_scale``.
        pixel_scale: 255.0 when the statistics are on 0-255 pixels (SAM v1), 1.0 when on 0-1
            values (SAM 2: the image is divided by 255 first).
        pad: ``"bottom_right"``: zero-pad the resized image to ``S x S`` (after normalizing);
            ``"none"``: the resize already fills the input.
        mask_upsample: ``"via_input"``: low-res logits -> ``S x S`` -> crop the padding ->
            original size (SAM v1); ``"direct"``: low-res logits -> original size (SAM 2).
    """

    image_size: int = 1024
    resize: str = "longest"
    pixel_mean: tuple[float, float, float] = SAM_PIXEL_MEAN
    pixel_std: tuple[float, float, float] = SAM_PIXEL_STD
    pixel_scale: float = 255.0
    pad: str = "bottom_right"
    mask_upsample: str = "via_input"

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {self.resize!r}")
        if self.pad not in PAD_MODES:
            raise ValueError(f"pad must be one of {PAD_MODES}, got {self.pad!r}")
        if self.mask_upsample not in MASK_UPSAMPLE_MODES:
            raise ValueError(
                f"mask_upsample must be one of {MASK_UPSAMPLE_MODES}, got {self.mask_upsample!r}"
            )
        if self.resize == "longest" and self.pad == "none":
            raise ValueError("a longest-side resize leaves the input short: it needs padding")
        if int(self.image_size) < 1 or self.pixel_scale <= 0:
            raise ValueError(f"bad image_size {self.image_size} or pixel_scale {self.pixel_scale}")

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """``(h, w)`` of an ``height x width`` image after the resize, before padding."""
        if self.resize == "square":
            return self.image_size, self.image_size
        scale = self.image_size * 1.0 / max(height, width)
        return int(height * scale + 0.5), int(width * scale + 0.5)


#: SAM v1 and MobileSAM at 1024.
SAM_V1_INPUT = InputSpec()

# ImageNet's mean and std on 0-1 values (SAM 2 and SAM 2.1).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: SAM 2 / 2.1 at 1024: square antialiased resize of 0-1 values, ImageNet statistics, no
#: padding, one direct bilinear upsample of the masks.
SAM2_INPUT = InputSpec(
    image_size=1024,
    resize="square",
    pixel_mean=IMAGENET_MEAN,
    pixel_std=IMAGENET_STD,
    pixel_scale=1.0,
    pad="none",
    mask_upsample="direct",
)
