"""Quickstart: real masks offline, with the small demo model shipped inside samkit.

    python examples/quickstart.py                      # demo model, synthetic-shapes image
    python examples/quickstart.py sam_b.pt photo.jpg   # an official checkpoint on your photo

The demo model (``SAM("samkit-demo")``) was trained by samkit's own trainer on synthetic shapes
(benchmarks/train_demo.py); it segments such shapes well and real photos badly. For photos use
the official checkpoints (sam_b.pt, mobile_sam.pt, ...), downloaded on first use.
Writes runs/quickstart/overlay.png.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from samkit import SAM, VARIANTS, CheckpointError, SamPredictor
from samkit.data.files import read_image
from samkit.data.synthetic import make_shapes_image, write_shapes_dataset
from samkit.ops.boxes import mask_to_box_xyxy

root = Path(__file__).resolve().parent.parent
out_dir = root / "runs" / "quickstart"
out_dir.mkdir(parents=True, exist_ok=True)

if len(sys.argv) > 1:
    model = SAM(sys.argv[1])
else:
    try:
        model = SAM("samkit-demo")
    except CheckpointError as err:  # the demo weights are not trained/shipped yet
        print(f"{err}\nfalling back to seeded (random) MobileSAM weights: masks are not meaningful")
        model = SAM.from_config(VARIANTS["mobile_sam"].config, seeded=True)
model.info()

if len(sys.argv) > 2:  # your image, prompted with a box around its central half
    image = read_image(sys.argv[2])
    h, w = image.shape[:2]
    truth = None
    boxes = np.array([[w / 4, h / 4, 3 * w / 4, 3 * h / 4]])
else:  # a synthetic-shapes image; its ground-truth boxes are the prompts
    shapes = make_shapes_image(np.random.default_rng(6), 384, 512)
    image, truth = shapes.image, shapes.masks
    boxes = np.stack([mask_to_box_xyxy(m) for m in truth]).astype(np.float64)

predictor = SamPredictor(model.model)
t0 = time.perf_counter()
predictor.set_image(image)
t1 = time.perf_counter()
masks = []
for box in boxes:
    m, score, _ = predictor.predict(box=box, multimask_output=False)
    masks.append(m[0])
t2 = time.perf_counter()
print(
    f"image {image.shape[1]}x{image.shape[0]}: encode {t1 - t0:.2f} s, "
    f"{len(boxes)} boxes {1000 * (t2 - t1) / len(boxes):.1f} ms each"
)
if truth is not None:
    ious = [(m & g).sum() / (m | g).sum() for m, g in zip(masks, truth)]
    print("IoU with the ground truth per object:", " ".join(f"{v:.3f}" for v in ious))
    print(f"mIoU on this image: {np.mean(ious):.3f}")

# overlay: each mask in its own colour, its prompt box in white
overlay = image.astype(np.float32)
colors = np.random.default_rng(0).uniform(60, 255, (len(masks), 3))
for m, c in zip(masks, colors):
    overlay[m] = 0.45 * overlay[m] + 0.55 * c
overlay = overlay.astype(np.uint8)
for m, box in zip(masks, boxes):
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    cv2.rectangle(overlay, (x0, y0), (x1, y1), (255, 255, 255), 1)
    contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(overlay, contours, -1, (0, 0, 0), 1)
path = out_dir / "overlay.png"
Image.fromarray(np.concatenate([image, overlay], axis=1)).save(path)
print(f"image and masks saved to {path}")

# the same measurement as the README's figure, on 20 held-out images
if truth is not None and model.name != "custom":
    held_out = write_shapes_dataset(out_dir / "heldout", n_train=0, n_val=20, seed=20240601)
    model.val(held_out, "box")
