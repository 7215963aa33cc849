"""``samkit serve`` HTTP API, in process: every endpoint, bad input -> 4xx and nothing written."""

from __future__ import annotations

import base64
import io
import json
import warnings

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

with warnings.catch_warnings():  # starlette's note about its httpx-based client
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient  # noqa: E402

from samkit import SAM  # noqa: E402
from samkit.ops import encode_coco_rle, rle_to_mask  # noqa: E402
from samkit.serve import create_app  # noqa: E402
from tests.serve_helpers import inner_point, snapshot, write_folder  # noqa: E402


@pytest.fixture(scope="module")
def demo():
    return SAM("samkit-demo", precision="fp32")


@pytest.fixture
def site(tmp_path, demo):
    shapes = write_folder(tmp_path)
    app = create_app(demo, tmp_path / "images", tmp_path / "labels", names=["shape"])
    with TestClient(app) as client:
        yield client, tmp_path, shapes


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def test_info_list_image_file_status(site):
    client, root, shapes = site
    info = client.get("/api/info").json()
    assert info["model"] == "samkit_demo" and info["images"] == 3 and info["names"] == ["shape"]
    assert info["image_size"] == 256 and info["browser_decoder"] is False
    listing = client.get("/api/images").json()
    assert [im["file_name"] for im in listing["images"]] == ["0.png", "1.png", "2.png"]
    assert listing["annotated"] == 0 and listing["total"] == 3
    meta = client.get("/api/images/1").json()
    assert (meta["width"], meta["height"], meta["revision"]) == (320, 256, 0)
    raw = client.get("/api/images/1/file")
    assert raw.status_code == 200 and raw.content == (root / "images" / "1.png").read_bytes()
    assert client.get("/api/images/2/status").json()["state"] == "not_encoded"
    enc = client.post("/api/images/0/encode").json()
    assert enc["state"] == "ready" and enc["encode_ms"] > 0
    assert client.get("/api/images/0/status").json()["state"] == "ready"
    assert client.post("/api/images/0/encode").json()["encode_ms"] < 5  # an embedding-cache hit
    schema = client.get("/openapi.json").json()
    for path in ("/api/images/{image_id}/decode", "/api/images/{image_id}/annotations", "/predict"):
        assert path in schema["paths"]
    assert "DecodeRequest" in schema["components"]["schemas"]
    assert client.get("/docs").status_code == 404  # no page that needs a CDN
    page = client.get("/")
    assert page.status_code == 200 and "samkit" in page.text
    assert client.get("/static/app.js").status_code == 200


def test_decode_matches_the_predictor(site, demo):
    client, root, shapes = site
    x, y = inner_point(shapes[0].masks[0])
    r = client.post(
        "/api/images/0/decode", json={"points": [[x, y]], "labels": [1], "multimask": True}
    )
    assert r.status_code == 200, r.text
    out = r.json()
    assert len(out["masks"]) == 3 and (out["width"], out["height"]) == (320, 256)
    # the same prompt through the public predictor API, independently
    from samkit.data.sources import load_image

    pred = demo.predictor(image_format="RGB")
    pred.set_image(load_image(str(root / "images" / "0.png"), "RGB"))
    ref = pred(points=[[[x, y]]], labels=[[1]], multimask_output=True)
    for got, want, score in zip(out["masks"], ref.masks, ref.scores):
        mask = rle_to_mask(got["rle"])
        assert np.array_equal(mask, want)
        assert got["area"] == int(want.sum()) and got["score"] == pytest.approx(float(score))
    # a box, a background point, and a mask to refine
    m = shapes[0].masks[0]
    ys, xs = np.nonzero(m)
    box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
    r = client.post("/api/images/0/decode", json={"box": box, "points": [[0, 0]], "labels": [0]})
    assert r.status_code == 200 and len(r.json()["masks"]) == 1
    best = rle_to_mask(r.json()["masks"][0]["rle"])
    assert iou(best, m) > 0.5  # the demo model finds the synthetic shape from its box
    refine = {"mask": r.json()["masks"][0]["rle"], "points": [[x, y]], "labels": [1]}
    assert client.post("/api/images/0/decode", json=refine).status_code == 200


