"""ONNX exports laid out for the tools people label with: X-AnyLabeling, CVAT, Meta's web demo.

``export_preset(model, output_dir, preset)`` writes what the tool loads, named as it expects:

- ``xanylabeling``: ``<name>.encoder.onnx`` (raw ``H x W x 3`` float32 RGB in, input
  ``input_image``, preprocessing inside), ``<name>.decoder.onnx`` (Meta's decoder interface,
  one mask: X-AnyLabeling reads ``masks[0][0]``) and ``<name>.yaml`` (``type:
  segment_anything``; paths relative to the YAML, which X-AnyLabeling resolves).
- ``cvat``: ``<name>_cvat/nuclio/`` (``function.yaml``, ``main.py``, ``model.safetensors``: the
  encoder side as a serverless function running samkit) and ``<name>_cvat/decoder.onnx``
  (the decoder CVAT's SAM plugin loads from ``/assets/decoder.onnx``: uint8 mask cropped to its
  box, plus ``xtl, ytl, xbr, ybr``).
- ``webdemo``: ``<name>_webdemo/model/sam_onnx_quantized_example.onnx`` (int8, one mask, the
  file name Meta's demo loads), its fp32 twin, and with ``image=`` the image's embedding as
  ``<name>_webdemo/data/<stem>_embedding.npy``.

SAM 2 / 2.1 models (``samkit.export.sam2_tools``, ``samkit.export.cvat.CvatSam2Handler``):

- ``xanylabeling``: ``<name>.encoder.onnx`` (the three-output encoder, static ``1 x 3 x S x S``
  input: X-AnyLabeling preprocesses itself), ``<name>.decoder.onnx`` (seven inputs, one low-res
  mask) and ``<name>.yaml`` (``type: segment_anything_2``).
- ``cvat``: ``<name>_cvat_sam2/nuclio/`` (``function.yaml``, ``main.py``, ``model.safetensors``):
  CVAT's SAM 2 interactor, ``pos_points`` / ``neg_points`` in, a mask out, decoded by samkit.
- ``webdemo``: none (Meta's demo runs SAM 1 decoders).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ExportError
from ..models import Sam
from . import cvat
from .onnx import (
    DEFAULT_OPSET,
    _check_name,
    _check_opset,
    _finish,
    _prepare_dir,
    _quantize,
    _staging,
    _torch_export,
    _unwrap,
    base_meta,
    example_decoder_inputs,
)
from .spec import DECODER_INPUTS, DECODER_OUTPUTS, PRESETS, GraphMeta
from .tool_graphs import CvatDecoderGraph, RawImageEncoderGraph, ToolDecoderGraph

RAW_ENCODER_INPUT = "input_image"  # samexporter's --use-preprocess name, read by X-AnyLabeling
CVAT_OUTPUTS = ("masks", "iou_predictions", "low_res_masks", "xtl", "ytl", "xbr", "ybr")
# X-AnyLabeling's SAM loader (anylabeling/services/auto_labeling/sam_onnx.py), CVAT's plugin
# (cvat-ui/plugins/sam/src/ts/index.tsx) and Meta's demo (demo/src/components/helpers/
# scaleHelper.tsx) all scale prompts to a fixed 1024 long side
TOOL_INPUT_SIZE = 1024
XANY_INPUT_SIZE = TOOL_INPUT_SIZE


def export_preset(
    model: Any,
    output_dir: str | os.PathLike,
    preset: str,
    *,
    name: str | None = None,
    opset: int = DEFAULT_OPSET,
    image: Any = None,
    samkit_requirement: str | None = None,
) -> dict[str, Path]:
    """Export ``model`` for ``preset`` (``"xanylabeling"``, ``"cvat"``, ``"webdemo"``).

    Args:
        output_dir: folder to write into (created if missing); nothing is written elsewhere.
        name: file name prefix (default: the checkpoint's stem or the variant name).
        image: ``webdemo`` only: an image (path or ``H x W x 3`` uint8 RGB array) whose
            embedding is written as ``.npy`` for the demo.
        samkit_requirement: ``cvat`` only: the pip requirement the function image installs
            (default ``samkit==<this version>``).
    Returns:
        The written paths by role (see the module docstring).
    """
    preset = str(preset).lower()
    if preset not in PRESETS:
        raise ExportError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    if image is not None and preset != "webdemo":
        raise ExportError("image= is a webdemo option (the embedding .npy for Meta's demo)")
    if samkit_requirement is not None and preset != "cvat":
        raise ExportError("samkit_requirement= is a cvat option (what the function installs)")
    if type(getattr(model, "model", model)).__name__ == "Sam2":
        if preset == "webdemo":
            raise ExportError(
                "Meta's web demo runs SAM 1 decoders; export SAM 2.1 with preset='xanylabeling' "
                "or 'cvat', or with format='onnx' and no preset"
            )
        return _sam2_preset(model, output_dir, preset, name, opset, samkit_requirement)
    sam, config, default_name = _unwrap(model)
    name = _check_name(name or default_name)
    if sam.image_size != TOOL_INPUT_SIZE:
        raise ExportError(
            f"{preset} scales prompts to a {TOOL_INPUT_SIZE} long side (a constant in the tool); "
            f"this model's input size is {sam.image_size}"
        )
    opset = _check_opset(opset)
    if preset == "cvat":
        _check_cvat(sam, config)
    if image is not None:  # read before writing anything
        stem = Path(image).stem if isinstance(image, (str, os.PathLike)) else "image"
        image = (stem, _read_rgb(image))
    out = _prepare_dir(output_dir)
    base = base_meta(model, sam, config)
    with _staging(out, sam) as tmp:
        if preset == "xanylabeling":
            return _xanylabeling(sam, out, tmp, name, opset, base)
        if preset == "cvat":
            return _cvat(sam, config, out, tmp, name, opset, base, samkit_requirement)
        return _webdemo(sam, out, tmp, name, opset, base, image)


# -- graphs -------------------------------------------------------------------------------------
def export_raw_encoder(sam: Sam, path: Path, opset: int) -> None:
    """:class:`RawImageEncoderGraph`: ``input_image`` ``H x W x 3`` (dynamic) -> embedding."""
    s = sam.image_size
    _torch_export(
        RawImageEncoderGraph(sam).eval(),
        (torch.rand(s * 3 // 4, s, 3) * 255,),
        path,
        opset,
        input_names=[RAW_ENCODER_INPUT],
        output_names=["image_embeddings"],
        dynamic_axes={RAW_ENCODER_INPUT: {0: "image_height", 1: "image_width"}},
    )


def export_tool_decoder(sam: Sam, path: Path, opset: int, graph: str = "best") -> None:
    """A :class:`ToolDecoderGraph` (``graph`` = its mask_output) or, for ``"cvat"``, a
    :class:`CvatDecoderGraph`; points dynamic, masks at ``orig_im_size``."""
    points = {1: "num_points"}
    if graph == "cvat":
        module, outputs = CvatDecoderGraph(sam), CVAT_OUTPUTS
        sizes = {"masks": {2: "box_height", 3: "box_width"}}
    else:
        module, outputs = ToolDecoderGraph(sam, graph), DECODER_OUTPUTS
        sizes = {"masks": {2: "image_height", 3: "image_width"}}
    _torch_export(
        module.eval(),
        example_decoder_inputs(sam),
        path,
        opset,
        input_names=list(DECODER_INPUTS),
        output_names=list(outputs),
        dynamic_axes={"point_coords": points, "point_labels": points, **sizes},
    )


# -- presets ------------------------------------------------------------------------------------
def _xanylabeling(
    sam: Sam, out: Path, tmp: Path, name: str, opset: int, base: GraphMeta
) -> dict[str, Path]:
    written: dict[str, Path] = {}
    export_raw_encoder(sam, tmp / "encoder.onnx", opset)
    meta = replace(base, role="encoder")
    written.update(_finish(tmp / "encoder.onnx", out, name, "encoder", meta, f"{name}.encoder"))
    export_tool_decoder(sam, tmp / "decoder.onnx", opset, "best")
    meta = replace(base, role="decoder", mask_output="best")
    written.update(_finish(tmp / "decoder.onnx", out, name, "decoder", meta, f"{name}.decoder"))
    text = xanylabeling_yaml(name, written["encoder"].name, written["decoder"].name)
    written["config"] = _write_text(out / f"{name}.yaml", text)
    return written


def xanylabeling_yaml(name: str, encoder_file: str, decoder_file: str) -> str:
    """The model config X-AnyLabeling's ``segment_anything`` loader reads (``Model.Meta``'s
    required keys; ``input_size``, ``max_width``, ``max_height`` as in its shipped configs)."""
    q = json.dumps
    return (
        "type: segment_anything\n"
        f"name: {q(name + '-samkit')}\n"
        f"display_name: {q(f'Segment Anything ({name}, samkit)')}\n"
        f"encoder_model_path: {q(encoder_file)}\n"
        f"decoder_model_path: {q(decoder_file)}\n"
        f"input_size: {XANY_INPUT_SIZE}\n"
        "max_width: 1024\n"
        "max_height: 682\n"
    )


def _cvat(
    sam: Sam,
    config: Any,
    out: Path,
    tmp: Path,
    name: str,
    opset: int,
    base: GraphMeta,
    requirement: str | None,
) -> dict[str, Path]:
    from .. import __version__

    folder = out / f"{name}_cvat"
    nuclio = folder / "nuclio"
    nuclio.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    export_tool_decoder(sam, tmp / "decoder.onnx", opset, "cvat")
    meta = replace(base, role="decoder", mask_output="best")
    written.update(_finish(tmp / "decoder.onnx", folder, name, "decoder", meta, "decoder"))
    written["weights"] = _write_weights(sam, config, nuclio / cvat.WEIGHTS_FILE, tmp)
    files = cvat.function_files(
        f"Segment Anything ({name}, samkit)", requirement or f"samkit=={__version__}"
    )
    written["function"] = _write_text(nuclio / "function.yaml", files["function.yaml"])
    written["handler"] = _write_text(nuclio / "main.py", files["main.py"])
    return written


def _check_cvat(sam: Sam, config: Any) -> None:
    gh, gw = sam.prompt_encoder.image_embedding_size
    shape = (1, sam.prompt_encoder.embed_dim, gh, gw)
    if shape != cvat.EMBEDDING_SHAPE:
        raise ExportError(
            f"CVAT's SAM plugin reads embeddings of shape {list(cvat.EMBEDDING_SHAPE)}; this "
            f"model's are {list(shape)} (SAM ViT-B/L/H and MobileSAM fit)"
        )
    if config is None:
        raise ExportError("the cvat preset needs a model with a known config (a samkit.SAM)")


def _webdemo(
    sam: Sam, out: Path, tmp: Path, name: str, opset: int, base: GraphMeta, image: Any
) -> dict[str, Path]:
    folder = out / f"{name}_webdemo"
    model_dir = folder / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    export_tool_decoder(sam, tmp / "decoder.onnx", opset, "best")
    meta = replace(base, role="decoder", mask_output="best")
    written.update(
        _finish(tmp / "decoder.onnx", model_dir, name, "decoder", meta, "sam_onnx_example")
    )
    _quantize(written["decoder"], tmp / "decoder_int8.onnx")
    written.update(
        _finish(
            tmp / "decoder_int8.onnx",
            model_dir,
            name,
            "decoder_int8",
            replace(meta, quantized="int8"),
            "sam_onnx_quantized_example",
        )
    )
    if image is not None:
        stem, image = image
        written["embedding"] = save_embedding_npy(
            sam, image, folder / "data" / f"{stem}_embedding.npy"
        )
    return written


# -- SAM 2 / 2.1 ----------------------------------------------------------------------------------
def _sam2_preset(
    model: Any,
    output_dir: str | os.PathLike,
    preset: str,
    name: str | None,
    opset: int,
    requirement: str | None,
) -> dict[str, Path]:
    """The ``xanylabeling`` / ``cvat`` layouts of a SAM 2 model (module docstring)."""
    from .. import __version__
    from ..models.sam2 import Sam2
    from .onnx import _export_encoder
    from .sam2_tools import export_sam2_tool_decoder, xanylabeling_sam2_yaml

    sam, config, default_name = _unwrap(model, Sam2)
    if preset == "cvat" and config is None:
        raise ExportError("the cvat preset needs a model with a known config (a samkit.SAM)")
    name = _check_name(name or default_name)
    opset = _check_opset(opset)
    out = _prepare_dir(output_dir)
    base = base_meta(model, sam, config)
    written: dict[str, Path] = {}
    with _staging(out, sam) as tmp:
        if preset == "cvat":
            folder = out / f"{name}_cvat_sam2" / "nuclio"
            folder.mkdir(parents=True, exist_ok=True)
            written["weights"] = _write_weights(sam, config, folder / cvat.WEIGHTS_FILE, tmp)
            files = cvat.sam2_function_files(
                name,
                f"Segment Anything 2 ({name}, samkit)",
                requirement or f"samkit=={__version__}",
            )
            written["function"] = _write_text(folder / "function.yaml", files["function.yaml"])
            written["handler"] = _write_text(folder / "main.py", files["main.py"])
            return written
        _export_encoder(sam, tmp / "encoder.onnx", opset)
        meta = replace(base, role="encoder")
        written.update(_finish(tmp / "encoder.onnx", out, name, "encoder", meta, f"{name}.encoder"))
        export_sam2_tool_decoder(sam, tmp / "decoder.onnx", opset)
        meta = replace(base, role="decoder", mask_output="best")
        written.update(_finish(tmp / "decoder.onnx", out, name, "decoder", meta, f"{name}.decoder"))
    text = xanylabeling_sam2_yaml(name, written["encoder"].name, written["decoder"].name)
    written["config"] = _write_text(out / f"{name}.yaml", text)
    return written


# -- files --------------------------------------------------------------------------------------
def save_embedding_npy(model: Any, image: Any, path: str | os.PathLike) -> Path:
    """Write the image embedding (``1 x C x h x w`` float32) of ``image`` (a path or an
    ``H x W x 3`` uint8 RGB array) as a ``.npy`` file, as Meta's web demo loads it."""
    from ..predict.sam_predictor import SamPredictor

    sam = model if isinstance(model, Sam) else _unwrap(model)[0]
    predictor = SamPredictor(sam)
    predictor.set_image(_read_rgb(image))
    emb = predictor.get_image_embedding().detach().to("cpu").float().numpy()
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, emb.astype("<f4"))
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def _read_rgb(image: Any) -> np.ndarray:
    if isinstance(image, (str, os.PathLike)):
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(image) as im:
                return np.asarray(im.convert("RGB"))
        except (OSError, UnidentifiedImageError) as e:
            raise ExportError(f"image {str(image)!r} cannot be read: {e}") from e
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ExportError(
            f"image must be a path or H x W x 3 uint8 RGB, got {arr.dtype} {arr.shape}"
        )
    return arr


def _write_text(path: Path, text: str) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _write_weights(sam: Sam, config: Any, path: Path, tmp: Path) -> Path:
    """The model as safetensors with its architecture record (``SAM(path)`` loads it)."""
    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu").contiguous() for k, v in sam.state_dict().items()}
    staged = tmp / path.name
    save_file(state, str(staged), metadata={"samkit_config": json.dumps(config.to_dict())})
    os.replace(staged, path)
    return path
