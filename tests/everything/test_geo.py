"""GeoTIFF in and out: bands, 16-bit and nodata read lazily; masks as a georeferenced raster and
as vectors that land where the shapes are; prompts in map coordinates."""

from __future__ import annotations

import json

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")
pyogrio = pytest.importorskip("pyogrio")

from rasterio.crs import CRS  # noqa: E402
from rasterio.features import rasterize  # noqa: E402
from rasterio.transform import from_origin  # noqa: E402

from samkit import SAM  # noqa: E402
from samkit.data.synthetic_scene import make_large_scene  # noqa: E402
from samkit.errors import ImageError  # noqa: E402
from samkit.everything.tiling import segment_everything_tiled  # noqa: E402
from samkit.everything.tiling.geo import (  # noqa: E402
    map_to_pixel,
    open_geotiff,
    pixel_to_map,
    predict_map,
    write_mask_raster,
    write_vectors,
)
from samkit.everything.tiling.masks import CroppedMasks, match_masks  # noqa: E402

CRS_UTM = CRS.from_epsg(32633)
TRANSFORM = from_origin(500_000.0, 4_200_000.0, 0.5, 0.5)  # 0.5 m pixels, north up
EVERYTHING = {"points_stride": 8, "conf_thres": 0.7, "stability_score_thresh": 0.85}


@pytest.fixture(scope="module")
def demo():
    return SAM("samkit-demo")


