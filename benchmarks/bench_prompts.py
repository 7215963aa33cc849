"""Prompt latency of the high-level predictor on a 1280 x 720 image (README figures).

After ``set_image``, times one box decoded and upsampled to full size (a full ``predictor(...)``
call returning Results), and 100 boxes in one call; with a breakdown (decoder, upsampling +
threshold, the rest). The mask decoder is the same for every SAM variant, so the default model is
a seeded MobileSAM (fast encoder); ``--model sam_b`` times ViT-B. Seeded weights, no download.

    PYTHONPATH=. python benchmarks/bench_prompts.py [--model mobile_sam] [--precision auto]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import torch

from samkit import SAM
from samkit.predict.decode import upsample_region
from samkit.predict.precision import autocast, device_has_native_bf16
from samkit.predict.transforms import scale_boxes


def _timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def _fmt(ms: list[float]) -> str:
    return f"median {statistics.median(ms):8.1f} ms   min {min(ms):8.1f} ms   (n={len(ms)})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mobile_sam", help="variant (seeded weights)")
    ap.add_argument("--precision", default="auto", choices=["fp32", "bf16", "auto"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=20, help="repetitions of the one-box call")
    ap.add_argument("--repeat-many", type=int, default=3, help="repetitions of the 100-box call")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"load average at start {os.getloadavg()[0]:.2f}"
    )
    t0 = time.perf_counter()
    model = SAM.from_config(
        _config(args.model), seeded=True, device=args.device, precision=args.precision
    )
    print(f"model: seeded {args.model}, built in {time.perf_counter() - t0:.1f} s")
    predictor = model.predictor()
    native = device_has_native_bf16(args.device)
    print(
        f"precision: {args.precision} -> {predictor.dtype} (native bf16 on {args.device}: {native})"
    )

    rng = np.random.default_rng(0)
    image = (rng.random((720, 1280, 3)) * 255).astype(np.uint8)
    t0 = time.perf_counter()
    predictor.set_image(image)
    print(f"set_image 1280x720: {(time.perf_counter() - t0):.2f} s")

    box = np.array([[400.0, 200.0, 800.0, 560.0]])
    xy = rng.uniform(0, [1180, 620], size=(100, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(20, 100, size=(100, 2))], axis=1)
    sync = torch.cuda.synchronize if predictor.model.device.type == "cuda" else (lambda: None)

    def one_box():
        predictor(bboxes=box)
        sync()

    def many_boxes():
        r = predictor(bboxes=boxes)
        assert len(r) == 100 and r.masks.shape == (100, 720, 1280)
        sync()

    # breakdown of one box: decoder (low-res logits), upsampling + threshold; and the Meta-style
    # low-level predict() (the reference's code path) for comparison. The four are interleaved
    # so that a busy machine slows them alike.
    low = predictor.sam_predictor
    box_t = torch.as_tensor(scale_boxes(box, low.original_size, low.input_size), device=low.device)
    # the call upscales only the image part of the low-res frame (low_res_logits are computed
    # when read): the decoder-only time does the same
    s = low.model.prompt_encoder.mask_input_size[0]
    region = upsample_region(s, low.input_size, low.model.image_size)

    def decode_only():
        with autocast(low.device, predictor.dtype):
            low.decode(None, None, box_t, None, False, region=region)
        sync()

    with autocast(low.device, predictor.dtype):
        low_res, _ = low.decode(None, None, box_t, None, False)

    def upsample_only():
        with torch.inference_mode():
            _ = low.model.postprocess_masks(low_res.float(), low.input_size, low.original_size) > 0
        sync()

    def box_and_low_res():
        _ = predictor(bboxes=box).low_res_logits  # computed on this first read
        sync()

    def meta_style():
        predictor.predict(box=box[0], multimask_output=False)
        sync()

    fns = {
        "full": one_box,
        "decode": decode_only,
        "upsample": upsample_only,
        "low_res": box_and_low_res,
        "meta": meta_style,
    }
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(args.repeat):
        for k, fn in fns.items():
            times[k] += _timed(fn, 1)
    many_boxes()
    many = _timed(many_boxes, args.repeat_many)

    print(f"one box, full call (decode + upsample to 1280x720 + Results):  {_fmt(times['full'])}")
    print(
        f"   decoder only (image region of the low-res frame):            {_fmt(times['decode'])}"
    )
    print(
        f"   upsample + threshold only (Sam.postprocess_masks):           {_fmt(times['upsample'])}"
    )
    print(
        f"   the call, then reading low_res_logits:                       {_fmt(times['low_res'])}"
    )
    print(f"   low-level SamPredictor.predict (Meta's code path):           {_fmt(times['meta'])}")
    print(f"100 boxes in one call:                                          {_fmt(many)}")
    print(
        f"targets: one box <= 15 ms, 100 boxes <= 1500 ms; "
        f"load average at end {os.getloadavg()[0]:.2f}"
    )


def _config(name: str):
    from samkit.zoo.registry import get_variant

    return get_variant(name).config


if __name__ == "__main__":
    main()
