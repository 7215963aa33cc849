"""Helpers for the SAM 2 tests: seeded models and checkpoint files in Meta's layouts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from samkit.zoo.sam2 import Sam2Config, meta_state_dict, size_config
from samkit.zoo.seeded import seeded_state_dict, seeded_tensor

DATA = Path(__file__).parent / "data" / "sam2"
NPZ = DATA / "sam2.1_image_a_small.npz"
MANIFEST = DATA / "sam2.1_manifest.json"
IMAGE_A = Path(__file__).parent / "data" / "image_a.png"
IMAGE_B = Path(__file__).parent / "data" / "image_b.png"
ARCH_SIZE = {"hiera_t": "t", "hiera_b+": "b+"}

# A small Hiera for fast tests of the plumbing (not a published size: saved with its config).
TINY = Sam2Config(
    embed_dim=16,
    num_heads=1,
    stages=(1, 1, 2, 1),
    global_att_blocks=(3,),
    window_spec=(4, 4, 4, 2),
    window_pos_embed_bkg_spatial_size=(4, 4),
    img_size=256,
    d_model=32,
    decoder_mlp_dim=64,
    version=None,
)

_MODELS: dict = {}


def seeded_sam2(config: Sam2Config):
    """A seeded :class:`~samkit.models.Sam2` (cached per config; do not modify it)."""
    if config not in _MODELS:
        model = config.build()
        model.load_state_dict(seeded_state_dict(model), strict=True)
        _MODELS[config] = model.eval()
    return _MODELS[config]


def seeded_arch(arch: str):
    return seeded_sam2(size_config(ARCH_SIZE[arch]))


def video_keys(version: str = "2.1") -> dict[str, list[int]]:
    keys = json.loads((DATA / "video_keys_sam2.1.json").read_text())["keys"]
    if version == "2.0":
        keys = {
            k: v
            for k, v in keys.items()
            if k != "no_obj_embed_spatial" and not k.startswith("obj_ptr_tpos_proj.")
        }
    return keys


def meta_checkpoint(config: Sam2Config, version: str | None = "2.1") -> dict[str, torch.Tensor]:
    """A full seeded state dict in Meta's layout (image keys + the video modules of
    ``version``; None: image keys only)."""
    sd = meta_state_dict(seeded_sam2(config))
    if version is not None:
        for k, shape in video_keys(version).items():
            sd[k] = seeded_tensor(k, tuple(shape))
    return sd


def load_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    return np.array(Image.open(path).convert("RGB"))
