"""Label Studio's ML-backend protocol on the ``samkit serve`` app (interactive SAM prompts).

Connect it in Label Studio (Settings -> Model -> Connect model) with the server's URL. Routes:
``GET /health``, ``POST /setup`` (``{"project", "schema", ...}`` -> ``{"model_version"}``),
``POST /predict`` (``{"tasks", "label_config", "params": {"context": {"result": [...]}}}`` ->
``{"results": [prediction, ...], "model_version"}``) and ``POST /webhook`` (acknowledged).

Prompts come from the interactive ``context``: ``keypointlabels`` regions are points
(``is_positive`` false = background) and ``rectanglelabels`` regions a box, both in percent of
the image. The reply is one region per task on the first ``BrushLabels`` control (brush RLE,
Label Studio's RGBA run-length format) or, when there is none, on ``PolygonLabels`` (percent
points). Regions, their values and the RLE are built with ``label-studio-sdk``'s own types
(``LabelInterface``, ``PredictionValue``, ``converter.brush``); install it with
``pip install label-studio-sdk``.

The task image is found without downloading anything: a ``data:`` URI (base64), or a file of
the served folder whose name matches the task's URL (Label Studio's upload prefix ``abcd1234-``
and ``?d=`` local-file paths are understood).
"""

import base64
import re
import warnings
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import numpy as np

MODEL_VERSION_PREFIX = "samkit-"
_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")


def _sdk():
    try:
        from label_studio_sdk.converter.brush import mask2rle
        from label_studio_sdk.label_interface import LabelInterface
        from label_studio_sdk.label_interface.objects import PredictionValue
    except ImportError as exc:
        from ..errors import DependencyError

        raise DependencyError(
            f"the Label Studio backend needs label-studio-sdk ({exc}): pip install 'samkit[serve]'"
        ) from None
    return LabelInterface, PredictionValue, mask2rle


def parse_context(context: dict | None) -> tuple[list, list, list | None, str | None, bool]:
    """``(points, labels, box, label, has_prompt)`` in percent of the image, from ``context``."""
    points: list[list[float]] = []
    labels: list[int] = []
    box = None
    label = None
    for item in (context or {}).get("result", []) or []:
        if not isinstance(item, dict):
            continue
        kind, value = item.get("type"), item.get("value") or {}
        if kind == "keypointlabels":
            points.append([float(value["x"]), float(value["y"])])
            labels.append(0 if item.get("is_positive") is False else 1)
            label = label or (value.get("keypointlabels") or [None])[0]
        elif kind == "rectanglelabels":
            x, y = float(value["x"]), float(value["y"])
            box = [x, y, x + float(value["width"]), y + float(value["height"])]
            label = label or (value.get("rectanglelabels") or [None])[0]
    return points, labels, box, label, bool(points or box)


def find_image(state: Any, url: str, error: type) -> tuple[str, Any]:
    """``(key, loader)`` of a task's image: a data URI or a file of the served folder."""
    from .engine import read_upload

    if not isinstance(url, str) or not url:
        raise error(422, "the task has no image URL in its data")
    if url.startswith("data:"):
        head, _, payload = url.partition(",")
        if ";base64" not in head:
            raise error(422, "data: image URIs must be base64")
        if len(payload) * 3 // 4 > state.limits.max_body:
            raise error(413, "data: image over the upload cap")
        try:
            raw = base64.b64decode(payload, validate=True)
        except ValueError:
            raise error(422, "data: image URI is not valid base64") from None
        image_id = state.add_upload(read_upload(raw, state.limits.max_pixels))
        return state.resolve(image_id)
    parsed = urlparse(url)
    d = parse_qs(parsed.query).get("d")
    name = PurePosixPath(unquote(d[0] if d else parsed.path)).name
    wanted = {name, _UPLOAD_PREFIX.sub("", name)}
    hits = [i for i, rel in enumerate(state.images) if rel.name in wanted]
    if len(hits) != 1:
        why = "no file" if not hits else f"{len(hits)} files"
        raise error(
            422,
            f"{why} of the served folder match the task image {name[:80]!r}: serve the folder "
            "Label Studio's tasks come from, or send the image as a data: URI",
        )
    return state.resolve(str(hits[0]))


