import numpy as np
import pytest
import torch

from samkit.ops import mask_to_polygons, merge_polygons, normalize_polygon, polygons_to_mask

H, W = 120, 160


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return (a & b).sum() / max((a | b).sum(), 1)


def disk(cy, cx, r, h=H, w=W):
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


def rect(y0, y1, x0, x1):
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


SHAPES = {
    "circle": disk(60, 80, 35),
    "small_circle": disk(10, 10, 5),
    "rectangle": rect(20, 90, 30, 140),
    "border_rectangle": rect(0, H, 0, 40),
    "two_blobs": disk(40, 40, 20) | rect(70, 110, 100, 150),
    "thick_ring": disk(60, 80, 45) & ~disk(60, 80, 8),
}


@pytest.mark.parametrize("name", list(SHAPES))
def test_rasterized_polygons_match_mask(name):
    mask = SHAPES[name]
    polys = mask_to_polygons(mask)
    assert all(p.dtype == np.float32 and p.ndim == 2 and p.shape[1] == 2 for p in polys)
    assert all(len(p) >= 3 for p in polys)
    back = polygons_to_mask(polys, H, W)
    assert back.dtype == bool and back.shape == (H, W)
    assert iou(back, mask) >= 0.95


def test_rectangle_is_four_corners_and_exact():
    polys = mask_to_polygons(rect(20, 90, 30, 140))
    assert len(polys) == 1
    corners = {tuple(p) for p in polys[0].astype(int).tolist()}
    assert corners == {(30, 20), (139, 20), (139, 89), (30, 89)}
    np.testing.assert_array_equal(polygons_to_mask(polys, H, W), rect(20, 90, 30, 140))


def test_two_blobs_give_two_parts():
    polys = mask_to_polygons(torch.from_numpy(SHAPES["two_blobs"]))
    assert len(polys) == 2
    np.testing.assert_array_equal(polygons_to_mask(polys, H, W), SHAPES["two_blobs"])


def test_tiny_parts_dropped():
    mask = rect(20, 60, 20, 60)
    mask[100, 100] = True  # single pixel: contour of 1 point
    mask[110, 5:30] = True  # 1-pixel-wide straight line: 2 points
    polys = mask_to_polygons(mask)
    assert len(polys) == 1
    assert mask_to_polygons(np.zeros((H, W), bool)) == []


def test_ring_holes():
    ring = disk(60, 80, 45) & ~disk(60, 80, 25)
    filled = disk(60, 80, 45)
    # Default (external contours only): the hole is filled on re-rasterizing.
    outer = mask_to_polygons(ring)
    assert len(outer) == 1
    np.testing.assert_array_equal(polygons_to_mask(outer, H, W), filled)
    assert iou(polygons_to_mask(outer, H, W), ring) < 0.95
    # holes=True: one polygon per part with the hole bridged in.
    with_hole = mask_to_polygons(ring, holes=True)
    assert len(with_hole) == 1
    back = polygons_to_mask(with_hole, H, W)
    assert iou(back, ring) >= 0.95
    assert not back[60, 80]  # hole centre stays empty


def test_polygons_to_mask_overlaps_are_union():
    a = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], np.float32)
    m = polygons_to_mask([a, a + 5], 20, 20)
    assert m[7, 7] and m[2, 2] and m[14, 14]
    assert m.sum() == 11 * 11 * 2 - 6 * 6


def test_merge_two_parts_single_polygon():
    mask = SHAPES["two_blobs"]
    parts = mask_to_polygons(mask)
    merged = merge_polygons(parts)
    assert merged.dtype == np.float32 and merged.shape[1] == 2
    # Every vertex of every part is on the merged path.
    merged_set = {tuple(p) for p in merged.tolist()}
    for part in parts:
        assert {tuple(p) for p in part.tolist()} <= merged_set
    back = polygons_to_mask([merged], H, W)
    assert iou(back, mask) >= 0.95
    # Only the zero-width bridge adds pixels: a thin line, far less than a blob.
    assert (back & ~mask).sum() < 60


