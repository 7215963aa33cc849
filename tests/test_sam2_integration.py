"""SAM 2 in the rest of samkit with a tiny seeded config: info, val, auto_annotate, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from samkit import SAM, auto_annotate
from samkit.annotate.detectors import Detections
from samkit.annotate.run import _predictor, segment_detections
from samkit.ops.rle import rle_to_mask
from samkit.predict.sam2_predictor import Sam2Predictor

from .annotate_helpers import boxes_for, make_folder, parse_yolo
from .sam2_helpers import TINY, seeded_sam2

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    """This tree's ``python -m samkit`` (the installed command may be another checkout's)."""
    env = dict(os.environ, SAMKIT_OFFLINE="1", PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "samkit", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


@pytest.fixture
def tiny_ckpt(tmp_path):
    """A tiny SAM 2 saved by samkit (config in the file)."""
    path = tmp_path / "tiny_sam2.pt"
    torch.save({"model": seeded_sam2(TINY).state_dict(), "samkit_config": TINY.to_dict()}, path)
    return path


def test_info_reports_sam2_and_video_modules(tmp_path, capsys):
    from samkit.zoo.sam2 import size_config

    from .sam2_helpers import meta_checkpoint

    path = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": meta_checkpoint(size_config("t"), "2.1")}, path)
    model = SAM(str(path))
    info = model.info()
    out = capsys.readouterr().out
    assert "SAM 2.1 t Hiera" in out and "video-only tensors" in out and "not used" in out
    # every value the image predictor uses (keys_sam2.1.json), the Fourier buffer included
    assert sum(v.numel() for v in model.model.state_dict().values()) == 31_440_977
    assert info.parameters == 31_440_977 - 256 - 256  # the parts: no buffer, no no_mem_embed
    assert info.encoder_gflops > 0


def test_val_runs_the_sam2_predictor(tmp_path):
    from samkit.data.datasets import Instance, SegDataset, SegSample
    from samkit.train.val import SamBackend, validate

    sam = seeded_sam2(TINY)
    backend = SamBackend(sam)
    assert isinstance(backend.predictor, Sam2Predictor)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "a.png")
    gt = np.zeros((90, 120), bool)
    gt[20:60, 30:90] = True
    from samkit.ops.rle import mask_to_rle

    sample = SegSample(tmp_path / "a.png", [Instance(0, rle=mask_to_rle(gt))], 90, 120)
    res = validate(backend, SegDataset([sample], {0: "thing"}, "val"), "box", verbose=False)
    # the same number as the predictor answering the same box
    pred = Sam2Predictor(sam)
    pred.set_image(img)
    m, _, _ = pred.predict(box=np.array([30, 20, 89, 59]), multimask_output=False)
    inter, union = (m[0] & gt).sum(), (m[0] | gt).sum()
    assert res.ious[0] == pytest.approx(inter / union, abs=1e-6)


def test_auto_annotate_with_sam2(tmp_path):
    ds = tmp_path / "ds"
    images = make_folder(ds / "images", 2)
    sam = SAM.from_config(TINY, seeded=True, precision="fp32")

    def detector(image):
        return boxes_for(image), [0, 1, 2], [0.9, 0.8, 0.7]

    summary = auto_annotate(ds / "images", det_model=detector, sam_model=sam, progress=False)
    assert summary.failed == 0 and summary.annotated == 2
    pred = sam.predictor(image_format="RGB")
    for i, image in enumerate(images):
        h, w = image.shape[:2]
        lines = parse_yolo(summary.output_dir / f"im{i}.txt", h, w)
        assert [c for c, _ in lines] == [0, 1, 2]
        # the masks behind the polygons are the predictor's, box for box
        pred.set_image(image)
        expect = pred(bboxes=boxes_for(image))
        dets = Detections.from_arrays(boxes_for(image), [0, 1, 2])
        objs = list(segment_detections(_predictor(sam.model, "fp32"), image, dets))
        for obj, mask, score in zip(objs, expect.masks, expect.scores):
            np.testing.assert_array_equal(obj.mask, mask)
            assert obj.predicted_iou == pytest.approx(float(score), abs=1e-5)


def test_cli_predict_and_info_with_sam2(tmp_path, tiny_ckpt):
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 255, (100, 140, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    r = run("info", f"model={tiny_ckpt}")
    assert r.returncode == 0, r.stderr
    assert "SAM 2" in r.stdout and "Hiera" in r.stdout
    r = run(
        "predict",
        f"model={tiny_ckpt}",
        f"source={tmp_path / 'a.png'}",
        "bboxes=[[10,10,90,80]]",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    data = json.loads((tmp_path / "runs" / "predict" / "results.json").read_text())
    [image] = data["images"]
    expected = SAM(str(tiny_ckpt))(str(tmp_path / "a.png"), bboxes=[[10, 10, 90, 80]])[0]
    assert len(image["masks"]) == 1
    np.testing.assert_array_equal(rle_to_mask(image["masks"][0]["segmentation"]), expected.masks[0])
    r = run(
        "predict",
        f"model={tiny_ckpt}",
        f"source={tmp_path / 'a.png'}",
        "points_stride=4",
        "conf_thres=0.0",
        "stability_score_thresh=0.0",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr


def test_train_sam2_lowers_the_loss_and_saves_a_loadable_checkpoint(tmp_path):
    import dataclasses

    from samkit.data.synthetic import write_shapes_dataset

    ds = write_shapes_dataset(
        tmp_path / "ds", n_train=16, n_val=4, seed=2, height=64, width=64, max_objects=3
    )
    config = dataclasses.replace(TINY, img_size=128)
    torch.manual_seed(0)
    model = SAM.from_config(config)
    before = model.model.image_encoder.trunk.patch_embed.proj.weight.clone()
    res = model.train(
        ds, epochs=4, batch=4, lr=3e-3, project=tmp_path, verbose=False, plots=False, freeze=()
    )
    losses = [row["loss"] for row in res.epochs]
    assert losses[-1] < 0.9 * losses[0]
    assert not torch.equal(before, model.model.image_encoder.trunk.patch_embed.proj.weight)
    loaded = SAM(str(res.best))
    assert loaded.config == config
    # frozen encoder (the default): features cached, only the decoder moves
    frozen = SAM.from_config(config, seeded=True)
    enc = {k: v.clone() for k, v in frozen.model.image_encoder.state_dict().items()}
    dec = frozen.model.mask_decoder.iou_token.weight.clone()
    frozen.train(ds, epochs=1, batch=4, project=tmp_path, name="frozen", verbose=False, plots=False)
    assert all(torch.equal(v, frozen.model.image_encoder.state_dict()[k]) for k, v in enc.items())
    assert not torch.equal(dec, frozen.model.mask_decoder.iou_token.weight)
