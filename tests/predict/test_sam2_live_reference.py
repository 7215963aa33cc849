"""The SAM 2 parity checks on photos and sizes the fixtures do not have, against Meta's ``sam2``
run live in its own interpreter (opt-in: it needs a reference venv and takes a minute).

    SAMKIT_REF_PYTHON=/work/ref/bin/python python -m pytest tests/predict/test_sam2_live_reference.py
    SAMKIT_PARITY_PHOTOS=a.jpg:b.png SAMKIT_REF_PYTHON=... python -m pytest ...   # your photos

Without ``SAMKIT_PARITY_PHOTOS`` two synthetic photo-like images of other sizes (portrait and
wide) are used. Both sides load one seeded hiera_t checkpoint in Meta's layout.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from samkit.everything.sam2 import Sam2AutomaticMaskGenerator
from samkit.predict.sam2_predictor import Sam2Predictor
from samkit.zoo.sam2 import size_config

from ..sam2_helpers import load_rgb, meta_checkpoint, seeded_sam2

REF_PYTHON = os.environ.get("SAMKIT_REF_PYTHON")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not REF_PYTHON, reason="set SAMKIT_REF_PYTHON to a venv with Meta's sam2"),
]

REF_SCRIPT = r"""
import json, sys, numpy as np, torch
from sam2.build_sam import build_sam2
from sam2.sam2_image_predictor import SAM2ImagePredictor
from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
a = json.loads(sys.argv[1])
torch.set_num_threads(1)
model = build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", ckpt_path=a["ckpt"], device="cpu")
image = np.load(a["image"])
p = SAM2ImagePredictor(model)
p.set_image(image)
out = {"embed": p._features["image_embed"].numpy()}
for name, kw in a["cases"].items():
    kw = {k: np.asarray(v) if isinstance(v, list) else v for k, v in kw.items()}
    m, i, l = p.predict(**kw)
    out[name + ".masks"], out[name + ".iou"], out[name + ".low"] = m, i, l
recs = SAM2AutomaticMaskGenerator(model, output_mode="binary_mask", **a["amg"]).generate(image)
out["amg.masks"] = np.stack([r["segmentation"] for r in recs]) if recs else np.zeros((0,) + image.shape[:2], bool)
out["amg.iou"] = np.array([r["predicted_iou"] for r in recs])
np.savez(a["out"], **out)
"""

AMG = {
    "points_per_side": 8,
    "pred_iou_thresh": 0.4,
    "stability_score_thresh": 0.02,
    "stability_score_offset": 0.5,
    "mask_threshold": 5.0,
}


def _images() -> list[tuple[str, np.ndarray]]:
    photos = os.environ.get("SAMKIT_PARITY_PHOTOS")
    if photos:
        return [(Path(p).name, load_rgb(Path(p))) for p in photos.split(os.pathsep) if p]
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from bench_everything import photo_like

    return [
        ("portrait_700x480", photo_like(700, 480, 1)),
        ("wide_360x900", photo_like(360, 900, 2)),
    ]


def _cases(h: int, w: int) -> dict:
    return {
        "point": dict(point_coords=[[w * 0.5, h * 0.45]], point_labels=[1], multimask_output=True),
        "fg_bg": dict(
            point_coords=[[w * 0.5, h * 0.45], [w * 0.1, h * 0.1]],
            point_labels=[1, 0],
            multimask_output=False,
        ),
        "box": dict(box=[w * 0.2, h * 0.2, w * 0.7, h * 0.8], multimask_output=False),
        "boxes": dict(
            box=[[0, 0, w * 0.5, h * 0.5], [w * 0.3, h * 0.3, w, h]], multimask_output=False
        ),
    }


@pytest.mark.parametrize("index", [0, 1])
def test_live_parity(tmp_path, index):
    images = _images()
    if index >= len(images):
        pytest.skip("fewer photos given")
    name, image = images[index]
    torch.set_num_threads(1)
    ckpt = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": meta_checkpoint(size_config("t"), "2.1")}, ckpt)
    np.save(tmp_path / "image.npy", image)
    h, w = image.shape[:2]
    args = {
        "ckpt": str(ckpt),
        "image": str(tmp_path / "image.npy"),
        "out": str(tmp_path / "ref.npz"),
        "cases": _cases(h, w),
        "amg": AMG,
    }
    proc = subprocess.run(
        [REF_PYTHON, "-c", REF_SCRIPT, json.dumps(args)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ref = np.load(tmp_path / "ref.npz")
    model = seeded_sam2(size_config("t"))
    pred = Sam2Predictor(model)
    pred.set_image(image)
    emb = pred.features.numpy()
    assert np.abs(emb - ref["embed"]).max() <= 1e-4 * np.abs(ref["embed"]).max(), name
    for case, kw in _cases(h, w).items():
        kw = {k: np.asarray(v) if isinstance(v, list) else v for k, v in kw.items()}
        masks, iou, low = pred.predict(**kw)
        assert masks.shape == ref[case + ".masks"].shape, (name, case)
        assert (masks == ref[case + ".masks"]).mean() >= 0.999, (name, case)
        np.testing.assert_allclose(iou, ref[case + ".iou"], atol=1e-4)
        r = ref[case + ".low"]
        assert np.abs(low - r).max() <= 1e-3 * np.abs(r).max(), (name, case)
    recs = Sam2AutomaticMaskGenerator(model, **AMG).generate(image)
    ours = np.stack([r["segmentation"] for r in recs]) if recs else np.zeros((0, h, w), bool)
    theirs = ref["amg.masks"]
    a = theirs.reshape(len(theirs), -1).astype(np.float32)
    b = ours.reshape(len(ours), -1).astype(np.float32)
    if len(a) and len(b):
        inter = a @ b.T
        union = a.sum(1)[:, None] + b.sum(1)[None] - inter
        best = (inter / np.maximum(union, 1)).max(1)
    else:
        best = np.zeros(len(a))
    assert (best >= 0.98).mean() >= 0.98 if len(a) else len(b) == 0, name
    assert len(b) <= len(a) + max(1, int(0.02 * len(a))), name
