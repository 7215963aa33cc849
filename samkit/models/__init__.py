"""SAM model parts (``nn.Module`` s only)."""

from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .sam import Sam
from .tiny_vit import TinyViT
from .transformer import TwoWayTransformer
from .vit import ImageEncoderViT

__all__ = ["ImageEncoderViT", "MaskDecoder", "PromptEncoder", "Sam", "TinyViT", "TwoWayTransformer"]
