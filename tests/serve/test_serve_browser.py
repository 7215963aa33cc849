"""End to end in a real headless Chromium (Debian's ``chromium`` driven by Playwright).

Click a point -> the mask is drawn where the object is; accept it with a label; a box prompt,
undo; next image, box, accept; reload -> objects restored; the saved COCO (pycocotools) and YOLO
(samkit's dataset reader) files hold what was accepted. Skipped when chromium is not installed.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
sync_api = pytest.importorskip("playwright.sync_api")
httpx = pytest.importorskip("httpx")

CHROMIUM = os.environ.get("SAMKIT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(
    not os.path.isfile(CHROMIUM), reason="chromium not installed (apt-get install chromium)"
)

from samkit import SAM  # noqa: E402
from samkit.ops import rle_to_mask  # noqa: E402
from samkit.serve import create_app  # noqa: E402
from tests.serve_helpers import inner_point, write_folder  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ORT_DIR = os.environ.get("SAMKIT_ORT_DIR") or os.path.join(
    os.path.dirname(__file__), "..", "..", ".ci", "node", "node_modules", "onnxruntime-web", "dist"
)


@pytest.fixture
def live(tmp_path, request):
    import uvicorn

    shapes = write_folder(tmp_path)
    ort_dir = ORT_DIR if getattr(request, "param", None) == "ort" else None
    model = SAM("samkit-demo", precision="fp32")
    app = create_app(model, tmp_path / "images", tmp_path / "labels", ort_dir=ort_dir)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started
    yield f"http://127.0.0.1:{port}/", tmp_path, shapes
    server.should_exit = True
    thread.join(10)


def pixels(page, points):
    """RGBA of the canvas at canvas-space ``points``."""
    return np.array(
        page.evaluate(
            """(pts) => { const ctx = document.getElementById('canvas').getContext('2d');
                 return pts.map(([x, y]) => Array.from(ctx.getImageData(x, y, 1, 1).data)); }""",
            [[float(x), float(y)] for x, y in points],
        )
    )


def to_canvas(page, x, y):
    return page.evaluate(f"window.samkit.imageToCanvas({x} + 0.5, {y} + 0.5)")


def samples(mask, avoid, k=40, far=10, seed=0):
    """Up to ``k`` pixels of ``mask`` at least ``far`` px from ``avoid`` (the clicked point)."""
    ys, xs = np.nonzero(mask)
    keep = (xs - avoid[0]) ** 2 + (ys - avoid[1]) ** 2 > far**2
    idx = np.random.default_rng(seed).permutation(np.flatnonzero(keep))[:k]
    return list(zip(xs[idx], ys[idx]))


def launch(p):
    return p.chromium.launch(
        executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
    )


def open_page(browser, url):
    page = browser.new_page(viewport={"width": 1280, "height": 760})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_function("window.samkit && window.samkit.ready", timeout=60000)
    return page, errors


def test_annotate_in_chromium(live):
    url, root, shapes = live
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 760})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            page.wait_for_function("window.samkit && window.samkit.ready", timeout=60000)
            box = page.locator("#canvas").bounding_box()

            def click(x, y, **kw):
                cx, cy = to_canvas(page, x, y)
                page.mouse.click(box["x"] + cx, box["y"] + cy, **kw)

            # 1. click a point: the mask appears where the object is, not elsewhere
            obj = shapes[0].masks[int(np.argmax(shapes[0].masks.sum((1, 2))))]
            px, py = inner_point(obj)
            inside = [to_canvas(page, x, y) for x, y in samples(obj, (px, py))]
            grown = np.zeros_like(obj)
            ys, xs = np.nonzero(obj)
            grown[max(0, ys.min() - 20) : ys.max() + 21, max(0, xs.min() - 20) : xs.max() + 21] = 1
            outside = [to_canvas(page, x, y) for x, y in samples(~grown, (px, py))]
            before_in, before_out = pixels(page, inside), pixels(page, outside)
            click(px, py)
            page.wait_for_function("window.samkit.candidates.length === 1", timeout=30000)
            changed_in = (pixels(page, inside) != before_in).any(1).mean()
            changed_out = (pixels(page, outside) != before_out).any(1).mean()
            assert changed_in > 0.8 and changed_out < 0.1, (changed_in, changed_out)
            first_rle = page.evaluate("window.samkit.candidates[0].rle")
            assert (rle_to_mask(first_rle) & obj).sum() / obj.sum() > 0.8
            # the page got the compact box RLE and wrote this COCO RLE itself: the server's COCO
            # answer to the same prompt is the same mask
            prompts = page.evaluate("window.samkit.prompts")
            body = {"points": prompts["points"], "labels": prompts["labels"]}
            ref = httpx.post(url + "api/images/0/decode", json=body, timeout=60).json()
            assert np.array_equal(rle_to_mask(first_rle), rle_to_mask(ref["masks"][0]["rle"]))

            # 2. accept it with a label
            page.fill("#label", "blob")
            page.click("#accept")
            page.wait_for_function("window.samkit.objects.length === 1")
            assert page.locator("#objects li").count() == 1
            assert "1 / 3" in page.text_content("#progress-text")

            # 3. a box prompt, then undo removes it
            other = shapes[0].masks[int(np.argmin(shapes[0].masks.sum((1, 2))))]
            ys, xs = np.nonzero(other)
            x0, y0 = to_canvas(page, xs.min(), ys.min())
            x1, y1 = to_canvas(page, xs.max(), ys.max())
            page.mouse.move(box["x"] + x0, box["y"] + y0)
            page.mouse.down()
            page.mouse.move(box["x"] + (x0 + x1) / 2, box["y"] + (y0 + y1) / 2, steps=3)
            page.mouse.move(box["x"] + x1, box["y"] + y1, steps=3)
            page.mouse.up()
            page.wait_for_function("window.samkit.candidates.length === 1", timeout=30000)
            assert page.evaluate("window.samkit.prompts.box") is not None
            page.click("#undo")
            page.wait_for_function(
                "window.samkit.prompts.box === null && window.samkit.candidates.length === 0"
            )
            assert page.evaluate("window.samkit.objects.length") == 1  # the object stays

            # 4. next image: a box, accept as "square"
            page.keyboard.press("n")
            page.wait_for_function("window.samkit.index === 1 && window.samkit.img !== null")
            page.wait_for_function("document.getElementById('file-name').textContent === '1.png'")
            target = shapes[1].masks[0]
            ys, xs = np.nonzero(target)
            x0, y0 = to_canvas(page, xs.min(), ys.min())
            x1, y1 = to_canvas(page, xs.max() + 1, ys.max() + 1)
            page.mouse.move(box["x"] + x0, box["y"] + y0)
            page.mouse.down()
            page.mouse.move(box["x"] + x1, box["y"] + y1, steps=5)
            page.mouse.up()
            page.wait_for_function("window.samkit.candidates.length === 1", timeout=30000)
            second_rle = page.evaluate("window.samkit.candidates[0].rle")
            page.fill("#label", "square")
            page.keyboard.press("Enter")
            page.wait_for_function("window.samkit.objects.length === 1")

            # 5. reload: both objects are restored
            page.reload()
            page.wait_for_function("window.samkit && window.samkit.ready", timeout=60000)
            assert page.evaluate("window.samkit.index") == 1
            assert page.evaluate("window.samkit.objects.map(o => o.label)") == ["square"]
            page.click("#prev")
            page.wait_for_function(
                "window.samkit.index === 0 && window.samkit.objects.length === 1"
            )
            assert page.evaluate("window.samkit.objects.map(o => o.label)") == ["blob"]
            # the restored object (COCO RLE -> the page's box mask) encodes back to the same RLE
            seg = page.evaluate("window.samkit.objects[0].segmentation")
            assert page.evaluate("Rle.encode(window.samkit.objects[0].mask)") == seg
            assert "2 / 3" in page.text_content("#progress-text")
            assert not errors, errors
        finally:
            browser.close()

    # 6. the files hold what was accepted
    from pycocotools import mask as mask_util
    from pycocotools.coco import COCO

    from samkit import load_dataset

    coco = COCO(str(root / "labels" / "annotations.json"))
    accepted = {"0.png": ("blob", first_rle), "1.png": ("square", second_rle)}
    for img in coco.loadImgs(coco.getImgIds()):
        (ann,) = coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]]))
        label, rle = accepted[img["file_name"]]
        assert coco.loadCats(ann["category_id"])[0]["name"] == label
        seg = dict(ann["segmentation"], counts=ann["segmentation"]["counts"].encode())
        assert np.array_equal(mask_util.decode(seg).astype(bool), rle_to_mask(rle))
    assert len(coco.getImgIds()) == 2
    ds = load_dataset(root / "labels" / "data.yaml", "val")
    for index, name in ((0, "0.png"), (1, "1.png")):
        sample = ds.load(index)
        label, rle = accepted[name]
        assert [ds.names[c] for c in sample.categories] == [label]
        want = rle_to_mask(rle)
        assert (sample.masks[0] & want).sum() / (sample.masks[0] | want).sum() > 0.9


def test_everything_multimask_relabel_delete_in_chromium(live):
    url, root, shapes = live
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        try:
            page, errors = open_page(browser, url)
            box = page.locator("#canvas").bounding_box()
            # multimask: 3 candidates, key 2 picks the second
            page.check("#multimask")
            x, y = inner_point(shapes[0].masks[0])
            cx, cy = to_canvas(page, x, y)
            page.mouse.click(box["x"] + cx, box["y"] + cy)
            page.wait_for_function("window.samkit.candidates.length === 3", timeout=30000)
            assert page.locator("#candidates button").count() == 3
            page.keyboard.press("2")
            assert page.evaluate("window.samkit.chosen") == 1
            chosen = page.evaluate("window.samkit.candidates[1].rle")
            page.fill("#label", "first")
            page.keyboard.press("Enter")
            page.wait_for_function("window.samkit.objects.length === 1")
            assert page.evaluate("window.samkit.objects[0].segmentation") == chosen
            # segment everything: accept one proposal, reject another
            page.keyboard.press("Escape")
            page.click("#everything")
            page.wait_for_function("window.samkit.proposals.length >= 2", timeout=60000)
            n = page.evaluate("window.samkit.proposals.length")
            proposal = page.evaluate("window.samkit.proposals[0].rle")
            page.fill("#label", "proposed")
            page.locator("#proposals li").nth(0).locator("button").nth(0).click()
            page.wait_for_function("window.samkit.objects.length === 2")
            page.locator("#proposals li").nth(0).locator("button").nth(1).click()
            assert page.evaluate("window.samkit.proposals.length") == n - 2
            assert page.evaluate("window.samkit.objects[1].segmentation") == proposal
            # relabel in the list, then delete
            field = page.locator("#objects li").nth(0).locator("input")
            field.fill("renamed")
            field.press("Tab")
            page.wait_for_function("window.samkit.objects[0].label === 'renamed'")
            page.locator("#objects li").nth(1).locator("button").click()
            page.wait_for_function("window.samkit.objects.length === 1")
            assert not errors, errors
        finally:
            browser.close()
    import json

    record = json.loads((root / "labels" / "annotations.json").read_text())
    names = {c["id"]: c["name"] for c in record["categories"]}
    assert [names[a["category_id"]] for a in record["annotations"]] == ["renamed"]


@pytest.mark.skipif(
    not os.path.isfile(os.path.join(ORT_DIR, "ort.min.js")),
    reason="onnxruntime-web not installed (npm install onnxruntime-web; SAMKIT_ORT_DIR=.../dist)",
)
@pytest.mark.parametrize("live", ["ort"], indirect=True)
def test_in_browser_decoder_matches_the_server(live):
    url, root, shapes = live
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        try:
            page, errors = open_page(browser, url)
            box = page.locator("#canvas").bounding_box()
            x, y = inner_point(shapes[0].masks[0])
            cx, cy = to_canvas(page, x, y)
            page.mouse.click(box["x"] + cx, box["y"] + cy)
            page.wait_for_function("window.samkit.candidates.length === 1", timeout=30000)
            server = rle_to_mask(page.evaluate("window.samkit.candidates[0].rle"))
            page.keyboard.press("Escape")
            page.select_option("#decoder-mode", "browser")
            page.wait_for_function(
                "document.getElementById('status').textContent.includes('decoder ready')",
                timeout=120000,
            )
            page.mouse.click(box["x"] + cx, box["y"] + cy)
            page.wait_for_function(
                "window.samkit.timings.some(t => t.mode === 'browser')", timeout=60000
            )
            assert page.evaluate("window.samkit.candidates[0].source") == "browser"  # decoded here
            page.fill("#label", "local")
            page.click("#accept")
            page.wait_for_function("window.samkit.objects.length === 1")
            saved = rle_to_mask(page.evaluate("window.samkit.objects[0].segmentation"))
            assert (saved & server).sum() / (saved | server).sum() > 0.98
            assert not errors, errors
        finally:
            browser.close()


def test_two_tabs_keep_each_others_objects(live):
    url, root, shapes = live
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        try:
            tabs = [open_page(browser, url)[0] for _ in range(2)]
            for k, page in enumerate(tabs):
                box = page.locator("#canvas").bounding_box()
                x, y = inner_point(shapes[0].masks[k])
                cx, cy = to_canvas(page, x, y)
                page.mouse.click(box["x"] + cx, box["y"] + cy)
                page.wait_for_function("window.samkit.candidates.length === 1", timeout=30000)
                page.fill("#label", f"tab{k}")
                page.click("#accept")
            for page in tabs:  # each tab shows both objects (the other one within a poll)
                page.wait_for_function("window.samkit.objects.length === 2", timeout=15000)
                labels = page.evaluate("window.samkit.objects.map(o => o.label)")
                assert labels == ["tab0", "tab1"]
        finally:
            browser.close()
    import json

    coco = json.loads((root / "labels" / "annotations.json").read_text())
    assert len(coco["annotations"]) == 2


def test_page_mask_codecs_match_pycocotools():
    """rle.js against pycocotools and the server's box encoder, on edge cases: COCO RLE ->
    mask -> COCO RLE gives pycocotools' string back; the box RLE and logits give the same mask,
    its tight box, and the same COCO RLE."""
    from pathlib import Path

    from pycocotools import mask as mask_util

    import samkit.serve
    from samkit.serve.masks import masks_out

    h, w = 37, 53
    masks = np.zeros((7, h, w), bool)
    masks[0, 0, 0] = True  # one pixel in a corner
    masks[1] = True  # everything
    masks[2, :, w - 1] = True  # the last column
    masks[3, h - 1, 5:20] = True  # part of the last row
    masks[4] = np.random.default_rng(0).random((h, w)) > 0.5  # speckle
    masks[5, 10:20, 30:45] = True
    masks[5, 12:15, 33:40] = False  # a ring; masks[6] stays empty
    cases = []
    for m in masks:
        coco = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))["counts"].decode()
        cases.append(
            {
                "coco": {"size": [h, w], "counts": coco},
                "box": masks_out(m[None], np.zeros(1), mask_format="box")[0]["box_rle"],
                "logits": np.where(m, 2.5, -1.0).ravel().tolist(),
            }
        )
    script = Path(samkit.serve.__file__).parent / "static" / "rle.js"
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page()
            page.goto("about:blank")
            page.add_script_tag(path=str(script))
            got = page.evaluate(
                """([cases, w, h]) => cases.map((c) => {
                    const dense = (m) => {
                      const out = new Array(w * h).fill(0);
                      for (let r = 0; r < m.h; r++) for (let q = 0; q < m.w; q++)
                        if (m.data[r * m.w + q]) out[(m.y + r) * w + m.x + q] = 1;
                      return out;
                    };
                    const ms = [Rle.decode(c.coco), Rle.decodeBox(c.box, w, h),
                                Rle.fromLogits(w, h, Float32Array.from(c.logits))];
                    return { counts: ms.map((m) => Rle.encode(m).counts), dense: ms.map(dense),
                             boxes: ms.map((m) => [m.x, m.y, m.w, m.h]) };
                  })""",
                [cases, w, h],
            )
        finally:
            browser.close()
    for m, case, out in zip(masks, cases, got):
        for dense in out["dense"]:
            assert np.array_equal(np.array(dense, bool).reshape(h, w), m)
        assert out["counts"] == [case["coco"]["counts"]] * 3
        ys, xs = np.nonzero(m)
        want = [0, 0, 0, 0]
        if m.any():
            want = [int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1]
        assert out["boxes"] == [want] * 3
