"""SAM model parts (``nn.Module`` s only)."""

from .hiera import Hiera
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .sam import Sam
from .sam2 import Sam2
from .sam2_decoder import Sam2MaskDecoder
from .sam2_neck import FpnNeck, Sam2ImageEncoder
from .tiny_vit import TinyViT
from .transformer import TwoWayTransformer
from .vit import ImageEncoderViT

__all__ = [
    "FpnNeck",
    "Hiera",
    "ImageEncoderViT",
    "MaskDecoder",
    "PromptEncoder",
    "Sam",
    "Sam2",
    "Sam2ImageEncoder",
    "Sam2MaskDecoder",
    "TinyViT",
    "TwoWayTransformer",
]
