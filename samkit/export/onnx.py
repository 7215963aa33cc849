"""Export a SAM model as an ONNX image encoder + prompt decoder pair for onnxruntime.

``export_onnx(model, "out/")`` writes ``<name>_encoder.onnx`` (preprocessed ``1 x 3 x S x S``
image -> ``1 x C x S/16 x S/16`` embedding), ``<name>_decoder.onnx`` (Meta's decoder interface,
see :class:`~samkit.export.graphs.DecoderGraph`), optional int8 copies, and ``<name>_onnx.json``
describing the pair (variant, preprocessing, input/output names and shapes). Files are written
to a private temporary folder inside ``output_dir`` and moved into place when complete.
``export_sam2_onnx`` does the same for SAM 2 / 2.1 (three encoder outputs; the layout is
described in :mod:`samkit.export.sam2_onnx`). One path serves both families: the graphs and
their interface come from the model (:func:`interface_of`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ExportError, SamkitError
from ..models import Sam
from ..models.sam2 import Sam2
from ..zoo.registry import ModelConfig, infer_config, match_variant
from .graphs import DecoderGraph, EncoderGraph, Sam2DecoderGraph, Sam2EncoderGraph
from .metadata import write_metadata
from .spec import DECODER_OUTPUTS, INTERFACES, GraphMeta, Interface

MIN_OPSET = 14  # scaled_dot_product_attention needs opset 14
DEFAULT_OPSET = 17  # the first with LayerNormalization
QUANTIZE_CHOICES = {False: (), None: (), True: ("decoder",), "decoder": ("decoder",)}
QUANTIZE_CHOICES.update({"encoder": ("encoder",), "all": ("encoder", "decoder")})
# protobuf cannot serialize 2 GiB; larger graphs (ViT-H encoder) keep weights in a .data file
EXTERNAL_DATA_BYTES = 2**31 - 2**26
# SAM 2's pixel statistics on the 0-255 scale (what the graphs' metadata records)
IMAGENET_MEAN_255 = (123.675, 116.28, 103.53)
IMAGENET_STD_255 = (58.395, 57.12, 57.375)
# family -> (encoder graph, decoder graph)
GRAPHS = {"sam": (EncoderGraph, DecoderGraph), "sam2": (Sam2EncoderGraph, Sam2DecoderGraph)}


def max_opset() -> int:
    """The newest opset torch's ONNX exporter supports."""
    try:
        from torch.onnx._constants import ONNX_MAX_OPSET

        return int(ONNX_MAX_OPSET)
    except ImportError:  # pragma: no cover - private constant moved
        return 20


def interface_of(sam: torch.nn.Module) -> Interface:
    """The graph interface of a :class:`~samkit.models.Sam` or :class:`~samkit.models.Sam2`."""
    return INTERFACES["sam2" if isinstance(sam, Sam2) else "sam"]


def export_onnx(
    model: Any,
    output_dir: str | os.PathLike = ".",
    *,
    name: str | None = None,
    opset: int = DEFAULT_OPSET,
    mask_output: str = "all",
    quantize: bool | str | None = False,
    encoder: bool = True,
    decoder: bool = True,
    verify: bool = False,
) -> dict[str, Path]:
    """Export ``model`` (a :class:`~samkit.SAM` or a :class:`~samkit.models.Sam`) to ONNX.

    Args:
        output_dir: folder to write into (created if missing); nothing is written elsewhere.
        name: file name prefix (default: the checkpoint's stem or the variant name).
        opset: ONNX opset, ``14`` .. the exporter's newest (default 17).
        mask_output: decoder masks: ``"all"`` (4: token 0 single-mask + tokens 1-3 multimask,
            Meta's default export), ``"multi"`` (3), ``"single"`` (1, token 0) or ``"best"``
            (1, Meta's ``return_single_mask`` rule: best multimask output for one click or a
            box, token 0 for more points).
        quantize: also write int8 dynamically quantized copies: ``True``/``"decoder"``,
            ``"encoder"`` or ``"all"``.
        encoder, decoder: which graphs to export.
        verify: run the exported graphs in onnxruntime on a synthetic image and compare with
            torch; the agreement goes into the metadata JSON. fp32 graphs that disagree raise
            :class:`ExportError` (they stay in ``output_dir`` for inspection, without JSON).
    Returns:
        ``{"encoder", "decoder", "encoder_int8", "decoder_int8", "metadata", ...: Path}`` for the
        files written (``*_data`` for external weight files of graphs over 2 GiB).
    """
    sam, config, default_name = _unwrap(model)
    opset = _check_options(opset, mask_output, quantize, encoder, decoder)
    name = _check_name(name or default_name)
    parts = {"encoder": encoder, "decoder": decoder, "quantized": QUANTIZE_CHOICES[quantize]}
    return _write_pair(model, sam, config, output_dir, name, opset, mask_output, parts, verify)


