"""samkit: a fast, safe, standalone toolkit for the Segment Anything Model family."""

from .errors import CheckpointError, DownloadError, ImageError, PromptError, SamkitError
from .model import SAM
from .predictor import SamPredictor
from .registry import VARIANTS, ModelConfig

__version__ = "0.1.0"

__all__ = [
    "SAM",
    "VARIANTS",
    "CheckpointError",
    "DownloadError",
    "ImageError",
    "ModelConfig",
    "PromptError",
    "SamPredictor",
    "SamkitError",
    "__version__",
]