def box_rle_to_mask(entry: dict, h: int, w: int) -> np.ndarray:
    """Independent reading of a box RLE: its counts are the column-major RLE of the box's
    transpose (decoded by samkit.ops), pasted into an ``h x w`` image."""
    x, y, bw, bh = entry["box"]
    out = np.zeros((h, w), bool)
    if bw and bh:
        out[y : y + bh, x : x + bw] = rle_to_mask({"size": [bw, bh], "counts": entry["counts"]}).T
    else:
        assert entry["counts"] == ""
    return out


def test_decode_box_format_is_the_coco_mask(site):
    client, root, shapes = site
    x, y = inner_point(shapes[0].masks[0])
    body = {"points": [[x, y]], "labels": [1], "multimask": True}
    coco = client.post("/api/images/0/decode", json=body)
    box = client.post("/api/images/0/decode", json={**body, "mask_format": "box"})
    assert coco.status_code == 200 and box.status_code == 200, box.text
    # the default answer is unchanged (no box_rle), the box answer has no full-image RLE
    assert all("box_rle" not in m and "rle" in m for m in coco.json()["masks"])
    assert all("rle" not in m and "box_rle" in m for m in box.json()["masks"])
    for c, b in zip(coco.json()["masks"], box.json()["masks"]):
        want = rle_to_mask(c["rle"])
        got = box_rle_to_mask(b["box_rle"], 256, 320)
        assert np.array_equal(got, want)
        ys, xs = np.nonzero(want)  # the box is the mask's tight box
        tight = [xs.min(), ys.min(), np.ptp(xs) + 1, np.ptp(ys) + 1] if want.any() else [0] * 4
        assert b["box_rle"]["box"] == tight
        assert (b["score"], b["area"], b["bbox"]) == (c["score"], c["area"], c["bbox"])
    timing = dict(p.strip().split(";dur=") for p in box.headers["server-timing"].split(","))
    assert set(timing) == {"model", "masks"} and float(timing["model"]) > 0
    # segment everything in the box format: the same proposals
    ev = {"points_stride": 8, "max_masks": 3}
    a = client.post("/api/images/1/everything", json=ev).json()["masks"]
    b = client.post("/api/images/1/everything", json={**ev, "mask_format": "box"}).json()["masks"]
    assert len(a) == len(b) > 0
    for c, e in zip(a, b):
        assert np.array_equal(box_rle_to_mask(e["box_rle"], 256, 320), rle_to_mask(c["rle"]))


def test_box_rle_edge_cases():
    """Masks touching the image's edges, one pixel, all pixels, none: box RLE -> the mask."""
    from samkit.serve.masks import box_rle, masks_out

    h, w = 7, 9
    masks = np.zeros((6, h, w), bool)
    masks[0, 0, 0] = True  # one pixel in a corner
    masks[1] = True  # everything
    masks[2, :, w - 1] = True  # the last column
    masks[3, h - 1, 2:5] = True  # part of the last row
    masks[4] = np.random.default_rng(0).random((h, w)) > 0.5  # speckle
    for fmt in ("box", "coco"):
        out = masks_out(masks, np.zeros(6), mask_format=fmt)
        for m, e in zip(masks, out):
            got = box_rle_to_mask(e["box_rle"], h, w) if fmt == "box" else rle_to_mask(e["rle"])
            assert np.array_equal(got, m) and e["area"] == int(m.sum())
    # pycocotools' encoder and samkit's own (used without pycocotools) write the same box RLE
    for m, e in zip(masks[:5], masks_out(masks[:5], np.zeros(5), mask_format="box")):
        assert box_rle(m, e["box_rle"]["box"], encode_coco_rle) == e["box_rle"]
    empty = masks_out(masks[5:], np.zeros(1), mask_format="box")[0]
    assert empty["box_rle"] == {"box": [0, 0, 0, 0], "counts": ""} and empty["bbox"] == [0] * 4
    with pytest.raises(ValueError, match="mask_format"):
        masks_out(masks, np.zeros(6), mask_format="png")