def export_sam2_onnx(
    model: Any,
    output_dir: str | os.PathLike = ".",
    *,
    name: str | None = None,
    opset: int = DEFAULT_OPSET,
    mask_output: str = "all",
    encoder: bool = True,
    decoder: bool = True,
) -> dict[str, Path]:
    """Export a SAM 2 model (a :class:`~samkit.SAM` or :class:`~samkit.models.Sam2`).

    Writes ``<name>_encoder.onnx``, ``<name>_decoder.onnx`` and ``<name>_onnx.json`` into
    ``output_dir`` (staged in a private temporary folder there, moved when complete). Options
    as :func:`export_onnx`'s; ``mask_output`` is ``"all"``, ``"multi"`` or ``"single"``.
    """
    sam, config, default_name = _unwrap(model, Sam2)
    opset = _check_options(opset, mask_output, False, encoder, decoder, INTERFACES["sam2"])
    name = _check_name(name or default_name)
    parts = {"encoder": encoder, "decoder": decoder, "quantized": ()}
    return _write_pair(model, sam, config, output_dir, name, opset, mask_output, parts, False)


def _write_pair(
    model: Any,
    sam: Any,
    config: ModelConfig | None,
    output_dir: str | os.PathLike,
    name: str,
    opset: int,
    mask_output: str,
    parts: dict[str, Any],
    verify: bool,
) -> dict[str, Path]:
    """Export the graphs ``parts`` asks for (``encoder``, ``decoder``: bool; ``quantized``: the
    roles to copy as int8), then the metadata JSON; options already checked."""
    out = _prepare_dir(output_dir)
    base = base_meta(model, sam, config)
    written: dict[str, Path] = {}
    metas: dict[str, GraphMeta] = {}
    with _staging(out, sam) as tmp:
        if parts["encoder"]:
            _export_encoder(sam, tmp / "encoder.onnx", opset)
            metas["encoder"] = replace(base, role="encoder")
            written.update(_finish(tmp / "encoder.onnx", out, name, "encoder", metas["encoder"]))
        if parts["decoder"]:
            _export_decoder(sam, tmp / "decoder.onnx", opset, mask_output)
            metas["decoder"] = replace(base, role="decoder", mask_output=mask_output)
            written.update(_finish(tmp / "decoder.onnx", out, name, "decoder", metas["decoder"]))
        for role in parts["quantized"]:
            staged = tmp / f"{role}_int8.onnx"
            _quantize(written[role], staged)
            meta = replace(metas[role], quantized="int8")
            written.update(_finish(staged, out, name, f"{role}_int8", meta))
        report = None
        if verify:
            from .verify import verify_export

            report = verify_export(sam, written)
    written["metadata"] = write_metadata(
        out / f"{name}_onnx.json", written, base, config, opset, mask_output, report
    )
    return written


