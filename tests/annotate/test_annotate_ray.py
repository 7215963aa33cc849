"""auto_annotate(engine="ray") on a real Ray cluster: the suite's head (tests/ray_helpers.py,
or the one `.ci/run` starts, named by $SAMKIT_RAY_ADDRESS) with two single-CPU actors, each
loading the demo model once. The files must be those of the local engine, byte for byte; a bad
image is reported with its path and the others are written; a driver killed mid-run resumes to
the same bytes."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ..ray_helpers import prepare_ray_env, with_repo_path

prepare_ray_env()  # before ray is imported
ray = pytest.importorskip("ray")
torch = pytest.importorskip("torch")

import samkit  # noqa: E402
from samkit.data.synthetic import write_shapes_dataset  # noqa: E402

pytestmark = pytest.mark.slow
NAMES = ["ellipse", "rectangle", "polygon"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray_ds")
    write_shapes_dataset(root, 8, 0, seed=5)
    return root / "images" / "train", root / "labels" / "train"


@pytest.fixture
def one_thread():
    """The local engine at the actors' thread count (float reductions depend on it)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _annotate(images, labels, out, engine, fmt, address=None, **kw):
    return samkit.auto_annotate(
        images,
        labels=labels,
        sam_model="samkit-demo",
        format=fmt,
        output_dir=out,
        names=NAMES,
        engine=engine,
        ray_address=address,
        ray_actors=2 if engine == "ray" else None,
        progress=False,
        **kw,
    )


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".samkit_annotate" not in p.parts
    }


@pytest.mark.parametrize("fmt", ["yolo", "coco"])
def test_ray_engine_writes_the_local_engines_bytes(dataset, ray_address, one_thread, tmp_path, fmt):
    images, labels = dataset
    local = _annotate(images, labels, tmp_path / "local", "local", fmt)
    remote = _annotate(images, labels, tmp_path / "ray", "ray", fmt, ray_address)
    assert (remote.annotated, remote.objects, remote.dropped) == (
        local.annotated,
        local.objects,
        local.dropped,
    )
    assert local.annotated == 8 and local.objects > 8
    a, b = _files(tmp_path / "local"), _files(tmp_path / "ray")
    assert sorted(a) == sorted(b)
    assert a == b
    if fmt == "coco":  # the assembled JSON re-reads with pycocotools
        from pycocotools.coco import COCO

        coco = COCO(str(tmp_path / "ray" / "annotations.json"))
        assert len(coco.getAnnIds()) == remote.objects


def test_ray_engine_isolates_a_bad_image(dataset, ray_address, one_thread, tmp_path):
    images, labels = dataset
    folder = tmp_path / "images"
    shutil.copytree(images, folder)
    (folder / "000003.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    summary = _annotate(folder, labels, tmp_path / "out", "ray", "yolo", ray_address)
    assert summary.annotated == 7
    assert [f.path.name for f in summary.failures] == ["000003.png"]
    assert str(folder / "000003.png") == str(summary.failures[0].path)
    assert summary.failures[0].reason  # why, as the local engine says it
    written = sorted(p.name for p in (tmp_path / "out").glob("*.txt") if p.name != "classes.txt")
    assert len(written) == 7 and "000003.txt" not in written


def test_ray_engine_resumes_after_the_driver_is_killed(dataset, ray_address, one_thread, tmp_path):
    images, labels = dataset
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):  # 24 images, so that the driver is killed with work left
        for p in sorted(images.glob("*.png")):
            arr = np.asarray(Image.open(p))
            Image.fromarray(np.ascontiguousarray(np.roll(arr, 7 * i, axis=1))).save(
                folder / f"{i}_{p.name}"
            )
    lab = tmp_path / "labels"
    lab.mkdir()
    for i in range(3):
        for p in sorted(labels.glob("*.txt")):
            shutil.copy(p, lab / f"{i}_{p.name}")
    out = tmp_path / "ray"
    script = (
        "import samkit, sys; samkit.auto_annotate(sys.argv[1], labels=sys.argv[2], "
        f"sam_model='samkit-demo', output_dir=sys.argv[3], names={NAMES!r}, engine='ray', "
        "ray_address=sys.argv[4], ray_actors=2, progress=False)"
    )
    env = with_repo_path()
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(folder), str(lab), str(out), ray_address],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if len([p for p in out.glob("*.txt") if p.name != "classes.txt"]) >= 2:
            break
        time.sleep(0.2)
    killed_with_work_left = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    done_before = len([p for p in out.glob("*.txt") if p.name != "classes.txt"])
    assert killed_with_work_left and done_before < 24
    resumed = _annotate(folder, lab, out, "ray", "yolo", ray_address)
    assert resumed.skipped >= 2 and resumed.skipped + resumed.annotated == 24
    local = _annotate(folder, lab, tmp_path / "local", "local", "yolo")
    assert local.annotated == 24
    assert _files(out) == _files(tmp_path / "local")
