"""segment_folder / embed_folder with engine="ray" on the suite's Ray cluster (two single-CPU
actors, each loading the demo model once): the local engine's files, byte for byte; a bad image
reported with its path while the others are written; finished images skipped (resume)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ..ray_helpers import prepare_ray_env

prepare_ray_env()  # before ray is imported
ray = pytest.importorskip("ray")
torch = pytest.importorskip("torch")

import samkit  # noqa: E402
from samkit.data.synthetic import write_shapes_dataset  # noqa: E402

pytestmark = pytest.mark.slow
GRID = 8


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ray_folder_ds")
    write_shapes_dataset(root, 6, 0, seed=9)
    return root / "images" / "train"


@pytest.fixture
def one_thread():
    """The local engine at the actors' thread count (float reductions depend on it)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".samkit_annotate" not in p.parts
    }


def _run(job, data, out, engine, address=None, **kw):
    fn = samkit.segment_folder if job == "everything" else samkit.embed_folder
    if job == "everything":
        kw.update(points_per_side=GRID, stability_score_thresh=0.9)  # demo model: ~0.94
    return fn(
        data, "samkit-demo", out, engine=engine, ray_address=address,
        ray_actors=2 if engine == "ray" else None, progress=False, **kw,
    )  # fmt: skip


@pytest.mark.parametrize("job", ["everything", "embeddings"])
def test_ray_writes_the_local_engines_bytes(images, ray_address, one_thread, tmp_path, job):
    local = _run(job, images, tmp_path / "local", "local")
    remote = _run(job, images, tmp_path / "ray", "ray", ray_address)
    assert (remote.done, remote.masks, remote.empty) == (local.done, local.masks, local.empty)
    assert local.done == 6 and not remote.failures
    a, b = files(tmp_path / "local"), files(tmp_path / "ray")
    assert len(a) == 6 and sorted(a) == sorted(b)
    assert a == b


def test_ray_reports_a_bad_image_and_resumes(images, ray_address, one_thread, tmp_path):
    folder = tmp_path / "images"
    shutil.copytree(images, folder)
    (folder / "000004.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    out = tmp_path / "ray"
    first = _run("embeddings", folder, out, "local")  # 5 done, then the rest on Ray
    for name in ("000001.npz", "000003.npz"):
        (out / name).unlink()
    s = _run("embeddings", folder, out, "ray", ray_address)
    assert (s.skipped, s.done) == (3, 2)
    assert [f.path for f in s.failures] == [str(folder / "000004.png")]
    assert s.failures[0].reason == first.failures[0].reason  # as the local engine says it
    local = tmp_path / "local"
    _run("embeddings", folder, local, "local")
    assert files(out) == files(local) and len(files(out)) == 5