def test_everything_embedding_and_onnx_decoder_agree(site, demo):
    ort = pytest.importorskip("onnxruntime")
    client, root, shapes = site
    ev = client.post("/api/images/1/everything", json={"points_stride": 8, "max_masks": 5})
    assert ev.status_code == 200, ev.text
    areas = [m["area"] for m in ev.json()["masks"]]
    assert 0 < len(areas) <= 5 and areas == sorted(areas, reverse=True)
    emb = client.get("/api/images/1/embedding.npy")
    assert emb.status_code == 200
    feats = np.load(io.BytesIO(emb.content))
    assert feats.dtype == np.float32 and feats.shape == (1, 128, 16, 16)
    h, w = int(emb.headers["X-Image-Height"]), int(emb.headers["X-Image-Width"])
    onnx = client.get("/api/decoder.onnx")
    assert onnx.status_code == 200
    sess = ort.InferenceSession(onnx.content, providers=["CPUExecutionProvider"])
    x, y = inner_point(shapes[1].masks[0])
    scale = 256 / max(h, w)
    feeds = {
        "image_embeddings": feats,
        "point_coords": np.array([[[x * scale, y * scale], [0, 0]]], np.float32),
        "point_labels": np.array([[1, -1]], np.float32),
        "mask_input": np.zeros((1, 1, 64, 64), np.float32),
        "has_mask_input": np.zeros(1, np.float32),
        "orig_im_size": np.array([h, w], np.float32),
    }
    masks, scores, _ = sess.run(None, feeds)
    server = client.post("/api/images/1/decode", json={"points": [[x, y]], "labels": [1]}).json()
    got = rle_to_mask(server["masks"][0]["rle"])
    assert iou(masks[0, 0] > 0, got) > 0.98  # the page's in-browser path == the server's
    assert scores[0, 0] == pytest.approx(server["masks"][0]["score"], abs=1e-3)


def test_annotations_add_list_relabel_delete_export(site):
    client, root, shapes = site
    m = shapes[0].masks[0]
    rle = encode_coco_rle(m)
    r = client.post("/api/images/0/annotations", json={"label": "circle", "mask": rle})
    assert r.status_code == 201, r.text
    obj = r.json()
    assert obj["label"] == "circle" and obj["category_id"] == 1 and obj["area"] == int(m.sum())
    second = client.post(
        "/api/images/0/annotations", json={"label": "shape", "mask": encode_coco_rle(m)}
    ).json()
    listed = client.get("/api/images/0/annotations").json()
    assert listed["revision"] == 2 and [o["id"] for o in listed["objects"]] == [
        obj["id"],
        second["id"],
    ]
    assert listed["names"] == ["shape", "circle"]
    renamed = client.patch(f"/api/images/0/annotations/{obj['id']}", json={"label": "disc"})
    assert renamed.status_code == 200 and renamed.json()["category_id"] == 2
    after = client.delete(f"/api/images/0/annotations/{second['id']}").json()
    assert after["revision"] == 4 and [o["label"] for o in after["objects"]] == ["disc"]
    assert client.get("/api/images").json()["annotated"] == 1
    coco = client.get("/api/export?format=coco").json()
    assert len(coco["annotations"]) == 1 and coco["annotations"][0]["category_id"] == 2
    assert json.loads((root / "labels" / "annotations.json").read_text()) == coco
    yolo = client.get("/api/export?format=yolo").json()
    assert list(yolo["files"]) == ["0.txt"] and yolo["files"]["0.txt"].startswith("2 ")
    assert yolo["names"] == ["shape", "circle", "disc"]


def test_upload(site):
    client, root, shapes = site
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(shapes[2].image).save(buf, format="PNG")
    r = client.post("/api/images", content=buf.getvalue(), headers={"Content-Type": "image/png"})
    assert r.status_code == 201, r.text
    up = r.json()
    assert (up["width"], up["height"]) == (320, 256) and up["id"].startswith("u")
    x, y = inner_point(shapes[2].masks[0])
    d = client.post(f"/api/images/{up['id']}/decode", json={"points": [[x, y]]})
    assert d.status_code == 200
    same = client.post("/api/images/2/decode", json={"points": [[x, y]]}).json()
    assert d.json()["masks"][0]["rle"] == same["masks"][0]["rle"]
    # uploads are not annotated: 409, nothing written
    before = snapshot(root / "labels")
    rle = encode_coco_rle(shapes[2].masks[0])
    r = client.post(f"/api/images/{up['id']}/annotations", json={"label": "x", "mask": rle})
    assert r.status_code == 409
    assert snapshot(root / "labels") == before


