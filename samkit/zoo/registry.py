"""Named SAM variants, their architecture configs, and architecture inference from a state dict.

One place to add a model: a :class:`Variant` maps a name (``sam_b``, ``sam_l``, ``sam_h``,
``mobile_sam``, ``sam2.1_t``, ...) to a config and to the official weight files; one row of
:data:`ENCODER_KINDS` per encoder family (``vit``, ``tiny_vit``, ``hiera`` = SAM 2) says how to
detect, infer, build and preprocess it. The architecture of a checkpoint is read from its keys
and tensor shapes (:func:`infer_config`), never from its file name.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import CheckpointError
from ..models import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TinyViT, TwoWayTransformer
from ..models.input_spec import InputSpec
from .config_bounds import check_config
from .download import WeightsFile
from .sam2 import SAM2_MODELS, TRUNK_KEY, Sam2Config, image_state_dict, infer_from_state_dict
from .variant import Variant


@dataclass(frozen=True)
class ViTConfig:
    """SAM's ViT image encoder."""

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    window_size: int = 14
    patch_size: int = 16
    mlp_ratio: float = 4.0
    img_size: int = 1024
    out_chans: int = 256
    kind: str = "vit"

    def build(self) -> ImageEncoderViT:
        return ImageEncoderViT(
            img_size=self.img_size,
            patch_size=self.patch_size,
            embed_dim=self.embed_dim,
            depth=self.depth,
            num_heads=self.num_heads,
            mlp_ratio=self.mlp_ratio,
            out_chans=self.out_chans,
            window_size=self.window_size,
            global_attn_indexes=self.global_attn_indexes,
        )

    @property
    def embedding_size(self) -> int:
        return self.img_size // self.patch_size


@dataclass(frozen=True)
class TinyViTConfig:
    """TinyViT image encoder (MobileSAM)."""

    embed_dims: tuple[int, ...] = (64, 128, 160, 320)
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (2, 4, 5, 10)
    window_sizes: tuple[int, ...] = (7, 7, 14, 7)
    mlp_ratio: float = 4.0
    mbconv_expand_ratio: float = 4.0
    img_size: int = 1024
    out_chans: int = 256
    num_classes: int = 1000
    kind: str = "tiny_vit"

    def build(self) -> TinyViT:
        return TinyViT(
            img_size=self.img_size,
            embed_dims=self.embed_dims,
            depths=self.depths,
            num_heads=self.num_heads,
            window_sizes=self.window_sizes,
            mlp_ratio=self.mlp_ratio,
            mbconv_expand_ratio=self.mbconv_expand_ratio,
            out_chans=self.out_chans,
            num_classes=self.num_classes,
        )

    @property
    def embedding_size(self) -> int:
        return self.img_size // 16


@dataclass(frozen=True)
class EncoderKind:
    """One family of image encoders: a row of :data:`ENCODER_KINDS`.

    Attributes:
        name: the ``kind`` field of its config (``"vit"``, ``"tiny_vit"``, ...).
        config: the frozen config dataclass; it has ``kind``, ``img_size``, ``embedding_size``
            (grid side of the features) and ``build()`` -> the encoder module.
        detect_key: a state-dict key that only this kind has (architecture detection).
        infer: ``(state_dict, keys) -> config`` read from a state dict with Meta's key names.
        input_spec: ``config -> InputSpec``: the preprocessing this kind was trained with.
        describe: ``config -> str`` for ``repr`` and ``info``.
        build_sam: ``ModelConfig -> Sam`` for families whose model is more than SAM's
            prompt encoder and mask decoder around the encoder; None: SAM's assembly.
        whole_model: ``config`` describes the whole model, decoder included (SAM 2's
            :class:`~samkit.zoo.sam2.Sam2Config`): ``infer`` returns it, ``config.from_dict``
            reads a stored one and ``config.build()`` builds the model; no
            :class:`ModelConfig` is wrapped around it.
        model_tensors: ``state dict -> (the model's tensors, note or None)`` for families whose
            files use other key names or hold tensors the model does not use (SAM 2's video
            modules; the note says what was set aside); None: the file's tensors are the model's.
        title: the family's name in messages (default: ``name``).
    """

    name: str
    config: type
    detect_key: str
    infer: Callable[[Mapping[str, torch.Tensor], list[str]], Any]
    input_spec: Callable[[Any], InputSpec]
    describe: Callable[[Any], str]
    build_sam: Callable[[ModelConfig], Sam] | None = None
    whole_model: bool = False
    model_tensors: (
        Callable[[Mapping[str, torch.Tensor]], tuple[dict[str, torch.Tensor], str | None]] | None
    ) = None
    title: str = ""

    @property
    def label(self) -> str:
        return self.title or self.name


