"""Property-based tests (hypothesis) of prompt and label parsing: any input gives either a
well-formed result or the documented error class, never another exception."""

from __future__ import annotations

import json
import math
from pathlib import PurePosixPath

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from samkit.annotate.detectors import MAX_CLASS_ID
from samkit.annotate.labels import CocoBoxes, _parse_yolo_line
from samkit.errors import DatasetError, PromptError
from samkit.predict.prompts import fit_prompts, parse_prompts

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

floats = st.floats(allow_nan=True, allow_infinity=True, width=64)
small_arrays = hnp.arrays(
    dtype=st.sampled_from([np.float64, np.float32, np.int64, np.int8, np.bool_]),
    shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
    elements=None,
)
prompt_values = st.one_of(
    st.none(),
    small_arrays,
    st.lists(st.lists(floats, max_size=5), max_size=4),
    st.lists(floats, max_size=6),
    st.text(max_size=5),
    floats,
)


@SETTINGS
@given(bboxes=prompt_values, points=prompt_values, labels=prompt_values)
def test_parse_prompts_returns_consistent_prompts_or_prompt_error(bboxes, points, labels):
    try:
        p = parse_prompts(bboxes, points, labels)
    except PromptError as exc:
        assert str(exc)
        return
    for arr in (p.points, p.boxes):
        if arr is not None:
            assert arr.shape[0] == p.n and np.isfinite(arr).all()
    if p.boxes is not None:
        assert p.boxes.shape == (p.n, 4)
    if p.points is not None:
        assert p.points.ndim == 3 and p.points.shape[2] == 2
        assert p.labels.shape == p.points.shape[:2]


@SETTINGS
@given(
    boxes=hnp.arrays(np.float64, st.tuples(st.integers(1, 6), st.just(4)), elements=floats),
    h=st.integers(1, 3000),
    w=st.integers(1, 3000),
)
def test_fit_prompts_clips_boxes_or_raises(boxes, h, w):
    try:
        fitted = fit_prompts(parse_prompts(bboxes=boxes), h, w)
    except PromptError:
        return
    b = fitted.boxes
    assert np.all(b[:, 0::2] >= 0) and np.all(b[:, 0::2] <= w)
    assert np.all(b[:, 1::2] >= 0) and np.all(b[:, 1::2] <= h)


number_text = st.one_of(
    st.integers(-5, 10**25).map(str),
    floats.map(repr),
    st.sampled_from(["1e20", "nan", "inf", "-0", "0x10", "1_0", "", "abc", "0.5"]),
)
yolo_lines = st.one_of(
    st.text(max_size=60),
    st.lists(number_text, min_size=0, max_size=12).map(" ".join),
)


@SETTINGS
@given(line=yolo_lines)
def test_yolo_line_parses_to_a_bounded_box_or_dataset_error(line):
    try:
        box, cls, score = _parse_yolo_line(line, "labels/a.txt:1")
    except DatasetError as exc:
        assert "labels/a.txt:1" in str(exc)
        return
    assert isinstance(cls, int) and 0 <= cls <= MAX_CLASS_ID
    assert box.shape == (4,) and np.all((box >= 0) & (box <= 1))
    assert box[0] <= box[2] and box[1] <= box[3]
    assert math.isfinite(score)


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), floats, st.integers(-(2**70), 2**70), st.text(max_size=4)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)
annotation = st.fixed_dictionaries(
    {"id": json_values, "image_id": st.sampled_from([1, 2, "1", None]), "bbox": json_values},
    optional={"category_id": json_values, "score": json_values, "iscrowd": json_values},
)


@SETTINGS
@given(
    anns=st.one_of(json_values, st.lists(annotation, max_size=4)),
    cats=st.one_of(st.none(), json_values),
)
def test_coco_boxes_give_detections_or_dataset_error(tmp_path_factory, anns, cats):
    path = tmp_path_factory.mktemp("coco") / "boxes.json"
    data = {
        "images": [{"id": 1, "file_name": "a.png", "width": 8, "height": 6}],
        "annotations": anns,
        "categories": cats,
    }
    try:
        path.write_text(json.dumps(data, allow_nan=True))
    except (TypeError, ValueError):
        return
    rel = PurePosixPath("a.png")
    try:
        source = CocoBoxes(path, [rel])
        dets = source(rel, np.zeros((6, 8, 3), np.uint8))
    except DatasetError as exc:
        assert str(path) in str(exc) or "class ids" in str(exc)
        return
    assert dets.boxes_xyxy.shape == (len(dets), 4) and np.isfinite(dets.boxes_xyxy).all()
    assert np.all((dets.class_ids >= 0) & (dets.class_ids <= MAX_CLASS_ID))


@pytest.mark.parametrize("depth", [1000, 200_000])
def test_deep_json_is_a_dataset_error(tmp_path, depth):
    path = tmp_path / "deep.json"
    path.write_text("[" * depth + "]" * depth)
    with pytest.raises(DatasetError, match="deep.json"):
        CocoBoxes(path, [PurePosixPath("a.png")])
