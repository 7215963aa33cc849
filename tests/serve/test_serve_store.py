"""The annotation store of ``samkit serve``: formats, reopening, concurrent tabs, links."""

from __future__ import annotations

import json
import threading
from pathlib import PurePosixPath

import numpy as np
import pytest

from samkit.errors import SamkitError
from samkit.serve.store import AnnotationStore, StoreError
from tests.serve_helpers import snapshot, write_folder


def make_store(root, names=("shape",)):
    images = [PurePosixPath(p.name) for p in sorted((root / "images").glob("*.png"))]
    return AnnotationStore(root / "images", images, root / "labels", list(names))


def test_saved_files_read_back_with_pycocotools_and_the_dataset_reader(tmp_path):
    mask_util = pytest.importorskip("pycocotools.mask")
    pytest.importorskip("yaml")
    from pycocotools.coco import COCO

    from samkit import load_dataset

    shapes = write_folder(tmp_path)
    store = make_store(tmp_path)
    accepted = {}  # image index -> [(label, mask)]
    for index in (0, 2):
        for k, m in enumerate(shapes[index].masks[:2]):
            label = ["circle", "shape"][k % 2]
            store.add(index, m.shape, m, label, 0.9)
            accepted.setdefault(index, []).append((label, m))
    store.close()
    coco = COCO(str(tmp_path / "labels" / "annotations.json"))
    assert {c["name"] for c in coco.loadCats(coco.getCatIds())} == {"shape", "circle"}
    by_name = {img["file_name"]: img["id"] for img in coco.loadImgs(coco.getImgIds())}
    assert set(by_name) == {"0.png", "2.png"}
    for index, objs in accepted.items():
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[by_name[f"{index}.png"]]))
        assert len(anns) == len(objs)
        for ann, (label, m) in zip(anns, objs):
            assert coco.loadCats(ann["category_id"])[0]["name"] == label
            rle = dict(ann["segmentation"], counts=ann["segmentation"]["counts"].encode())
            assert np.array_equal(mask_util.decode(rle).astype(bool), m)
            assert ann["area"] == int(m.sum())
            assert ann["bbox"] == pytest.approx(mask_util.toBbox(rle).tolist())
    # YOLO: labels/ next to images/ is a YOLO dataset; data.yaml as auto_annotate writes it
    ds = load_dataset(tmp_path / "labels" / "data.yaml", "val")
    assert ds.names == {0: "shape", 1: "circle"}
    for index, objs in accepted.items():
        sample = ds.load(index)
        assert [ds.names[c] for c in sample.categories] == [label for label, _ in objs]
        for got, (_, want) in zip(sample.masks, objs):
            # polygons rasterize back to the mask up to the boundary pixels
            assert (got & want).sum() / (got | want).sum() > 0.9
    assert ds.load(1).masks.shape[0] == 0


def test_reopening_restores_and_revisions_grow(tmp_path):
    shapes = write_folder(tmp_path)
    store = make_store(tmp_path)
    a = store.add(0, (256, 320), shapes[0].masks[0], "circle")
    store.add(0, (256, 320), shapes[0].masks[1], "square")
    store.relabel(0, a["id"], "disc")
    assert store.revision(0) == 3
    store.close()
    again = make_store(tmp_path, names=("shape",))
    assert [o["label"] for o in again.objects(0)] == ["disc", "square"]
    assert again.revision(0) == 3 and again.names == ["shape", "circle", "square", "disc"]
    assert again.objects(1) == [] and not again.problems


def test_two_tabs_adding_at_once_keep_every_object(tmp_path):
    shapes = write_folder(tmp_path, n=1)
    store = make_store(tmp_path)
    m = shapes[0].masks[0]
    errors = []

    def tab(label):
        try:
            for _ in range(10):
                store.add(0, m.shape, m, label)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=tab, args=(f"tab{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert store.revision(0) == 20 and len(store.objects(0)) == 20
    record = json.loads((tmp_path / "labels/.samkit_serve/objects/0.png.json").read_text())
    assert len(record["objects"]) == 20
    assert len((tmp_path / "labels" / "0.txt").read_text().splitlines()) == 20
    coco = json.loads((tmp_path / "labels" / "annotations.json").read_text())
    assert len(coco["annotations"]) == 20


def test_links_are_refused(tmp_path):
    shapes = write_folder(tmp_path, n=2)
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "link").symlink_to(outside)
    with pytest.raises(SamkitError, match="link"):
        AnnotationStore(tmp_path / "images", [PurePosixPath("0.png")], tmp_path / "link")
    # a label file planted as a link to a file outside is not written through
    store = make_store(tmp_path)
    store.add(0, (256, 320), shapes[0].masks[0], "shape")
    target = outside / "victim.txt"
    target.write_text("keep me\n")
    (tmp_path / "labels" / "1.txt").symlink_to(target)
    before = snapshot(tmp_path / "labels")
    with pytest.raises(StoreError, match="link"):
        store.add(1, (256, 320), shapes[1].masks[0], "circle")
    assert target.read_text() == "keep me\n"
    assert snapshot(tmp_path / "labels") == before
    assert store.objects(1) == []


def test_a_second_server_on_the_same_output_is_refused(tmp_path):
    write_folder(tmp_path, n=1)
    first = make_store(tmp_path)
    with pytest.raises(SamkitError, match="another samkit serve"):
        make_store(tmp_path)
    first.close()
    make_store(tmp_path).close()
