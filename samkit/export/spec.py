"""The exported ONNX interface: graph input/output names, mask-output modes, embedded metadata.

Torch-free (the onnxruntime predictor reads it). Each exported graph carries ``samkit.*`` entries
in its ONNX ``metadata_props``; the fingerprint of the weights it came from lets a runtime refuse
an encoder and a decoder that were not exported from the same model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

ENCODER_INPUT = "image"
ENCODER_OUTPUT = "image_embeddings"
DECODER_INPUTS = (
    "image_embeddings",
    "point_coords",
    "point_labels",
    "mask_input",
    "has_mask_input",
    "orig_im_size",
)
DECODER_OUTPUTS = ("masks", "iou_predictions", "low_res_masks")

# SAM 2 / 2.1 (the layout of X-AnyLabeling and samexporter; see samkit.export.sam2_onnx)
SAM2_ENCODER_INPUT = "image"
SAM2_ENCODER_OUTPUTS = ("high_res_feats_0", "high_res_feats_1", "image_embed")
SAM2_DECODER_INPUTS = (
    "image_embed",
    "high_res_feats_0",
    "high_res_feats_1",
    "point_coords",
    "point_labels",
    "mask_input",
    "has_mask_input",
    "orig_im_size",
)
SAM2_MASK_OUTPUTS = {"all": 4, "multi": 3, "single": 1}

# mask_output -> mask tokens the decoder computes (token 0: single-mask, tokens 1..3: multimask)
MASK_TOKENS = {
    "all": (0, 1, 2, 3),  # Meta's default export: 4 masks, serves both multimask modes
    "multi": (1, 2, 3),  # = SamPredictor.predict(multimask_output=True)
    "single": (0,),  # = SamPredictor.predict(multimask_output=False)
    "best": (0, 1, 2, 3),  # Meta's return_single_mask: one mask chosen from all four
}
MASK_OUTPUT_COUNTS = {"all": 4, "multi": 3, "single": 1, "best": 1}


@dataclass(frozen=True)
class Interface:
    """The graph interface of one model family: ``"sam"`` (SAM, MobileSAM: one embedding) or
    ``"sam2"`` (SAM 2 / 2.1: the embedding and two high-resolution feature maps)."""

    family: str
    title: str  # how errors name it
    encoder_input: str
    encoder_outputs: tuple[str, ...]  # the embedding is the one named decoder_inputs[0]
    decoder_inputs: tuple[str, ...]  # the encoder outputs first, then the prompts
    mask_outputs: Mapping[str, int]  # mask_output mode -> masks per object

    @property
    def embedding_inputs(self) -> tuple[str, ...]:
        """The decoder inputs fed from the encoder (the embedding first)."""
        return self.decoder_inputs[: len(self.encoder_outputs)]


INTERFACES = {
    "sam": Interface(
        "sam", "SAM's ONNX", ENCODER_INPUT, (ENCODER_OUTPUT,), DECODER_INPUTS, MASK_OUTPUT_COUNTS
    ),
    "sam2": Interface(
        "sam2",
        "the SAM 2",
        SAM2_ENCODER_INPUT,
        SAM2_ENCODER_OUTPUTS,
        SAM2_DECODER_INPUTS,
        SAM2_MASK_OUTPUTS,
    ),
}

# export presets: the files a labeling tool loads (samkit.export.presets)
PRESETS = ("xanylabeling", "cvat", "webdemo")

FORMAT_NAME = "samkit-onnx"
FORMAT_VERSION = 1
_PREFIX = "samkit."


@dataclass(frozen=True)
class GraphMeta:
    """The ``samkit.*`` metadata of one exported graph (all None for foreign ONNX files)."""

    role: str | None = None  # "encoder" | "decoder"
    fingerprint: str | None = None  # sha256 prefix of the weights the pair was exported from
    variant: str | None = None
    image_size: int | None = None
    mask_output: str | None = None
    quantized: str | None = None  # "int8" (dynamic quantization) or None
    pixel_mean: tuple[float, ...] | None = None
    pixel_std: tuple[float, ...] | None = None

    def to_props(self) -> dict[str, str]:
        """String key/values for ONNX ``metadata_props``."""
        out = {}
        for key, value in self.__dict__.items():
            if value is not None:
                out[_PREFIX + key] = json.dumps(value) if isinstance(value, tuple) else str(value)
        return out

    @classmethod
    def from_props(cls, props: Mapping[str, str]) -> GraphMeta:
        """Parse ``metadata_props`` (e.g. onnxruntime's ``custom_metadata_map``)."""
        values: dict = {}
        for field in cls.__dataclass_fields__:
            raw = props.get(_PREFIX + field)
            if raw is None:
                continue
            if field == "image_size":
                values[field] = int(raw)
            elif field in ("pixel_mean", "pixel_std"):
                values[field] = tuple(float(v) for v in json.loads(raw))
            else:
                values[field] = raw
        return cls(**values)
