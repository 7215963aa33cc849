"""SAM 2 checkpoint handling: every official layout and name, version and size from keys and
shapes only, video-only modules reported, v1 never taken for v2 or back, registry names/URLs."""

from __future__ import annotations

import logging

import pytest
import torch

from samkit import SAM
from samkit.errors import CheckpointError
from samkit.zoo.checkpoints import build_sam, read_checkpoint
from samkit.zoo.registry import get_variant, variant_for_filename
from samkit.zoo.sam2 import (
    SIZES,
    Sam2Config,
    from_meta_key,
    infer_sam2_config,
    meta_state_dict,
    size_config,
    split_state_dict,
    to_meta_key,
)

from ..conftest import TINY_VIT, tiny_model
from ..sam2_helpers import TINY, meta_checkpoint, seeded_sam2, video_keys


def _meta_shapes(size: str) -> dict[str, torch.Tensor]:
    """Meta's image keys of a published size as shape-only tensors (built on the meta device)."""
    with torch.device("meta"):
        model = size_config(size).build()
    return {to_meta_key(k): v for k, v in model.state_dict().items()}


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("version", ["2.1", "2.0"])
def test_size_and_version_from_keys_and_shapes(size, version):
    sd = _meta_shapes(size)
    for k, shape in video_keys(version).items():
        sd[k] = torch.empty(shape, device="meta")
    split = split_state_dict(sd)
    assert split.version == version
    assert len(split.video_keys) == len(video_keys(version))
    config = infer_sam2_config(split.image, split.version)
    assert config == size_config(size, version)


def test_parameter_counts_match_meta():
    """Image-model tensor counts equal those of Meta's model (keys_sam2.1.json)."""
    import json

    from ..sam2_helpers import DATA

    counts = json.loads((DATA / "video_keys_sam2.1.json").read_text())["image_keys"]
    for arch, size in (("hiera_t", "t"), ("hiera_s", "s"), ("hiera_b+", "b+"), ("hiera_l", "l")):
        assert len(_meta_shapes(size)) == counts[arch]


def test_key_mapping_round_trip():
    keys = list(_meta_shapes("t"))
    assert [to_meta_key(from_meta_key(k)) for k in keys] == keys
    assert from_meta_key("sam_mask_decoder.transformer.layers.1.mlp.layers.0.weight") == (
        "mask_decoder.transformer.layers.1.mlp.lin1.weight"
    )
    assert from_meta_key("sam_prompt_encoder.no_mask_embed.weight") == (
        "prompt_encoder.no_mask_embed.weight"
    )


@pytest.mark.parametrize(
    "filename,version,expect_name",
    [
        ("sam2.1_hiera_tiny.pt", "2.1", "sam2.1_t"),  # Meta 2.1
        ("sam2_hiera_tiny.pt", "2.0", "sam2_t"),  # Meta 2.0
        ("sam2.1_t.pt", "2.1", "sam2.1_t"),  # Ultralytics names
        ("sam2_t.pt", "2.0", "sam2_t"),
        ("sam2_t.pt", "2.1", "sam2.1_t"),  # a renamed file: the keys decide, not the name
        ("sam2.1_hiera_tiny.pt", "2.0", "sam2_t"),
        ("weights.bin", "2.1", "sam2.1_t"),
    ],
)
def test_official_layouts_load_as_the_right_version(
    tmp_path, caplog, filename, version, expect_name
):
    path = tmp_path / filename
    torch.save({"model": meta_checkpoint(size_config("t"), version)}, path)
    with caplog.at_level(logging.INFO, logger="samkit"):
        model, ckpt = build_sam(path)
    assert ckpt.config.version == version
    assert ckpt.variant is not None and ckpt.variant.name == expect_name
    n_video = len(video_keys(version))
    assert ckpt.unused is not None and f"{n_video} video-only tensors" in ckpt.unused
    assert "memory_attention" in ckpt.unused and "not used" in ckpt.unused
    assert any("video-only" in r.message for r in caplog.records)
    ref = seeded_sam2(size_config("t")).state_dict()
    got = model.state_dict()
    assert all(torch.equal(got[k], ref[k]) for k in ref)


def test_plain_state_dict_without_video_keys(tmp_path):
    path = tmp_path / "image_only.pt"
    torch.save(meta_checkpoint(size_config("t"), None), path)
    ckpt = read_checkpoint(path)
    assert ckpt.unused is None
    assert ckpt.config.version is None  # not visible without the video modules
    assert "2.x" in ckpt.config.describe()


