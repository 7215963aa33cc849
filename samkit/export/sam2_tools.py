"""SAM 2 / 2.1 layouts of the labeling tools: X-AnyLabeling's ``segment_anything_2`` pair.

X-AnyLabeling's loader (``anylabeling/services/auto_labeling/__base__/sam2.py`` and
``segment_anything_2.py`` in CVHub520/X-AnyLabeling) does its own preprocessing and reads
everything by position:

- encoder: it ``cv2.resize``-s the RGB image to the encoder's **static** input ``(S, S)`` (read
  from the graph's input shape), divides by 255, applies ImageNet mean / std and reads outputs
  0, 1, 2 as ``high_res_feats_0, high_res_feats_1, image_embed``: the three-output encoder of
  :mod:`samkit.export.sam2_onnx` as is.
- decoder: seven inputs by position (``image_embed, high_res_feats_0, high_res_feats_1,
  point_coords, point_labels, mask_input, has_mask_input``; no ``orig_im_size``), points scaled
  per axis to ``S`` with **no** padding point (a box as corners labelled 2 / 3), ``mask_input``
  zeros of ``S/4 x S/4``; it takes output 0 as masks and output 1 as scores, keeps
  ``masks[argmax(scores)]`` and ``cv2.resize``-s that low-res mask to the image (threshold > 0).

:class:`Sam2ToolDecoderGraph` is that seven-input decoder: padding points are dropped and exactly
one is appended (SAM 2 always pads), and it answers **one** low-res mask chosen by SAM 2's rule
for prompt ambiguity: the best-scoring multimask output for a lone prompt (one click or a box
alone), else the single-mask output (itself SAM 2's stability fallback). Outputs ``masks``
``1 x 1 x S/4 x S/4`` unclamped logits (upsampled by the tool, as the predictor upsamples the
unclamped logits) and ``iou_predictions`` ``1 x 1``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..models.sam2 import Sam2
from ..models.sam2_decoder import select_masks
from .graphs import Sam2DecoderGraph
from .onnx import _declare_output_shapes, _torch_export, example_decoder_inputs
from .spec import SAM2_DECODER_INPUTS

XANY_SAM2_DECODER_INPUTS = SAM2_DECODER_INPUTS[:7]  # no orig_im_size
XANY_SAM2_DECODER_OUTPUTS = ("masks", "iou_predictions")


class Sam2ToolDecoderGraph(Sam2DecoderGraph):
    """Seven inputs (module docstring) -> ``masks 1 x 1 x 4h x 4w``, ``iou_predictions 1 x 1``."""

    def __init__(self, sam: Sam2) -> None:
        super().__init__(sam)

    @staticmethod
    def normalize_points(
        coords: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Drop label -1 points, append one ``(0, 0)`` / -1 point; also return whether the
        prompt is a lone one (one click, or a box's two corners and nothing else) as ``1``
        bool."""
        keep = torch.nonzero(labels[0] != -1).reshape(-1)
        coords, labels = coords[:, keep], labels[:, keep]
        clicks = ((labels == 0) | (labels == 1)).to(torch.int64).sum()
        corners = ((labels == 2) | (labels == 3)).to(torch.int64).sum()
        lone = (clicks + torch.div(corners, 2, rounding_mode="floor")) == 1
        coords = torch.cat([coords, torch.zeros(1, 1, 2, dtype=coords.dtype)], dim=1)
        labels = torch.cat([labels, torch.full((1, 1), -1.0, dtype=labels.dtype)], dim=1)
        return coords, labels, lone.reshape(1)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``inputs``: the seven of ``XANY_SAM2_DECODER_INPUTS``, in that order."""
        embed, feats_0, feats_1, point_coords, point_labels, mask_input, has_mask = inputs
        coords, labels, lone = self.normalize_points(point_coords, point_labels)
        masks, iou = self.decode(embed, (feats_0, feats_1), (coords, labels, mask_input, has_mask))
        single, single_iou = select_masks(masks, iou, multimask_output=False)
        best = torch.argmax(iou[:, 1:], dim=1)
        multi = masks[:, 1:][:, best]  # 1 x 1 x h x w (batch of one)
        multi_iou = iou[:, 1:][:, best]
        out = torch.where(lone.reshape(1, 1, 1, 1), multi, single)
        out_iou = torch.where(lone.reshape(1, 1), multi_iou, single_iou)
        return out, out_iou


def export_sam2_tool_decoder(sam: Sam2, path: Path, opset: int) -> None:
    """Export :class:`Sam2ToolDecoderGraph` (points dynamic, everything else static)."""
    args = example_decoder_inputs(sam, ((10.0, 10.0), (30.0, 40.0)), (1.0, 0.0), False)
    points = {1: "num_points"}
    _torch_export(
        Sam2ToolDecoderGraph(sam).eval(),
        args,
        path,
        opset,
        input_names=list(XANY_SAM2_DECODER_INPUTS),
        output_names=list(XANY_SAM2_DECODER_OUTPUTS),
        dynamic_axes={"point_coords": points, "point_labels": points},
    )
    mh, mw = sam.prompt_encoder.mask_input_size
    _declare_output_shapes(path, {"masks": [1, 1, mh, mw], "iou_predictions": [1, 1]})


def xanylabeling_sam2_yaml(name: str, encoder_file: str, decoder_file: str) -> str:
    """The config X-AnyLabeling's ``segment_anything_2`` loader reads (``Model.Meta``'s required
    keys; paths relative to the YAML, which its ``get_model_abs_path`` resolves)."""
    q = json.dumps
    return (
        "type: segment_anything_2\n"
        f"name: {q(name + '-samkit')}\n"
        f"display_name: {q(f'Segment Anything 2 ({name}, samkit)')}\n"
        f"encoder_model_path: {q(encoder_file)}\n"
        f"decoder_model_path: {q(decoder_file)}\n"
    )
