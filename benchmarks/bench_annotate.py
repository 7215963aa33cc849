"""Throughput of samkit.auto_annotate: images per second with 10 boxes per image.

Seeded (offline) MobileSAM and ViT-B weights; synthetic 640x480 images; a callable detector
returning 10 fixed boxes, so the figures are SAM + label writing only. Besides images/s it
prints the time of the image encoder alone (``set_image``) so the per-image overhead of
decoding 10 boxes, upsampling, polygons and writing is visible. The machine's load average is
printed too: on a shared CPU the figures are only as good as the machine is idle.

    python benchmarks/bench_annotate.py [--models mobile_sam sam_b] [--images 4] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from samkit import SamPredictor, auto_annotate
from samkit.seeded import seeded_model

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


def bench(name: str, n_images: int, fmt: str, work: Path) -> None:
    sam = seeded_model(name).eval()
    data = work / f"{name}_images"
    images = make_images(data, n_images)
    predictor = SamPredictor(sam)
    predictor.set_image(images[0])  # warm-up (allocations, kernels)
    t0 = time.perf_counter()
    predictor.set_image(images[1 % n_images])
    encode_s = time.perf_counter() - t0

    load_before = os.getloadavg()
    t0 = time.perf_counter()
    summary = auto_annotate(
        data,
        det_model=detector,
        sam_model=sam,
        output_dir=work / f"{name}_out",
        format=fmt,
        progress=False,
    )
    total = time.perf_counter() - t0
    load_after = os.getloadavg()
    assert summary.failed == 0 and summary.objects + summary.dropped == 10 * n_images, summary
    per_image = total / n_images
    print(
        f"{name:10s} {fmt}: {n_images / total:.3f} images/s ({per_image:.2f} s/image: encoder "
        f"{encode_s:.2f} s + 10 boxes decode/upsample/{'polygons' if fmt == 'yolo' else 'RLE'}/"
        f"write {per_image - encode_s:.2f} s); {summary.objects} objects; load average "
        f"{load_before[0]:.1f} before, {load_after[0]:.1f} after"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mobile_sam", "sam_b"])
    parser.add_argument("--images", type=int, default=4, help="images per model")
    parser.add_argument("--format", default="yolo", choices=["yolo", "coco"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs "
        f"({platform.processor() or platform.machine()}), 640x480 images, 10 boxes each"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            bench(name, args.images, args.format, Path(tmp))


if __name__ == "__main__":
    main()