BAD_IDS = ["7", "-1", "abc", "..", "..%2F..%2Fetc%2Fpasswd", "0%2F..%2F1", "u0000000000000000"]


@pytest.mark.parametrize("image_id", BAD_IDS)
def test_unknown_and_path_like_ids(site, image_id):
    client, root, shapes = site
    before = snapshot(root)
    rle = encode_coco_rle(shapes[0].masks[0])
    for method, suffix, body in [
        ("GET", "", None),
        ("GET", "/file", None),
        ("POST", "/decode", {"points": [[5, 5]]}),
        ("POST", "/annotations", {"label": "x", "mask": rle}),
        ("GET", "/embedding.npy", None),
    ]:
        r = client.request(method, f"/api/images/{image_id}{suffix}", json=body)
        assert r.status_code in (404, 405), (image_id, suffix, r.status_code, r.text)
        assert "detail" in r.json()
    assert snapshot(root) == before


@pytest.mark.parametrize(
    "body, words",
    [
        ({}, "no prompt"),
        ({"points": [[1, 2, 3]]}, "points"),
        ({"points": [[1, 2]], "labels": [1, 0]}, "labels"),
        ({"box": [1, 2, 3]}, "box"),
        ({"points": "here"}, "points"),
        ({"points": [[1, 2]], "colour": "red"}, "colour"),
        ({"mask": {"size": [5, 5], "counts": "0"}}, "mask size"),
        ({"mask": {"size": [256, 320], "counts": "zz~~~"}}, "RLE"),
        ({"points": [[1e9, 5]]}, "prompt"),
        ({"points": [[1, 2]], "mask_format": "png"}, "mask_format"),
    ],
)
def test_malformed_prompts(site, body, words):
    client, root, shapes = site
    before = snapshot(root)
    r = client.post("/api/images/0/decode", json=body)
    assert r.status_code == 422, r.text
    assert words.lower() in r.json()["detail"].lower()
    assert snapshot(root) == before


def test_bad_annotation_requests_write_nothing(site):
    client, root, shapes = site
    good = client.post(
        "/api/images/0/annotations",
        json={"label": "a", "mask": encode_coco_rle(shapes[0].masks[0])},
    ).json()
    before = snapshot(root)
    empty = encode_coco_rle(np.zeros((256, 320), bool))
    cases = [
        ("POST", "/api/images/0/annotations", {"label": "a", "mask": empty}, 422),
        ("POST", "/api/images/0/annotations", {"label": "", "mask": good["segmentation"]}, 422),
        (
            "POST",
            "/api/images/0/annotations",
            {"label": "a\x00b", "mask": good["segmentation"]},
            422,
        ),
        ("POST", "/api/images/0/annotations", {"mask": good["segmentation"]}, 422),
        ("POST", "/api/images/0/annotations", {"label": "a", "mask": {"size": [2, 2]}}, 422),
        ("DELETE", "/api/images/0/annotations/000000000000", None, 404),
        ("DELETE", "/api/images/0/annotations/..%2F..%2Fx", None, 404),
        ("PATCH", f"/api/images/1/annotations/{good['id']}", {"label": "b"}, 404),
        ("PATCH", f"/api/images/0/annotations/{good['id']}", {"label": " "}, 422),
        ("GET", "/api/export?format=xml", None, 422),
    ]
    for method, url, body, status in cases:
        r = client.request(method, url, json=body)
        assert r.status_code == status, (url, body, r.status_code, r.text)
        assert r.json()["detail"]
    assert snapshot(root) == before


