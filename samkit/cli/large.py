"""``samkit predict source=scene.tif tile=true``: a GeoTIFF segmented in tiles, streamed out.

Nothing image-sized is held: the scene is read a row of tiles at a time and the masks stay
cropped. Writes ``masks.tif`` (instance labels on the scene's grid and CRS), ``masks.gpkg``
(one polygon feature per mask, same CRS) and ``results.json`` (the usual records, COCO RLE).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


def run_predict_large(
    model: Any,
    args: dict[str, Any],
    prompts: dict[str, Any],
    everything: dict[str, Any],
    save_dir: Path,
) -> int:
    from ..everything.tiling import predict_tiled, segment_everything_tiled
    from ..everything.tiling.geo import open_geotiff, write_mask_raster, write_vectors
    from .commands import _atomic_text

    t0 = time.perf_counter()
    with open_geotiff(args["source"], bands=args["bands"]) as scene:
        tile = True if args["tile"] is True else int(args["tile"])
        if prompts:
            masks = predict_tiled(
                model, scene, **prompts, tile=tile, multimask_output=args["multimask_output"],
                precision=args["precision"],
            )  # fmt: skip
        else:
            masks = segment_everything_tiled(
                model, scene, tile, args["overlap"], precision=args["precision"], progress=True,
                **everything,
            )  # fmt: skip
        save_dir.mkdir(parents=True, exist_ok=True)
        write_mask_raster(masks, save_dir / "masks.tif", scene)
        write_vectors(masks, save_dir / "masks.gpkg", scene)
        h, w = masks.image_size
        summary = {
            "model": model.name,
            "source": str(args["source"]),
            "prompts": prompts or None,
            "mode": "prompts" if prompts else "everything",
            "tiled": {k: v for k, v in masks.stats.items()},
            "images": [
                {
                    "path": str(args["source"]),
                    "frame": None,
                    "height": h,
                    "width": w,
                    "crs": scene.crs.to_string() if scene.crs else None,
                    "transform": list(scene.transform)[:6],
                    "masks": list(masks.records()),
                }
            ],
            "skipped": [],
        }
    _atomic_text(save_dir / "results.json", json.dumps(summary))
    print(
        f"1 image ({w} x {h}), {len(masks)} mask(s) in {time.perf_counter() - t0:.1f} s; "
        f"results saved to {save_dir} (masks.tif, masks.gpkg, results.json)"
    )
    return 0
