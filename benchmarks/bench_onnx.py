"""Encoder and decoder latency: torch vs onnxruntime (fp32 and int8), and int8 agreement.

    PYTHONPATH=. python benchmarks/bench_onnx.py --model mobile_sam
    PYTHONPATH=. python benchmarks/bench_onnx.py --model sam_b --onnx-dir /tmp/sam_b_onnx

``--model`` is a variant name (seeded weights, offline) or a checkpoint path. The export goes to
``--onnx-dir`` (a temporary folder by default) and is reused when that folder already holds an
export of the same weights. Prints a Markdown table of medians; the image is
tests/data/image_a.png (427 x 640).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from samkit import SAM, SamPredictor  # noqa: E402
from samkit.export import export_onnx, weights_fingerprint  # noqa: E402
from samkit.export.onnx_predictor import OnnxPredictor  # noqa: E402
from samkit.zoo.registry import VARIANTS  # noqa: E402


def median_seconds(fn, runs: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def agreement(a: OnnxPredictor, b: OnnxPredictor, h: int, w: int) -> tuple[float, float, float]:
    """(min, mean pixel agreement, min IoU) of single-mask outputs over a 4 x 4 click grid."""
    agree, ious = [], []
    for y in np.linspace(h * 0.15, h * 0.85, 4):
        for x in np.linspace(w * 0.15, w * 0.85, 4):
            kw = {"point_coords": [[x, y]], "point_labels": [1], "multimask_output": False}
            ma, mb = a.predict(**kw)[0], b.predict(**kw)[0]
            agree.append((ma == mb).mean())
            ious.append((ma & mb).sum() / max((ma | mb).sum(), 1))
    return min(agree), float(np.mean(agree)), min(ious)


def load_or_export(model: SAM, out: Path, int8_encoder: bool) -> tuple[dict, float | None]:
    found = sorted(out.glob("*_onnx.json"))
    fingerprint = weights_fingerprint(model.model)
    if len(found) == 1:
        meta = json.loads(found[0].read_text())
        if meta["fingerprint"] == fingerprint and (
            "encoder_int8" in meta["files"] or not int8_encoder
        ):
            return {k: out / v for k, v in meta["files"].items()}, None
    t = time.perf_counter()
    paths = export_onnx(model, out, quantize="all" if int8_encoder else "decoder")
    return paths, time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobile_sam", help="variant name or checkpoint path")
    parser.add_argument("--onnx-dir", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=2, help="torch and onnxruntime threads")
    parser.add_argument("--runs", type=int, default=3, help="encoder runs (median)")
    parser.add_argument("--decoder-runs", type=int, default=10)
    parser.add_argument("--no-int8-encoder", action="store_true")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    if args.model in VARIANTS:
        model = SAM.from_config(VARIANTS[args.model].config, seeded=True)
    else:
        model = SAM(args.model)
    out = args.onnx_dir or Path(tempfile.mkdtemp(prefix="bench_onnx_"))
    paths, export_s = load_or_export(model, out, not args.no_int8_encoder)

    image = np.asarray(Image.open(ROOT / "tests/data/image_a.png").convert("RGB"))
    h, w = image.shape[:2]
    box = {"box": np.array([150, 100, 450, 380]), "multimask_output": False}
    torch_pred = SamPredictor(model.model)
    fp32 = OnnxPredictor(
        paths["encoder"], paths["decoder"], session_options=options, image_format="RGB"
    )
    int8_dec = OnnxPredictor(
        None, paths["decoder_int8"], session_options=options, image_format="RGB"
    )
    int8_enc = None
    if "encoder_int8" in paths:
        int8_enc = OnnxPredictor(
            paths["encoder_int8"], paths["decoder"], session_options=options, image_format="RGB"
        )

    rows = []
    with torch.inference_mode():
        t_torch = median_seconds(lambda: torch_pred.set_image(image), args.runs)
    t_ort = median_seconds(lambda: fp32.set_image(image), args.runs)
    row = ["encoder (set_image)", t_torch, t_ort, None]
    if int8_enc is not None:
        row[3] = median_seconds(lambda: int8_enc.set_image(image), args.runs)
    rows.append(row)
    int8_dec.set_image_embedding(fp32.features, (h, w))
    rows.append(
        [
            "decoder (one box, masks at 427 x 640)",
            median_seconds(lambda: torch_pred.predict(**box), args.decoder_runs),
            median_seconds(lambda: fp32.predict(**box), args.decoder_runs),
            median_seconds(lambda: int8_dec.predict(**box), args.decoder_runs),
        ]
    )

    print(
        f"model {model.name}, {args.threads} threads, torch {torch.__version__}, "
        f"onnxruntime {ort.__version__}, image {h} x {w}"
    )
    if export_s is not None:
        print(f"export (encoder + decoder + int8): {export_s:.1f} s")
    sizes = {k: p.stat().st_size / 2**20 for k, p in paths.items() if p.suffix == ".onnx"}
    print("file sizes (MiB): " + ", ".join(f"{k} {v:.1f}" for k, v in sizes.items()))
    print("\n| part | torch | onnxruntime fp32 | onnxruntime int8 |\n|---|---|---|---|")
    for name, *times in rows:
        cells = [f"{t * 1000:.0f} ms" if t is not None else "-" for t in times]
        print(f"| {name} | " + " | ".join(cells) + " |")
    ref = torch_pred.features.float().numpy()
    err = np.abs(fp32.features - ref).max() / np.abs(ref).max()
    a, b = fp32.predict(**box)[0], torch_pred.predict(**box)[0]
    print(
        f"\nfp32 onnxruntime vs torch: embedding max error {err:.1e} of max |value|; box mask "
        f"pixel agreement {(a == b).mean():.6f}"
    )
    low, mean, iou = agreement(fp32, int8_dec, h, w)
    print(
        f"int8 decoder vs fp32 (16 clicks): pixel agreement min {low:.4f} mean {mean:.4f}, "
        f"IoU min {iou:.4f}"
    )
    if int8_enc is not None:
        err = np.abs(int8_enc.features - fp32.features).max() / np.abs(fp32.features).max()
        low, mean, iou = agreement(fp32, int8_enc, h, w)
        print(
            f"int8 encoder vs fp32: embedding max error {err:.3f} of max |value|; masks: pixel "
            f"agreement min {low:.4f} mean {mean:.4f}, IoU min {iou:.4f}"
        )


if __name__ == "__main__":
    main()