#: Encoder kinds by name. A new family is one :func:`register_encoder_kind` call.
ENCODER_KINDS: dict[str, EncoderKind] = {}


def register_encoder_kind(kind: EncoderKind) -> EncoderKind:
    """Add ``kind`` to :data:`ENCODER_KINDS` (its name and detection key must be new)."""
    if kind.name in ENCODER_KINDS:
        raise ValueError(f"encoder kind {kind.name!r} is already registered")
    if any(k.detect_key == kind.detect_key for k in ENCODER_KINDS.values()):
        raise ValueError(f"detection key {kind.detect_key!r} is already used")
    ENCODER_KINDS[kind.name] = kind
    return kind


def detect_kind(state_dict: Mapping[str, Any]) -> EncoderKind | None:
    """The registered kind whose detection key ``state_dict`` holds (None: no kind's)."""
    for kind in ENCODER_KINDS.values():
        if kind.detect_key in state_dict:
            return kind
    return None


def stored_kind(config_dict: Mapping[str, Any] | None) -> str | None:
    """The encoder kind a stored ``samkit_config`` record names (``"vit"`` when it names none;
    None without a usable record)."""
    encoder = config_dict.get("encoder") if isinstance(config_dict, Mapping) else None
    kind = encoder.get("kind", "vit") if isinstance(encoder, Mapping) else None
    return kind if isinstance(kind, str) else None


def encoder_kind(config: Any) -> EncoderKind:
    """The registered kind of an encoder config."""
    kind = ENCODER_KINDS.get(getattr(config, "kind", None))
    if kind is None:
        raise CheckpointError(
            f"unknown encoder kind {getattr(config, 'kind', None)!r}; registered: "
            f"{', '.join(ENCODER_KINDS)}"
        )
    return kind


@dataclass(frozen=True)
class DecoderConfig:
    """Prompt encoder and mask decoder."""

    transformer_dim: int = 256
    depth: int = 2
    num_heads: int = 8
    mlp_dim: int = 2048
    attention_downsample_rate: int = 2
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    mask_in_chans: int = 16


#: The encoder configs of the built-in kinds (any registered kind's config is accepted).
EncoderConfig = ViTConfig | TinyViTConfig


