"""segment_folder / embed_folder (local engine): results against the one-image APIs, resume, a
bad image isolated, the CLI, and folders named by URI (file://, and S3 on a local moto server)."""

from __future__ import annotations

import json
import pickle
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

import samkit
from samkit import SAM, SamAutomaticMaskGenerator, SamPredictor
from samkit.annotate.folder_jobs import embedding_bytes, load_embedding
from samkit.data.files import read_image
from samkit.data.storage import LocalFolder, ObjectFolder, is_uri, open_folder
from samkit.data.synthetic import write_shapes_dataset

GRID = 8  # points per side: a small grid keeps segment-everything quick
STABLE = 0.9  # the demo model's masks score ~0.94 for stability (the default keeps >= 0.95)
SETTINGS = dict(points_per_side=GRID, stability_score_thresh=STABLE)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("folder_ds")
    write_shapes_dataset(root, 4, 0, seed=3)
    return root / "images" / "train"


@pytest.fixture(scope="module")
def demo():
    return SAM("samkit-demo")


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def files(folder: Path) -> dict[str, bytes]:
    """Result files by relative path (the work folder excluded)."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".samkit_annotate" not in p.parts
    }


def test_segment_folder_writes_the_generators_records(images, demo, one_thread, tmp_path):
    out = tmp_path / "out"
    s = samkit.segment_folder(images, "samkit-demo", out, progress=False, **SETTINGS)
    assert (s.images, s.done, s.skipped, s.failed) == (4, 4, 0, 0)
    assert sorted(files(out)) == [f"00000{i}.json" for i in range(4)]
    assert not (out / ".samkit_annotate").exists()  # no work folder left behind
    gen = SamAutomaticMaskGenerator(demo, output_mode="coco_rle", precision="fp32", **SETTINGS)
    total = 0
    for i in range(4):
        image = read_image(images / f"00000{i}.png")
        record = json.loads((out / f"00000{i}.json").read_text())
        assert record["image"] == {"file_name": f"00000{i}.png", "height": 256, "width": 256}
        expected = gen.generate(image)
        assert [a.pop("id") for a in record["annotations"]] == list(range(1, len(expected) + 1))
        assert record["annotations"] == json.loads(json.dumps(expected))
        total += len(expected)
    assert s.masks == total > 0  # the demo model finds its shapes
    from pycocotools import mask as mask_utils

    ann = json.loads((out / "000000.json").read_text())["annotations"][0]
    assert int(mask_utils.area(ann["segmentation"])) == ann["area"]


def test_embed_folder_round_trips_through_set_embedding(images, demo, one_thread, tmp_path):
    out = tmp_path / "emb"
    s = samkit.embed_folder(images, "samkit-demo", out, progress=False)
    assert (s.done, s.failed) == (4, 0)
    image = read_image(images / "000002.png")
    direct = SamPredictor(demo)
    direct.set_image(image)
    emb = load_embedding(out / "000002.npz")
    assert emb.features.shape == direct.features.shape and emb.features.dtype == torch.float32
    assert torch.equal(emb.features, direct.features)
    assert tuple(emb.original_size) == (256, 256)
    assert tuple(emb.input_size) == tuple(direct.input_size)
    with np.load(out / "000002.npz") as z:  # plain numpy reads it too
        assert sorted(z.files) == ["features", "input_size", "original_size"]
    again = SamPredictor(demo)
    again.set_embedding(emb)
    box = np.array([40, 40, 200, 180])
    for a, b in zip(direct.predict(box=box), again.predict(box=box)):
        np.testing.assert_array_equal(a, b)
    assert embedding_bytes(emb) == (out / "000002.npz").read_bytes()  # deterministic bytes


def test_resume_skips_finished_images_and_ends_with_the_same_bytes(images, one_thread, tmp_path):
    out = tmp_path / "out"
    kw = dict(progress=False, **SETTINGS)
    samkit.segment_folder(images, "samkit-demo", out, **kw)
    first = files(out)
    (out / "000001.json").unlink()
    (out / "000003.json").write_bytes(b"stale")  # an existing result counts as done
    s = samkit.segment_folder(images, "samkit-demo", out, **kw)
    assert (s.skipped, s.done) == (3, 1)
    assert files(out)["000001.json"] == first["000001.json"]
    assert files(out)["000003.json"] == b"stale"
    s = samkit.segment_folder(images, "samkit-demo", out, overwrite=True, **kw)
    assert (s.skipped, s.done) == (0, 4) and files(out) == first


def test_a_bad_image_is_reported_and_the_others_written(images, tmp_path):
    folder = tmp_path / "images"
    shutil.copytree(images, folder)
    (folder / "000002.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    s = samkit.embed_folder(folder, "samkit-demo", tmp_path / "emb", progress=False)
    assert s.done == 3 and [f.path for f in s.failures] == [str(folder / "000002.png")]
    assert "000002.png" in s.failures[0].reason and "Traceback" not in s.failures[0].reason
    assert sorted(files(tmp_path / "emb")) == ["000000.npz", "000001.npz", "000003.npz"]


def test_cli_commands_write_the_api_files(images, one_thread, tmp_path, capsys):
    from samkit.cli.main import main

    rc = main(["everything", f"data={images}", "sam_model=samkit-demo",
               f"output_dir={tmp_path / 'cli'}", f"points_stride={GRID}",
               f"stability_score_thresh={STABLE}"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    samkit.segment_folder(images, "samkit-demo", tmp_path / "api", progress=False, **SETTINGS)  # fmt: skip
    assert files(tmp_path / "cli") == files(tmp_path / "api")
    (tmp_path / "bad").mkdir()
    shutil.copy(images / "000000.png", tmp_path / "bad" / "a.png")
    (tmp_path / "bad" / "b.png").write_bytes(b"junk")
    rc = main(["embed", f"data={tmp_path / 'bad'}", "sam_model=samkit-demo"])
    err = capsys.readouterr().err
    assert rc == 3 and f"failed {tmp_path / 'bad' / 'b.png'}" in err
    assert (tmp_path / "bad_embeddings" / "a.npz").is_file()  # the default output folder


def test_settings_and_locations_are_checked(images, tmp_path):
    with pytest.raises(samkit.SamkitError, match="unknown setting.*points_stride"):
        samkit.segment_folder(images, "samkit-demo", tmp_path / "o", points_stride=8)
    with pytest.raises(samkit.SamkitError, match="give output_dir="):
        samkit.embed_folder("s3://bucket/images", "samkit-demo")
    (tmp_path / "file").write_text("x")
    with pytest.raises(samkit.SamkitError, match="not a folder"):
        samkit.embed_folder(images, "samkit-demo", tmp_path / "file")
    with pytest.raises(samkit.SamkitError, match="engine must be one of"):
        samkit.embed_folder(images, "samkit-demo", tmp_path / "o", engine="spark")
    assert is_uri("s3://b/p") and is_uri("gs://b") and not is_uri("/a/b") and not is_uri("C:\\x")
    assert isinstance(open_folder("file:///tmp/x"), LocalFolder)


def test_file_uris_give_the_local_bytes(images, one_thread, tmp_path):
    samkit.embed_folder(images, "samkit-demo", tmp_path / "a", progress=False)
    samkit.embed_folder(
        f"file://{images}", "samkit-demo", f"file://{tmp_path / 'b'}", progress=False
    )
    assert files(tmp_path / "a") == files(tmp_path / "b")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3(monkeypatch):
    """A moto S3 server on 127.0.0.1 with a bucket; yields ``(boto3 client, uri of a prefix)``."""
    server_mod = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    pytest.importorskip("pyarrow.fs")
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(key, value)
    port = _free_port()
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}")
        client.create_bucket(Bucket="data")
        query = f"?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
        yield client, lambda prefix: f"s3://data/{prefix}{query}"
    finally:
        server.stop()


def test_s3_round_trip_on_a_local_moto_server(images, s3, one_thread, tmp_path):
    client, uri = s3
    for p in sorted(images.glob("*.png")):
        client.put_object(Bucket="data", Key=f"images/{p.name}", Body=p.read_bytes())
    client.put_object(Bucket="data", Key="images/bad.png", Body=b"junk")
    s = samkit.embed_folder(uri("images"), "samkit-demo", uri("emb"), progress=False)
    assert s.done == 4 and [f.path for f in s.failures] == ["s3://data/images/bad.png"]
    assert s.output_dir == "s3://data/emb"  # no endpoint or credentials in what is printed
    local = tmp_path / "local"
    samkit.embed_folder(images, "samkit-demo", local, progress=False)
    for name, data in files(local).items():
        assert client.get_object(Bucket="data", Key=f"emb/{name}")["Body"].read() == data
    again = samkit.embed_folder(uri("images"), "samkit-demo", uri("emb"), progress=False)
    assert (again.skipped, again.done, again.failed) == (4, 0, 1)  # resume: one listing
    folder = pickle.loads(pickle.dumps(open_folder(uri("emb"))))  # as a Ray worker gets it
    assert isinstance(folder, ObjectFolder) and folder.exists("000000.npz")
    assert folder.where("a.npz") == "s3://data/emb/a.npz"
    assert load_embedding(client.get_object(Bucket="data", Key="emb/000001.npz")["Body"].read())
