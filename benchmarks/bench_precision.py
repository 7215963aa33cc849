"""Each part of the model in each precision: what justifies ``precision="auto"``'s choice.

Times, on a 1280 x 720 image with seeded weights: the image encoder (``set_image``), the prompt
decoder (one box and 100 boxes after ``set_image``, encoder fixed to fp32) and the
segment-everything grid decoder (16 x 16 points, decoder and mask statistics only, from the
generator's timings); each in fp32 and bf16, the calls alternating, median of ``--runs``. Also
the agreement of each bf16 part with fp32 (mean mask IoU of the 100 boxes / of the
segment-everything masks matched to fp32's) and what "auto" picks here.

    PYTHONPATH=. python benchmarks/bench_precision.py [--model mobile_sam] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

import samkit  # noqa: F401  (before torch: samkit's CPU policy)
from samkit import SAM, SamAutomaticMaskGenerator
from samkit.cli.benchmark import benchmark_boxes, benchmark_image, machine_info
from samkit.predict.precision import resolve_parts


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mobile_sam", help="a variant name, or samkit-demo")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--points", type=int, default=16, help="grid points per side")
    args = ap.parse_args()
    info = machine_info(measure_peak=False)
    print(json.dumps({k: info[k] for k in ("cpu", "isa", "native_bf16", "load_average")}))
    if args.model == "samkit-demo":  # the shipped (trained) demo model
        model = SAM("samkit-demo", precision="fp32")
    else:
        model = SAM.from_config(_config(args.model), seeded=True, precision="fp32")
    print("auto picks:", resolve_parts("auto", "cpu", model))
    image = benchmark_image()
    h, w = image.shape[:2]
    boxes = benchmark_boxes(100, h, w)
    preds = {
        p: model.predictor(precision={"encoder": p, "prompt_decoder": p}, image_format="RGB")
        for p in ("fp32", "bf16")
    }
    dec = {
        p: model.predictor(precision={"encoder": "fp32", "prompt_decoder": p}, image_format="RGB")
        for p in ("fp32", "bf16")
    }
    gens = {
        p: SamAutomaticMaskGenerator(
            model.model,
            points_per_side=args.points,
            precision={"encoder": "fp32", "everything_decoder": p},
        )
        for p in ("fp32", "bf16")
    }
    times: dict[str, list[float]] = {}
    masks: dict[str, dict] = {"boxes": {}, "everything": {}}

    def tick(name: str, fn) -> object:
        t0 = time.perf_counter()
        out = fn()
        times.setdefault(name, []).append(time.perf_counter() - t0)
        return out

    for p in ("fp32", "bf16"):  # warm-up (and the masks for the agreement)
        preds[p].set_image(image)
        dec[p].set_image(image)
        masks["boxes"][p] = dec[p](bboxes=boxes).masks
    for r in range(args.runs):
        for p in ("fp32", "bf16") if r % 2 == 0 else ("bf16", "fp32"):
            model.clear_cache()
            tick(f"encoder {p}", lambda p=p: preds[p].set_image(image))
            dec[p].set_image(image)
            for _ in range(5):
                tick(f"one box {p}", lambda p=p: dec[p](bboxes=boxes[:1]))
            tick(f"100 boxes {p}", lambda p=p: dec[p](bboxes=boxes))
            records = gens[p].generate(image)
            st = gens[p].last_stats
            times.setdefault(f"everything decoder {p}", []).append(st["decode_s"] + st["stats_s"])
            masks["everything"][p] = [r["segmentation"] for r in records]
    print(f"\n{args.model}, median of {args.runs} (one box: of {5 * args.runs})")
    print("| part | fp32 | bf16 | bf16 speed-up |\n|---|---|---|---|")
    for part in ("encoder", "one box", "100 boxes", "everything decoder"):
        a = statistics.median(times[f"{part} fp32"])
        b = statistics.median(times[f"{part} bf16"])
        print(f"| {part} | {a * 1e3:.1f} ms | {b * 1e3:.1f} ms | {a / b:.2f}x |")
    box_iou = [_iou(x, y) for x, y in zip(masks["boxes"]["fp32"], masks["boxes"]["bf16"])]
    e32, e16 = masks["everything"]["fp32"], masks["everything"]["bf16"]
    best = [max((_iou(m, o) for o in e16), default=0.0) for m in e32]
    print(
        f"\nagreement with fp32 (bf16 decoder, fp32 encoder): 100 boxes mean IoU "
        f"{np.mean(box_iou):.4f}; everything: {len(e32)} fp32 / {len(e16)} bf16 masks, "
        f"mean best IoU {np.mean(best) if best else float('nan'):.4f}"
    )


def _config(name: str):
    from samkit.zoo.registry import get_variant

    return get_variant(name).config


if __name__ == "__main__":
    main()
