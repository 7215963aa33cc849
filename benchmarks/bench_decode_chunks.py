"""How many prompts the fast decoder should process together (README: prompts decoded 2 at a time).

Times ``PointDecoder.decode_sparse`` on 32 box prompts against one 1280 x 720 image embedding for
several chunk sizes (seeded MobileSAM; the decoder is the same for every variant), upscaling the
whole low-res frame (``SamPredictor.predict``) and only the image region of it (the high-level
predictor's call, whose ``low_res_logits`` are computed when read). Then, at ``--split-chunk``,
where a box's time goes (the transformer with its final attention and heads, then the upscaling
of the image region, with its matrix-product rate), and the per-point time of
``PointDecoder.decode`` (segment-everything's decoder: IoU first, upscaling only above 0.88).

    PYTHONPATH=. python benchmarks/bench_decode_chunks.py [--chunks 1 2 4 8 16]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from samkit.predict.decode import upsample_region
from samkit.predict.sam_predictor import SamPredictor
from samkit.predict.transforms import scale_boxes
from samkit.zoo.seeded import seeded_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunks", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--boxes", type=int, default=32)
    ap.add_argument("--split-chunk", type=int, default=2, help="chunk of the breakdown")
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
    _breakdown(decoder, sparse, region, args.split_chunk)
    points = rng.uniform(0, predictor.input_size[::-1], size=(args.boxes, 2))
    for chunk in args.chunks:
        decoder.chunk = chunk
        decoder.decode(points[:4], 0.88, region)  # warm-up
        t = time.perf_counter()
        decoder.decode(points, 0.88, region)
        ms = 1000 * (time.perf_counter() - t) / len(points)
        print(f"points, chunk {chunk:3d}: {ms:6.1f} ms per point (decode, IoU threshold 0.88)")


@torch.inference_mode()
def _breakdown(decoder, sparse: torch.Tensor, region: tuple[int, int], chunk: int) -> None:
    """Per box: transformer + final attention + heads, and the region upscaling."""
    n = sparse.shape[0]
    list(decoder._sparse_chunks(sparse[:4], False, chunk))  # warm-up
    t = time.perf_counter()
    outs = list(decoder._sparse_chunks(sparse, False, chunk))
    t_tr = time.perf_counter() - t
    t = time.perf_counter()
    for keys, hyper, _ in outs:
        decoder.upscale(keys, hyper, region)
    t_up = time.perf_counter() - t
    # matrix products of the upscaling: two per-token convolutions (and the hypernetwork dot)
    conv1, _, _, conv2, _ = decoder.dec.output_upscaling
    c, c1, c2 = conv1.in_channels, conv1.out_channels, conv2.out_channels
    tokens = -(-region[0] // 4) * -(-region[1] // 4)
    flop = 2 * tokens * (c * 4 * c1 + 4 * c1 * 4 * c2 + 16 * c2) * n
    print(
        f"chunk {chunk}, per box: transformer, final attention and heads {1000 * t_tr / n:.1f} ms; "
        f"image-region upscaling {1000 * t_up / n:.1f} ms "
        f"({flop / n / 1e9:.2f} GFLOP, {flop / t_up / 1e9:.0f} GFLOP/s)"
    )


if __name__ == "__main__":
    main()