def add_label_studio_routes(app: Any, state: Any, error: type) -> None:
    """Add ``/health``, ``/setup``, ``/predict`` and ``/webhook`` to ``app``."""
    from fastapi import Body

    version = MODEL_VERSION_PREFIX + str(state.engine.model.name)

    @app.get("/health", tags=["label-studio"])
    def health():
        return {"status": "UP", "model_class": "samkit", "model_version": version}

    @app.post("/setup", tags=["label-studio"])
    def setup(body: dict = Body(...)):  # noqa: B008 - FastAPI's way to take a JSON object
        schema = body.get("schema") or body.get("label_config")
        if schema:
            _controls(schema, error)
        return {"model_version": version}

    @app.post("/webhook", tags=["label-studio"])
    def webhook(body: dict = Body(...)):  # noqa: B008
        return {"status": "ignored", "action": str(body.get("action", ""))[:60]}

    @app.post("/predict", tags=["label-studio"])
    def predict(body: dict = Body(...)):  # noqa: B008
        tasks = body.get("tasks")
        if not isinstance(tasks, list) or not tasks:
            raise error(422, "predict needs 'tasks': a non-empty list of Label Studio tasks")
        if len(tasks) > 64:
            raise error(413, f"{len(tasks)} tasks in one request; send at most 64")
        config = body.get("label_config") or body.get("schema")
        if not isinstance(config, str) or not config:
            raise error(422, "predict needs 'label_config' (the project's labeling config XML)")
        control, value_key, LabelInterface, PredictionValue, mask2rle = _controls(config, error)
        params = body.get("params") or {}
        context = params.get("context") if isinstance(params, dict) else None
        points_pct, labels, box_pct, label, has_prompt = parse_context(context)
        results = []
        for task in tasks:
            if not has_prompt:  # no interactive prompt: nothing to predict
                results.append(PredictionValue(result=[], score=0.0, model_version=version))
                continue
            data = task.get("data") if isinstance(task, dict) else None
            url = (data or {}).get(value_key)
            key, load = find_image(state, url, error)
            img = state.engine.rgb(key, load)
            h, w = img.shape[:2]
            pts = [[x * w / 100, y * h / 100] for x, y in points_pct] or None
            box = None
            if box_pct is not None:
                box = [box_pct[0] * w / 100, box_pct[1] * h / 100, box_pct[2] * w / 100]
                box.append(box_pct[3] * h / 100)
            out = state.engine.decode(
                key, lambda img=img: img, pts, labels or None, box, None, False
            )
            mask, score = out.masks[0], float(out.scores[0])
            name = label if label in control.labels else (control.labels or [label])[0]
            if control.tag == "BrushLabels":
                region = control.label(
                    label=name, format="rle", rle=mask2rle(mask.astype(np.uint8) * 255)
                )
            else:
                region = _polygon_region(control, name, mask, w, h)
            if region is None:
                results.append(PredictionValue(result=[], score=0.0, model_version=version))
                continue
            with warnings.catch_warnings():  # the SDK's own pydantic-2 deprecation note
                warnings.simplefilter("ignore", DeprecationWarning)
                item = region._dict()
            item.update(original_width=w, original_height=h, image_rotation=0, score=score)
            item["readonly"] = False
            results.append(PredictionValue(result=[item], score=score, model_version=version))
        return {"results": [r.model_dump() for r in results], "model_version": version}


def _controls(config: str, error: type):
    LabelInterface, PredictionValue, mask2rle = _sdk()
    try:
        li = LabelInterface(config)
    except Exception as exc:
        raise error(422, f"label_config is not a valid Label Studio config: {exc}") from None
    for tag in ("BrushLabels", "PolygonLabels"):
        found = li.get_first_tag_occurence(tag, "Image") if _has(li, tag) else None
        if found:
            control = li.get_control(found[0])
            image = li.get_object(found[1])
            return control, image.value_name, LabelInterface, PredictionValue, mask2rle
    raise error(422, "label_config has no BrushLabels or PolygonLabels control on an Image")


def _has(li: Any, tag: str) -> bool:
    return any(c.tag == tag for c in li.controls)


def _polygon_region(control: Any, label: str, mask: np.ndarray, w: int, h: int):
    from ..ops import mask_to_polygons

    polys = mask_to_polygons(mask)
    if not polys:
        return None
    import cv2

    poly = max(polys, key=lambda p: cv2.contourArea(p.astype(np.float32)))
    points = [[float(x) * 100 / w, float(y) * 100 / h] for x, y in poly]
    return control.label(label=label, points=points, closed=True)
