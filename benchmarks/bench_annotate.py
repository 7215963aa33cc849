"""Throughput of samkit.auto_annotate: images per second with 10 boxes per image.

Seeded (offline) MobileSAM and ViT-B weights; synthetic 640x480 images; a callable detector
returning 10 fixed boxes, so the figures are SAM + writing only. COCO output (RLE) measures the
pipeline itself; YOLO output adds mask -> polygon conversion and merging of multi-part masks,
whose cost grows with the number of parts: seeded weights give speckled masks with hundreds to
thousands of parts (printed), far more than real SAM masks, so the YOLO figure here is a worst
case. The time of the image encoder alone (``set_image``), the process CPU time and the
machine's load average are printed too: on a shared CPU wall-clock figures are only as good as
the machine is idle; with ``--threads 1`` the CPU time is close to the single-core cost.

    python benchmarks/bench_annotate.py [--models mobile_sam sam_b] [--images 4] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from samkit import SamPredictor, auto_annotate
from samkit.ops import rle_to_mask
from samkit.zoo.seeded import seeded_model

BOXES = np.array(
    [[40 + 55 * i, 30 + 35 * (i % 4), 140 + 55 * i, 170 + 35 * (i % 4)] for i in range(10)],
    dtype=np.float64,
)  # 10 XYXY boxes inside 640 x 480


def detector(image: np.ndarray):
    return BOXES, np.arange(10) % 3, np.linspace(0.9, 0.5, 10)


def make_images(folder: Path, n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    images = []
    for i in range(n):
        img = (rng.random((480, 640, 3)) * 60 + 90).astype(np.uint8)
        for x1, y1, x2, y2 in BOXES.astype(int):
            img[y1 + 10 : y2 - 10, x1 + 10 : x2 - 10] = rng.integers(0, 255, 3)
        Image.fromarray(img).save(folder / f"img{i:03d}.png")
        images.append(img)
    return images


def mask_parts(coco_json: Path) -> float:
    """Mean number of connected parts (8-connected) of the masks in a COCO result file."""
    anns = json.loads(coco_json.read_text())["annotations"]
    counts = [
        cv2.connectedComponents(rle_to_mask(a["segmentation"]).astype(np.uint8))[0] - 1
        for a in anns
    ]
    return float(np.mean(counts)) if counts else 0.0


def bench(name: str, n_images: int, formats: list[str], precision: str, work: Path) -> None:
    sam = seeded_model(name).eval()
    data = work / f"{name}_images"
    images = make_images(data, n_images)
    predictor = SamPredictor(sam, precision=precision)
    predictor.set_image(images[0])  # warm-up (allocations, kernels)
    t0, c0 = time.perf_counter(), time.process_time()
    predictor.set_image(images[1 % n_images])
    encode_s, encode_cpu = time.perf_counter() - t0, time.process_time() - c0
    for fmt in formats:
        out = work / f"{name}_{fmt}"
        load_before = os.getloadavg()
        t0, c0 = time.perf_counter(), time.process_time()
        summary = auto_annotate(
            data,
            det_model=detector,
            sam_model=sam,
            output_dir=out,
            format=fmt,
            precision=precision,
            progress=False,
        )
        total, cpu = time.perf_counter() - t0, time.process_time() - c0
        load_after = os.getloadavg()
        assert summary.failed == 0 and summary.objects + summary.dropped == 10 * n_images
        per_image = total / n_images
        extra = ""
        if fmt == "coco":
            extra = f"; masks have {mask_parts(out / 'annotations.json'):.0f} parts on average"
        print(
            f"{name:10s} {precision} {fmt:4s} ({'polygons' if fmt == 'yolo' else 'RLE'}): "
            f"{n_images / total:.4f} images/s = {per_image:.2f} s/image, CPU time "
            f"{cpu / n_images:.2f} s/image (encoder alone {encode_s:.2f} s, CPU "
            f"{encode_cpu:.2f} s); {summary.objects} objects{extra}; load average "
            f"{load_before[0]:.1f} before, {load_after[0]:.1f} after",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mobile_sam", "sam_b"])
    parser.add_argument("--images", type=int, default=4, help="images per model")
    parser.add_argument("--formats", nargs="+", default=["coco", "yolo"], choices=["yolo", "coco"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs "
        f"({platform.processor() or platform.machine()}), 640x480 images, 10 boxes each"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            bench(name, args.images, args.formats, args.precision, Path(tmp))


if __name__ == "__main__":
    main()
