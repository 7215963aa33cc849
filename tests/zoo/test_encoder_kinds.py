"""A new encoder family is one registry entry: a toy kind with a square resize, ImageNet
statistics on 0-1 and direct mask upsampling (SAM 2's preprocessing), run through the normal API."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from samkit import SAM
from samkit.models import InputSpec
from samkit.zoo.registry import (
    ENCODER_KINDS,
    DecoderConfig,
    EncoderKind,
    ModelConfig,
    infer_config,
    register_encoder_kind,
)

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class ToyEncoder(nn.Module):
    def __init__(self, img_size: int, out_chans: int) -> None:
        super().__init__()
        self.img_size = img_size
        self.toy = nn.Conv2d(3, out_chans, 16, stride=16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.toy(x)


@dataclass(frozen=True)
class ToyConfig:
    img_size: int = 64
    out_chans: int = 32
    kind: str = "toy_square"

    def build(self) -> ToyEncoder:
        return ToyEncoder(self.img_size, self.out_chans)

    @property
    def embedding_size(self) -> int:
        return self.img_size // 16


@pytest.fixture
def toy_kind():
    # -- the whole registration of a new family --
    kind = register_encoder_kind(
        EncoderKind(
            name="toy_square",
            config=ToyConfig,
            detect_key="image_encoder.toy.weight",
            infer=lambda sd, keys: ToyConfig(
                img_size=64, out_chans=sd["image_encoder.toy.weight"].shape[0]
            ),
            input_spec=lambda c: InputSpec(
                c.img_size, "square", MEAN, STD, 1.0, pad="none", mask_upsample="direct"
            ),
            describe=lambda c: f"toy ({c.out_chans} channels)",
        )
    )
    yield kind
    del ENCODER_KINDS["toy_square"]


CONFIG = ModelConfig(
    ToyConfig(),
    DecoderConfig(transformer_dim=32, depth=1, num_heads=2, mlp_dim=64, iou_head_hidden_dim=32),
)


def test_a_registered_kind_runs_a_box_prompt_with_its_own_preprocessing(toy_kind):
    model = SAM.from_config(CONFIG, seeded=True)
    assert repr(model) == "SAM(custom: toy (32 channels))"
    seen = {}
    model.model.image_encoder.register_forward_pre_hook(lambda m, a: seen.update(x=a[0]))
    model.model.prompt_encoder.register_forward_pre_hook(lambda m, a: seen.update(box=a[1]))
    img = np.random.default_rng(0).integers(0, 256, (48, 80, 3), dtype=np.uint8)

    (r,) = model(img, bboxes=[[5, 6, 40, 30]], image_format="RGB")

    # square resize with antialias on 0-1 values, ImageNet statistics, no padding
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    x = F.interpolate(x, (64, 64), mode="bilinear", align_corners=False, antialias=True)
    x = (x - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    torch.testing.assert_close(seen["x"], x, rtol=0, atol=1e-6)
    # the box scaled per axis into the 64 x 64 frame
    torch.testing.assert_close(
        seen["box"], torch.tensor([[5 * 0.8, 6 * 64 / 48, 40 * 0.8, 30 * 64 / 48]])
    )
    # masks: the low-res logits resized straight to the image, thresholded at 0
    assert r.masks.shape == (1, 48, 80)
    low = torch.from_numpy(r.low_res_logits)[None]
    expected = F.interpolate(low, (48, 80), mode="bilinear", align_corners=False)[0] > 0
    assert np.array_equal(r.masks, expected.numpy())
    assert 0 < r.masks.sum() < r.masks.size  # a real mask, not a constant


def test_a_registered_kind_is_detected_from_its_weights(toy_kind):
    sam = CONFIG.build()
    assert infer_config(sam.state_dict()).encoder == CONFIG.encoder  # heads: not in weights
    assert sam.input_spec == CONFIG.input_spec and sam.input_spec.resize == "square"
    assert ModelConfig.from_dict(CONFIG.to_dict()) == CONFIG


def test_a_kind_or_detection_key_cannot_be_registered_twice(toy_kind):
    with pytest.raises(ValueError, match="already registered"):
        register_encoder_kind(toy_kind)


def test_sam2_is_a_row_of_the_table():
    """SAM 2 is the "hiera" row: detected from its trunk key (Meta's layout, video modules
    included and set aside), its own square / ImageNet-on-0-1 preprocessing, its whole-model
    config stored and read back through the generic ModelConfig.from_dict."""
    from samkit.models.input_spec import IMAGENET_MEAN, IMAGENET_STD
    from samkit.zoo.registry import detect_kind
    from samkit.zoo.sam2 import Sam2Config

    from ..conftest import TINY_TINYVIT, TINY_VIT, tiny_model
    from ..sam2_helpers import TINY, meta_checkpoint, seeded_sam2

    kind = ENCODER_KINDS["hiera"]
    assert kind.config is Sam2Config and kind.whole_model
    sd = meta_checkpoint(TINY, "2.1")
    assert detect_kind(sd) is kind
    image, note = kind.model_tensors(sd)
    assert "video-only" in note and "memory_attention" in note
    model = seeded_sam2(TINY)
    assert set(image) == set(model.state_dict())
    spec = kind.input_spec(TINY)
    assert spec == TINY.input_spec
    # the model's spec reads its float32 pixel-statistics buffers
    built = model.input_spec
    np.testing.assert_allclose(built.pixel_mean, spec.pixel_mean, rtol=1e-6)
    np.testing.assert_allclose(built.pixel_std, spec.pixel_std, rtol=1e-6)
    assert replace(built, pixel_mean=spec.pixel_mean, pixel_std=spec.pixel_std) == spec
    assert (spec.image_size, spec.resize, spec.pad, spec.mask_upsample) == (
        256,
        "square",
        "none",
        "direct",
    )
    assert (spec.pixel_mean, spec.pixel_std, spec.pixel_scale) == (
        IMAGENET_MEAN,
        IMAGENET_STD,
        1.0,
    )
    assert ModelConfig.from_dict(TINY.to_dict()) == TINY
    # v1 keys are never SAM 2's
    assert detect_kind(tiny_model(TINY_VIT).state_dict()) is ENCODER_KINDS["vit"]
    assert detect_kind(tiny_model(TINY_TINYVIT).state_dict()) is ENCODER_KINDS["tiny_vit"]
