"""Tiled segmentation: cropped masks and their RLE, the seam merge, the demo model on a scene
larger than its input, prompts routed to windows, bounded reads."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from samkit import SAM
from samkit.data.synthetic_scene import make_large_scene
from samkit.errors import ImageError, PromptError, SamkitError
from samkit.everything.tiling import predict_tiled, segment_everything_tiled, tile_grid
from samkit.everything.tiling.masks import CroppedMasks, crop_to_coco_rle, match_masks, merge_tiled
from samkit.everything.tiling.raster import ArrayRaster, RawRaster
from samkit.ops.rle import encode_coco_rle, rle_to_mask

EVERYTHING = {"points_stride": 8, "conf_thres": 0.7, "stability_score_thresh": 0.85}


@pytest.fixture(scope="module")
def demo():
    return SAM("samkit-demo")


@pytest.fixture(scope="module")
def scene():
    sc = make_large_scene(768, 768, seed=5)
    boxes, crops = sc.truth()
    return sc, sc.image(), CroppedMasks((768, 768), boxes, crops, np.ones(len(crops)))


def _disk(h, w, cx, cy, r):
    m = np.zeros((h, w), np.uint8)
    cv2.circle(m, (cx, cy), r, 1, -1)
    return m.astype(bool)


def _cropped(full_masks, tiles, tile_boxes):
    """CroppedMasks of full masks each seen only inside its tile (what a tile would return)."""
    h, w = full_masks[0].shape
    boxes, crops = [], []
    for m, t in zip(full_masks, tiles):
        x0, y0, x1, y1 = tile_boxes[t]
        inside = np.zeros_like(m)
        inside[y0:y1, x0:x1] = m[y0:y1, x0:x1]
        ys, xs = np.nonzero(inside)
        b = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        boxes.append(b)
        crops.append(inside[b[1] : b[3], b[0] : b[2]])
    return CroppedMasks((h, w), boxes, crops, np.full(len(crops), 0.9))


# -- cropped masks ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "box", [(3, 4, 20, 9), (0, 0, 40, 30), (5, 0, 17, 30), (0, 0, 1, 1), (39, 29, 40, 30)]
)
def test_crop_rle_equals_full_mask_rle(box):
    rng = np.random.default_rng(sum(box))
    x0, y0, x1, y1 = box
    crop = rng.random((y1 - y0, x1 - x0)) < 0.5
    crop[0, 0] = True
    full = np.zeros((30, 40), bool)
    full[y0:y1, x0:x1] = crop
    rle = crop_to_coco_rle(crop, x0, y0, 30, 40)
    assert rle == encode_coco_rle(full)
    assert np.array_equal(rle_to_mask(rle), full)
    assert crop_to_coco_rle(np.zeros((2, 2), bool), 1, 1, 30, 40) == encode_coco_rle(
        np.zeros((30, 40), bool)
    )


def test_crop_rle_decodes_with_pycocotools():
    mask_utils = pytest.importorskip("pycocotools.mask")
    crop = _disk(50, 60, 30, 25, 20)
    rle = crop_to_coco_rle(crop, 7, 11, 100, 90)
    full = np.zeros((100, 90), bool)
    full[11:61, 7:67] = crop
    decoded = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
    assert np.array_equal(decoded.astype(bool), full)


def test_cropped_masks_dense_records_and_labels():
    a, b = _disk(64, 80, 20, 20, 10), _disk(64, 80, 30, 25, 4)
    m = _cropped([a, b], [0, 0], [(0, 0, 80, 64)])
    assert np.array_equal(m.dense(), np.stack([a, b]))
    assert m.boxes_xyxy.tolist() == [[10, 10, 30, 30], [26, 21, 34, 29]]
    recs = list(m.records())
    assert [r["area"] for r in recs] == [int(a.sum()), int(b.sum())]
    assert np.array_equal(rle_to_mask(recs[1]["segmentation"]), b)
    labels = m.label_band(0, 64)
    assert (labels == 2).sum() == b.sum() and (labels == 1).sum() == (a & ~b).sum()
    assert np.array_equal(m.label_band(20, 30), labels[20:30])
    with pytest.raises(MemoryError, match="raster/vector writers"):
        m.dense(max_bytes=100)


# -- the seam merge ---------------------------------------------------------------------------
def test_merge_joins_an_object_cut_by_a_seam_and_keeps_neighbours_apart():
    h, w = 100, 180
    tiles = np.array([(0, 0, 100, 100), (80, 0, 180, 100)])  # shared band x 80..100
    cut = _disk(h, w, 95, 50, 30)  # crosses both tile edges: each tile sees part of it
    left = _disk(h, w, 30, 50, 12)  # touches nothing
    right_pair = _disk(h, w, 150, 30, 10), _disk(h, w, 150, 70, 10)  # close, distinct
    masks = _cropped([cut, cut, left, *right_pair], [0, 1, 0, 1, 1], tiles)
    assert masks.crops[0].shape[1] < 60 and masks.crops[1].shape[1] < 60  # both are cut
    out = merge_tiled(masks, np.array([0, 1, 0, 1, 1]), tiles)
    assert len(out) == 4 and out.stats["merged_pairs"] == 1
    assert np.array_equal(out.mask(0), cut) and out.tiles[0] == 2  # largest first
    others = sorted(out.mask(i).sum() for i in range(1, 4))
    assert others == sorted([left.sum(), *(m.sum() for m in right_pair)])


def test_merge_does_not_join_masks_that_disagree_in_the_band():
    h, w = 100, 180
    tiles = np.array([(0, 0, 100, 100), (80, 0, 180, 100)])
    a = np.zeros((h, w), bool)
    a[40:60, 60:100] = True  # runs to the left tile's right edge
    b = np.zeros((h, w), bool)
    b[20:80, 80:140] = True  # another object overlapping a little in the band
    out = merge_tiled(_cropped([a, b], [0, 1], tiles), np.array([0, 1]), tiles)
    assert len(out) == 2 and out.stats["merged_pairs"] == 0


def test_merge_removes_duplicates_and_fragments():
    h, w = 100, 180
    tiles = np.array([(0, 0, 110, 100), (80, 0, 180, 100)])  # shared band x 80..110
    whole = _disk(h, w, 95, 12, 8)  # inside the band: both tiles see it whole
    big = _disk(h, w, 120, 60, 30)  # seen whole by the right tile
    piece = big & (np.arange(w) < 110)[None, :] & (np.arange(h) > 50)[:, None]
    masks = _cropped([whole, whole, big, piece], [0, 1, 1, 0], tiles)
    out = merge_tiled(masks, np.array([0, 1, 1, 0]), tiles, band_iou=0.9)
    assert len(out) == 2
    assert out.stats["fragments_removed"] == 1
    assert np.array_equal(out.mask(0), big) and np.array_equal(out.mask(1), whole)


def test_tile_grid_covers_the_image_with_the_overlap():
    grid = tile_grid(700, 1000, 256, 64)
    assert ((grid[:, 2] - grid[:, 0]) == 256).all() and ((grid[:, 3] - grid[:, 1]) == 256).all()
    cover = np.zeros((700, 1000), np.int64)
    for x0, y0, x1, y1 in grid:
        cover[y0:y1, x0:x1] += 1
    assert cover.min() >= 1
    xs = sorted(set(grid[:, 0].tolist()))
    assert all(b - a <= 192 for a, b in zip(xs, xs[1:]))
    assert tile_grid(100, 120, 256, 64).tolist() == [[0, 0, 120, 100]]


# -- the demo model on a scene larger than its input --------------------------------------------
def test_tiled_everything_finds_shapes_and_each_seam_crossing_shape_once(demo, scene):
    sc, image, truth = scene
    out = segment_everything_tiled(demo, image, tile=256, overlap=64, **EVERYTHING)
    assert out.stats["tiles"] == 16 and out.stats["masks_before_merge"] > len(out)
    best, pieces = match_masks(out, truth)
    assert (best >= 0.8).mean() >= 0.9
    grid = tile_grid(768, 768, 256, 64)
    edges_x = set(grid[:, [0, 2]].ravel()) - {0, 768}
    edges_y = set(grid[:, [1, 3]].ravel()) - {0, 768}
    b = truth.boxes_xyxy
    crossing = np.array(
        [
            any(x0 < e <= x1 for e in edges_x) or any(y0 < e <= y1 for e in edges_y)
            for x0, y0, x1, y1 in b
        ]
    )
    assert crossing.sum() >= 20
    found = crossing & (best >= 0.8)
    assert found.sum() >= 0.9 * crossing.sum()
    assert (pieces[found] == 1).all()  # one mask each, no halves, no duplicates
    # the fixed-tile way on the same image: duplicates (overlap) or cut shapes (no overlap)
    raw = segment_everything_tiled(demo, image, tile=256, overlap=64, merge=False, **EVERYTHING)
    assert (match_masks(raw, truth)[1][found] > 1).sum() > found.sum() // 2
    fixed = segment_everything_tiled(demo, image, tile=256, overlap=0, merge=False, **EVERYTHING)
    assert (match_masks(fixed, truth)[0] >= 0.8).sum() < (best >= 0.8).sum()
    # records match the image-size result of the same masks
    rec = next(out.records())
    assert np.array_equal(rle_to_mask(rec["segmentation"]), out.mask(0))


def test_tiled_prompts_land_on_their_shapes(demo, scene):
    sc, image, truth = scene
    out = predict_tiled(demo, image, bboxes=truth.boxes, tile=256)
    assert out.prompt_index.tolist() == list(range(len(truth)))
    assert out.stats["windows"] < len(truth) // 2  # nearby prompts share a window
    best, _ = match_masks(out, truth)
    assert (best >= 0.8).mean() >= 0.9
    centers = truth.boxes[:5, :2] + (truth.boxes[:5, 2:] - truth.boxes[:5, :2]) // 2
    pts = predict_tiled(demo, image, points=[[c] for c in centers], labels=[[1]] * 5)
    hit = [pts.mask(i)[c[1], c[0]] for i, c in enumerate(centers)]
    assert sum(hit) >= 4


def test_a_box_larger_than_a_tile_gets_a_window_that_covers_it(demo):
    rng = np.random.default_rng(0)
    image = np.full((1024, 1024, 3), (60, 90, 140), np.uint8)
    truth = np.zeros((1024, 1024), np.uint8)
    cv2.ellipse(truth, (600, 500), (150, 110), 20, 0, 360, 1, -1)
    truth = truth.astype(bool)
    image[truth] = (220, 200, 40)
    image = np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
    ys, xs = np.nonzero(truth)
    box = [xs.min(), ys.min(), xs.max(), ys.max()]  # 300 x 230 px: larger than a 256 tile
    out = predict_tiled(demo, image, bboxes=[box], tile=256)
    assert out.stats["windows"] == 1
    m = out.mask(0)
    assert (m & truth).sum() / (m | truth).sum() > 0.9


def test_prompt_errors_are_clear(demo, scene):
    image = scene[1]
    with pytest.raises(PromptError, match="outside"):
        predict_tiled(demo, image, bboxes=[[800, 10, 900, 50]])
    with pytest.raises(PromptError, match="bboxes"):
        predict_tiled(demo, image, bboxes=[[1, 2, 3]])
    with pytest.raises(PromptError, match="give bboxes"):
        predict_tiled(demo, image)
    with pytest.raises(SamkitError, match="overlap"):
        segment_everything_tiled(demo, image, tile=256, overlap=256)


# -- sources: nodata and bounded reads --------------------------------------------------------
class _HalfNodata(ArrayRaster):
    """The right half (x >= 640 of 1024) is nodata."""

    def valid(self, x0, y0, x1, y1):
        v = np.ones((y1 - y0, x1 - x0), bool)
        v[:, max(0, 640 - x0) :] = False
        return v


def test_nodata_pixels_are_never_in_masks_and_empty_tiles_are_skipped(demo):
    sc = make_large_scene(256, 1024, seed=2)
    raster = _HalfNodata(sc.image())
    out = segment_everything_tiled(demo, raster, tile=256, overlap=64, **EVERYTHING)
    assert out.stats["tiles_skipped"] == 1  # x 768..1024
    assert len(out) > 3 and all(b[2] <= 640 for b in out.boxes)


def test_raw_raster_reads_windows(tmp_path):
    sc = make_large_scene(300, 200, seed=1, cell=96)
    path = sc.write_raw(tmp_path / "scene.rgb")
    image = sc.image()
    r = RawRaster(path, 300, 200)
    assert np.array_equal(r.read(0, 10, 200, 50), image[10:50])
    assert np.array_equal(r.read(17, 3, 101, 299), image[3:299, 17:101])
    with pytest.raises(ImageError, match="outside"):
        r.read(0, 0, 201, 10)
    with pytest.raises(ImageError, match="bytes"):
        RawRaster(path, 300, 201)
    r.close()
    # rendering band by band gives the same pixels as rendering any other band split
    assert np.array_equal(sc.band(50, 130), image[50:130])


# -- the same engine behind model(...), the Meta-style generator ------------------------------
def test_model_call_with_tile_returns_the_tiled_masks_as_results(demo, scene):
    _, image, truth = scene
    image = np.ascontiguousarray(image[:448, :448])  # 2 x 2 tiles keep it quick
    expected = segment_everything_tiled(demo, image, tile=256, overlap=64, **EVERYTHING)
    [r] = demo(image[..., ::-1], tile=256, overlap=64, **EVERYTHING)  # BGR like any array
    assert len(r) == len(expected) > 5 and r.masks.shape == (len(r), 448, 448)
    assert np.array_equal(r.masks, expected.dense())
    assert np.allclose(r.scores, expected.scores) and np.allclose(r.boxes, expected.boxes_xyxy)
    inside = truth.boxes[(truth.boxes[:, 2:] <= 448).all(1)][:4]
    [p] = demo(image, image_format="RGB", bboxes=inside, tile=True)
    assert p.prompt_index.tolist() == [0, 1, 2, 3] and p.masks.shape == (4, 448, 448)
    with pytest.raises(PromptError, match="masks= prompts cannot be tiled"):
        demo(image, masks=np.zeros((1, 448, 448), bool), tile=True)


def test_mask_generator_with_tile_gives_meta_records(demo):
    from samkit import SamAutomaticMaskGenerator
    from samkit.ops.rle import coco_to_rle

    image = make_large_scene(256, 512, seed=8).image()
    kw = {"points_per_side": 8, "pred_iou_thresh": 0.7, "stability_score_thresh": 0.85}
    masks = SamAutomaticMaskGenerator(demo, tile=256, overlap=64, **kw).generate(image)
    rles = SamAutomaticMaskGenerator(demo, tile=256, overlap=64, output_mode="coco_rle", **kw)
    rles = rles.generate(image)
    assert len(masks) == len(rles) > 3
    for m, r in zip(masks, rles):
        assert np.array_equal(rle_to_mask(r["segmentation"]), m["segmentation"])
        assert (
            m["area"]
            == m["segmentation"].sum()
            == sum(coco_to_rle(r["segmentation"])["counts"][1::2])
        )
        ys, xs = np.nonzero(m["segmentation"])
        assert m["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()]
    with pytest.raises(SamkitError, match="crop_n_layers"):
        SamAutomaticMaskGenerator(demo, tile=256, crop_n_layers=1)


def test_auto_annotate_with_tile_decodes_boxes_at_native_resolution(demo, tmp_path):
    import json

    from PIL import Image

    from samkit import auto_annotate

    sc = make_large_scene(512, 768, seed=9)
    (tmp_path / "img").mkdir()
    Image.fromarray(sc.image()).save(tmp_path / "img" / "scene.png")
    boxes, crops = sc.truth()
    truth = CroppedMasks((512, 768), boxes, crops, np.ones(len(crops)))
    tight = truth.boxes_xyxy

    def detector(image):
        return tight, np.zeros(len(tight), np.int64), np.ones(len(tight))

    ious = {}
    for tile in (None, 256):
        out = tmp_path / f"out_{tile}"
        auto_annotate(tmp_path / "img", detector, demo, output_dir=out, format="coco",
                      tile=tile, progress=False)  # fmt: skip
        anns = json.loads((out / "annotations.json").read_text())["annotations"]
        masks = [rle_to_mask(a["segmentation"]) for a in anns]
        found = CroppedMasks(
            (512, 768), [(0, 0, 768, 512)] * len(masks), masks, np.ones(len(masks))
        )
        ious[tile] = match_masks(found, truth)[0]
    assert (ious[256] >= 0.8).mean() >= 0.9
    assert ious[256].mean() > ious[None].mean() + 0.1  # the whole image is downscaled 3x
