"""Large images in native-resolution tiles: masks merged across seams, bounded memory, GeoTIFF.

``segment_everything_tiled`` / ``predict_tiled`` (:mod:`.engine`), the cropped mask store
(:mod:`.masks`), lazy rasters (:mod:`.raster`) and GeoTIFF in/out (:mod:`.geo`, extra ``geo``).
"""

from .engine import predict_tiled, segment_everything_tiled, tile_grid
from .masks import CroppedMasks

__all__ = ["CroppedMasks", "predict_tiled", "segment_everything_tiled", "tile_grid"]
