"""How many prompts the fast decoder should process together (README: prompts decoded 2 at a time).

Times ``PointDecoder.decode_sparse`` on 32 box prompts against one 1280 x 720 image embedding for
several chunk sizes (seeded MobileSAM; the decoder is the same for every variant), upscaling the
whole low-res frame (``SamPredictor.predict``) and only the image region of it (the high-level
predictor's call, whose ``low_res_logits`` are computed when read).

    PYTHONPATH=. python benchmarks/bench_decode_chunks.py [--chunks 1 2 4 8 16]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from samkit.decoding import upsample_region
from samkit.predictor import SamPredictor
from samkit.seeded import seeded_model
from samkit.transforms import scale_boxes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunks", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--boxes", type=int, default=32)
    args = ap.parse_args()
    predictor = SamPredictor(seeded_model("mobile_sam"))
    rng = np.random.default_rng(0)
    predictor.set_image((rng.random((720, 1280, 3)) * 255).astype(np.uint8))
    xy = rng.uniform(0, [1180, 620], size=(args.boxes, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(20, 100, size=(args.boxes, 2))], axis=1)
    scaled = scale_boxes(boxes, predictor.original_size, predictor.input_size)
    with torch.inference_mode():
        sparse, _ = predictor.model.prompt_encoder(None, torch.as_tensor(scaled), None)
    decoder = predictor._shared_decoder()
    model = predictor.model
    s = model.prompt_encoder.mask_input_size[0]
    region = upsample_region(s, predictor.input_size, model.image_size)
    print(f"{torch.get_num_threads()} threads, {args.boxes} boxes, 1280x720, region {region}")
    for chunk in args.chunks:
        ms = []
        for reg in (None, region):
            decoder.decode_sparse(sparse[:4], False, chunk=chunk, region=reg)  # warm-up
            t = time.perf_counter()
            decoder.decode_sparse(sparse, False, chunk=chunk, region=reg)
            ms.append(1000 * (time.perf_counter() - t) / args.boxes)
        print(
            f"chunk {chunk:3d}: {ms[0]:6.1f} ms per box (whole frame), {ms[1]:6.1f} (image region)"
        )


if __name__ == "__main__":
    main()
