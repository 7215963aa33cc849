"""Segment-everything benchmark: seconds per image, filter pass rates and peak memory.

Prints the figures of the README's "Segment everything" section:

    python benchmarks/bench_everything.py                       # all models, fp32 and bf16
    python benchmarks/bench_everything.py --models mobile_sam --precisions fp32
    python benchmarks/bench_everything.py --rss                 # + peak RSS, ViT-B, 4000x3000

Models have seeded weights (no download). ``sam_b+shapes`` is the seeded ViT-B with the trained
fixture decoder (tests/data/sam_b_shapes_decoder.pt), which gives compact masks like a real
decoder; the seeded decoders give random-ish masks, so their IoU / stability pass rates (printed)
are not those of real weights. The image is a synthetic 1280x720 "photo" (smooth background,
textured shapes, noise). Default generator parameters throughout. The CPU load average is printed
next to every timing: other processes on the machine slow the figures down.
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
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from samkit.everything import resolve_dtype, segment_everything  # noqa: E402
from samkit.ops.amg import build_point_grid, stability_score  # noqa: E402
from samkit.ops.boxes import masks_to_boxes_xyxy  # noqa: E402
from samkit.ops.rle import masks_to_rle_torch  # noqa: E402
from samkit.predict.sam_predictor import SamPredictor  # noqa: E402
from samkit.zoo.seeded import seeded_model  # noqa: E402

MODELS = ("mobile_sam", "sam_b", "sam_b+shapes")
SHAPES_DECODER = ROOT / "tests" / "data" / "sam_b_shapes_decoder.pt"


def photo_like(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A deterministic photo-like RGB image: sky/ground gradients, textured shapes, noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.empty((h, w, 3), np.float32)
    horizon = 0.45 * h + 0.05 * h * np.sin(xx / w * 6.0)
    sky = yy < horizon
    t = yy / h
    img[..., 0] = np.where(sky, 120 + 60 * t, 90 + 40 * t)
    img[..., 1] = np.where(sky, 160 + 50 * t, 120 + 30 * t)
    img[..., 2] = np.where(sky, 230 - 30 * t, 70 + 20 * t)
    for _ in range(14):  # ellipses and rectangles with their own colour and shading
        cy, cx = rng.uniform(0.1, 0.95) * h, rng.uniform(0.05, 0.95) * w
        ry, rx = rng.uniform(0.04, 0.2) * h, rng.uniform(0.03, 0.15) * w
        colour = rng.uniform(20, 240, 3)
        if rng.random() < 0.5:
            inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
        else:
            inside = (np.abs(yy - cy) < ry) & (np.abs(xx - cx) < rx)
        shade = 0.75 + 0.25 * np.cos((xx - cx) / rx + (yy - cy) / ry)[inside]
        img[inside] = colour * shade[:, None]
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def build(name: str):
    model = seeded_model("sam_b" if name == "sam_b+shapes" else name).eval()
    if name == "sam_b+shapes":
        state = torch.load(SHAPES_DECODER, weights_only=True)
        model.load_state_dict(state, strict=False)
    return model


def load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_fast(model, image: np.ndarray, precision: str) -> dict:
    predictor = SamPredictor(model)
    segment_everything(predictor, image[:64, :64], points_stride=2, precision=precision)  # warm up
    load_before = load()
    c0, t0 = time.process_time(), time.perf_counter()
    out = segment_everything(predictor, image, precision=precision)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    s = out.stats
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "load": f"{load_before} -> {load()}",
        "masks": len(out),
        "iou_pass": s["iou_pass"] / s["masks_decoded"],
        "prompts_upscaled": s["prompts_upscaled"] / s["points"],
        "stability_pass": s["stability_pass"] / s["masks_decoded"],
        **{k: s[k] for k in ("encode_s", "decode_s", "stats_s", "nms_s", "masks_s")},
    }


@torch.inference_mode()
def run_reference_batch(model, image: np.ndarray) -> float:
    """Seconds for one 64-point batch done the reference's way: module decoder, full-resolution
    logits for all 192 masks, stability on them, thresholding, boxes and RLE of the survivors."""
    predictor = SamPredictor(model)
    predictor.set_image(image)
    h, w = image.shape[:2]
    in_h, in_w = predictor.input_size
    pts = build_point_grid(32)[:64] * np.array([w, h])
    coords = torch.as_tensor(pts * np.array([in_w / w, in_h / h]))[:, None, :]
    t0 = time.perf_counter()
    logits, iou, _ = predictor.predict_torch(
        coords, torch.ones(64, 1, dtype=torch.int), return_logits=True
    )
    logits, iou = logits.flatten(0, 1), iou.flatten(0, 1)
    logits = logits[iou > 0.88]
    stab = stability_score(logits, 0.0, 1.0)
    masks = logits[stab >= 0.95] > 0
    masks_to_boxes_xyxy(masks)
    masks_to_rle_torch(masks)
    return time.perf_counter() - t0


def bf16_speed_ratio() -> float:
    """How many times slower a 2048 x 256 x 256 matmul is in bfloat16 than in float32 here."""
    a, b = torch.randn(2048, 256), torch.randn(256, 256)
    times = []
    for dt in (torch.float32, torch.bfloat16):
        x, y = a.to(dt), b.to(dt)
        x @ y
        t0 = time.perf_counter()
        for _ in range(3):
            x @ y
        times.append(time.perf_counter() - t0)
    return times[1] / times[0]


def agreement(precision: str) -> None:
    """Decoder agreement with Meta's outputs (tests/data/sam_b_amg.json) on the fixture image,
    fp32 embedding (computed once) and the decoder in ``precision``."""
    from PIL import Image

    from samkit.everything.automatic import SamAutomaticMaskGenerator
    from samkit.ops.rle import rle_to_mask
    from tests.amg_reference import match_records

    fixture = json.loads((ROOT / "tests/data/sam_b_amg.json").read_text())
    image = np.asarray(Image.open(ROOT / "tests/data/image_b.png").convert("RGB"))
    model = build("sam_b+shapes")
    predictor = SamPredictor(model)
    predictor.set_image(image)
    cached = (predictor.features, predictor.input_size, predictor.original_size)

    class Cached(SamPredictor):
        def set_image(self, image, image_format="RGB"):
            self.reset_image()
            self.features, self.input_size, self.original_size = cached
            self.is_image_set = True

    for name in ("grid16", "grid8_no_nms", "grid16_minarea"):
        ref = fixture[name]
        gen = SamAutomaticMaskGenerator(model, precision=precision, **ref["params"])
        gen.predictor = Cached(model)
        t0 = time.perf_counter()
        ours = gen.generate(image)
        dt = time.perf_counter() - t0
        theirs = [dict(r, segmentation=rle_to_mask(r["segmentation"])) for r in ref["records"]]
        pairs = match_records(theirs, ours, 0.98)
        d_iou = max(
            (abs(theirs[i]["predicted_iou"] - ours[j]["predicted_iou"]) for i, j, _ in pairs),
            default=0,
        )
        d_st = max(
            (abs(theirs[i]["stability_score"] - ours[j]["stability_score"]) for i, j, _ in pairs),
            default=0,
        )
        print(
            f"agreement {precision} {name}: {len(pairs)}/{len(theirs)} reference masks matched at "
            f"mask IoU >= 0.98, {len(ours) - len(pairs)} extra; max |d predicted_iou| {d_iou:.1e}, "
            f"max |d stability| {d_st:.1e} ({dt:.1f} s decoding) | load {load()}",
            flush=True,
        )


def rss_child(name: str, size: str, precision: str, keep_all: bool = False) -> None:
    w, h = (int(v) for v in size.split("x"))
    model = build(name)
    image = photo_like(h, w, seed=1)
    base = peak_rss_mb()
    t0 = time.perf_counter()
    # keep_all: no IoU / stability filter, so every mask that survives NMS is kept (worst case
    # for memory: seeded weights pass almost nothing through the default filters)
    kw = {"conf_thres": 0.0, "stability_score_thresh": 0.0} if keep_all else {}
    out = segment_everything(SamPredictor(model), image, precision=precision, **kw)
    print(
        json.dumps(
            {
                "model": name,
                "size": size,
                "precision": precision,
                "masks": len(out),
                "seconds": round(time.perf_counter() - t0, 1),
                "rss_before_mb": round(base),
                "peak_rss_mb": round(peak_rss_mb()),
                "load": load(),
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--size", default="1280x720", help="WxH of the benchmark image")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--reference", action="store_true", help="also time one reference-style batch")
    ap.add_argument("--rss", action="store_true", help="peak RSS, sam_b+shapes on 4000x3000")
    ap.add_argument("--rss-size", default="4000x3000")
    ap.add_argument("--rss-child", nargs=3, metavar=("MODEL", "SIZE", "PRECISION"))
    ap.add_argument(
        "--rss-keep-all", action="store_true", help="RSS run without IoU/stability filters"
    )
    ap.add_argument("--agreement", action="store_true", help="fixture agreement per precision")
    ap.add_argument(
        "--force-bf16",
        action="store_true",
        help="time bf16 even on CPUs without native bf16 (emulated: very slow)",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.rss_child:
        rss_child(*args.rss_child, keep_all=args.rss_keep_all)
        return
    if args.agreement:
        for precision in args.precisions:
            agreement(precision)
        return
    w, h = (int(v) for v in args.size.split("x"))
    image = photo_like(h, w)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    native = resolve_dtype("auto", torch.device("cpu")) == torch.bfloat16
    precisions = list(args.precisions)
    if "bf16" in precisions and not native and not args.force_bf16:
        precisions.remove("bf16")
        print(
            f"bf16 skipped: this CPU has no native bf16 (AVX512-BF16 / AMX); a bf16 matmul "
            f"runs {bf16_speed_ratio():.0f}x slower than fp32 here (--force-bf16 to time it); "
            "precision='auto' picks fp32 on this machine"
        )
    print(f"image {w}x{h}, default parameters (32x32 points, IoU 0.88, stability 0.95)")
    for name in args.models:
        model = build(name)
        for precision in precisions:
            r = run_fast(model, image, precision)
            print(
                f"{name:13s} {precision}: {r['wall_s']:6.2f} s/image (cpu {r['cpu_s']:.1f} s; "
                f"encode {r['encode_s']:.2f}, decode {r['decode_s']:.2f}, mask stats "
                f"{r['stats_s']:.2f}, nms {r['nms_s']:.2f}, masks {r['masks_s']:.2f}) | "
                f"{r['masks']} masks; IoU pass {r['iou_pass']:.1%} of masks, "
                f"{r['prompts_upscaled']:.1%} of prompts upscaled, stability pass "
                f"{r['stability_pass']:.1%} | load {r['load']}",
                flush=True,
            )
        if args.reference:
            t = run_reference_batch(model, image)
            print(
                f"{name:13s} reference-style decoding: {t:.2f} s per 64-point batch "
                f"(x16 = {16 * t:.1f} s per image plus the encoder) | load {load()}",
                flush=True,
            )
        del model
    if args.rss:
        for precision in precisions:
            cmd = [
                sys.executable,
                __file__,
                "--rss-child",
                "sam_b+shapes",
                args.rss_size,
                precision,
            ]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            if args.rss_keep_all:
                cmd += ["--rss-keep-all"]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            r = json.loads(res.stdout.strip().splitlines()[-1])
            print(
                f"peak RSS sam_b+shapes {r['size']} {precision}"
                f"{' (no IoU/stability filter)' if args.rss_keep_all else ''}: {r['peak_rss_mb']} MB "
                f"(model + image {r['rss_before_mb']} MB; {r['masks']} masks, "
                f"{r['seconds']} s) | load {r['load']}",
                flush=True,
            )


if __name__ == "__main__":
    main()
