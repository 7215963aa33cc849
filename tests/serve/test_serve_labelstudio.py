"""Label Studio ML-backend protocol of ``samkit serve``, checked with label-studio-sdk's own
types: its ``LabelInterface`` validates the predictions and its brush decoder reads the RLE.

(``label-studio-ml`` itself pins Flask 1.1 / Werkzeug 2.0 / Jinja2 3.0 and cannot be installed
beside current packages, so the SDK's request/response types are used.)"""

from __future__ import annotations

import base64
import io
import warnings

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("label_studio_sdk")

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient  # noqa: E402

from label_studio_sdk.converter.brush import decode_rle  # noqa: E402
from label_studio_sdk.label_interface import LabelInterface  # noqa: E402

from samkit import SAM  # noqa: E402
from samkit.ops import rle_to_mask  # noqa: E402
from samkit.serve import create_app  # noqa: E402
from tests.serve_helpers import inner_point, snapshot, write_folder  # noqa: E402

BRUSH = """<View>
  <Image name="image" value="$image" zoom="true"/>
  <BrushLabels name="tag" toName="image"><Label value="Shape"/><Label value="Other"/></BrushLabels>
  <KeyPointLabels name="kp" toName="image" smart="true"><Label value="Shape" smart="true"/></KeyPointLabels>
  <RectangleLabels name="rect" toName="image" smart="true"><Label value="Shape"/></RectangleLabels>
</View>"""
POLYGON = BRUSH.replace("BrushLabels", "PolygonLabels")


@pytest.fixture(scope="module")
def demo():
    return SAM("samkit-demo", precision="fp32")


@pytest.fixture
def site(tmp_path, demo):
    shapes = write_folder(tmp_path)
    app = create_app(demo, tmp_path / "images", tmp_path / "labels")
    with TestClient(app) as client:
        yield client, tmp_path, shapes


def keypoint(x, y, w, h, positive=True):
    return {
        "original_width": w,
        "original_height": h,
        "image_rotation": 0,
        "value": {"x": 100 * x / w, "y": 100 * y / h, "width": 0.5, "keypointlabels": ["Shape"]},
        "is_positive": positive,
        "id": "k1",
        "from_name": "kp",
        "to_name": "image",
        "type": "keypointlabels",
        "origin": "manual",
    }


def rectangle(box, w, h):
    x1, y1, x2, y2 = box
    value = {"x": 100 * x1 / w, "y": 100 * y1 / h, "width": 100 * (x2 - x1) / w}
    value.update(height=100 * (y2 - y1) / h, rotation=0, rectanglelabels=["Shape"])
    return {
        "original_width": w,
        "original_height": h,
        "value": value,
        "id": "r1",
        "from_name": "rect",
        "to_name": "image",
        "type": "rectanglelabels",
    }


def predict(client, config, url, context):
    body = {
        "tasks": [{"id": 7, "data": {"image": url}}],
        "label_config": config,
        "project": "3.1700000000",
        "params": {"login": None, "password": None, "context": context},
    }
    return client.post("/predict", json=body)


def test_health_setup_webhook(site):
    client, _, _ = site
    assert client.get("/health").json()["status"] == "UP"
    r = client.post(
        "/setup", json={"project": "3.17", "schema": BRUSH, "hostname": "", "access_token": ""}
    )
    assert r.status_code == 200 and r.json()["model_version"] == "samkit-samkit_demo"
    assert client.post("/webhook", json={"action": "ANNOTATION_CREATED"}).status_code == 200


def test_keypoint_prompt_gives_a_valid_brush_region(site):
    client, root, shapes = site
    h, w = 256, 320
    x, y = inner_point(shapes[0].masks[0])
    r = predict(client, BRUSH, "/data/upload/3/0a1b2c3d-0.png", {"result": [keypoint(x, y, w, h)]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == "samkit-samkit_demo" and len(body["results"]) == 1
    prediction = body["results"][0]
    li = LabelInterface(BRUSH)
    assert li.validate_prediction(prediction), li.validate_prediction(
        prediction, return_errors=True
    )
    region = prediction["result"][0]
    assert region["type"] == "brushlabels" and region["value"]["brushlabels"] == ["Shape"]
    assert (region["original_width"], region["original_height"]) == (w, h)
    mask = decode_rle(region["value"]["rle"]).reshape(h, w, 4)[..., 3] > 0
    server = client.post("/api/images/0/decode", json={"points": [[x, y]], "labels": [1]}).json()
    assert np.array_equal(mask, rle_to_mask(server["masks"][0]["rle"]))
    assert prediction["score"] == pytest.approx(server["masks"][0]["score"])


def test_rectangle_and_negative_point_and_polygons(site):
    client, root, shapes = site
    h, w = 256, 320
    m = shapes[1].masks[0]
    ys, xs = np.nonzero(m)
    box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
    context = {"result": [rectangle(box, w, h), keypoint(1, 1, w, h, positive=False)]}
    r = predict(client, POLYGON, "/data/local-files/?d=images%2F1.png", context)
    assert r.status_code == 200, r.text
    prediction = r.json()["results"][0]
    li = LabelInterface(POLYGON)
    assert li.validate_prediction(prediction), li.validate_prediction(
        prediction, return_errors=True
    )
    region = prediction["result"][0]
    assert region["type"] == "polygonlabels"
    pts = np.array(region["value"]["points"]) * [w / 100, h / 100]
    import cv2

    got = np.zeros((h, w), np.uint8)
    cv2.fillPoly(got, [np.round(pts).astype(np.int32)], 1)
    server = client.post(
        "/api/images/1/decode", json={"box": box, "points": [[1, 1]], "labels": [0]}
    ).json()
    want = rle_to_mask(server["masks"][0]["rle"])
    assert (got.astype(bool) & want).sum() / (got.astype(bool) | want).sum() > 0.9


def test_data_uri_task_and_no_context(site):
    client, root, shapes = site
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(shapes[2].image).save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    x, y = inner_point(shapes[2].masks[0])
    r = predict(client, BRUSH, url, {"result": [keypoint(x, y, 320, 256)]})
    assert r.status_code == 200 and len(r.json()["results"][0]["result"]) == 1
    empty = predict(client, BRUSH, "/data/upload/3/0.png", None)
    assert empty.status_code == 200 and empty.json()["results"][0]["result"] == []


@pytest.mark.parametrize(
    "change, status, words",
    [
        ({"tasks": []}, 422, "tasks"),
        ({"label_config": "<View><Image name='i' value='$image'/></View>"}, 422, "BrushLabels"),
        ({"label_config": "<View><Broken"}, 422, "label_config"),
        ({"url": "/data/upload/3/nothere.png"}, 422, "match"),
        ({"url": "data:image/png;base64,!!!"}, 422, "base64"),
        ({"url": "data:image/png;base64," + base64.b64encode(b"junk").decode()}, 422, "image"),
        ({"url": None}, 422, "image"),
    ],
)
def test_bad_predict_requests(site, change, status, words):
    client, root, shapes = site
    before = snapshot(root)
    body = {
        "tasks": [{"id": 1, "data": {"image": change.get("url", "/data/upload/1/0.png")}}],
        "label_config": BRUSH,
        "params": {"context": {"result": [keypoint(50, 50, 320, 256)]}},
    }
    body.update({k: v for k, v in change.items() if k != "url"})
    r = client.post("/predict", json=body)
    assert r.status_code == status, r.text
    assert words.lower() in r.json()["detail"].lower()
    assert snapshot(root) == before
