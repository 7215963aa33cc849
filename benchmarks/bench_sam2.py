"""SAM 2.1 benchmark: samkit vs Meta's ``sam2`` (reference venv) on the same seeded weights.

    python benchmarks/bench_sam2.py                        # t, s, b+, l; everything for t
    python benchmarks/bench_sam2.py --sizes t --repeats 1 --no-everything   # a short run
    python benchmarks/bench_sam2.py --ref-python /work/ref/bin/python --threads 2
    python benchmarks/bench_sam2.py --precision bf16 --no-ref     # samkit's bf16 (native bf16 CPUs)
    python benchmarks/bench_sam2.py --sizes t --everything-args '{"pred_iou_thresh": 0.5}'

For every size: ``set_image`` (image encoder + feature preparation), one box, 100 boxes (one
batched call), and for tiny the automatic mask generator at default settings. Both sides load
one seeded checkpoint in Meta's layout (video modules included, written to a temporary folder),
run fp32 on the CPU with the same thread count (samkit: ``--precision``, default fp32), on a
synthetic 1280 x 720 photo-like image. Seeded weights predict low IoUs, so at the default
``pred_iou_thresh=0.8`` no mask passes on either side; ``--everything-args`` (JSON, given to
both generators) lowers the thresholds so that masks are upscaled, filtered and kept.
The reference runs in its own interpreter (``--ref-python``, a venv with ``sam2`` installed;
FACTS.md says how); each figure is the median of ``--repeats`` runs, and the load average is
printed next to it: other processes on the machine slow both sides down.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_everything import photo_like  # noqa: E402

from samkit.everything.sam2 import Sam2AutomaticMaskGenerator  # noqa: E402
from samkit.predict.sam2_predictor import Sam2Predictor  # noqa: E402
from samkit.zoo.sam2 import meta_state_dict, size_config  # noqa: E402
from samkit.zoo.seeded import seeded_state_dict, seeded_tensor  # noqa: E402

VIDEO_KEYS = ROOT / "tests" / "data" / "sam2" / "video_keys_sam2.1.json"
META_CONFIGS = {"t": "t", "s": "s", "b+": "b+", "l": "l"}

REF_SCRIPT = r"""
import json, sys, time, numpy as np, torch
from sam2.build_sam import build_sam2
from sam2.sam2_image_predictor import SAM2ImagePredictor
from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
image = np.load(args["image"])
boxes = np.load(args["boxes"])
model = build_sam2(args["config"], ckpt_path=args["ckpt"], device="cpu")
pred = SAM2ImagePredictor(model)
def med(fn, n):
    ts = []
    for _ in range(n):
        t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
    return float(np.median(ts))
out = {"set_image": med(lambda: pred.set_image(image), args["repeats"])}
out["one_box"] = med(lambda: pred.predict(box=boxes[0], multimask_output=False), 3 * args["repeats"])
out["boxes_100"] = med(lambda: pred.predict(box=boxes, multimask_output=False), args["repeats"])
if args["everything"]:
    gen = SAM2AutomaticMaskGenerator(model, **args["everything_args"])
    t = time.perf_counter(); recs = gen.generate(image); out["everything"] = time.perf_counter() - t
    out["everything_masks"] = len(recs)
print("RESULT" + json.dumps(out))
"""


def load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def median(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def write_checkpoint(size: str, path: Path):
    """A seeded checkpoint of ``size`` in Meta's layout; returns the samkit model."""
    model = size_config(size).build()
    model.load_state_dict(seeded_state_dict(model), strict=True)
    sd = meta_state_dict(model)
    for key, shape in json.loads(VIDEO_KEYS.read_text())["keys"].items():
        sd[key] = seeded_tensor(key, tuple(shape))
    torch.save({"model": sd}, path)
    return model.eval()


def run_samkit(
    model, image, boxes, repeats: int, everything: bool, precision: str, gen_args: dict
) -> dict[str, float]:
    pred = Sam2Predictor(model, precision=precision)
    out = {"set_image": median(lambda: pred.set_image(image), repeats)}
    out["one_box"] = median(lambda: pred.predict(box=boxes[0], multimask_output=False), 3 * repeats)
    out["boxes_100"] = median(lambda: pred.predict(box=boxes, multimask_output=False), repeats)
    if everything:
        gen = Sam2AutomaticMaskGenerator(model, precision=precision, **gen_args)
        t = time.perf_counter()
        recs = gen.generate(image)
        out["everything"] = time.perf_counter() - t
        out["everything_masks"] = len(recs)
    return out


def run_ref(
    python: str,
    size: str,
    ckpt: Path,
    tmp: Path,
    repeats: int,
    threads: int,
    everything: bool,
    gen_args: dict,
):
    args = {
        "config": f"configs/sam2.1/sam2.1_hiera_{META_CONFIGS[size]}.yaml",
        "ckpt": str(ckpt),
        "image": str(tmp / "image.npy"),
        "boxes": str(tmp / "boxes.npy"),
        "repeats": repeats,
        "threads": threads,
        "everything": everything,
        "everything_args": gen_args,
    }
    proc = subprocess.run(
        [python, "-c", REF_SCRIPT, json.dumps(args)], capture_output=True, text=True, cwd=tmp
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT"):
            return json.loads(line[6:])
    raise RuntimeError(f"reference run failed:\n{proc.stderr[-3000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["t", "s", "b+", "l"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--ref-python", default="/work/ref/bin/python")
    ap.add_argument("--no-ref", action="store_true", help="samkit only")
    ap.add_argument("--no-everything", action="store_true")
    ap.add_argument("--precision", default="fp32", help="samkit's precision (fp32, bf16, auto)")
    ap.add_argument("--everything-args", default="{}", help="JSON generator arguments (both)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    image = photo_like(720, 1280)
    rng = np.random.default_rng(0)
    xy = rng.uniform([0, 0], [1000, 500], (100, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(60, 280, (100, 2))], axis=1)
    gen_args = json.loads(args.everything_args)
    print(
        f"threads {args.threads}; image 1280x720; samkit {args.precision}, reference fp32; "
        f"seeded weights; everything args {gen_args}; load avg shown per row"
    )
    header = f"{'size':5} {'what':12} {'samkit':>10} {'reference':>10} {'speed-up':>9}  load"
    print(header)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        np.save(tmp / "image.npy", image)
        np.save(tmp / "boxes.npy", boxes)
        for size in args.sizes:
            ckpt = tmp / f"sam2.1_{size}.pt"
            model = write_checkpoint(size, ckpt)
            everything = size == "t" and not args.no_everything
            ours = run_samkit(
                model, image, boxes, args.repeats, everything, args.precision, gen_args
            )
            ref = (
                {}
                if args.no_ref
                else run_ref(
                    args.ref_python,
                    size,
                    ckpt,
                    tmp,
                    args.repeats,
                    args.threads,
                    everything,
                    gen_args,
                )
            )
            for what in ("set_image", "one_box", "boxes_100", "everything"):
                if what not in ours:
                    continue
                r = ref.get(what)
                ratio = f"{r / ours[what]:8.2f}x" if r else "        -"
                rs = f"{r:9.3f}s" if r else "         -"
                print(f"{size:5} {what:12} {ours[what]:9.3f}s {rs} {ratio}  {load()}")
            if "everything_masks" in ours:
                print(
                    f"{size:5} masks: samkit {ours['everything_masks']}, "
                    f"reference {ref.get('everything_masks', '-')}"
                )
            del model


if __name__ == "__main__":
    main()
