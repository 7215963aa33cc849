"""Segment-everything's counters, summary line and the filter named when no mask is left."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from samkit import SAM
from samkit.everything import segment_everything
from samkit.everything.automatic import SamAutomaticMaskGenerator
from samkit.everything.engine import AmgParams
from samkit.everything.report import META_NAMES, empty_reason, summary

from ..conftest import synthetic_image

PARAMS = AmgParams(points_per_side=8, crop_n_layers=1)


def _stats(**kw):
    base = dict(points=320, masks_decoded=960, iou_pass=7, stability_pass=3, edge_pass=2)
    base.update(crops=5, crop_nms_kept=2, kept=1, best_iou=0.93, best_stability=0.97)
    base.update(kw)
    return base


@pytest.mark.parametrize(
    ("stats", "reason"),
    [
        (_stats(), None),
        (
            _stats(iou_pass=0, stability_pass=0, edge_pass=0, crop_nms_kept=0, kept=0),
            "no mask passed: the predicted-IoU filter (conf_thres=0.88) removed all 960 "
            "candidates (highest predicted IoU 0.930; lower conf_thres to keep more)",
        ),
        (
            _stats(stability_pass=0, edge_pass=0, crop_nms_kept=0, kept=0, best_stability=0.5),
            "no mask passed: the stability filter (stability_score_thresh=0.95) removed all 7 "
            "candidates (highest stability score 0.500; lower stability_score_thresh to keep more)",
        ),
        (
            _stats(edge_pass=0, crop_nms_kept=0, kept=0),
            "no mask passed: the crop-edge filter (masks touching an inner crop edge) removed "
            "all 3 candidates (use crop_n_layers=0 to segment the whole image only)",
        ),
        (_stats(points=0, kept=0), "no mask passed: the point grid is empty"),
    ],
)
def test_empty_reason_names_the_first_filter_that_left_nothing(stats, reason):
    got = empty_reason(stats, PARAMS)
    assert got == reason if reason is None else got.startswith(reason)


def test_summary_line_and_meta_names():
    line = summary(_stats(total_s=4.25), PARAMS)
    assert line == (
        "segment everything: 320 points over 5 crops -> 960 masks decoded -> 7 past predicted-IoU "
        "filter (conf_thres=0.88) -> 3 past stability filter (stability_score_thresh=0.95) -> 2 "
        "past crop-edge filter (masks touching an inner crop edge) -> 2 after box NMS -> 1 kept "
        "(4.2 s)"
    )
    empty = _stats(iou_pass=0, stability_pass=0, edge_pass=0, crop_nms_kept=0, kept=0)
    assert "pred_iou_thresh=0.88" in summary(empty, PARAMS, META_NAMES).splitlines()[1]


@pytest.fixture(scope="module")
def demo():
    return SAM("samkit-demo", precision="fp32")


def test_counters_are_consistent_and_filters_are_named_end_to_end(demo, caplog, capsys):
    image = synthetic_image(240, 320, seed=5)
    sp = demo.predictor().sam_predictor
    out = segment_everything(sp, image, points_stride=6, crop_n_layers=1, precision="fp32")
    s = out.stats
    assert s["crops"] == 5 and s["points"] == 36 * 5 and s["masks_decoded"] == 3 * s["points"]
    chain = [s["iou_pass"], s["stability_pass"], s["edge_pass"], s["crop_nms_kept"], s["kept"]]
    assert chain == sorted(chain, reverse=True) and s["kept"] == len(out) > 0
    assert out.summary.startswith("segment everything: 180 points over 5 crops -> 540 masks")

    with caplog.at_level(logging.WARNING, logger="samkit"):
        none = segment_everything(sp, image, points_stride=6, conf_thres=0.9999, precision="fp32")
    assert len(none) == 0 and "the predicted-IoU filter (conf_thres=0.9999) removed all 108" in (
        caplog.text
    )
    gen = SamAutomaticMaskGenerator(demo, points_per_side=6, pred_iou_thresh=0.9999, progress=True)
    assert gen.generate(image) == []
    err = capsys.readouterr().err
    assert "pred_iou_thresh=0.9999) removed all 108" in err and "36/36" in err  # bar over points

    r = demo(image, points_stride=6, conf_thres=0.9999, verbose=True, image_format="RGB")
    assert len(r) == 1 and len(r[0]) == 0 and r[0].to_json()  # an empty result serializes
    assert "no mask passed" in capsys.readouterr().err
    assert np.array_equal(r[0].areas, np.zeros(0, np.int64))
