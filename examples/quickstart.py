"""Quickstart: load a model, encode an image once, prompt it with a box and a point.

Uses the checkpoint given on the command line (e.g. ``sam_b.pt``), or seeded MobileSAM weights
when none is given, so that it runs offline on a fresh machine.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from samkit import SAM, SamPredictor
from samkit.registry import VARIANTS

root = Path(__file__).resolve().parent.parent
image = np.asarray(Image.open(root / "tests" / "data" / "image_a.png").convert("RGB"))

if len(sys.argv) > 1:
    model = SAM(sys.argv[1])
else:
    print("no checkpoint given: using seeded (random) MobileSAM weights; masks are not meaningful")
    model = SAM.from_config(VARIANTS["mobile_sam"].config, seeded=True)
model.info()

predictor = SamPredictor(model.model)
t0 = time.perf_counter()
predictor.set_image(image)
t1 = time.perf_counter()
masks, scores, _ = predictor.predict(box=np.array([150, 100, 450, 380]), multimask_output=False)
t2 = time.perf_counter()
print(
    f"image {image.shape[1]}x{image.shape[0]}: encode {t1 - t0:.2f} s, one box {1000 * (t2 - t1):.1f} ms"
)
print(f"mask area {int(masks[0].sum())} px, predicted IoU {scores[0]:.3f}")
out = root / "runs" / "quickstart_mask.png"
out.parent.mkdir(exist_ok=True)
Image.fromarray((masks[0] * 255).astype(np.uint8)).save(out)
print(f"mask saved to {out}")
