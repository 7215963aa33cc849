"""CVAT's SAM 2 interactor: a nuclio serverless function that decodes server side with samkit.

CVAT's own function (``serverless/pytorch/facebookresearch/sam2/nuclio/main.py`` and
``model_handler.py`` in cvat-ai/cvat) receives ``{"image": <base64 of the encoded frame>,
"pos_points": [[x, y], ...], "neg_points": [[x, y], ...]}`` (CVAT's lambda manager may add
``obj_bbox``), converts the image to RGB, runs ``SAM2ImagePredictor.predict(point_coords=pos +
neg, point_labels=[1]*P + [0]*N, multimask_output=True)``, keeps the mask with the highest
score and answers ``{"mask": mask.tolist()}`` (an ``H x W`` nested list of booleans).

:class:`CvatSam2Handler` answers the same request the same way (and takes ``obj_bbox``,
``[x1, y1, x2, y2]`` or ``[[x1, y1], [x2, y2]]``, as a box prompt); bad requests get status 400
with ``{"error": message}``. The image embedding of the last frame is kept, so clicks on the same
frame do not encode it again. :func:`function_files` gives ``function.yaml`` and ``main.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any

import numpy as np

from ..errors import SamkitError
from .cvat import MAX_BODY_BYTES, WEIGHTS_FILE, _q, decode_request

MAX_POINTS = 1000  # more clicks than anyone makes; bounds the prompt the decoder gets


class CvatSam2Handler:
    """``handler(body) -> (status, reply)``: the best mask for the request's clicks.

    ``body``: bytes, str or a parsed dict (module docstring). Reply ``{"mask": H x W booleans}``
    (200) or ``{"error": message}`` (400).
    """

    def __init__(self, weights: str | os.PathLike, device: str | None = None) -> None:
        from ..models.sam2 import Sam2
        from ..predict.sam2_predictor import Sam2Predictor
        from ..zoo.checkpoints import build_sam

        model = build_sam(str(weights))[0].eval()
        if not isinstance(model, Sam2):
            raise SamkitError(f"{weights} is not a SAM 2 model (the cvat SAM 2 function needs one)")
        if device:
            model.to(device)
        self.predictor = Sam2Predictor(model)
        self._frame: str | None = None

    def __call__(self, body: Any) -> tuple[int, dict[str, Any]]:
        try:
            if isinstance(body, (bytes, bytearray, str)):
                if len(body) > MAX_BODY_BYTES:
                    raise SamkitError(f"request body is over {MAX_BODY_BYTES} bytes")
                try:
                    body = json.loads(body)
                except (ValueError, UnicodeDecodeError) as e:
                    raise SamkitError(f"request body is not JSON ({e})") from e
            image = decode_request(body)
            coords, labels, box = read_prompt(body, image.shape[:2])
        except SamkitError as e:
            return 400, {"error": str(e)}
        digest = hashlib.sha1(image.tobytes()).hexdigest() + repr(image.shape)
        if digest != self._frame:
            self.predictor.set_image(image)
            self._frame = digest
        masks, scores, _ = self.predictor.predict(
            point_coords=coords, point_labels=labels, box=box, multimask_output=True
        )
        return 200, {"mask": masks[int(np.argmax(scores))].tolist()}


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
    """A nuclio function name (lowercase letters, digits, dashes) for model ``name``."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "model"
    return f"pth-samkit-sam2-{slug}"


MAIN_PY = '''"""CVAT serverless function (nuclio): SAM 2 interactor decoded by samkit."""

import json
from pathlib import Path

from samkit.export.cvat_sam2 import CvatSam2Handler


def init_context(context):
    weights = Path(__file__).with_name("{weights}")
    context.user_data.handler = CvatSam2Handler(weights)


def handler(context, event):
    status, reply = context.user_data.handler(event.body)
    return context.Response(
        body=json.dumps(reply),
        headers={{}},
        content_type="application/json",
        status_code=status,
    )
'''


def function_files(name: str, display_name: str, requirement: str) -> dict[str, str]:
    """``{"function.yaml": text, "main.py": text}`` of the nuclio function folder (an
    ``interactor`` with at least one positive point, as CVAT's SAM 2 function declares)."""
    yaml = f"""# CVAT serverless function: SAM 2 interactor running samkit (decodes server side).
# Deploy: nuctl deploy --project-name cvat --path <this folder> --platform local
metadata:
  name: {function_name(name)}
  namespace: cvat
  annotations:
    name: {_q(display_name)}
    version: 2
    type: interactor
    spec:
    min_pos_points: 1
    min_neg_points: 0
    help_message: "Click on the object (right click: background)"

spec:
  description: "Segment Anything 2 interactor running samkit"
  runtime: "python:3.10"
  handler: main:handler
  eventTimeout: 30s
  build:
    image: cvat.samkit.sam2
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