def test_upload_caps(tmp_path, demo):
    write_folder(tmp_path, n=1)
    app = create_app(demo, tmp_path / "images", tmp_path / "out", max_upload_bytes=2000)
    from PIL import Image

    with TestClient(app) as client:
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(
            buf, format="PNG"
        )
        assert len(buf.getvalue()) > 2000
        r = client.post("/api/images", content=buf.getvalue())
        assert r.status_code == 413 and "cap" in r.json()["detail"]
        r = client.post("/api/images", content=b"not an image at all")
        assert r.status_code == 422 and "image" in r.json()["detail"]
        assert client.post("/api/images", content=b"").status_code == 400
        big_json = {"points": [[1, 2]] * 2, "pad": "x" * 5000}
        assert client.post("/api/images/0/decode", json=big_json).status_code == 413
    app = create_app(demo, tmp_path / "images", tmp_path / "out2", max_pixels=1000)
    with TestClient(app) as client:
        small = io.BytesIO()
        Image.new("RGB", (40, 40)).save(small, format="PNG")
        r = client.post("/api/images", content=small.getvalue())
        assert r.status_code == 422 and "pixels" in r.json()["detail"]
        # folder images over the pixel cap are refused too
        r = client.post("/api/images/0/decode", json={"points": [[1, 2]]})
        assert r.status_code == 422 and "pixels" in r.json()["detail"]
    assert not list((tmp_path / "out").glob("*.txt")) and not list(
        (tmp_path / "out2").glob("*.txt")
    )


def test_token(tmp_path, demo):
    shapes = write_folder(tmp_path, n=1)
    app = create_app(demo, tmp_path / "images", tmp_path / "out", token="s3cret")
    rle = encode_coco_rle(shapes[0].masks[0])
    with TestClient(app) as client:
        before = snapshot(tmp_path)
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic !!"}):
            for method, url, body in [
                ("GET", "/", None),
                ("GET", "/api/images", None),
                ("POST", "/api/images/0/annotations", {"label": "a", "mask": rle}),
                ("POST", "/predict", {"tasks": []}),
                ("GET", "/openapi.json", None),
            ]:
                r = client.request(method, url, json=body, headers=headers)
                assert r.status_code == 401, (url, headers)
                assert "token" in r.json()["detail"]
        assert snapshot(tmp_path) == before
        ok = {"Authorization": "Bearer s3cret"}
        assert client.get("/api/images", headers=ok).status_code == 200
        assert (
            client.get("/api/images", headers={"Authorization": "Token s3cret"}).status_code == 200
        )
        basic = "Basic " + base64.b64encode(b"user:s3cret").decode()
        assert client.get("/api/images", headers={"Authorization": basic}).status_code == 200
        page = client.get("/?token=s3cret")  # the page keeps the token in a cookie
        assert page.status_code == 200 and "samkit_token=s3cret" in page.headers["set-cookie"]
        assert client.get("/api/info").status_code == 200  # the cookie is sent now
        client.cookies.clear()
        assert client.get("/api/info").status_code == 401


def test_host_needs_token(tmp_path, demo):
    from samkit.errors import SamkitError
    from samkit.serve import serve

    write_folder(tmp_path, n=1)
    with pytest.raises(SamkitError, match="token"):
        serve(demo, tmp_path / "images", host="0.0.0.0")


