"""Results (samkit.results): validation, converters checked against pycocotools and by
re-rasterizing, drawing, files, and use without torch."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest

from samkit.errors import ImageError
from samkit.ops.plotting import FOREGROUND_RGB
from samkit.ops.polygons import polygons_to_mask
from samkit.results import Results, masks_to_boxes_np

from .conftest import synthetic_image

mask_api = pytest.importorskip("pycocotools.mask")

H, W = 120, 160


def _shapes() -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    rect = (yy >= 10) & (yy < 50) & (xx >= 20) & (xx < 90)
    disk = (yy - 70) ** 2 + (xx - 100) ** 2 < 30**2
    ellipse = ((yy - 60) / 45.0) ** 2 + ((xx - 80) / 25.0) ** 2 < 1
    triangle = (yy > 20) & (yy < 110) & (xx > 10) & (xx - 10 < (yy - 20) * 1.2)
    ell = ((yy >= 30) & (yy < 100) & (xx >= 30) & (xx < 50)) | (
        (yy >= 80) & (yy < 100) & (xx >= 30) & (xx < 120)
    )
    two_blobs = ((yy - 30) ** 2 + (xx - 30) ** 2 < 15**2) | (
        (yy >= 70) & (yy < 110) & (xx >= 100) & (xx < 150)
    )
    return np.stack([rect, disk, ellipse, triangle, ell, two_blobs])


@pytest.fixture
def results() -> Results:
    masks = _shapes()
    return Results(
        orig_img=synthetic_image(H, W)[..., ::-1].copy(),
        path="/some/dir/photo.jpg",
        masks=masks,
        scores=np.linspace(0.5, 1.0, len(masks)),
        prompt_index=[0, 0, 1, 1, 2, 2],
        prompt_points=np.array([[[50.0, 30.0]], [[100.0, 70.0]], [[40.0, 90.0]]]),
        prompt_labels=np.array([[1], [1], [0]]),
        prompt_boxes=np.array([[20.0, 10.0, 89.0, 49.0], [0, 0, 5, 5], [1, 1, 2, 2]]),
    )


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_fields_are_normalized(results):
    assert results.masks.dtype == bool and results.masks.shape == (6, H, W)
    assert results.scores.dtype == np.float32 and results.prompt_index.dtype == np.int64
    assert results.boxes.shape == (6, 4) and results.shape == (H, W)
    np.testing.assert_array_equal(results.boxes[0], [20, 10, 89, 49])  # inclusive XYXY
    assert results.areas[0] == 40 * 70
    assert len(results) == 6 and "6 masks" in repr(results)


def test_boxes_match_the_torch_op():
    torch = pytest.importorskip("torch")
    from samkit.ops.boxes import masks_to_boxes_xyxy

    masks = _shapes()
    masks[2] = False  # an empty mask -> zeros
    expected = masks_to_boxes_xyxy(torch.from_numpy(masks)).numpy()
    np.testing.assert_array_equal(masks_to_boxes_np(masks), expected)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"masks": np.zeros((2, H, W + 1), bool)}, "masks must be N x"),
        ({"scores": np.zeros(3)}, "scores must have one value per mask"),
        ({"orig_img": np.zeros((H, W), np.uint8)}, "orig_img must be H x W x 3 uint8"),
        ({"prompt_index": [0]}, "prompt_index must have one value per mask"),
    ],
)
def test_validation(kwargs, message):
    base = {
        "orig_img": np.zeros((H, W, 3), np.uint8),
        "path": "x",
        "masks": np.zeros((2, H, W), bool),
        "scores": np.zeros(2),
    }
    with pytest.raises(ValueError, match=None) as exc:
        Results(**{**base, **kwargs})
    assert message in str(exc.value)


def test_indexing_and_best(results):
    sub = results[[1, 3]]
    assert len(sub) == 2 and sub.prompt_index.tolist() == [0, 1]
    np.testing.assert_array_equal(sub.masks[1], results.masks[3])
    best = results.best()  # scores increase with the index: the second mask of each prompt
    assert best.prompt_index.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(best.scores, results.scores[[1, 3, 5]])
    assert len(results[:0]) == 0 and len(results[:0].best()) == 0


def test_coco_rle_round_trips_with_pycocotools(results):
    rles = results.to_coco_rle()
    ref = mask_api.encode(np.asfortranarray(results.masks.transpose(1, 2, 0).astype(np.uint8)))
    for mask, rle, expected in zip(results.masks, rles, ref):
        assert rle["size"] == [H, W] and isinstance(rle["counts"], str)
        assert rle["counts"].encode() == expected["counts"]
        decoded = mask_api.decode({"size": rle["size"], "counts": rle["counts"].encode()})
        np.testing.assert_array_equal(decoded.astype(bool), mask)
        assert int(mask_api.area({"size": rle["size"], "counts": rle["counts"].encode()})) == int(
            mask.sum()
        )


def test_polygons_rerasterize_to_the_masks(results):
    xy, xyn = results.xy, results.xyn
    assert len(xy) == 6 and len(xy[5]) == 2  # two_blobs has two parts
    for mask, parts, parts_n in zip(results.masks, xy, xyn):
        assert all(p.dtype == np.float32 and p.shape[1] == 2 for p in parts)
        assert _iou(polygons_to_mask(parts, H, W), mask) >= 0.95
        back = [p * np.array([W, H], np.float32) for p in parts_n]
        assert _iou(polygons_to_mask(back, H, W), mask) >= 0.95
        assert all(p.min() >= 0 and p.max() <= 1 for p in parts_n)


def test_yolo_lines(results):
    text = results.to_yolo(class_ids=[3, 3, 7, 7, 1, 2])
    lines = text.strip().splitlines()
    assert len(lines) == 6 and text.endswith("\n")
    for line, cls, mask in zip(lines, [3, 3, 7, 7, 1, 2], results.masks):
        values = line.split()
        assert int(values[0]) == cls
        poly = np.array(values[1:], dtype=np.float64).reshape(-1, 2) * [W, H]
        assert _iou(polygons_to_mask([poly], H, W), mask) >= 0.95
    assert results.to_yolo(5).splitlines()[0].startswith("5 ")
    empty = Results(np.zeros((4, 4, 3), np.uint8), "e", np.zeros((1, 4, 4), bool), [0.5])
    assert empty.to_yolo() == ""


def test_json(results):
    data = json.loads(results.to_json(indent=2))
    assert data["height"] == H and data["width"] == W and data["path"] == "/some/dir/photo.jpg"
    assert len(data["masks"]) == 6
    first = data["masks"][0]
    assert first["bbox_xyxy"] == [20.0, 10.0, 89.0, 49.0] and first["area"] == 2800
    assert first["prompt_index"] == 0 and abs(first["score"] - 0.5) < 1e-6
    seg = first["segmentation"]
    decoded = mask_api.decode({"size": seg["size"], "counts": seg["counts"].encode()})
    np.testing.assert_array_equal(decoded.astype(bool), results.masks[0])


def test_plot(results):
    bgr = results.plot()
    rgb = results.plot(image_format="RGB")
    assert bgr.shape == (H, W, 3) and bgr.dtype == np.uint8
    np.testing.assert_array_equal(bgr, rgb[..., ::-1])
    orig_rgb = results.orig_img[..., ::-1]
    inside = results.masks[0] & ~results.masks[1:].any(0)
    inside = cv2.erode(inside.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    assert np.abs(rgb[inside].astype(int) - orig_rgb[inside]).mean() > 20  # tinted
    assert tuple(rgb[30, 50]) == FOREGROUND_RGB  # the first prompt point, drawn filled
    plain = results.plot(masks=False, boxes=False, prompts=False)
    np.testing.assert_array_equal(plain, results.orig_img)


def test_save_is_atomic_and_readable(results, tmp_path):
    dest = results.save(tmp_path / "out" / "overlay.png")
    assert dest.exists() and sorted(p.name for p in dest.parent.iterdir()) == ["overlay.png"]
    np.testing.assert_array_equal(cv2.imread(str(dest)), results.plot())
    with pytest.raises(ImageError, match="cannot write"):
        results.save(tmp_path / "overlay.unknown_ext")
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*"))


def test_save_masks_stays_inside_the_directory(results, tmp_path):
    out = tmp_path / "masks"
    paths = results.save_masks(out)
    assert [p.name for p in paths] == [f"photo_{i}.png" for i in range(6)]
    for p, mask in zip(paths, results.masks):
        img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(img > 0, mask)
        assert set(np.unique(img)) <= {0, 255}
    evil = Results(results.orig_img, "../../../../etc/pass wd", results.masks[:1], [1.0], frame=4)
    (written,) = evil.save_masks(out)
    assert written.parent == out and written.name == "pass_wd_4_0.png"
    (named,) = evil.save_masks(out, prefix="../x/y")
    assert named.parent == out


def test_results_and_sources_work_without_torch():
    code = textwrap.dedent(
        """
        import sys
        sys.modules["torch"] = None  # any import of torch now fails
        import numpy as np
        import samkit.results, samkit.data.sources, samkit.predict.prompts, samkit.ops.plotting
        from samkit.results import Results
        from samkit.data.sources import load_sources
        img = np.zeros((40, 50, 3), np.uint8)
        m = np.zeros((1, 40, 50), bool); m[0, 5:20, 10:30] = True
        r = Results(img, "x", m, [0.9], prompt_points=np.array([[[12.0, 8.0]]]))
        assert r.to_coco_rle()[0]["size"] == [40, 50]
        assert len(r.xy[0]) == 1 and r.to_yolo().startswith("0 ")
        assert r.plot().shape == (40, 50, 3) and r.to_json()
        (item,) = load_sources(img)
        assert item.ok
        p = samkit.predict.prompts.fit_prompts(samkit.predict.prompts.parse_prompts(bboxes=[1, 2, 30, 30]), 40, 50)
        assert p.n == 1
        assert "torch" not in {k for k, v in sys.modules.items() if v is not None}
        print("ok")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_lazy_ops_exports_are_the_functions():
    code = (
        "import types, samkit.ops.nms\n"
        "from samkit.ops import batched_nms, nms, mask_to_rle\n"
        "import samkit.ops as ops\n"
        "assert not isinstance(nms, types.ModuleType) and ops.nms is nms\n"
        "assert callable(batched_nms) and callable(mask_to_rle)\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
