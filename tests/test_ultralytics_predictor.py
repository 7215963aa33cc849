"""SAMPredictor: Ultralytics' SAM Predictor interface (overrides, set_image, prompts, segment
everything with generate()'s arguments) against samkit's own calls on the demo model."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from samkit import SAM, SamkitError, SAMPredictor
from samkit.everything import segment_everything

from .conftest import synthetic_image

DEMO = dict(conf=0.25, task="segment", mode="predict", imgsz=256, model="samkit-demo")


@pytest.fixture(scope="module")
def demo():
    return SAM("samkit-demo", precision="fp32")


@pytest.fixture
def image_file(tmp_path):
    path = tmp_path / "shapes.png"
    cv2.imwrite(str(path), synthetic_image(240, 320, seed=3)[..., ::-1])
    return path


def _predictor(model, **overrides):
    return SAMPredictor(overrides={**DEMO, "verbose": False, **overrides}, model=model)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"cnf": 0.3}, "unknown override 'cnf' (did you mean 'conf'?)"),
        ({"imgs": 1024}, "did you mean 'imgsz'"),
        ({"task": "detect"}, "'task' must be 'segment'"),
        ({"mode": "train"}, "'mode' must be 'predict'"),
        ({"conf": 2}, "'conf' must be in [0, 1]"),
        ({"retina_masks": False}, "always returns masks at image size"),
    ],
)
def test_bad_overrides_name_the_key(overrides, message):
    with pytest.raises(SamkitError) as exc:
        SAMPredictor(overrides={**DEMO, **overrides})
    assert message in str(exc.value)


def test_imgsz_must_be_the_models_input_size(demo):
    with pytest.raises(SamkitError, match="runs at its input size 256"):
        _predictor(demo, imgsz=1024)
    _predictor(demo, imgsz=[256, 256])


def test_prompts_on_the_set_image_match_samkit_and_drop_low_scores(demo, image_file):
    bgr = cv2.imread(str(image_file))
    expected = demo.predictor()
    expected.set_image(bgr)
    box = [30, 35, 115, 125]
    ref_box = expected(bboxes=box)
    ref_pts = expected(points=[[200, 160], [60, 60]], labels=[1, 1])

    predictor = _predictor(demo, conf=0.0)
    predictor.set_image(str(image_file))  # a path, then a cv2 (BGR) array: the same image
    predictor.set_image(bgr)
    (r,) = predictor(bboxes=box)
    np.testing.assert_array_equal(r.masks, ref_box.masks)
    np.testing.assert_allclose(r.scores, ref_box.scores)
    (r,) = predictor(points=[[200, 160], [60, 60]], labels=[1, 1])
    np.testing.assert_array_equal(r.masks, ref_pts.masks)

    # conf keeps masks whose predicted IoU is above it (Ultralytics' postprocess)
    cut = float(np.sort(ref_pts.scores)[0])
    strict = _predictor(demo, conf=cut)
    strict.set_image(bgr)
    (r,) = strict(points=[[200, 160], [60, 60]], labels=[1, 1])
    assert len(r) == int((ref_pts.scores > cut).sum()) == len(ref_pts) - 1

    predictor.reset_image()
    with pytest.raises(SamkitError, match="no image: pass source"):
        predictor(bboxes=box)


def test_source_and_set_prompts(demo, image_file):
    predictor = _predictor(demo, conf=0.0)
    (r,) = predictor(source=str(image_file), bboxes=[[30, 35, 115, 125]])
    (ref,) = demo(str(image_file), bboxes=[[30, 35, 115, 125]])
    np.testing.assert_array_equal(r.masks, ref.masks)
    predictor.set_image(str(image_file))
    predictor.set_prompts({"points": [200, 160], "labels": [1]})
    (r,) = predictor()
    (ref,) = demo(str(image_file), points=[200, 160], labels=[1])
    np.testing.assert_array_equal(r.masks, ref.masks)


@pytest.mark.slow
def test_segment_everything_uses_generates_arguments_and_defaults(demo, image_file):
    predictor = _predictor(demo)  # conf 0.25, stability_score_offset 0.95 (Ultralytics)
    results = predictor(source=str(image_file), crop_n_layers=1, points_stride=6)
    (r,) = results
    rgb = cv2.imread(str(image_file))[..., ::-1].copy()
    ref = segment_everything(
        demo.predictor().sam_predictor,
        rgb,
        points_stride=6,
        crop_n_layers=1,
        stability_score_offset=0.95,
        precision="fp32",
    )
    keep = ref.scores > 0.25
    assert len(r) == int(keep.sum()) > 0
    np.testing.assert_array_equal(r.masks, ref.masks[keep])
    # the same on the image of set_image
    predictor.set_image(str(image_file))
    (again,) = predictor(crop_n_layers=1, points_stride=6)
    np.testing.assert_array_equal(again.masks, r.masks)
    assert again.path == str(image_file)


def test_call_errors_name_the_argument(demo, image_file):
    predictor = _predictor(demo)
    with pytest.raises(SamkitError, match="'points_strde' \\(did you mean 'points_stride'"):
        predictor(source=str(image_file), points_strde=8)
    with pytest.raises(SamkitError, match="only used without prompts"):
        predictor(source=str(image_file), bboxes=[1, 2, 30, 40], crop_n_layers=1)
    with pytest.raises(SamkitError, match="one label per point"):
        predictor(source=str(image_file), points=[900, 370], labels=[1, 0])


def test_save_writes_numbered_run_dirs(demo, image_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        predictor = _predictor(demo, save=True, save_txt=True, conf=0.0)
        predictor(source=str(image_file), bboxes=[30, 35, 115, 125])
    first = tmp_path / "runs" / "segment" / "predict"
    assert (first / "shapes.jpg").is_file() and (first / "labels" / "shapes.txt").is_file()
    assert (tmp_path / "runs" / "segment" / "predict2" / "shapes.jpg").is_file()