def weights_fingerprint(sam: torch.nn.Module) -> str:
    """sha256 (16 hex digits) of the model's state dict: same weights, same fingerprint."""
    h = hashlib.sha256()
    for key, t in sorted(sam.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        if t.dtype == torch.bfloat16:
            t = t.float()
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(memoryview(t.numpy()).cast("B"))
    return h.hexdigest()[:16]


def pixel_stats(sam: Sam) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The model's pixel mean and std (RGB, 0-255), as the shortest decimals of its float32s."""

    def values(t: torch.Tensor) -> tuple[float, ...]:
        return tuple(float(str(np.float32(v))) for v in t.flatten().tolist())

    return values(sam.pixel_mean), values(sam.pixel_std)


def base_meta(model: Any, sam: Any, config: ModelConfig | None) -> GraphMeta:
    """What every graph of an export of ``model`` (module ``sam``) records: the weights'
    fingerprint, the variant, the input side and the pixel statistics (RGB, 0-255)."""
    if isinstance(sam, Sam2):
        variant = getattr(model, "name", "sam2")
        mean, std = IMAGENET_MEAN_255, IMAGENET_STD_255
    else:
        known = match_variant(config) if config is not None else None
        variant = known.name if known else "custom"
        mean, std = pixel_stats(sam)
    return GraphMeta(
        fingerprint=weights_fingerprint(sam),
        variant=variant,
        image_size=sam.image_size,
        pixel_mean=mean,
        pixel_std=std,
    )


def _unwrap(model: Any, kind: type = Sam) -> tuple[Any, ModelConfig | None, str]:
    """(module, config or None, default file name prefix) of a SAM facade or a ``kind`` module
    (:class:`Sam`, or :class:`Sam2` for SAM 2 exports)."""
    fallback = "sam2" if kind is Sam2 else "sam"
    if isinstance(model, kind):
        if kind is Sam2:
            return model, None, fallback
        try:  # name the variant from the weights' shapes (heads are not in them: no config)
            variant = match_variant(infer_config(model.state_dict()))
        except SamkitError:
            variant = None
        if variant is None:
            return model, None, fallback
        return model, variant.config, variant.name
    sam, config = getattr(model, "model", None), getattr(model, "config", None)
    if not isinstance(sam, kind):
        what = type(model if sam is None else sam).__name__  # the wrapped module, if any
        raise ExportError(
            f"cannot export a {what}: pass a samkit.SAM or a samkit.models.{kind.__name__}"
        )
    ckpt = getattr(model, "checkpoint", None)
    stem = Path(ckpt.path).stem if ckpt is not None and getattr(ckpt, "path", None) else None
    return sam, config, stem or getattr(model, "name", fallback)


def _check_opset(opset: Any) -> int:
    top = max_opset()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= top:
        raise ExportError(f"opset must be an integer from {MIN_OPSET} to {top}, got {opset!r}")
    return opset


def _check_options(
    opset: Any,
    mask_output: Any,
    quantize: Any,
    encoder: Any,
    decoder: Any,
    interface: Interface = INTERFACES["sam"],
) -> int:
    opset = _check_opset(opset)
    modes = interface.mask_outputs
    if mask_output not in modes:
        raise ExportError(
            f"mask_output must be one of {', '.join(map(repr, modes))}, got {mask_output!r}"
        )
    try:
        parts = QUANTIZE_CHOICES[quantize]
    except (KeyError, TypeError):
        parts = None
    if parts is None:
        raise ExportError(
            f"quantize must be False, True (= 'decoder'), 'decoder', 'encoder' or 'all', got {quantize!r}"
        )
    if not (encoder or decoder):
        raise ExportError("nothing to export: encoder and decoder are both False")
    for part, wanted in (("encoder", encoder), ("decoder", decoder)):
        if part in parts and not wanted:
            raise ExportError(f"quantize={quantize!r} needs the {part}, but {part}=False")
    return opset


def _check_name(name: str) -> str:
    if not name or Path(name).name != name or name in (".", ".."):
        raise ExportError(f"name must be a plain file name prefix without folders, got {name!r}")
    return name


def _prepare_dir(output_dir: str | os.PathLike) -> Path:
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise ExportError(f"output_dir {str(out)!r} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExportError(f"cannot create output_dir {str(out)!r}: {e}") from e
    return out


@contextlib.contextmanager
def _cpu_float32(sam: torch.nn.Module) -> Iterator[None]:
    """Temporarily move ``sam`` to CPU float32 (the exported graphs are float32)."""
    p = next(sam.parameters())
    device, dtype, training = p.device, p.dtype, sam.training
    sam.to("cpu", torch.float32).eval()
    try:
        yield
    finally:
        sam.to(device, dtype).train(training)


@contextlib.contextmanager
def _staging(out: Path, sam: torch.nn.Module) -> Iterator[Path]:
    """A private temporary folder inside ``out`` (removed afterwards), with ``sam`` on CPU
    float32 and the exporter's warnings silenced meanwhile."""
    tmp = Path(tempfile.mkdtemp(prefix=".samkit-export-", dir=out))
    try:
        with _cpu_float32(sam), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer and legacy-exporter deprecation chatter
            yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _torch_export(module: torch.nn.Module, args: tuple, path: Path, opset: int, **kw: Any) -> None:
    try:
        with torch.no_grad():
            torch.onnx.export(module, args, str(path), dynamo=False, opset_version=opset, **kw)
    except Exception as e:  # the exporter raises many types; surface them as one
        raise ExportError(f"torch.onnx could not export the {path.stem}: {e}") from e


def example_decoder_inputs(
    sam: torch.nn.Module,
    points: tuple = ((10.0, 10.0), (0.0, 0.0)),
    labels: tuple = (1.0, -1.0),
    orig_im_size: bool = True,
) -> tuple[torch.Tensor, ...]:
    """The inputs a decoder graph is traced with: zero encoder outputs (``1 x C x h x w``; SAM 2
    adds ``1 x C/8 x 4h x 4w`` and ``1 x C/4 x 2h x 2w``), ``points`` ``1 x N x 2`` with
    ``labels`` ``1 x N``, an empty ``1 x 1 x 4h x 4w`` mask prompt with its flag and, with
    ``orig_im_size``, the model's input side as the image size."""
    pe = sam.prompt_encoder
    gh, gw = pe.image_embedding_size
    mh, mw = pe.mask_input_size
    c = pe.embed_dim
    features = [torch.zeros(1, c, gh, gw)]
    if isinstance(sam, Sam2):
        features += [torch.zeros(1, c // 8, 4 * gh, 4 * gw), torch.zeros(1, c // 4, 2 * gh, 2 * gw)]
    prompt = [torch.tensor([points]), torch.tensor([labels]), torch.zeros(1, 1, mh, mw)]
    prompt.append(torch.zeros(1))
    if orig_im_size:
        prompt.append(torch.tensor([float(sam.image_size), float(sam.image_size)]))
    return (*features, *prompt)


def _export_encoder(sam: torch.nn.Module, path: Path, opset: int) -> None:
    interface = interface_of(sam)
    s = sam.image_size
    _torch_export(
        GRAPHS[interface.family][0](sam).eval(),
        (torch.zeros(1, 3, s, s),),
        path,
        opset,
        input_names=[interface.encoder_input],
        output_names=list(interface.encoder_outputs),
    )


def _export_decoder(sam: torch.nn.Module, path: Path, opset: int, mask_output: str) -> None:
    interface = interface_of(sam)
    points = {1: "num_points"}
    _torch_export(
        GRAPHS[interface.family][1](sam, mask_output).eval(),
        example_decoder_inputs(sam),
        path,
        opset,
        input_names=list(interface.decoder_inputs),
        output_names=list(DECODER_OUTPUTS),
        dynamic_axes={
            "point_coords": points,
            "point_labels": points,
            "masks": {2: "image_height", 3: "image_width"},
        },
    )
    m = interface.mask_outputs[mask_output]
    mh, mw = sam.prompt_encoder.mask_input_size
    _declare_output_shapes(
        path,
        {
            "masks": [1, m, "image_height", "image_width"],
            "iou_predictions": [1, m],
            "low_res_masks": [1, m, mh, mw],
        },
    )


def _declare_output_shapes(path: Path, shapes: dict[str, list[int | str]]) -> None:
    """Replace the exporter's generated output dims (``Resizemasks_dim_0``...) by real ones."""
    import onnx

    proto = onnx.load(str(path))
    for output in proto.graph.output:
        dims = output.type.tensor_type.shape.dim
        for dim, value in zip(dims, shapes[output.name]):
            dim.Clear()
            if isinstance(value, int):
                dim.dim_value = value
            else:
                dim.dim_param = value
    onnx.save_model(proto, str(path))


def _quantize(src: Path, dst: Path) -> None:
    """int8 dynamic quantization: uint8 weights (as Meta's ONNX example), per output channel.

    Per-channel uint8 agreed best with fp32 of the variants tried on SAM's decoder (README).
    """
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as e:
        raise ExportError("quantize needs onnxruntime: pip install 'samkit[onnx]'") from e
    import logging

    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)  # quantize_dynamic logs a pre-processing hint on root
    try:
        quantize_dynamic(src, dst, weight_type=QuantType.QUInt8, per_channel=True)
    except Exception as e:
        raise ExportError(f"int8 quantization of {src.name} failed: {e}") from e
    finally:
        logger.setLevel(level)


def _finish(
    staged: Path, out: Path, name: str, key: str, meta: GraphMeta, stem: str | None = None
) -> dict[str, Path]:
    """Stamp ``meta`` into the staged graph, check it, move it (and its data) to ``out``.

    Returns ``{key: out/<stem>.onnx}`` (``stem`` defaults to ``<name>_<key>``) plus
    ``{key_data: ...}`` for external weights.
    """
    import onnx

    stem = stem or f"{name}_{key}"
    try:
        proto = onnx.load(str(staged))
    except Exception as e:
        raise ExportError(f"the exported {stem} cannot be read back: {e}") from e
    kept = [p for p in proto.metadata_props if not p.key.startswith("samkit.")]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for prop, value in meta.to_props().items():
        proto.metadata_props.add(key=prop, value=value)
    stage = staged.parent / "final"
    stage.mkdir(exist_ok=True)
    final_name, data_name = f"{stem}.onnx", f"{stem}.onnx.data"
    size = sum(len(t.raw_data) for t in proto.graph.initializer)
    external = size > EXTERNAL_DATA_BYTES
    try:
        onnx.save_model(
            proto,
            str(stage / final_name),
            save_as_external_data=external,
            all_tensors_to_one_file=True,
            location=data_name,
        )
        onnx.checker.check_model(str(stage / final_name))
    except Exception as e:
        raise ExportError(f"the exported {stem} is not a valid ONNX model: {e}") from e
    written = {}
    if external:
        os.replace(stage / data_name, out / data_name)
        written[f"{key}_data"] = out / data_name
    elif (out / data_name).exists():
        (out / data_name).unlink()  # stale weights of an earlier, larger export
    os.replace(stage / final_name, out / final_name)
    written[key] = out / final_name
    return written
