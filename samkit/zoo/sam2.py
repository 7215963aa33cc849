"""SAM 2 / SAM 2.1 in the model zoo: architecture configs, key mapping, detection, weight files.

The ``"hiera"`` row of the registry's encoder-kind table (:data:`samkit.zoo.registry.ENCODER_KINDS`)
points here: its config is the whole model's (:class:`Sam2Config`), its preprocessing SAM 2's
(:data:`~samkit.models.input_spec.SAM2_INPUT`). A SAM 2 checkpoint is recognised by its keys
(``image_encoder.trunk.*``, ``sam_mask_decoder.*``), never by its file name. Its size comes from the trunk's width and blocks per stage; its version
from the keys only SAM 2.1 has (``no_obj_embed_spatial``, ``obj_ptr_tpos_proj.*``). The video-only
modules (memory attention, memory encoder, object pointers, ...) are recognised, counted and
reported as not used (:attr:`Sam2Split.video_keys`); any other unknown key is an error.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import CheckpointError
from ..models.hiera import Hiera
from ..models.input_spec import SAM2_INPUT, InputSpec
from ..models.prompt_encoder import PromptEncoder
from ..models.sam2 import Sam2
from ..models.sam2_decoder import Sam2MaskDecoder
from ..models.sam2_neck import FpnNeck, Sam2ImageEncoder
from ..models.transformer import TwoWayTransformer
from .download import WeightsFile
from .variant import Variant

# Keys (Meta's names) that only SAM 2's video model uses.
VIDEO_ONLY_PREFIXES = (
    "maskmem_tpos_enc",
    "no_mem_pos_enc",
    "no_obj_ptr",
    "no_obj_embed_spatial",
    "mask_downsample.",
    "memory_attention.",
    "memory_encoder.",
    "obj_ptr_proj.",
    "obj_ptr_tpos_proj.",
)
# Keys present only in SAM 2.1 files (2.0 has neither).
V21_MARKERS = ("no_obj_embed_spatial", "obj_ptr_tpos_proj.weight")
TRUNK_KEY = "image_encoder.trunk.patch_embed.proj.weight"


@dataclass(frozen=True)
class Sam2Config:
    """A SAM 2 image architecture (Hiera trunk, FPN neck, SAM 2 decoder) and its version.

    ``version`` ("2.1", "2.0" or None when the file does not show it) does not change the image
    model; it is kept for reporting and variant names.
    """

    embed_dim: int = 96
    num_heads: int = 1
    stages: tuple[int, ...] = (1, 2, 7, 2)
    global_att_blocks: tuple[int, ...] = (5, 7, 9)
    window_spec: tuple[int, ...] = (8, 4, 14, 7)
    window_pos_embed_bkg_spatial_size: tuple[int, int] = (7, 7)
    img_size: int = 1024
    d_model: int = 256
    decoder_mlp_dim: int = 2048
    version: str | None = "2.1"
    kind: str = "hiera"

    @property
    def embedding_size(self) -> int:
        return self.img_size // 16

    @property
    def input_spec(self) -> InputSpec:
        """SAM 2's pre- and post-processing at this input size."""
        return dataclasses.replace(SAM2_INPUT, image_size=self.img_size)

    @property
    def encoder(self) -> Sam2EncoderSpec:
        """The image encoder part (trunk + neck), for FLOP counts and summaries."""
        return Sam2EncoderSpec(self)

    def build_encoder(self) -> Sam2ImageEncoder:
        trunk = Hiera(
            embed_dim=self.embed_dim,
            num_heads=self.num_heads,
            stages=self.stages,
            global_att_blocks=self.global_att_blocks,
            window_spec=self.window_spec,
            window_pos_embed_bkg_spatial_size=self.window_pos_embed_bkg_spatial_size,
        )
        return Sam2ImageEncoder(trunk, FpnNeck(self.d_model, self.channel_list), 1, self.img_size)

    @property
    def channel_list(self) -> tuple[int, ...]:
        """Trunk widths per stage, coarsest first (the neck's ``backbone_channel_list``)."""
        return tuple(self.embed_dim * 2**i for i in range(len(self.stages)))[::-1]

    def build(self) -> Sam2:
        d = self.d_model
        grid = self.embedding_size
        encoder = self.build_encoder()
        prompt_encoder = PromptEncoder(d, (grid, grid), (self.img_size, self.img_size), 16)
        decoder = Sam2MaskDecoder(
            d, TwoWayTransformer(2, d, 8, self.decoder_mlp_dim, 2), num_multimask_outputs=3
        )
        return Sam2(encoder, prompt_encoder, decoder).eval()

    def to_dict(self) -> dict[str, Any]:
        return {"encoder": dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Sam2Config:
        enc = {k: tuple(v) if isinstance(v, list) else v for k, v in dict(data["encoder"]).items()}
        try:
            return cls(**enc)
        except TypeError as e:
            raise CheckpointError(f"invalid samkit SAM 2 config {dict(data)!r}: {e}") from e

    def describe(self) -> str:
        size = size_name(self)
        v = f"SAM {self.version}" if self.version else "SAM 2.x"
        arch = f"Hiera (embed {self.embed_dim}, stages {list(self.stages)})"
        return f"{v} {size} {arch}" if size else f"{v} {arch}"


@dataclass(frozen=True)
class Sam2EncoderSpec:
    """``config.encoder`` of a SAM 2 config: builds the trunk + neck only."""

    config: Sam2Config
    kind: str = "hiera"

    @property
    def img_size(self) -> int:
        return self.config.img_size

    def build(self) -> Sam2ImageEncoder:
        return self.config.build_encoder()


# The four published sizes (Meta's configs). Heads, global blocks and window sizes are not
# visible in the weights; they come from this table.
SIZES: dict[str, dict[str, Any]] = {
    "t": dict(embed_dim=96, num_heads=1, stages=(1, 2, 7, 2), global_att_blocks=(5, 7, 9)),
    "s": dict(embed_dim=96, num_heads=1, stages=(1, 2, 11, 2), global_att_blocks=(7, 10, 13)),
    "b+": dict(
        embed_dim=112,
        num_heads=2,
        stages=(2, 3, 16, 3),
        global_att_blocks=(12, 16, 20),
        window_pos_embed_bkg_spatial_size=(14, 14),
    ),
    "l": dict(
        embed_dim=144,
        num_heads=2,
        stages=(2, 6, 36, 4),
        global_att_blocks=(23, 33, 43),
        window_spec=(8, 4, 16, 8),
    ),
}
SIZE_TITLES = {"t": "tiny", "s": "small", "b+": "base+", "l": "large"}


def size_config(size: str, version: str | None = "2.1") -> Sam2Config:
    """The config of a published size (``t``, ``s``, ``b+``, ``l``)."""
    return Sam2Config(**SIZES[size], version=version)


def size_name(config: Sam2Config) -> str | None:
    """``t`` / ``s`` / ``b+`` / ``l`` when ``config`` is a published size, else None."""
    for name in SIZES:
        if dataclasses.replace(size_config(name), version=config.version) == config:
            return name
    return None


# ---------------------------------------------------------------------------------------------
# Key mapping (Meta's names <-> samkit's module names)

_TO_SAMKIT = (
    ("sam_prompt_encoder.", "prompt_encoder."),
    ("sam_mask_decoder.", "mask_decoder."),
)
_MLP_META = re.compile(r"^(mask_decoder\.transformer\.layers\.\d+\.mlp\.)layers\.([01])\.")
_MLP_SAMKIT = re.compile(r"^(mask_decoder\.transformer\.layers\.\d+\.mlp\.)lin([12])\.")


def from_meta_key(key: str) -> str:
    """Meta's SAM 2 key -> samkit's (``sam_mask_decoder.`` -> ``mask_decoder.``, MLP names)."""
    for old, new in _TO_SAMKIT:
        if key.startswith(old):
            key = new + key[len(old) :]
            break
    return _MLP_META.sub(lambda m: f"{m.group(1)}lin{int(m.group(2)) + 1}.", key)


def to_meta_key(key: str) -> str:
    """samkit's SAM 2 key -> Meta's (inverse of :func:`from_meta_key`)."""
    key = _MLP_SAMKIT.sub(lambda m: f"{m.group(1)}layers.{int(m.group(2)) - 1}.", key)
    for old, new in _TO_SAMKIT:
        if key.startswith(new):
            return old + key[len(new) :]
    return key


def is_sam2_state_dict(state_dict: Mapping[str, Any]) -> bool:
    """True for a SAM 2 / 2.1 state dict (Meta's or samkit's names)."""
    return TRUNK_KEY in state_dict


def is_video_key(key: str) -> bool:
    return key.startswith(VIDEO_ONLY_PREFIXES)


@dataclass
class Sam2Split:
    """A SAM 2 state dict split into the image model's tensors and the unused video-only ones."""

    image: dict[str, torch.Tensor]
    video_keys: list[str]
    video_elements: int
    version: str | None

    def video_summary(self) -> str:
        if not self.video_keys:
            return "no video-only modules in the file"
        groups = sorted({k.split(".")[0] for k in self.video_keys})
        return (
            f"{len(self.video_keys)} video-only tensors ({self.video_elements:,} values: "
            f"{', '.join(groups)}) recognised and not used (image model only)"
        )


def split_state_dict(state_dict: Mapping[str, torch.Tensor]) -> Sam2Split:
    """Separate the video-only keys and map the rest to samkit's names; read the version."""
    image, video, n_video = {}, [], 0
    for key, value in state_dict.items():
        if is_video_key(key):
            video.append(key)
            n_video += value.numel()
        else:
            image[from_meta_key(key)] = value
    if any(m in state_dict for m in V21_MARKERS):
        version: str | None = "2.1"
    elif any(k.startswith("memory_attention.") for k in state_dict):
        version = "2.0"  # a full video checkpoint without the 2.1-only keys
    else:
        version = None  # image-only file: 2.0 and 2.1 image models have the same keys
    return Sam2Split(image, video, n_video, version)


def _shape(sd: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in sd:
        raise CheckpointError(f"expected SAM 2 key {key!r} is missing")
    return tuple(sd[key].shape)


def infer_sam2_config(image_sd: Mapping[str, torch.Tensor], version: str | None) -> Sam2Config:
    """The published size whose trunk matches (width and blocks per stage), or an error."""
    embed_dim = _shape(image_sd, TRUNK_KEY)[0]
    rx = re.compile(r"image_encoder\.trunk\.blocks\.(\d+)\.")
    blocks = sorted({int(m.group(1)) for k in image_sd if (m := rx.match(k))})
    # A stage starts at every block that widens the channels (it has a shortcut projection).
    starts = [0] + [i for i in blocks if f"image_encoder.trunk.blocks.{i}.proj.weight" in image_sd]
    stages = tuple(b - a for a, b in zip(starts, starts[1:] + [len(blocks)]))
    for name, spec in SIZES.items():
        if spec["embed_dim"] == embed_dim and spec["stages"] == stages:
            config = size_config(name, version)
            grid = _shape(image_sd, "image_encoder.trunk.pos_embed")[2:]
            if tuple(grid) != config.window_pos_embed_bkg_spatial_size:
                break
            return config
    raise CheckpointError(
        f"a SAM 2 Hiera trunk with width {embed_dim} and blocks per stage {list(stages)} is not "
        "one of the published sizes (t: 96 [1,2,7,2], s: 96 [1,2,11,2], b+: 112 [2,3,16,3], "
        "l: 144 [2,6,36,4]); its heads and window sizes are not stored in the weights. Save "
        "custom models with samkit (the config travels in the file)."
    )


def infer_from_state_dict(
    state_dict: Mapping[str, torch.Tensor], keys: list[str] | None = None
) -> Sam2Config:
    """The config of a SAM 2 state dict as found in a file (Meta's or samkit's names, video-only
    modules included: they show the version). ``keys`` is accepted for the registry's
    ``infer(state_dict, keys)`` signature."""
    split = split_state_dict(state_dict)
    return infer_sam2_config(split.image, split.version)


def image_state_dict(
    state_dict: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], str | None]:
    """The image model's tensors of a SAM 2 state dict under samkit's names, and a note on the
    video-only tensors the file holds and the model does not use (None when there are none)."""
    split = split_state_dict(state_dict)
    return split.image, split.video_summary() if split.video_keys else None


def meta_state_dict(model: Sam2) -> dict[str, torch.Tensor]:
    """The model's tensors under Meta's key names (image keys only)."""
    return {to_meta_key(k): v for k, v in model.state_dict().items()}


# ---------------------------------------------------------------------------------------------
# Official weight files

_META_21 = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"
_META_20 = "https://dl.fbaipublicfiles.com/segment_anything_2/072824/"
_ULTRALYTICS = "https://github.com/ultralytics/assets/releases/download/v8.4.0/"
_META_SIZE_NAMES = {"t": "tiny", "s": "small", "b+": "base_plus", "l": "large"}
_ULTRA_SIZE_NAMES = {"t": "t", "s": "s", "b+": "b", "l": "l"}


#: The record of one named SAM 2 model (earlier name): a :class:`~samkit.zoo.variant.Variant`.
Sam2Weights = Variant


def _official() -> list[Variant]:
    out = []
    for version, base, meta_prefix, ultra_prefix in (
        ("2.1", _META_21, "sam2.1_hiera_", "sam2.1_"),
        ("2.0", _META_20, "sam2_hiera_", "sam2_"),
    ):
        for size in SIZES:
            meta = f"{meta_prefix}{_META_SIZE_NAMES[size]}.pt"
            ultra = f"{ultra_prefix}{_ULTRA_SIZE_NAMES[size]}.pt"
            short = "sam2.1" if version == "2.1" else "sam2"
            out.append(
                Variant(
                    f"{short}_{_ULTRA_SIZE_NAMES[size]}",
                    f"SAM {version} Hiera-{SIZE_TITLES[size]}",
                    size_config(size, version),
                    (
                        WeightsFile(meta, base + meta, None, None),
                        WeightsFile(ultra, _ULTRALYTICS + ultra, None, None),
                    ),
                    (f"{short}_hiera_{_META_SIZE_NAMES[size]}", f"{short}_{size}"),
                )
            )
    return out


#: The official SAM 2.1 and 2.0 models (Meta's file first, then Ultralytics'), all sizes.
SAM2_MODELS: tuple[Variant, ...] = tuple(_official())


def sam2_weights_for_config(config: Sam2Config) -> Variant | None:
    for w in SAM2_MODELS:
        if w.config == config:
            return w
    return None
