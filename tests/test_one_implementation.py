"""Fixes that came with one implementation per job."""

from __future__ import annotations

import numpy as np
import pytest

import samkit
from samkit import SAM, SamPredictor

from .conftest import TINY_VIT, synthetic_image


def test_load_dataset_errors_are_samkit_dataset_errors(tmp_path):
    with pytest.raises(samkit.DatasetError):
        samkit.load_dataset("/nonexistent.yaml")
    bad = tmp_path / "data.yaml"
    bad.write_text("- not a mapping\n")
    with pytest.raises(samkit.DatasetError, match="expected a mapping"):
        samkit.load_dataset(bad)


def test_sam_predictor_accepts_the_sam_facade():
    model = SAM.from_config(TINY_VIT, seeded=True)
    image = synthetic_image(120, 160)
    box = np.array([20, 30, 110, 100])
    facade = SamPredictor(model)
    assert facade.model is model.model
    facade.set_image(image)
    module = SamPredictor(model.model)
    module.set_image(image)
    a, b = facade.predict(box=box), module.predict(box=box)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert a[0].shape == (3, 120, 160)


def test_sam_predictor_rejects_other_objects():
    with pytest.raises(samkit.SamkitError, match="Sam module or a samkit.SAM"):
        SamPredictor(object())
