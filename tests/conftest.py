"""Shared fixtures: tiny and seeded models, synthetic checkpoints, the parity data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from samkit.zoo.registry import DecoderConfig, ModelConfig, TinyViTConfig, ViTConfig
from samkit.zoo.seeded import seeded_model, seeded_state_dict

DATA = Path(__file__).parent / "data"

torch.set_num_threads(max(1, torch.get_num_threads()))

# A ViT small enough to run in milliseconds but with every structural feature of the real ones:
# windowed blocks with padding (grid 16, window 6), a global block, decomposed rel-pos.
TINY_VIT = ModelConfig(
    ViTConfig(
        embed_dim=64,
        depth=2,
        num_heads=2,
        global_attn_indexes=(1,),
        window_size=6,
        img_size=256,
        out_chans=64,
    ),
    DecoderConfig(transformer_dim=64, depth=2, num_heads=4, mlp_dim=128, iou_head_hidden_dim=64),
)
TINY_TINYVIT = ModelConfig(
    TinyViTConfig(
        embed_dims=(16, 32, 48, 64),
        depths=(1, 1, 2, 1),
        num_heads=(1, 2, 3, 4),
        window_sizes=(7, 7, 14, 7),
        img_size=256,
        num_classes=10,
        out_chans=64,
    ),
    DecoderConfig(transformer_dim=64, depth=2, num_heads=4, mlp_dim=128, iou_head_hidden_dim=64),
)


def tiny_model(config: ModelConfig = TINY_VIT):
    model = config.build()
    model.load_state_dict(seeded_state_dict(model))
    return model


@pytest.fixture
def tiny_sam():
    """A seeded tiny ViT SAM (``samkit.models.Sam``)."""
    return tiny_model(TINY_VIT)


@pytest.fixture
def tiny_checkpoint(tmp_path):
    """Path of a plain-state-dict checkpoint of the tiny ViT SAM (arch inferable from shapes)."""
    path = tmp_path / "tiny_vit_sam.pt"
    torch.save(tiny_model(TINY_VIT).state_dict(), path)
    return path


@pytest.fixture(scope="session")
def parity_manifest() -> dict:
    return json.loads((DATA / "manifest.json").read_text())


@pytest.fixture(scope="session")
def image_a() -> np.ndarray:
    return np.asarray(Image.open(DATA / "image_a.png").convert("RGB"))


@pytest.fixture(scope="session")
def image_b() -> np.ndarray:
    return np.asarray(Image.open(DATA / "image_b.png").convert("RGB"))


@pytest.fixture(scope="session")
def seeded_sam_b():
    return seeded_model("sam_b")


@pytest.fixture(scope="session")
def seeded_mobile_sam():
    return seeded_model("mobile_sam")


def synthetic_image(h: int = 240, w: int = 320, seed: int = 0) -> np.ndarray:
    """An RGB uint8 image with a few flat shapes on a noisy background."""
    rng = np.random.default_rng(seed)
    img = (rng.random((h, w, 3)) * 40 + 100).astype(np.uint8)
    img[h // 6 : h // 2, w // 8 : w // 3] = (220, 40, 40)
    yy, xx = np.mgrid[:h, :w]
    disk = (yy - 2 * h // 3) ** 2 + (xx - 2 * w // 3) ** 2 < (min(h, w) // 6) ** 2
    img[disk] = (40, 200, 60)
    return img


@pytest.fixture(scope="session")
def ray_address():
    """The suite's one Ray cluster (tests/ray_helpers.py): started at its first use, stopped at
    the end of the session. Test modules call ``prepare_ray_env()`` before importing ray."""
    from .ray_helpers import running_head

    yield from running_head()
