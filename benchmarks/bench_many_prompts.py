"""Peak memory and time of many box prompts on one image, streamed per chunk.

    python benchmarks/bench_many_prompts.py --boxes 10000 --chunk 128     # the README's figure

Uses the packaged demo model on a random 1280 x 720 image; each chunk's masks are turned into
COCO RLE (what a writer keeps) and dropped. Prints the peak resident set size of the process
(``ru_maxrss``), which includes the model and the decoder's working memory.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from samkit import SAM


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boxes", type=int, default=10_000)
    parser.add_argument("--chunk", type=int, default=128)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--width", type=int, default=1280)
    args = parser.parse_args()
    h, w = args.height, args.width
    predictor = SAM("samkit-demo", device="cpu").predictor()
    predictor.set_image(np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8))
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 1, (args.boxes, 2)) * [w - 180, h - 180]
    boxes = np.concatenate([xy, xy + rng.uniform(20, 180, (args.boxes, 2))], 1)
    t0 = time.perf_counter()
    masks = rles = 0
    for part in predictor.stream(bboxes=boxes, chunk=args.chunk, progress=True):
        masks += len(part)
        rles += len(part.to_coco_rle())
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{args.boxes} boxes on {w} x {h}, chunk {args.chunk}: {masks} masks ({rles} RLE) in "
        f"{seconds:.0f} s; peak RSS {peak:.0f} MB"
    )


if __name__ == "__main__":
    main()