def test_failed_write_keeps_saved_annotations(site, monkeypatch):
    client, root, shapes = site
    client.post(
        "/api/images/0/annotations",
        json={"label": "a", "mask": encode_coco_rle(shapes[0].masks[0])},
    )
    before = snapshot(root / "labels")
    import samkit.annotate.writers as writers

    real = writers.atomic_write
    calls = {"n": 0}

    def flaky(path, data, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # after the per-image record, before the label file
            raise OSError(28, "No space left on device")
        return real(path, data, *args, **kwargs)

    monkeypatch.setattr(writers, "atomic_write", flaky)
    monkeypatch.setattr("samkit.serve.store.atomic_write", flaky)
    rle = encode_coco_rle(shapes[0].masks[-1])
    quiet = TestClient(client.app, raise_server_exceptions=False)  # the reply a browser gets
    r = quiet.post("/api/images/0/annotations", json={"label": "b", "mask": rle})
    assert r.status_code == 500 and "No space" in r.json()["detail"]
    monkeypatch.setattr(writers, "atomic_write", real)
    monkeypatch.setattr("samkit.serve.store.atomic_write", real)
    after = snapshot(root / "labels")
    for name in ("annotations.json", "0.txt", ".samkit_serve/objects/0.png.json"):
        assert after[name] == before[name], name
    assert len(client.get("/api/images/0/annotations").json()["objects"]) == 1


def test_decoder_variants_and_ort_files(tmp_path, demo):
    ort = pytest.importorskip("onnxruntime")
    from samkit.errors import SamkitError

    write_folder(tmp_path, n=1)
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "ort.min.js").write_text("// ort")
    (dist / "ort-wasm-simd-threaded.wasm").write_bytes(b"\0asm")
    (tmp_path / "secret.js").write_text("secret")
    app = create_app(demo, tmp_path / "images", tmp_path / "out", ort_dir=dist)
    with TestClient(app) as client:
        assert client.get("/api/info").json()["browser_decoder"] is True
        js = client.get("/ort/ort.min.js")
        assert js.status_code == 200 and js.text == "// ort"
        assert js.headers["cross-origin-embedder-policy"] == "require-corp"
        wasm = client.get("/ort/ort-wasm-simd-threaded.wasm")
        assert wasm.headers["content-type"] == "application/wasm"
        for bad in ("..%2Fsecret.js", "secret.js", "ort.min.js.map", "%2Fetc%2Fpasswd"):
            assert client.get(f"/ort/{bad}").status_code == 404, bad
        for kind, count in (("single", 1), ("multi", 3), ("all", 4)):
            sess = ort.InferenceSession(
                client.get(f"/api/decoder.onnx?masks={kind}").content,
                providers=["CPUExecutionProvider"],
            )
            assert sess.get_outputs()[1].shape[-1] == count
        assert client.get("/api/decoder.onnx?masks=some").status_code == 422
    app = create_app(demo, tmp_path / "images", tmp_path / "out")
    with TestClient(app) as client:
        r = client.get("/ort/ort.min.js")
        assert r.status_code == 404 and "ort_dir" in r.json()["detail"]
    with pytest.raises(SamkitError, match="ort.min.js"):
        create_app(demo, tmp_path / "images", tmp_path / "out", ort_dir=tmp_path / "images")


def test_cli(tmp_path, capsys):
    import os
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    from samkit.cli import main

    assert main(["serve", "--help"]) == 0
    assert "images" in capsys.readouterr().out
    assert main(["serve", "model=samkit-demo"]) == 2
    assert "images" in capsys.readouterr().err
    write_folder(tmp_path, n=1)
    images = str(tmp_path / "images")
    assert main(["serve", "model=samkit-demo", f"images={images}", "host=0.0.0.0"]) == 1
    assert "token" in capsys.readouterr().err
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "samkit", "serve", "model=samkit-demo", f"images={images}"]
    cmd += [f"output={tmp_path / 'out'}", f"port={port}", "token=abc", "names=[circle,square]"]
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = ""
        while "open http" not in line:
            line = proc.stderr.readline()
            assert line or proc.poll() is None, "server exited"
        assert f"http://127.0.0.1:{port}/?token=abc" in line
        url = f"http://127.0.0.1:{port}/api/info"
        for _ in range(100):
            try:
                req = urllib.request.Request(url, headers={"Authorization": "Bearer abc"})
                info = json.loads(urllib.request.urlopen(req, timeout=5).read())
                break
            except OSError:
                time.sleep(0.1)
        assert info["names"] == ["circle", "square"] and info["images"] == 1
        try:
            urllib.request.urlopen(url, timeout=5)
            raise AssertionError("no token accepted")
        except urllib.error.HTTPError as exc:
            assert exc.code == 401
    finally:
        proc.terminate()
        proc.wait(10)


def test_next_image_is_encoded_ahead(site):
    import time

    client, root, shapes = site
    assert client.post("/api/images/0/encode").json()["encode_ms"] > 0
    deadline = time.time() + 60
    while client.get("/api/images/1/status").json()["state"] != "ready":
        assert time.time() < deadline, "image 1 was not encoded ahead"
        time.sleep(0.05)
    # opening it now is an embedding-cache hit, and prompts on it work
    assert client.post("/api/images/1/encode").json()["encode_ms"] < 5
    x, y = inner_point(shapes[1].masks[0])
    assert client.post("/api/images/1/decode", json={"points": [[x, y]]}).status_code == 200
    assert client.get("/api/images/2/status").json()["state"] in ("encoding", "ready")