def test_unknown_key_is_an_error_not_dropped(tmp_path):
    sd = meta_checkpoint(size_config("t"), "2.1")
    sd["sam_mask_decoder.extra_head.weight"] = torch.zeros(3)
    path = tmp_path / "extra.pt"
    torch.save({"model": sd}, path)
    with pytest.raises(CheckpointError, match="extra_head"):
        build_sam(path)


def test_missing_key_is_an_error(tmp_path):
    sd = meta_checkpoint(size_config("t"), "2.1")
    del sd["sam_mask_decoder.conv_s0.weight"]
    path = tmp_path / "missing.pt"
    torch.save({"model": sd}, path)
    with pytest.raises(CheckpointError, match="conv_s0"):
        build_sam(path)


def test_unpublished_trunk_needs_a_config(tmp_path):
    path = tmp_path / "custom.pt"
    torch.save({"model": meta_state_dict(seeded_sam2(TINY))}, path)
    with pytest.raises(CheckpointError, match="not one of the published sizes"):
        read_checkpoint(path)


def test_samkit_saved_custom_config_round_trip(tmp_path):
    model = seeded_sam2(TINY)
    path = tmp_path / "tiny_sam2.pt"
    torch.save({"model": model.state_dict(), "samkit_config": TINY.to_dict()}, path)
    loaded = SAM(str(path), precision="fp32")
    assert loaded.config == TINY
    assert all(torch.equal(loaded.model.state_dict()[k], v) for k, v in model.state_dict().items())


def test_v1_never_taken_for_v2_and_back(tmp_path):
    v1 = tmp_path / "sam2.1_hiera_tiny.pt"  # a v1 file under a SAM 2 name
    torch.save(tiny_model(TINY_VIT).state_dict(), v1)
    ckpt = read_checkpoint(v1)
    assert not isinstance(ckpt.config, Sam2Config)
    assert ckpt.config.encoder == TINY_VIT.encoder
    v2 = tmp_path / "sam_vit_b_01ec64.pth"  # a SAM 2 file under a v1 name
    torch.save({"model": meta_checkpoint(size_config("t"), "2.1")}, v2)
    assert isinstance(read_checkpoint(v2).config, Sam2Config)
    # a v1 file whose stored config claims SAM 2, and the reverse, are refused
    bad = tmp_path / "bad.pt"
    torch.save({"model": tiny_model(TINY_VIT).state_dict(), "samkit_config": TINY.to_dict()}, bad)
    with pytest.raises(CheckpointError, match="SAM 2"):
        read_checkpoint(bad)
    torch.save({"model": seeded_sam2(TINY).state_dict(), "samkit_config": TINY_VIT.to_dict()}, bad)
    with pytest.raises(CheckpointError, match="not a SAM 2 config"):
        read_checkpoint(bad)
    # SAM 2 encoder keys with a v1 decoder: a strict error, not a half-loaded model
    mixed = meta_checkpoint(size_config("t"), None)
    mixed.update({k: v for k, v in tiny_model(TINY_VIT).state_dict().items() if "decoder" in k})
    torch.save(mixed, bad)
    with pytest.raises(CheckpointError, match="does not match the architecture"):
        build_sam(bad)


def test_registry_names_and_urls():
    meta21 = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"
    meta20 = "https://dl.fbaipublicfiles.com/segment_anything_2/072824/"
    for size, meta_name, ultra in (
        ("t", "tiny", "t"),
        ("s", "small", "s"),
        ("b+", "base_plus", "b"),
        ("l", "large", "l"),
    ):
        v21, f21 = variant_for_filename(f"sam2.1_hiera_{meta_name}.pt")
        assert f21.url == meta21 + f"sam2.1_hiera_{meta_name}.pt"
        assert v21.config == size_config(size, "2.1")
        v20, f20 = variant_for_filename(f"sam2_hiera_{meta_name}.pt")
        assert f20.url == meta20 + f"sam2_hiera_{meta_name}.pt"
        assert v20.config == size_config(size, "2.0")
        vu, fu = variant_for_filename(f"sam2.1_{ultra}.pt")
        assert vu is v21 and fu.url.startswith("https://github.com/ultralytics/assets/")
        assert variant_for_filename(f"sam2_{ultra}.pt")[0] is v20
        assert get_variant(f"sam2.1_{ultra}") is v21
        assert get_variant(f"sam2.1_hiera_{meta_name}") is v21


def test_offline_official_name_says_where_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMKIT_OFFLINE", "1")
    with pytest.raises(Exception, match="092824/sam2.1_hiera_small.pt"):
        SAM("sam2.1_hiera_small.pt", cache_dir=tmp_path)
