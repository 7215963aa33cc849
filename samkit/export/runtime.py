"""Load an exported encoder + decoder pair into onnxruntime and check that they belong together.

Torch-free: used by :class:`~samkit.export.onnx_predictor.OnnxPredictor` (SAM and SAM 2 pairs).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ExportError
from ..predict.geometry import PIXEL_MEAN, PIXEL_STD
from .spec import DECODER_OUTPUTS, INTERFACES, GraphMeta, Interface

_MASK_OUTPUT_BY_COUNT = {4: "all", 3: "multi", 1: "single"}  # for graphs without samkit metadata
QUANTIZED_CHOICES = {
    False: (),
    True: ("decoder",),
    "decoder": ("decoder",),
    "encoder": ("encoder",),
    "all": ("encoder", "decoder"),
}


def onnxruntime() -> Any:
    """The onnxruntime module, or an :class:`ExportError` with the install hint."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ExportError(
            "running ONNX models needs onnxruntime: pip install 'samkit[onnx]' (or onnxruntime)"
        ) from e
    return ort


@dataclass
class OnnxPair:
    """Sessions of an encoder (None: decode given embeddings only) and a decoder, and what
    their graphs say: embedding ``C x h x w``, mask input ``4h x 4w``, model input side ``S``,
    ``mask_output`` mode (None: a foreign decoder, decided by its first output), pixel stats,
    and the ``interface`` of the model family they were checked against."""

    encoder: Any
    decoder: Any
    encoder_meta: GraphMeta
    decoder_meta: GraphMeta
    encoder_input: str | None
    embedding_shape: tuple[int, int, int]
    mask_input_size: tuple[int, int]
    image_size: int
    mask_output: str | None
    pixel_mean: tuple[float, ...]
    pixel_std: tuple[float, ...]
    interface: Interface = INTERFACES["sam"]

    @staticmethod
    def mode_for_count(count: int) -> str | None:
        return _MASK_OUTPUT_BY_COUNT.get(count)


def load_pair(
    encoder: str | os.PathLike | None,
    decoder: str | os.PathLike,
    providers: list[Any] | None = None,
    session_options: Any = None,
    family: str = "sam",
) -> OnnxPair:
    """Open both graphs and check them against the interface of model ``family`` (``"sam"``
    or ``"sam2"``, see :data:`~samkit.export.spec.INTERFACES`), as
    :class:`~samkit.export.onnx_predictor.OnnxPredictor` describes."""
    interface = INTERFACES[family]
    ort = onnxruntime()
    providers = providers or ["CPUExecutionProvider"]
    enc = _session(ort, encoder, providers, session_options) if encoder is not None else None
    dec = _session(ort, decoder, providers, session_options)
    enc_meta = _graph_meta(enc) if enc is not None else GraphMeta()
    dec_meta = _graph_meta(dec)

    inputs = {i.name: i for i in dec.get_inputs()}
    outputs = [o.name for o in dec.get_outputs()]
    wanted = interface.decoder_inputs
    if any(n not in inputs for n in wanted) or outputs[:3] != list(DECODER_OUTPUTS):
        raise ExportError(
            f"{decoder} does not have {interface.title} decoder interface (inputs "
            f"{', '.join(wanted)}; outputs {', '.join(DECODER_OUTPUTS)}); it has inputs "
            f"{sorted(inputs)} and outputs {outputs}"
        )
    emb, mask = inputs[interface.embedding_inputs[0]].shape, inputs["mask_input"].shape
    if not all(isinstance(d, int) for d in (*emb[1:], *mask[2:])):
        raise ExportError(f"the decoder's embedding and mask inputs need fixed sizes: {emb}")
    embedding_shape = (int(emb[1]), int(emb[2]), int(emb[3]))
    image_size = dec_meta.image_size or 16 * embedding_shape[1]
    count = dec.get_outputs()[1].shape[1]
    stats = enc_meta if enc_meta.pixel_mean else dec_meta

    if (
        enc_meta.fingerprint
        and dec_meta.fingerprint
        and enc_meta.fingerprint != dec_meta.fingerprint
    ):
        raise ExportError(
            f"the encoder ({enc_meta.variant}, weights {enc_meta.fingerprint}) and the decoder "
            f"({dec_meta.variant}, weights {dec_meta.fingerprint}) were exported from different "
            "models and do not belong together; use the pair written by one export"
        )
    encoder_input = None
    if enc is not None:
        encoder_input = _check_encoder(enc, interface, image_size, embedding_shape)
    return OnnxPair(
        encoder=enc,
        decoder=dec,
        encoder_meta=enc_meta,
        decoder_meta=dec_meta,
        encoder_input=encoder_input,
        embedding_shape=embedding_shape,
        mask_input_size=(int(mask[2]), int(mask[3])),
        image_size=image_size,
        mask_output=dec_meta.mask_output or _MASK_OUTPUT_BY_COUNT.get(count),
        pixel_mean=stats.pixel_mean or PIXEL_MEAN,
        pixel_std=stats.pixel_std or PIXEL_STD,
        interface=interface,
    )