@dataclass(frozen=True)
class ModelConfig:
    """A whole SAM architecture: encoder + decoder configs."""

    encoder: EncoderConfig
    decoder: DecoderConfig = field(default_factory=DecoderConfig)

    @property
    def input_spec(self) -> InputSpec:
        """Pre- and post-processing of this model (from its encoder kind)."""
        return encoder_kind(self.encoder).input_spec(self.encoder)

    def build(self) -> Sam:
        """A freshly initialized :class:`Sam` (the config is bounds-checked first, so an absurd
        config from an untrusted file cannot allocate gigabytes)."""
        check_config(self)
        kind = encoder_kind(self.encoder)
        if kind.build_sam is not None:
            return kind.build_sam(self).eval()
        dec = self.decoder
        grid = self.encoder.embedding_size
        size = self.encoder.img_size
        return Sam(
            input_spec=kind.input_spec(self.encoder),
            image_encoder=self.encoder.build(),
            prompt_encoder=PromptEncoder(
                embed_dim=dec.transformer_dim,
                image_embedding_size=(grid, grid),
                input_image_size=(size, size),
                mask_in_chans=dec.mask_in_chans,
            ),
            mask_decoder=MaskDecoder(
                transformer_dim=dec.transformer_dim,
                transformer=TwoWayTransformer(
                    depth=dec.depth,
                    embedding_dim=dec.transformer_dim,
                    num_heads=dec.num_heads,
                    mlp_dim=dec.mlp_dim,
                    attention_downsample_rate=dec.attention_downsample_rate,
                ),
                num_multimask_outputs=dec.num_multimask_outputs,
                iou_head_depth=dec.iou_head_depth,
                iou_head_hidden_dim=dec.iou_head_hidden_dim,
            ),
        ).eval()

    def to_dict(self) -> dict[str, Any]:
        return {
            "encoder": dataclasses.asdict(self.encoder),
            "decoder": dataclasses.asdict(self.decoder),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        try:
            enc = dict(data["encoder"])
            kind = ENCODER_KINDS[enc.get("kind", "vit")]
            if kind.whole_model:
                return kind.config.from_dict(data)
            enc_cls = kind.config
            enc = {k: tuple(v) if isinstance(v, list) else v for k, v in enc.items()}
            config = cls(
                encoder=enc_cls(**enc), decoder=DecoderConfig(**dict(data.get("decoder", {})))
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            shown = repr(data)
            shown = shown if len(shown) <= 300 else shown[:300] + "..."
            raise CheckpointError(f"invalid samkit model config {shown}: {e!r}") from None
        check_config(config)
        return config

    def describe(self) -> str:
        return encoder_kind(self.encoder).describe(self.encoder)


# The demo model shipped in samkit/assets (benchmarks/train_demo.py trains it on synthetic shapes):
# a small TinyViT (convolutional early stages learn shapes from scratch much faster than a plain
# ViT of the same cost) at 256 x 256. Its input size is not visible in the weights; the file
# stores the whole config in its metadata.
DEMO_CONFIG = ModelConfig(
    TinyViTConfig(
        embed_dims=(32, 64, 96, 128),
        depths=(1, 1, 2, 1),
        num_heads=(1, 2, 3, 4),
        window_sizes=(7, 8, 8, 16),
        img_size=256,
        out_chans=128,
        num_classes=10,
    ),
    DecoderConfig(transformer_dim=128, depth=2, num_heads=8, mlp_dim=512, iou_head_hidden_dim=128),
)

_META = "https://dl.fbaipublicfiles.com/segment_anything/"
_ULTRALYTICS = "https://github.com/ultralytics/assets/releases/download/v8.4.0/"

VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant(
            "sam_b",
            "SAM ViT-B",
            ModelConfig(ViTConfig(768, 12, 12, (2, 5, 8, 11))),
            (
                WeightsFile(
                    "sam_vit_b_01ec64.pth", _META + "sam_vit_b_01ec64.pth", 375_042_383, "01ec64"
                ),
                WeightsFile("sam_b.pt", _ULTRALYTICS + "sam_b.pt", None, None),
            ),
            ("vit_b", "sam_vit_b"),
        ),
        Variant(
            "sam_l",
            "SAM ViT-L",
            ModelConfig(ViTConfig(1024, 24, 16, (5, 11, 17, 23))),
            (
                WeightsFile(
                    "sam_vit_l_0b3195.pth", _META + "sam_vit_l_0b3195.pth", 1_249_524_607, "0b3195"
                ),
                WeightsFile("sam_l.pt", _ULTRALYTICS + "sam_l.pt", None, None),
            ),
            ("vit_l", "sam_vit_l"),
        ),
        Variant(
            "sam_h",
            "SAM ViT-H",
            ModelConfig(ViTConfig(1280, 32, 16, (7, 15, 23, 31))),
            (
                WeightsFile(
                    "sam_vit_h_4b8939.pth", _META + "sam_vit_h_4b8939.pth", 2_564_550_879, "4b8939"
                ),
            ),
            ("vit_h", "sam_vit_h", "default"),
        ),
        Variant(
            "mobile_sam",
            "MobileSAM (TinyViT)",
            ModelConfig(TinyViTConfig()),
            (WeightsFile("mobile_sam.pt", _ULTRALYTICS + "mobile_sam.pt", None, None),),
            ("vit_t", "mobilesam"),
        ),
        Variant(
            "samkit_demo",
            "samkit demo (small TinyViT trained on synthetic shapes; not for real photos)",
            DEMO_CONFIG,
            (),
            ("demo",),
            packaged="samkit_demo.safetensors",
        ),
        *SAM2_MODELS,
    )
}


