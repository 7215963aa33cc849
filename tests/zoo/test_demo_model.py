"""The demo model shipped in the package: loads offline and segments held-out synthetic shapes."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from samkit import SAM
from samkit.data.synthetic import write_shapes_dataset
from samkit.zoo.checkpoints import packaged_file, read_checkpoint, resolve_checkpoint
from samkit.zoo.registry import DEMO_CONFIG, VARIANTS, infer_config

HELDOUT_SEED = 20240601  # benchmarks/train_demo.py: never used for training


@pytest.fixture(scope="module")
def demo():
    return SAM("samkit-demo")


def test_demo_loads_offline_from_the_package(demo, monkeypatch, tmp_path):
    monkeypatch.setenv("SAMKIT_OFFLINE", "1")
    monkeypatch.setenv("SAMKIT_CACHE_DIR", str(tmp_path / "empty-cache"))
    path = resolve_checkpoint("samkit-demo")
    assert path == packaged_file("samkit_demo.safetensors") and path.parent.name == "assets"
    assert path.stat().st_size < 5_000_000
    assert resolve_checkpoint("demo") == resolve_checkpoint("samkit_demo") == path
    assert demo.name == "samkit_demo" and demo.config == DEMO_CONFIG
    assert VARIANTS["samkit_demo"].files == ()
    # the file stores its architecture; the weights alone give all of it but the input size
    ckpt = read_checkpoint(path)
    assert ckpt.config == DEMO_CONFIG
    inferred = infer_config(ckpt.state_dict)
    assert replace(inferred, encoder=replace(inferred.encoder, img_size=256)) == DEMO_CONFIG
    # stored as float16, loaded as float32
    assert ckpt.state_dict["mask_decoder.iou_token.weight"].dtype == torch.float16
    assert all(p.dtype == torch.float32 for p in demo.model.parameters())


@pytest.mark.slow
def test_demo_segments_held_out_shapes(demo, tmp_path):
    data = write_shapes_dataset(tmp_path / "heldout", n_train=0, n_val=20, seed=HELDOUT_SEED)
    box = demo.val(data, "box", verbose=False)
    assert box.counts()["all"] > 80
    # 0.851 on these 20 images (0.857 on the README's 200): a guard against a broken or
    # swapped file, with room for float differences between CPUs
    assert box.miou >= 0.80
    point = demo.val(data, "point", verbose=False)
    assert point.oracle_miou >= point.miou > 0.5
