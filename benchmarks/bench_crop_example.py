"""Time the crop example of Ultralytics' SAM page, in samkit and (optionally) in Ultralytics.

    PYTHONPATH=. python benchmarks/bench_crop_example.py                       # samkit, the page's grid
    PYTHONPATH=. python benchmarks/bench_crop_example.py --points-stride 16    # a shorter run
    PYTHONPATH=. python benchmarks/bench_crop_example.py --ref-python REF/bin/python --ref-timeout 3600

The example: ``SAMPredictor(overrides=dict(conf=0.25, task="segment", mode="predict",
imgsz=1024, model="mobile_sam.pt"))`` then ``predictor(source="zidane.jpg", crop_n_layers=1,
points_stride=64)``. ``points_stride`` is points per side of the grid in each crop, as in
Ultralytics: 64 x 64 points on the whole image and on each of the 4 crops of layer 1, 20,480
point prompts in all. samkit encodes each crop once (5 encoder runs); Ultralytics' ``generate``
encodes the crop again for every batch of ``points_batch_size`` (64) points (320 encoder runs)
and upsamples every mask to the crop size before filtering.

Both engines get the same seeded MobileSAM checkpoint (written by samkit under the official
name ``mobile_sam.pt``) and the same synthetic 1280 x 720 photo-like image (zidane.jpg's size).
Seeded weights pass few masks through the filters, so real weights add some upscaling time.
``--ref-python`` is the interpreter of a separate environment with ``ultralytics`` installed
(never a samkit dependency); it runs the page's code as written, in a subprocess, after samkit.
Prints one JSON line per engine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import cv2
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_everything import photo_like  # noqa: E402

REF_CODE = textwrap.dedent(
    """
    import json, sys, time
    import torch
    torch.set_num_threads(int(sys.argv[4]))
    from ultralytics.models.sam import Predictor as SAMPredictor
    overrides = dict(conf=0.25, task="segment", mode="predict", imgsz=1024, model=sys.argv[1],
                     verbose=False, save=False)
    predictor = SAMPredictor(overrides=overrides)
    t0 = time.perf_counter()
    results = predictor(source=sys.argv[2], crop_n_layers=1, points_stride=int(sys.argv[3]))
    masks = results[0].masks
    print(json.dumps({"engine": "ultralytics", "seconds": time.perf_counter() - t0,
                      "masks": 0 if masks is None else len(masks)}))
    """
)


def run_samkit(ckpt: Path, image: Path, stride: int, verbose: bool) -> dict:
    from samkit import SAMPredictor

    overrides = dict(conf=0.25, task="segment", mode="predict", imgsz=1024, model=str(ckpt))
    predictor = SAMPredictor(overrides={**overrides, "verbose": verbose, "precision": "fp32"})
    predictor.setup_model()  # loading is not part of the timed call (as for Ultralytics)
    t0 = time.perf_counter()
    (result,) = predictor(source=str(image), crop_n_layers=1, points_stride=stride)
    seconds = time.perf_counter() - t0
    return {"engine": "samkit", "seconds": round(seconds, 2), "masks": len(result)}


def run_reference(python: str, ckpt: Path, image: Path, stride: int, threads: int, timeout: float):
    cmd = [python, "-c", REF_CODE, str(ckpt), str(image), str(stride), str(threads)]
    env = dict(os.environ, YOLO_OFFLINE="1")
    t0 = time.perf_counter()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"engine": "ultralytics", "seconds": None, "timed_out_after_s": timeout}
    if out.returncode != 0:
        return {"engine": "ultralytics", "error": out.stderr.strip().splitlines()[-3:]}
    record = json.loads(out.stdout.strip().splitlines()[-1])
    record["seconds"] = round(record["seconds"], 2)
    record["wall_s"] = round(time.perf_counter() - t0, 2)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description="the crop example of Ultralytics' SAM page")
    parser.add_argument("--points-stride", type=int, default=64)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--ref-python", default=os.environ.get("SAMKIT_REF_PYTHON"))
    parser.add_argument("--ref-timeout", type=float, default=3600.0)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from samkit import write_seeded_checkpoint

    with tempfile.TemporaryDirectory(prefix="bench-crop-") as tmp:
        ckpt = write_seeded_checkpoint("mobile_sam", Path(tmp) / "mobile_sam.pt")
        image = Path(tmp) / "zidane.jpg"
        cv2.imwrite(str(image), photo_like(720, 1280)[..., ::-1])
        points = args.points_stride**2 * 5
        print(
            f"# crop_n_layers=1, points_stride={args.points_stride}: {points:,} point prompts; "
            f"{args.threads} torch threads; {os.cpu_count()} CPUs; load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        record = run_samkit(ckpt, image, args.points_stride, not args.quiet)
        record.update(points=points, threads=args.threads)
        print(json.dumps(record), flush=True)
        if args.ref_python:
            ref = run_reference(
                args.ref_python, ckpt, image, args.points_stride, args.threads, args.ref_timeout
            )
            ref.update(points=points, threads=args.threads)
            print(json.dumps(ref), flush=True)


if __name__ == "__main__":
    main()
