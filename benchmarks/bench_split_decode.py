"""Segment-everything's decoder serial vs split across the cores, and the patch embedding's
contiguous tokens against the plain ``conv(x).permute(...)``: same-process A/B in alternating
rounds, medians (this host's speed drifts by 10-30 % within minutes, so the two sides of each
pair are always measured next to each other).

    PYTHONPATH=. python benchmarks/bench_split_decode.py [--points 128] [--rounds 5]

Decoder: ``PointDecoder.decode`` of ``--points`` grid-like points (IoU threshold 0.88, SAM 2:
0.8) on one 1280 x 720 image embedding, ``workers=1`` (serial, all torch threads on each op)
vs the default (one part per torch thread, one torch thread each); ms per point. Encoders:
the image encoder with the patch embedding's channels-last convolution (samkit's) vs the plain
one; seconds per image. Seeded weights, 2 torch threads unless ``--threads``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_everything import photo_like  # noqa: E402
from samkit.benchmark import machine_info  # noqa: E402

from samkit.predict.fast_decode import PointDecoder  # noqa: E402
from samkit.predict.precision import autocast  # noqa: E402
from samkit.predict.sam2_fast_decode import Sam2PointDecoder  # noqa: E402
from samkit.predict.sam2_predictor import Sam2Predictor  # noqa: E402
from samkit.predict.sam_predictor import SamPredictor  # noqa: E402
from samkit.predict.threads import keep_freed_memory  # noqa: E402
from samkit.zoo.sam2 import size_config  # noqa: E402
from samkit.zoo.seeded import seeded_model, seeded_state_dict  # noqa: E402


def _sam2_tiny():
    model = size_config("t").build()
    model.load_state_dict(seeded_state_dict(model), strict=True)
    return model.eval()


def _pairs(rounds: int, sides: dict) -> dict:
    """Alternate the callables ``rounds`` times (one warm-up call each first); seconds."""
    for fn in sides.values():
        fn()
    times: dict = {k: [] for k in sides}
    for r in range(rounds):
        order = list(sides.items()) if r % 2 == 0 else list(sides.items())[::-1]
        for name, fn in order:
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return times


def bench_decoders(points: int, rounds: int) -> None:
    image = photo_like(720, 1280)
    rng = np.random.default_rng(0)
    coords = rng.uniform(0, 1024, (points, 2)) * np.array([1.0, 576 / 1024])
    cases = [("sam_b", torch.bfloat16), ("sam_b", torch.float32), ("mobile_sam", torch.bfloat16)]
    print(f"decoder, {points} points, ms per point (median of {rounds} alternating rounds)")
    print(f"{'model':12s} {'dtype':9s} {'serial':>8s} {'split':>8s}  max |d logits|")
    for name, dtype in [*cases, ("sam2.1_t", torch.float32)]:
        if name == "sam2.1_t":
            sam = _sam2_tiny()
            pred = Sam2Predictor(sam, precision="fp32")
            pred.set_image(image)
            dec = Sam2PointDecoder(sam, chunk=2)
            dec.set_features(pred.features, pred.high_res)
            thr, region, pts = 0.8, None, coords * np.array([1.0, 1024 / 576])
        else:
            sam = seeded_model(name).eval()
            pred = SamPredictor(sam)
            pred.set_image(image)
            dec = PointDecoder(sam, dtype)
            dec.set_features(pred.features)
            thr, region, pts = 0.88, (144, 256), coords
        # None as the threshold would upscale every mask; the seeded IoUs are below these.
        times = _pairs(
            rounds,
            {
                "serial": lambda d=dec, p=pts, t=thr, r=region: d.decode(p, t, r, workers=1),
                "split": lambda d=dec, p=pts, t=thr, r=region: d.decode(p, t, r),
            },
        )
        a = dec.decode(pts, None, region, workers=1)
        b = dec.decode(pts, None, region)
        diff = (a[2] - b[2]).abs().max().item() if len(a[2]) else 0.0
        med = {k: statistics.median(v) / points * 1e3 for k, v in times.items()}
        print(
            f"{name:12s} {str(dtype)[6:]:9s} {med['serial']:8.2f} {med['split']:8.2f}  {diff:.1e}"
        )


def hiera_gflop(encoder, x: torch.Tensor) -> tuple[float, float]:
    """``(linear + conv GFLOP by FlopCounterMode, attention GFLOP)`` of one forward pass:
    FlopCounterMode does not count torch's CPU attention kernel, so the attention calls are
    counted from their shapes (QK^T and PV, 2 FLOP per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    fn = torch.nn.functional
    sdpa = fn.scaled_dot_product_attention
    attention = [0]

    def counted(q, k, v, *args, **kwargs):
        attention[0] += 4 * q.shape[:-2].numel() * q.shape[-2] * k.shape[-2] * q.shape[-1]
        return sdpa(q, k, v, *args, **kwargs)

    fn.scaled_dot_product_attention = counted
    try:
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            encoder(x)
    finally:
        fn.scaled_dot_product_attention = sdpa
    return counter.get_total_flops() / 1e9, attention[0] / 1e9


def bench_encoders(rounds: int) -> None:
    x = torch.randn(1, 3, 1024, 1024)
    print(f"\nencoder, s per image (median of {rounds} alternating rounds)")
    print(f"{'model':12s} {'dtype':9s} {'plain':>8s} {'samkit':>8s}")
    for name, dtype in [("sam2.1_t", torch.float32), ("sam_b", torch.bfloat16)]:
        if name == "sam2.1_t":
            encoder = _sam2_tiny().image_encoder
            embed = encoder.trunk.patch_embed
        else:
            encoder = seeded_model(name).eval().image_encoder
            embed = encoder.patch_embed
        samkit_forward = embed.forward

        def plain(x, e=embed):
            return e.proj(x).permute(0, 2, 3, 1)

        def run(forward, enc=encoder, e=embed, dt=dtype):
            e.forward = forward
            with torch.inference_mode(), autocast(torch.device("cpu"), dt):
                enc(x)

        times = _pairs(
            rounds,
            {
                "plain": lambda p=plain: run(p),
                "samkit": lambda f=samkit_forward: run(f),
            },
        )
        embed.forward = samkit_forward
        med = {k: statistics.median(v) for k, v in times.items()}
        line = f"{name:12s} {str(dtype)[6:]:9s} {med['plain']:8.3f} {med['samkit']:8.3f}"
        if name == "sam2.1_t":
            dense, attn = hiera_gflop(encoder, x)
            total = dense + attn
            line += (
                f"   {dense:.0f} GFLOP linear/conv + {attn:.0f} attention = {total:.0f} GFLOP,"
                f" {total / med['samkit']:.0f} GFLOP/s"
            )
        print(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-encoders", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as samkit's CPU policy does at the first heavy call
    info = machine_info(measure_peak=False)
    print(
        f"machine: {info.get('cpu')}, isa {info.get('isa')}, native bf16 {info.get('native_bf16')}"
    )
    print(f"torch threads {args.threads}; load average before {os.getloadavg()}")
    bench_decoders(args.points, args.rounds)
    if not args.no_encoders:
        bench_encoders(args.rounds)
    print(f"\nload average after {os.getloadavg()}")


if __name__ == "__main__":
    main()