def test_merge_bridges_closest_points():
    a = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], np.float32)
    b = a + np.array([30, 0], np.float32)
    merged = merge_polygons([a, b])
    # Path: a from its start to the closest vertex (10, 0), then around b from (30, 0) and
    # back to it, then back over the bridge to (10, 0) and on around a.
    assert merged.tolist() == [
        [0, 0],
        [10, 0],
        [30, 0],
        [40, 0],
        [40, 10],
        [30, 10],
        [30, 0],
        [10, 0],
        [10, 10],
        [0, 10],
    ]


def test_merge_many_parts_uses_short_bridges():
    # Four squares in a row given in a scrambled order: bridges must join neighbours
    # (total bridge length 3 * 10 there and back), not jump across.
    sq = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], np.float32)
    parts = [sq + np.array([20 * k, 0], np.float32) for k in (0, 3, 1, 2)]
    merged = merge_polygons(parts)
    assert len(merged) == 4 * 4 + 2 * 3  # each bridge end is visited twice
    seg = np.linalg.norm(np.diff(np.vstack([merged, merged[:1]]), axis=0), axis=1)
    perimeter = 4 * 40
    assert seg.sum() == pytest.approx(perimeter + 2 * 3 * 10)
    mask = polygons_to_mask(parts, 20, 80)
    merged_mask = polygons_to_mask([merged], 20, 80)
    # Squares are filled exactly; the only extra pixels are the three 9-pixel bridges on y=0.
    assert not (mask & ~merged_mask).any()
    extra = merged_mask & ~mask
    assert extra.sum() == 3 * 9 and extra[0].sum() == 3 * 9


def test_merge_keeps_earlier_closer_link():
    # Part 2 is closest to part 0 (gap 50), not to part 1 which is added in between (gap 70).
    sq = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], np.float32)
    parts = [sq, sq + np.array([20, 0], np.float32), sq + np.array([-60, 0], np.float32)]
    merged = merge_polygons(parts)
    seg = np.linalg.norm(np.diff(np.vstack([merged, merged[:1]]), axis=0), axis=1)
    assert seg.sum() == pytest.approx(3 * 40 + 2 * (10 + 50))


def test_merge_trivial_cases():
    assert merge_polygons([]).shape == (0, 2)
    a = np.array([[1, 2], [3, 4], [5, 0]], np.float32)
    out = merge_polygons([a])
    np.testing.assert_array_equal(out, a)
    assert out is not a


def test_normalize_polygon():
    poly = np.array([[0, 0], [159, 60], [80, 119], [170, -3]], np.float32)
    out = normalize_polygon(poly, H, W)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0, 0], [159 / 160, 0.5], [0.5, 119 / 120], [1, 0]])
    with pytest.raises(ValueError):
        normalize_polygon(poly, 0, W)


def test_merge_many_parts_follows_the_minimum_spanning_tree():
    # 40 squares in random cells: the bridges (each walked twice) must form a minimum spanning
    # tree of the parts' closest-point distances, computed here by brute force.
    rng = np.random.default_rng(3)
    cells = rng.choice(100, 40, replace=False)
    sq = np.array([[0, 0], [4, 0], [4, 4], [0, 4]], np.float32)
    parts = [
        sq + np.array([12 * (c % 10) + rng.integers(0, 6), 12 * (c // 10)], np.float32)
        for c in cells
    ]
    n = len(parts)
    dist = np.array(
        [[np.linalg.norm(a[:, None] - b[None], axis=-1).min() for b in parts] for a in parts]
    )
    in_tree, link, mst = {0}, dist[0].copy(), 0.0
    while len(in_tree) < n:
        q = min((i for i in range(n) if i not in in_tree), key=lambda i: link[i])
        mst += link[q]
        in_tree.add(q)
        link = np.minimum(link, dist[q])
    merged = merge_polygons(parts)
    seg = np.linalg.norm(np.diff(np.vstack([merged, merged[:1]]), axis=0), axis=1)
    assert seg.sum() == pytest.approx(n * 16 + 2 * mst)
