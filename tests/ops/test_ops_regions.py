import numpy as np
import pytest
import torch

from samkit.ops import remove_small_regions


def square_with_hole():
    m = np.zeros((12, 12), bool)
    m[2:10, 2:10] = True
    m[5, 4:7] = False  # 3-pixel hole
    return m


def test_small_hole_filled():
    m = square_with_hole()
    out, changed = remove_small_regions(m, area_thresh=5, mode="holes")
    assert changed
    assert out.dtype == bool
    expected = np.zeros((12, 12), bool)
    expected[2:10, 2:10] = True
    np.testing.assert_array_equal(out, expected)
    assert not m[5, 5]  # input not modified


def test_hole_at_threshold_is_kept():
    # "Small" is strictly below the threshold: a 3-pixel hole survives area_thresh=3.
    m = square_with_hole()
    out, changed = remove_small_regions(m, area_thresh=3, mode="holes")
    assert not changed
    np.testing.assert_array_equal(out, m)


def test_diagonal_background_pixels_are_one_hole_8_connected():
    m = np.ones((8, 8), bool)
    m[2, 2] = m[3, 3] = m[4, 4] = False  # diagonal chain: one 3-pixel hole with 8-connectivity
    out, changed = remove_small_regions(m, area_thresh=3, mode="holes")
    assert not changed  # with 4-connectivity these would be three 1-pixel holes, all filled
    out, changed = remove_small_regions(m, area_thresh=4, mode="holes")
    assert changed and out.all()


def test_small_island_removed_large_island_kept():
    m = np.zeros((20, 20), bool)
    m[2:12, 2:12] = True  # 100 pixels
    m[16, 16:18] = True  # 2-pixel island
    m[14:18, 2:6] = True  # 16-pixel island
    out, changed = remove_small_regions(torch.from_numpy(m), area_thresh=10, mode="islands")
    assert changed
    assert isinstance(out, np.ndarray) and out.dtype == bool
    expected = m.copy()
    expected[16, 16:18] = False  # only the 2-pixel island is below 10
    np.testing.assert_array_equal(out, expected)
    out, changed = remove_small_regions(m, area_thresh=20, mode="islands")
    assert changed
    expected[14:18, 2:6] = False  # now the 16-pixel island goes too; 100 pixels stay
    np.testing.assert_array_equal(out, expected)


def test_islands_all_small_keeps_largest():
    m = np.zeros((10, 10), bool)
    m[0, 0] = True
    m[5:7, 5:7] = True  # 4 pixels: the largest
    m[9, 8:10] = True
    out, changed = remove_small_regions(m, area_thresh=50, mode="islands")
    assert changed
    expected = np.zeros((10, 10), bool)
    expected[5:7, 5:7] = True
    np.testing.assert_array_equal(out, expected)


def test_nothing_to_do():
    m = np.zeros((10, 10), bool)
    m[2:8, 2:8] = True
    for mode in ("holes", "islands"):
        out, changed = remove_small_regions(m, 5, mode)
        assert not changed
        np.testing.assert_array_equal(out, m)
    out, changed = remove_small_regions(np.zeros((6, 6), bool), 100, "islands")
    assert not changed and not out.any()


def test_small_border_background_counts_as_hole():
    # Like SAM's post-processing, a small background region touching the border is filled.
    m = np.ones((10, 10), bool)
    m[0, 0:2] = False
    out, changed = remove_small_regions(m, 5, "holes")
    assert changed and out.all()


def test_bad_mode():
    with pytest.raises(ValueError):
        remove_small_regions(np.zeros((3, 3), bool), 1, "blobs")
