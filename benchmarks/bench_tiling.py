"""Tiled segment-everything on large synthetic scenes: accuracy, time per megapixel, peak RSS.

Prints (and appends to ``--out``, one JSON line per run) the figures of the README's "Large
images and GeoTIFF" section:

    python benchmarks/bench_tiling.py                              # 2k, 4k, 8k, 16k sides
    python benchmarks/bench_tiling.py --sizes 2048 --modes tiled fixed whole

Scenes come from :func:`samkit.data.synthetic_scene.make_large_scene` (shapes of radius 16..40 px on
a cloudy background, one per 96 px cell in 80 % of the cells, no overlaps: the sizes the demo
model was trained on), written once as raw RGB files under ``--work``. Every run is a child
process that reads the file a row of tiles at a time (``RawRaster``); its peak RSS
(``ru_maxrss``) is taken right after segmentation, before the evaluation loads the ground truth.

Modes: ``tiled`` (256 px tiles = the demo model's input, 64 px overlap, seam merge), ``fixed``
(the samgeo way: 256 px tiles without overlap, each tile's masks kept as they are), ``whole``
(the ordinary call on the whole image, which the model downscales to 256 px; it holds the image
and full-size masks in memory). Per-tile settings: ``points_stride=8, conf_thres=0.7,
stability_score_thresh=0.85`` (the whole-image call uses ``points_stride=32``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from samkit.data.synthetic_scene import make_large_scene  # noqa: E402

SEED = 11
PARAMS = {"points_stride": 8, "conf_thres": 0.7, "stability_score_thresh": 0.85}


def _scene_file(work: Path, size: int) -> Path:
    path = work / f"scene_{size}.rgb"
    if not path.exists() or path.stat().st_size != size * size * 3:
        t0 = time.perf_counter()
        make_large_scene(size, size, seed=SEED).write_raw(path)
        print(f"wrote {path} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return path


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child(size: int, path: str, mode: str, evaluate: bool) -> dict:
    import torch

    from samkit import SAM
    from samkit.everything.tiling import segment_everything_tiled, tile_grid
    from samkit.everything.tiling.masks import CroppedMasks, match_masks
    from samkit.everything.tiling.raster import RawRaster

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    model = SAM("samkit-demo")
    rss_model = _rss_mb()
    raster = RawRaster(path, size, size)
    t0 = time.perf_counter()
    overlap = 64 if mode == "tiled" else 0
    if mode == "whole":
        image = raster.read(0, 0, size, size)
        res = model(image, image_format="RGB", **{**PARAMS, "points_stride": 32})[0]
        boxes = res.boxes.astype(np.int64) + np.array([0, 0, 1, 1])
        crops = [m[b[1] : b[3], b[0] : b[2]] for m, b in zip(res.masks, boxes)]
        out = CroppedMasks((size, size), boxes, crops, res.scores)
        del res, image
        stats = {}
    else:
        out = segment_everything_tiled(
            model, raster, tile=256, overlap=overlap, merge=mode == "tiled", batch=8, **PARAMS
        )
        stats = out.stats
    seconds = time.perf_counter() - t0
    rec = {
        "size": size,
        "mode": mode,
        "seconds": round(seconds, 1),
        "s_per_mpix": round(seconds / (size * size / 1e6), 2),
        "peak_rss_mb": round(_rss_mb()),
        "rss_after_model_load_mb": round(rss_model),
        "masks": len(out),
        "stats": {k: (round(v, 2) if isinstance(v, float) else v) for k, v in stats.items()},
        "load": os.getloadavg()[0],
    }
    if evaluate:
        scene = make_large_scene(size, size, seed=SEED)
        tb, tc = scene.truth()
        truth = CroppedMasks((size, size), tb, tc, np.ones(len(tc)))
        best, pieces = match_masks(out, truth)
        # seams of the mode's own grid (the whole-image call: those of the tiled grid)
        grid = tile_grid(size, size, 256, 0 if mode == "fixed" else 64)
        ex = set(grid[:, [0, 2]].ravel().tolist()) - {0, size}
        ey = set(grid[:, [1, 3]].ravel().tolist()) - {0, size}
        b = truth.boxes_xyxy
        crossing = np.array(
            [any(x0 < e <= x1 for e in ex) or any(y0 < e <= y1 for e in ey) for x0, y0, x1, y1 in b]
        )
        found = best >= 0.8
        rec.update(
            shapes=len(truth),
            found_iou80=int(found.sum()),
            found_frac=round(float(found.mean()), 4),
            seam_crossing=int(crossing.sum()),
            seam_found_one_mask=int((crossing & found & (pieces == 1)).sum()),
            seam_more_than_one_mask=int((crossing & (pieces > 1)).sum()),
            shapes_more_than_one_mask=int((pieces > 1).sum()),
        )
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096, 8192, 16384])
    ap.add_argument("--modes", nargs="+", default=["tiled"], choices=["tiled", "fixed", "whole"])
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench_tiling")
    ap.add_argument("--out", type=Path, default=None, help="append JSON lines here")
    ap.add_argument("--no-eval", action="store_true", help="skip the ground-truth comparison")
    ap.add_argument("--child", nargs=4, metavar=("SIZE", "PATH", "MODE", "EVAL"))
    args = ap.parse_args()
    if args.child:
        size, path, mode, ev = args.child
        print(json.dumps(child(int(size), path, mode, ev == "1")))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    for size in args.sizes:
        path = _scene_file(args.work, size)
        for mode in args.modes:
            cmd = [sys.executable, __file__, "--child", str(size), str(path), mode]
            cmd.append("0" if args.no_eval else "1")
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                print(f"{size} {mode}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
                continue
            line = proc.stdout.strip().splitlines()[-1]
            print(line, flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(line + "\n")


if __name__ == "__main__":
    main()