@pytest.fixture(scope="module")
def geotiff(tmp_path_factory):
    """A 4-band uint16 GeoTIFF (bands stored B, G, R, NIR at 16-bit scale) of a 448 x 640 scene
    whose last 64 columns are nodata (0)."""
    sc = make_large_scene(448, 640, seed=4)
    rgb = sc.image().astype(np.uint16) * 200 + 1000
    rgb[:, 576:] = 0
    data = np.stack([rgb[..., 2], rgb[..., 1], rgb[..., 0], rgb[..., 0] // 2 + 7])
    path = tmp_path_factory.mktemp("geo") / "scene.tif"
    with rasterio.open(
        path, "w", driver="GTiff", height=448, width=640, count=4, dtype="uint16",
        crs=CRS_UTM, transform=TRANSFORM, nodata=0, tiled=True, blockxsize=128, blockysize=128,
    ) as dst:  # fmt: skip
        dst.write(data)
    boxes, crops = sc.truth()
    keep = [i for i, b in enumerate(boxes) if b[2] <= 576]  # shapes not under nodata
    truth = CroppedMasks((448, 640), boxes[keep], [crops[i] for i in keep], np.ones(len(keep)))
    return path, sc, truth


def test_reads_bands_16bit_and_nodata_lazily(geotiff):
    path, sc, _ = geotiff
    with open_geotiff(path, bands=(3, 2, 1)) as r:
        assert (r.height, r.width) == (448, 640) and r.crs == CRS_UTM and r.transform == TRANSFORM
        window = r.read(100, 50, 356, 306)
        assert window.shape == (256, 256, 3) and window.dtype == np.uint8
        # the percentile stretch is monotone per band: the 8-bit scene's order is kept
        ref = sc.image()[50:306, 100:356].astype(np.int64)
        got = window.astype(np.int64)
        for c in range(3):
            a, b = ref[..., c].ravel(), got[..., c].ravel()
            order = np.argsort(a, kind="stable")
            assert (np.diff(b[order]) >= 0).mean() > 0.97
        v = r.valid(500, 0, 640, 10)
        assert v[:, :76].all() and not v[:, 76:].any()
        assert not r.read(600, 0, 640, 8).any()
        with pytest.raises(ImageError, match="outside"):
            r.read(0, 0, 641, 10)
    with pytest.raises(ImageError, match="bands"):
        open_geotiff(path, bands=(1, 5, 2))
    grey = open_geotiff(path, bands=(4,), scale=(0, 65535))
    assert np.array_equal(grey.scale, [[0, 65535]] * 3)
    px = grey.read(0, 0, 4, 4)
    assert (px[..., 0] == px[..., 1]).all()


def test_geotiff_round_trip_raster_and_vectors(demo, geotiff, tmp_path):
    path, _, truth = geotiff
    scene = open_geotiff(path, bands=(3, 2, 1))
    masks = segment_everything_tiled(demo, scene, tile=256, overlap=64, **EVERYTHING)
    assert all(b[2] <= 576 for b in masks.boxes)  # nothing on nodata
    best, _ = match_masks(masks, truth)
    assert (best >= 0.8).mean() >= 0.85
    # raster: same grid and CRS, the labels are the masks
    out = write_mask_raster(masks, tmp_path / "out" / "labels.tif", scene)
    with rasterio.open(out) as ds:
        assert ds.crs == CRS_UTM and ds.transform == TRANSFORM
        assert (ds.height, ds.width) == (448, 640)
        labels = ds.read(1)
    assert np.array_equal(labels, masks.label_band(0, 448).astype(labels.dtype))
    for i in range(len(masks)):
        assert (labels == i + 1).sum() <= masks.areas[i]
    # vectors: GeoJSON read back as plain JSON and burnt into the raster's grid
    gj = write_vectors(masks, tmp_path / "out" / "masks.geojson", scene)
    doc = json.loads(gj.read_text())
    assert "32633" in json.dumps(doc.get("crs", {}))
    feats = doc["features"]
    assert len(feats) == len(masks)
    for f in feats[:25]:
        i = f["properties"]["mask_id"]
        burnt = rasterize([(f["geometry"], 1)], out_shape=(448, 640), transform=TRANSFORM)
        m = masks.mask(i)
        assert (burnt.astype(bool) & m).sum() / (burnt.astype(bool) | m).sum() > 0.97
    # GeoPackage keeps the CRS and the features
    gpkg = write_vectors(masks, tmp_path / "out" / "masks.gpkg", scene)
    info = pyogrio.read_info(gpkg)
    assert info["features"] == len(masks) and "32633" in info["crs"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "labels.tif",
        "masks.geojson",
        "masks.gpkg",
    ]


def test_prompts_in_map_coordinates(demo, geotiff):
    path, _, truth = geotiff
    scene = open_geotiff(path, bands=(3, 2, 1))
    xy = np.array([[10.0, 20.0], [300.5, 400.25]])
    assert np.allclose(map_to_pixel(scene, pixel_to_map(scene, xy)), xy)
    assert np.allclose(pixel_to_map(scene, [[2, 4]]), [[500_001.0, 4_199_998.0]])
    boxes = truth.boxes[:6].astype(np.float64)
    c1 = pixel_to_map(scene, boxes[:, :2])
    c2 = pixel_to_map(scene, boxes[:, 2:])
    map_boxes = np.concatenate([np.minimum(c1, c2), np.maximum(c1, c2)], axis=1)
    by_map = predict_map(demo, scene, bboxes=map_boxes, tile=256)
    best, _ = match_masks(by_map, truth.take(np.arange(6)))
    assert (best >= 0.8).sum() >= 5
    centers = (boxes[:, :2] + boxes[:, 2:]) / 2
    by_points = predict_map(demo, scene, points=pixel_to_map(scene, centers), tile=256)
    assert by_points.prompt_index.tolist() == list(range(6))
    assert sum(by_points.mask(i)[int(c[1]), int(c[0])] for i, c in enumerate(centers)) >= 5


def test_cli_predict_geotiff_in_tiles(geotiff, tmp_path):
    import os
    import subprocess
    import sys

    from samkit.ops.rle import rle_to_mask

    path, _, truth = geotiff
    cmd = [sys.executable, "-m", "samkit", "predict", "model=samkit-demo", f"source={path}"]
    cmd += ["tile=256", "overlap=64", "bands=[3,2,1]", "points_stride=8", "conf_thres=0.7"]
    cmd += ["stability_score_thresh=0.85", f"project={tmp_path}", "name=geo"]
    env = dict(os.environ, SAMKIT_OFFLINE="1", OMP_NUM_THREADS="1")
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "geo"
    assert sorted(p.name for p in out.iterdir()) == ["masks.gpkg", "masks.tif", "results.json"]
    [image] = json.loads((out / "results.json").read_text())["images"]
    assert "32633" in image["crs"] and image["transform"] == list(TRANSFORM)[:6]
    masks = [rle_to_mask(m["segmentation"]) for m in image["masks"]]
    found = CroppedMasks((448, 640), [(0, 0, 640, 448)] * len(masks), masks, np.ones(len(masks)))
    assert (match_masks(found, truth)[0] >= 0.8).mean() >= 0.85
    with rasterio.open(out / "masks.tif") as ds:
        assert ds.crs == CRS_UTM and ds.transform == TRANSFORM and ds.read(1).max() == len(masks)
    assert pyogrio.read_info(out / "masks.gpkg")["features"] == len(masks)


def test_uint8_without_nodata_is_read_as_is(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (3, 40, 50), dtype=np.uint8)
    path = tmp_path / "rgb.tif"
    with rasterio.open(
        path, "w", driver="GTiff", height=40, width=50, count=3, dtype="uint8", crs=CRS_UTM,
        transform=TRANSFORM,
    ) as dst:  # fmt: skip
        dst.write(data)
    with open_geotiff(path) as r:
        assert r.scale is None and r.valid(0, 0, 50, 40) is None
        assert np.array_equal(r.read(5, 6, 30, 40), np.moveaxis(data, 0, -1)[6:40, 5:30])
    with pytest.raises(ImageError, match="cannot open"):
        open_geotiff(tmp_path / "missing.tif")