def get_variant(name: str) -> Variant | None:
    """The variant called ``name`` (or one of its aliases), or None."""
    key = name.lower().replace("-", "_")
    for v in VARIANTS.values():
        if key == v.name or key in v.aliases:
            return v
    return None


def variant_for_filename(filename: str) -> tuple[Variant, WeightsFile] | None:
    """The variant whose official weight file is called ``filename`` (for downloading only)."""
    for v in VARIANTS.values():
        for f in v.files:
            if f.filename == filename:
                return v, f
    # sam_h.pt is not published by Ultralytics; it holds Meta's ViT-H weights.
    if filename == "sam_h.pt":
        v = VARIANTS["sam_h"]
        return v, v.default_file
    return None


def match_variant(config: ModelConfig) -> Variant | None:
    """The named variant with exactly this architecture, if any."""
    for v in VARIANTS.values():
        if v.config == config:
            return v
    return None


# ---------------------------------------------------------------------------------------------
# Architecture inference


def _indices(keys: list[str], pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in keys if (m := rx.match(k))})


def _shape(sd: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in sd:
        raise CheckpointError(f"expected key {key!r} is missing")
    return tuple(sd[key].shape)


def _infer_vit(sd: Mapping[str, torch.Tensor], keys: list[str]) -> ViTConfig:
    p = "image_encoder."
    embed_dim, _, patch, _ = _shape(sd, p + "patch_embed.proj.weight")
    depth = len(_indices(keys, r"image_encoder\.blocks\.(\d+)\."))
    grid = _shape(sd, p + "pos_embed")[1]
    head_dim = _shape(sd, p + "blocks.0.attn.rel_pos_h")[1]
    if head_dim < 1 or embed_dim < 1 or patch < 1 or grid < 1 or embed_dim % head_dim:
        raise CheckpointError(
            f"inconsistent ViT shapes: embed dim {embed_dim}, head dim {head_dim} (from "
            f"blocks.0.attn.rel_pos_h), patch {patch}, grid {grid}"
        )
    global_idx, windows = [], set()
    for i in range(depth):
        length = _shape(sd, f"{p}blocks.{i}.attn.rel_pos_h")[0]
        if length == 2 * grid - 1:
            global_idx.append(i)
        else:
            windows.add((length + 1) // 2)
    if len(windows) > 1:
        raise CheckpointError(f"blocks use different window sizes {sorted(windows)}")
    mlp_dim = _shape(sd, p + "blocks.0.mlp.lin1.weight")[0]
    return ViTConfig(
        embed_dim=embed_dim,
        depth=depth,
        num_heads=embed_dim // head_dim,
        global_attn_indexes=tuple(global_idx),
        window_size=windows.pop() if windows else 14,
        patch_size=patch,
        mlp_ratio=mlp_dim / embed_dim,
        img_size=grid * patch,
        out_chans=_shape(sd, p + "neck.0.weight")[0],
    )


def _infer_tiny_vit(sd: Mapping[str, torch.Tensor], keys: list[str]) -> TinyViTConfig:
    p = "image_encoder."
    n_layers = len(_indices(keys, r"image_encoder\.layers\.(\d+)\."))
    dims, depths, heads, windows = [], [], [], []
    mlp_ratio = 4.0
    for i in range(n_layers):
        depths.append(len(_indices(keys, rf"image_encoder\.layers\.{i}\.blocks\.(\d+)\.")))
        if i == 0:
            hidden, dim = _shape(sd, p + "layers.0.blocks.0.conv1.c.weight")[:2]
            expand = hidden / dim
            heads.append(
                max(1, dim // 32)
            )  # unused (stage 0 is convolutional); TinyViT's head dim 32
            windows.append(7)
        else:
            dim = _shape(sd, f"{p}layers.{i}.blocks.0.attn.qkv.weight")[1]
            n_heads, n_offsets = _shape(sd, f"{p}layers.{i}.blocks.0.attn.attention_biases")
            heads.append(n_heads)
            windows.append(round(n_offsets**0.5))
            mlp_ratio = _shape(sd, f"{p}layers.{i}.blocks.0.mlp.fc1.weight")[0] / dim
        dims.append(dim)
    num_classes = _shape(sd, p + "head.weight")[0] if p + "head.weight" in sd else 0
    return TinyViTConfig(
        embed_dims=tuple(dims),
        depths=tuple(depths),
        num_heads=tuple(heads),
        window_sizes=tuple(windows),
        mlp_ratio=mlp_ratio,
        mbconv_expand_ratio=expand,
        out_chans=_shape(sd, p + "neck.0.weight")[0],
        num_classes=num_classes,
    )


def _infer_decoder(sd: Mapping[str, torch.Tensor], keys: list[str]) -> DecoderConfig:
    d = "mask_decoder."
    dim = _shape(sd, d + "iou_token.weight")[1]
    internal = _shape(sd, d + "transformer.layers.0.cross_attn_token_to_image.q_proj.weight")[0]
    return DecoderConfig(
        transformer_dim=dim,
        depth=len(_indices(keys, r"mask_decoder\.transformer\.layers\.(\d+)\.")),
        num_heads=8,  # not visible in the weights; every published SAM decoder uses 8
        mlp_dim=_shape(sd, d + "transformer.layers.0.mlp.lin1.weight")[0],
        attention_downsample_rate=dim // internal,
        num_multimask_outputs=_shape(sd, d + "mask_tokens.weight")[0] - 1,
        iou_head_depth=len(_indices(keys, r"mask_decoder\.iou_prediction_head\.layers\.(\d+)\.")),
        iou_head_hidden_dim=_shape(sd, d + "iou_prediction_head.layers.0.weight")[0],
        mask_in_chans=_shape(sd, "prompt_encoder.mask_downscaling.3.weight")[0],
    )


def infer_config(state_dict: Mapping[str, torch.Tensor]) -> ModelConfig:
    """Read the architecture from a state dict with Meta's key names (as found in the file: a
    ``whole_model`` kind's ``infer`` reads its own layout, e.g. SAM 2's with video modules).

    Raises :class:`CheckpointError` when the keys are not those of a SAM model.
    """
    keys = list(state_dict)
    kind = detect_kind(state_dict)
    if kind is None:
        sample = ", ".join(keys[:5]) or "no keys"
        expected = " or ".join(f"'{k.detect_key}' ({k.name})" for k in ENCODER_KINDS.values())
        raise CheckpointError(
            f"not a SAM state dict: expected keys like {expected}; found {len(keys)} keys "
            f"({sample}{', ...' if len(keys) > 5 else ''})"
        )
    if kind.whole_model:
        return kind.infer(state_dict, keys)
    try:
        encoder = kind.infer(state_dict, keys)
        config = ModelConfig(encoder=encoder, decoder=_infer_decoder(state_dict, keys))
    except (ZeroDivisionError, ValueError, IndexError, OverflowError) as e:
        raise CheckpointError(f"tensor shapes do not fit together as a SAM model ({e})") from None
    check_config(config)
    return config


def _sam_input(config: Any) -> InputSpec:
    """SAM v1's preprocessing at the encoder's input size."""
    return InputSpec(image_size=int(config.img_size))


register_encoder_kind(
    EncoderKind(
        name="vit",
        config=ViTConfig,
        detect_key="image_encoder.patch_embed.proj.weight",
        infer=_infer_vit,
        input_spec=_sam_input,
        describe=lambda e: (
            f"ViT (embed {e.embed_dim}, depth {e.depth}, heads {e.num_heads}, "
            f"global {list(e.global_attn_indexes)})"
        ),
    )
)
register_encoder_kind(
    EncoderKind(
        name="tiny_vit",
        config=TinyViTConfig,
        detect_key="image_encoder.patch_embed.seq.0.c.weight",
        infer=_infer_tiny_vit,
        input_spec=_sam_input,
        describe=lambda e: (
            f"TinyViT (embed {list(e.embed_dims)}, depths {list(e.depths)}, "
            f"heads {list(e.num_heads)})"
        ),
    )
)
register_encoder_kind(
    EncoderKind(
        name="hiera",
        config=Sam2Config,
        detect_key=TRUNK_KEY,
        infer=infer_from_state_dict,
        input_spec=lambda c: c.input_spec,
        describe=Sam2Config.describe,
        whole_model=True,
        model_tensors=image_state_dict,
        title="SAM 2",
    )
)