def _check_encoder(
    enc: Any, interface: Interface, image_size: int, embedding_shape: tuple[int, int, int]
) -> str:
    """The encoder's input name, after checking that its graph fits the decoder: one
    ``1 x 3 x S x S`` input; one output (any name), or the family's named outputs."""
    enc_in, enc_out = enc.get_inputs(), enc.get_outputs()
    names, wanted = [o.name for o in enc_out], interface.encoder_outputs
    fits = len(names) == len(wanted) and (len(wanted) == 1 or sorted(names) == sorted(wanted))
    if len(enc_in) != 1 or len(enc_in[0].shape) != 4 or not fits:
        returns = "one embedding" if len(wanted) == 1 else ", ".join(wanted)
        raise ExportError(
            f"the encoder must take one 1 x 3 x S x S image and return {returns}; it has "
            f"inputs {[(i.name, i.shape) for i in enc_in]} and outputs {names}"
        )
    embedding = (
        enc_out[0] if len(wanted) == 1 else enc_out[names.index(interface.embedding_inputs[0])]
    )
    in_shape, out_shape = tuple(enc_in[0].shape[1:]), tuple(embedding.shape[1:])
    if in_shape != (3, image_size, image_size) or out_shape != embedding_shape:
        raise ExportError(
            f"the encoder (input 1 x {in_shape}, embedding 1 x {out_shape}) does not fit the "
            f"decoder (image {image_size} x {image_size}, embedding 1 x {embedding_shape}); "
            "use the encoder exported with this decoder"
        )
    return enc_in[0].name


def export_files(
    path: str | os.PathLike, quantized: bool | str = False
) -> tuple[Path | None, Path]:
    """``(encoder or None, decoder)`` paths listed by an export's ``*_onnx.json`` (or its folder).

    ``quantized``: pick the int8 files: ``True``/``"decoder"``, ``"encoder"`` or ``"all"``.
    """
    meta_path = _find_metadata(Path(path))
    try:
        files = json.loads(meta_path.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ExportError(f"{meta_path} is not a samkit ONNX metadata file: {e}") from e
    if quantized not in QUANTIZED_CHOICES:
        raise ExportError(
            f"quantized must be False, True, 'decoder', 'encoder' or 'all', got {quantized!r}"
        )
    chosen: dict[str, Path | None] = {}
    for role in ("encoder", "decoder"):
        key = f"{role}_int8" if role in QUANTIZED_CHOICES[quantized] else role
        if key in files:
            chosen[role] = meta_path.parent / files[key]
        elif key == "encoder":
            chosen[role] = None  # a decoder-only export: use set_image_embedding()
        else:
            hint = f"quantize={role!r}" if key.endswith("_int8") else f"{role}=True"
            raise ExportError(f"{meta_path.name} lists no {key} file; export with {hint}")
    return chosen["encoder"], chosen["decoder"]


def _session(ort: Any, path: str | os.PathLike, providers: list[Any], options: Any) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"ONNX file not found: {path}")
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as e:  # onnxruntime raises its own exception types
        raise ExportError(f"onnxruntime cannot load {path}: {e}") from e


def _graph_meta(session: Any) -> GraphMeta:
    return GraphMeta.from_props(session.get_modelmeta().custom_metadata_map)


def _find_metadata(path: Path) -> Path:
    if path.is_dir():
        found = sorted(path.glob("*_onnx.json"))
        if len(found) != 1:
            raise ExportError(
                f"{path} holds {len(found)} samkit ONNX metadata files (*_onnx.json); pass the "
                "one to use"
            )
        return found[0]
    if not path.is_file():
        raise ExportError(f"no such export metadata file or folder: {path}")
    return path
