"""CVAT's SAM interactors as nuclio serverless functions that run samkit: SAM and SAM 2.

SAM, encoder side: CVAT's function (``serverless/pytorch/facebookresearch/sam/nuclio/main.py``
in cvat-ai/cvat) receives ``{"image": <base64 of the encoded frame>}`` and answers ``{"blob":
<base64 of the float32 embedding bytes>}``; the browser plugin
(``cvat-ui/plugins/sam/src/ts/index.tsx``) reads the blob as a ``Float32Array`` of shape
``[1, 256, 64, 64]`` and runs the decoder itself. The plugin acts only for the function named
``pth-facebookresearch-sam-vit-h``, so the function written here keeps that name (it replaces
CVAT's own SAM function).

SAM 2, decoded server side: CVAT's function (``serverless/pytorch/facebookresearch/sam2/nuclio/
main.py`` and ``model_handler.py``) receives ``{"image": <base64>, "pos_points": [[x, y], ...],
"neg_points": [[x, y], ...]}`` (CVAT's lambda manager may add ``obj_bbox``), converts the image
to RGB, runs ``SAM2ImagePredictor.predict(point_coords=pos + neg, point_labels=[1]*P + [0]*N,
multimask_output=True)``, keeps the mask with the highest score and answers ``{"mask":
mask.tolist()}`` (an ``H x W`` nested list of booleans). :class:`CvatSam2Handler` answers the
same way (and takes ``obj_bbox``, ``[x1, y1, x2, y2]`` or ``[[x1, y1], [x2, y2]]``, as a box
prompt); the embedding of the last frame is kept, so clicks on one frame encode it once.

:class:`CvatEmbeddingHandler` and :class:`CvatSam2Handler` are the request logic (tested
locally; a bad request gets status 400 with ``{"error": message}``); :func:`function_files`
and :func:`sam2_function_files` give the text of ``function.yaml`` and ``main.py`` for
``nuctl deploy``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import os
import re
from typing import Any

import numpy as np

from ..errors import SamkitError

FUNCTION_NAME = "pth-facebookresearch-sam-vit-h"  # the model id CVAT's SAM plugin acts for
EMBEDDING_SHAPE = (1, 256, 64, 64)  # what the plugin reshapes the blob to
MAX_BODY_BYTES = 32 * 2**20  # CVAT's own function caps requests at 32 MiB
MAX_PIXELS = 80_000_000  # refuse images larger than this before decoding them
MAX_POINTS = 1000  # more clicks than anyone makes; bounds the prompt the decoder gets
WEIGHTS_FILE = "model.safetensors"


class _Handler:
    """``handler(body) -> (status, reply)``: :meth:`read` the request (a :class:`SamkitError`
    gives status 400 and ``{"error": message}``), then :meth:`answer` it (status 200)."""

    #: what its nuclio function's files say: the title, the description, main.py's docstring and
    #: the build image's tag
    texts: tuple[str, str, str, str]
    module = "samkit.export.cvat"  # where main.py imports the handler class from

    def __call__(self, body: Any) -> tuple[int, dict[str, Any]]:
        try:
            request = self.read(body)
        except SamkitError as e:
            return 400, {"error": str(e)}
        return 200, self.answer(request)

    def read(self, body: Any) -> Any:
        raise NotImplementedError

    def answer(self, request: Any) -> dict[str, Any]:
        raise NotImplementedError


def _load_model(weights: str | os.PathLike, device: str | None, kind: type | None = None) -> Any:
    """The model of a samkit checkpoint in eval mode (on ``device``), checked to be a ``kind``."""
    from ..zoo.checkpoints import build_sam  # imported here to keep this module light

    model = build_sam(str(weights))[0].eval()
    if kind is not None and not isinstance(model, kind):
        raise SamkitError(f"{weights} is not a SAM 2 model (the cvat SAM 2 function needs one)")
    if device:
        model.to(device)
    return model


class CvatEmbeddingHandler(_Handler):
    """``handler(body) -> (status, reply)``: the embedding of the request's image.

    ``body``: the request body (bytes, str or an already parsed dict) holding
    ``{"image": base64}``. Reply ``{"blob": base64 of float32 little-endian bytes}``
    (status 200), or ``{"error": message}`` with status 400 for a bad request.
    """

    texts = (
        "SAM interactor (encoder side) running samkit.",
        "Segment Anything image embeddings computed by samkit",
        "SAM image embeddings computed by samkit",
        "sam",
    )

    def __init__(self, weights: str | os.PathLike, device: str | None = None) -> None:
        from ..predict.sam_predictor import SamPredictor

        self.predictor = SamPredictor(_load_model(weights, device))

    def read(self, body: Any) -> np.ndarray:
        return decode_request(body)

    def answer(self, request: np.ndarray) -> dict[str, str]:
        self.predictor.set_image(request)
        embedding = self.predictor.get_image_embedding()
        return {"blob": encode_embedding(embedding.detach().to("cpu").float().numpy())}


class CvatSam2Handler(_Handler):
    """``handler(body) -> (status, reply)``: the best mask for the request's clicks.

    ``body``: bytes, str or a parsed dict (module docstring). Reply ``{"mask": H x W booleans}``
    (200) or ``{"error": message}`` (400).
    """

    texts = (
        "SAM 2 interactor running samkit (decodes server side).",
        "Segment Anything 2 interactor running samkit",
        "SAM 2 interactor decoded by samkit",
        "sam2",
    )
    module = "samkit.export.cvat_sam2"  # the path deployed functions import it from

    def __init__(self, weights: str | os.PathLike, device: str | None = None) -> None:
        from ..models.sam2 import Sam2
        from ..predict.sam2_predictor import Sam2Predictor

        self.predictor = Sam2Predictor(_load_model(weights, device, Sam2))
        self._frame: str | None = None

    def read(self, body: Any) -> tuple:
        body = parse_body(body)
        image = decode_request(body)
        return (image, *read_prompt(body, image.shape[:2]))

    def answer(self, request: tuple) -> dict[str, Any]:
        image, coords, labels, box = request
        digest = hashlib.sha1(image.tobytes()).hexdigest() + repr(image.shape)
        if digest != self._frame:
            self.predictor.set_image(image)
            self._frame = digest
        masks, scores, _ = self.predictor.predict(
            point_coords=coords, point_labels=labels, box=box, multimask_output=True
        )
        return {"mask": masks[int(np.argmax(scores))].tolist()}


def parse_body(body: Any) -> Any:
    """The request body parsed: ``bytes`` / ``str`` (at most ``MAX_BODY_BYTES``) as JSON, an
    already parsed body as it is."""
    if isinstance(body, (bytes, bytearray, str)):
        if len(body) > MAX_BODY_BYTES:
            raise SamkitError(f"request body is over {MAX_BODY_BYTES} bytes")
        try:
            body = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise SamkitError(f'request body is not JSON ({e}); send {{"image": base64}}') from e
    return body


def decode_request(body: Any) -> np.ndarray:
    """``H x W x 3`` uint8 RGB image of a ``{"image": base64}`` request body."""
    from PIL import Image, UnidentifiedImageError

    body = parse_body(body)
    if not isinstance(body, dict) or not isinstance(body.get("image"), str):
        raise SamkitError('request body must be a JSON object {"image": <base64 image bytes>}')
    if len(body["image"]) > MAX_BODY_BYTES:
        raise SamkitError(f"image is over {MAX_BODY_BYTES} bytes")
    try:
        data = base64.b64decode(body["image"], validate=True)
    except (binascii.Error, ValueError) as e:
        raise SamkitError(f'"image" is not valid base64: {e}') from e
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > MAX_PIXELS:
                raise SamkitError(
                    f"image is {im.width} x {im.height}, over the {MAX_PIXELS} pixel limit"
                )
            rgb = im.convert("RGB")  # as CVAT's function does
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise SamkitError(f'"image" is not a readable image: {e}') from e
    return np.asarray(rgb)


def encode_embedding(embedding: np.ndarray) -> str:
    """Base64 of the float32 little-endian bytes (what the plugin's ``Float32Array`` reads)."""
    return base64.b64encode(np.ascontiguousarray(embedding, dtype="<f4").tobytes()).decode()


def read_prompt(
    body: dict, image_hw: tuple[int, int]
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """``(N x 2 coords, N labels, 4 box)`` of ``pos_points`` / ``neg_points`` / ``obj_bbox``
    (each may be missing; at least one click or a box is needed)."""
    points, labels = [], []
    for key, label in (("pos_points", 1), ("neg_points", 0)):
        value = body.get(key) or []
        arr = _numbers(value, key)
        if arr.size and (arr.ndim != 2 or arr.shape[1] != 2):
            raise SamkitError(f'"{key}" must be a list of [x, y] pairs, got shape {arr.shape}')
        arr = arr.reshape(-1, 2)
        points.append(arr)
        labels += [label] * len(arr)
    coords = np.concatenate(points)
    if len(coords) > MAX_POINTS:
        raise SamkitError(f"at most {MAX_POINTS} points per request, got {len(coords)}")
    box = None
    if body.get("obj_bbox") is not None:
        box = _numbers(body["obj_bbox"], "obj_bbox").reshape(-1)
        if box.size != 4:
            raise SamkitError('"obj_bbox" must be [x1, y1, x2, y2] or [[x1, y1], [x2, y2]]')
    if not len(coords) and box is None:
        raise SamkitError('give at least one point in "pos_points" / "neg_points" or "obj_bbox"')
    if not len(coords):
        return None, None, box
    return coords, np.array(labels, np.int64), box


def _numbers(value: Any, key: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise SamkitError(f'"{key}" must hold numbers: {e}') from e
    if not np.isfinite(arr).all():
        raise SamkitError(f'"{key}" holds a value that is not a finite number')
    return arr


def function_name(name: str) -> str:
    """A nuclio function name (lowercase letters, digits, dashes) for SAM 2 model ``name``."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "model"
    return f"pth-samkit-sam2-{slug}"


MAIN_PY = '''"""CVAT serverless function (nuclio): {title}."""

import json
from pathlib import Path

from {module} import {handler}


def init_context(context):
    weights = Path(__file__).with_name("{weights}")
    context.user_data.handler = {handler}(weights)


def handler(context, event):
    status, reply = context.user_data.handler(event.body)
    return context.Response(
        body=json.dumps(reply),
        headers={{}},
        content_type="application/json",
        status_code=status,
    )
'''


def _q(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid YAML scalar


def function_files(display_name: str, requirement: str) -> dict[str, str]:
    """``{"function.yaml": text, "main.py": text}`` of the SAM (encoder side) function folder.

    ``requirement``: the pip requirement that installs samkit in the image (e.g.
    ``"samkit[onnx]==0.1.0"`` or a wheel URL).
    """
    notes = (
        f"# The name must stay {FUNCTION_NAME}: CVAT's SAM browser plugin acts only for that id.\n"
    )
    return _function_files(CvatEmbeddingHandler, FUNCTION_NAME, display_name, requirement, notes)


def sam2_function_files(name: str, display_name: str, requirement: str) -> dict[str, str]:
    """``{"function.yaml": text, "main.py": text}`` of the SAM 2 function folder (an
    ``interactor`` with at least one positive point, as CVAT's SAM 2 function declares)."""
    return _function_files(CvatSam2Handler, function_name(name), display_name, requirement)


def _function_files(
    handler: type[_Handler], name: str, display_name: str, requirement: str, notes: str = ""
) -> dict[str, str]:
    """The files of the function ``name`` that runs ``handler``; ``notes``: comment lines for
    the header. SAM's function (the plugin decodes) may start from a box; SAM 2's needs a click.
    """
    title, description, docstring, image = handler.texts
    box = handler is CvatEmbeddingHandler
    start = "    startswith_box_optional: true\n" if box else ""
    help_box = ", or draw a box" if box else ""
    yaml = f"""# CVAT serverless function: {title}
# Deploy: nuctl deploy --project-name cvat --path <this folder> --platform local
{notes}metadata:
  name: {name}
  namespace: cvat
  annotations:
    name: {_q(display_name)}
    version: 2
    type: interactor
    spec:
    min_pos_points: {0 if box else 1}
    min_neg_points: 0
{start}    help_message: "Click on the object (right click: background){help_box}"

spec:
  description: "{description}"
  runtime: "python:3.10"
  handler: main:handler
  eventTimeout: 30s
  build:
    image: cvat.samkit.{image}
    baseImage: python:3.10-slim
    directives:
      preCopy:
        - kind: RUN
          value: pip install --no-cache-dir torch --index-url https://download.pytorch.org/whl/cpu
        - kind: RUN
          value: pip install --no-cache-dir {_q(requirement)}
  triggers:
    myHttpTrigger:
      maxWorkers: 1
      kind: "http"
      workerAvailabilityTimeoutMilliseconds: 10000
      attributes:
        maxRequestBodySize: {MAX_BODY_BYTES}
  platform:
    attributes:
      restartPolicy:
        name: always
        maximumRetryCount: 3
      mountMode: volume
"""
    main = MAIN_PY.format(
        title=docstring, module=handler.module, handler=handler.__name__, weights=WEIGHTS_FILE
    )
    return {"function.yaml": yaml, "main.py": main}
