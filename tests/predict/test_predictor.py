"""Input checks of the torch predictors: the same errors as the onnxruntime predictor's
(``samkit.predict.prompt_checks``), from ``SamPredictor`` and the high-level ``Predictor`` alike."""

from __future__ import annotations

import numpy as np
import pytest

from samkit import Predictor, SamPredictor
from samkit.errors import ImageError, PromptError

from ..conftest import synthetic_image, tiny_model

IMG = synthetic_image(60, 80, seed=3)  # RGB

# (predict() arguments, a fragment of the error) -- the cases of test_onnx_export's
# test_predictor_input_errors, plus the ones the torch predictor used to let through.
BAD_PROMPTS = [
    ({"point_coords": [[1, 2]]}, "point_labels must be given"),
    ({"point_coords": [1, 2], "point_labels": [1]}, "N x 2"),
    ({"point_coords": [[1, 2]], "point_labels": [1, 1]}, "one label per point"),
    ({"point_coords": [[1, 2]], "point_labels": [5]}, r"1 \(foreground\) or 0"),
    ({"point_coords": [[np.nan, 2]], "point_labels": [1]}, "NaN"),
    ({"point_coords": [["a", 2]], "point_labels": [1]}, "numeric"),
    ({"box": [1, 2, 3]}, "4 values"),
    ({"box": [30, 2, 3, 40]}, "x1 <= x2"),
    ({"box": [0, 0, np.inf, 40]}, "NaN or infinite"),
    ({"mask_input": np.zeros((1, 16, 16))}, "mask_input must be 1 x 64 x 64"),
]


@pytest.fixture(scope="module")
def predictors() -> tuple[SamPredictor, Predictor]:
    sam = tiny_model()
    low = SamPredictor(sam)
    low.set_image(IMG)
    high = Predictor(sam, precision="fp32", image_format="RGB")
    high.set_image(IMG)
    return low, high


@pytest.mark.parametrize("kwargs, message", BAD_PROMPTS, ids=[m for _, m in BAD_PROMPTS])
def test_bad_prompts_raise_the_same_error_in_both_predictors(predictors, kwargs, message):
    texts = []
    for p in predictors:
        with pytest.raises(PromptError, match=message) as exc:
            p.predict(**kwargs)
        texts.append(str(exc.value))
    assert texts[0] == texts[1]


def test_valid_prompts_still_decode(predictors):
    low, high = predictors
    prompt = {
        "point_coords": np.array([[20.0, 30.0], [0.0, 0.0]]),
        "point_labels": np.array([1, -1]),  # -1: a padding point, as in Meta's predictor
        "box": np.array([10, 10, 50, 40]),
    }
    masks, iou, low_res = low.predict(**prompt)
    assert masks.shape == (3, 60, 80) and masks.dtype == np.bool_
    assert iou.shape == (3,) and low_res.shape == (3, 64, 64)
    # the high-level predictor's Meta-style predict gives the same numbers (fp32 both)
    masks2, iou2, low_res2 = high.predict(**prompt)
    np.testing.assert_array_equal(masks2, masks)
    np.testing.assert_allclose(iou2, iou, atol=1e-6)
    np.testing.assert_allclose(low_res2, low_res, atol=1e-5)


def test_prompts_before_an_image():
    sam = tiny_model()
    for p in (SamPredictor(sam), Predictor(sam)):
        with pytest.raises(PromptError, match="no image is set: call set_image"):
            p.predict(box=[0, 0, 10, 10])
    with pytest.raises(PromptError, match="no image is set"):
        SamPredictor(sam).get_image_embedding()


def test_bad_images():
    p = SamPredictor(tiny_model())
    for image, fmt, message in [
        (IMG[..., 0], "RGB", "H x W x 3"),
        (IMG.astype(np.float32), "RGB", "uint8"),
        (IMG[:0], "RGB", "empty"),
        (IMG, "HSV", "'RGB' or 'BGR'"),
    ]:
        with pytest.raises(ImageError, match=message):
            p.set_image(image, fmt)
    assert not p.is_image_set and p.original_size is None
