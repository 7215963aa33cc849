"""CVAT's SAM interactor, encoder side: a nuclio serverless function that runs samkit.

CVAT's function (``serverless/pytorch/facebookresearch/sam/nuclio/main.py`` in cvat-ai/cvat)
receives ``{"image": <base64 of the encoded frame>}`` and answers ``{"blob": <base64 of the
float32 embedding bytes>}``; the browser plugin (``cvat-ui/plugins/sam/src/ts/index.tsx``) reads
the blob as a ``Float32Array`` of shape ``[1, 256, 64, 64]`` and runs the decoder itself. The
plugin acts only for the function named ``pth-facebookresearch-sam-vit-h``, so the function
written here keeps that name (it replaces CVAT's own SAM function).

:class:`CvatEmbeddingHandler` is the request logic (tested locally); :func:`function_files`
gives the text of ``function.yaml`` and ``main.py`` for ``nuctl deploy``.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
from typing import Any

import numpy as np

from ..errors import SamkitError

FUNCTION_NAME = "pth-facebookresearch-sam-vit-h"  # the model id CVAT's SAM plugin acts for
EMBEDDING_SHAPE = (1, 256, 64, 64)  # what the plugin reshapes the blob to
MAX_BODY_BYTES = 32 * 2**20  # CVAT's own function caps requests at 32 MiB
MAX_PIXELS = 80_000_000  # refuse images larger than this before decoding them
WEIGHTS_FILE = "model.safetensors"


class CvatEmbeddingHandler:
    """``handler(body) -> (status, reply)``: the embedding of the request's image.

    ``body``: the request body (bytes, str or an already parsed dict) holding
    ``{"image": base64}``. Reply ``{"blob": base64 of float32 little-endian bytes}``
    (status 200), or ``{"error": message}`` with status 400 for a bad request.
    """

    def __init__(self, weights: str | os.PathLike, device: str | None = None) -> None:
        from ..predict.sam_predictor import SamPredictor  # imported here to keep this light
        from ..zoo.checkpoints import build_sam

        sam = build_sam(str(weights))[0].eval()
        if device:
            sam.to(device)
        self.predictor = SamPredictor(sam)

    def __call__(self, body: Any) -> tuple[int, dict[str, str]]:
        try:
            image = decode_request(body)
        except SamkitError as e:
            return 400, {"error": str(e)}
        self.predictor.set_image(image)
        embedding = self.predictor.get_image_embedding()
        return 200, {"blob": encode_embedding(embedding.detach().to("cpu").float().numpy())}


def decode_request(body: Any) -> np.ndarray:
    """``H x W x 3`` uint8 RGB image of a ``{"image": base64}`` request body."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(body, (bytes, bytearray, str)):
        if len(body) > MAX_BODY_BYTES:
            raise SamkitError(f"request body is over {MAX_BODY_BYTES} bytes")
        try:
            body = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise SamkitError(f'request body is not JSON ({e}); send {{"image": base64}}') from e
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


MAIN_PY = '''"""CVAT serverless function (nuclio): SAM image embeddings computed by samkit."""

import json
from pathlib import Path

from samkit.export.cvat import CvatEmbeddingHandler


def init_context(context):
    weights = Path(__file__).with_name("{weights}")
    context.user_data.handler = CvatEmbeddingHandler(weights)


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
    """``{"function.yaml": text, "main.py": text}`` of the nuclio function folder.

    ``requirement``: the pip requirement that installs samkit in the image (e.g.
    ``"samkit[onnx]==0.1.0"`` or a wheel URL).
    """
    yaml = f"""# CVAT serverless function: SAM interactor (encoder side) running samkit.
# Deploy: nuctl deploy --project-name cvat --path <this folder> --platform local
# The name must stay {FUNCTION_NAME}: CVAT's SAM browser plugin acts only for that id.
metadata:
  name: {FUNCTION_NAME}
  namespace: cvat
  annotations:
    name: {_q(display_name)}
    version: 2
    type: interactor
    spec:
    min_pos_points: 0
    min_neg_points: 0
    startswith_box_optional: true
    help_message: "Click on the object (right click: background), or draw a box"

spec:
  description: "Segment Anything image embeddings computed by samkit"
  runtime: "python:3.10"
  handler: main:handler
  eventTimeout: 30s
  build:
    image: cvat.samkit.sam
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
    return {"function.yaml": yaml, "main.py": MAIN_PY.format(weights=WEIGHTS_FILE)}
