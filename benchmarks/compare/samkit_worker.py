"""samkit side of ``compare_reference.py``: runs in this interpreter, through samkit's public API.

Besides timing (``run``), it writes the seeded checkpoints both sides load (``seed``): every
tensor of the reference's state-dict template gets samkit's seeded value
(:mod:`samkit.zoo.seeded`), and optionally the prompt encoder and mask decoder of a trained fixture,
so that masks pass the IoU and stability filters as with real weights. Speaks :mod:`protocol`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # the checkout's samkit, not another installed copy
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from protocol import serve, timed  # noqa: E402

from samkit import SAM, SamAutomaticMaskGenerator  # noqa: E402
from samkit.predict import threads  # noqa: E402
from samkit.zoo.seeded import seeded_state_dict  # noqa: E402

MODELS: dict[str, dict[str, Any]] = {}
IMAGES: dict[str, np.ndarray] = {}


def _image(path: str) -> np.ndarray:
    if path not in IMAGES:
        IMAGES[path] = np.asarray(Image.open(path).convert("RGB"))
    return IMAGES[path]


def op_info(req: dict) -> dict:
    import samkit
    from samkit.cli.benchmark import machine_info

    info = machine_info(measure_peak=bool(req.get("peak", True)))
    info["samkit"] = f"{samkit.__version__} ({Path(samkit.__file__).parent})"
    try:
        from samkit import runtime

        info["runtime_policy"] = runtime.describe_policy()
    except (ImportError, AttributeError):
        pass
    return {"machine": info}


def op_seed(req: dict) -> dict:
    """Write a seeded checkpoint for the template ``req["keys"]`` (key -> [shape, dtype])."""
    template = {
        k: torch.zeros(shape, dtype=getattr(torch, dt.removeprefix("torch.")))
        for k, (shape, dt) in req["keys"].items()
    }
    sd = seeded_state_dict(template)
    fixture = req.get("decoder_fixture")
    replaced = 0
    if fixture:
        trained = torch.load(fixture, map_location="cpu", weights_only=True)
        for k, v in trained.items():
            if k in sd and tuple(sd[k].shape) == tuple(v.shape):
                sd[k] = v.float()
                replaced += 1
    path = Path(req["path"])
    torch.save({"model": sd} if req.get("wrap_model") else sd, path)
    return {"path": str(path), "tensors": len(sd), "from_fixture": replaced}


def op_load(req: dict) -> dict:
    entry: dict[str, Any] = {}

    def build() -> None:
        entry["model"] = SAM(req["checkpoint"], precision=req.get("precision", "auto"))
        entry["predictor"] = entry["model"].predictor(image_format="RGB")

    t = timed(build)
    MODELS[req["key"]] = entry
    return {"load_s": t["wall_s"], "variant": entry["model"].name}


def _run(entry: dict, task: str, req: dict):
    model, pred = entry["model"], entry["predictor"]
    rgb = _image(req["image"])
    boxes = np.asarray(req.get("boxes", []), dtype=np.float32).reshape(-1, 4)
    params = req.get("params", {})
    if task == "set_image":  # a new image each time: the embedding cache is emptied first

        def set_image():
            model.clear_cache()
            pred.set_image(rgb)

        return set_image
    if task == "box1":
        return lambda: pred(bboxes=boxes[:1])
    if task == "boxes":
        return lambda: pred(bboxes=boxes)
    if task == "everything_meta":  # Meta's class and arguments
        gen = SamAutomaticMaskGenerator(model, precision=model.precision, **params)
        return lambda: gen.generate(rgb)
    if task == "everything":  # Ultralytics-style call: model(image, points_stride=..., ...)
        bgr = np.ascontiguousarray(rgb[..., ::-1])

        def everything():
            model.clear_cache()
            model(bgr, **params)

        return everything
    raise ValueError(f"unknown task {task!r}")


def op_run(req: dict) -> dict:
    entry = MODELS[req["key"]]
    if task_needs_image(req["task"]) and not entry["predictor"].is_image_set:
        entry["predictor"].set_image(_image(req["image"]))
    fn = _run(entry, req["task"], req)
    for _ in range(int(req.get("warmup", 0))):
        fn()
    out = timed(fn)
    last = threads._state.get("last")  # the CPU policy's choice for the timed call
    out["threads"] = None if last is None else last["threads"]
    return out


def task_needs_image(task: str) -> bool:
    return task in ("box1", "boxes")


if __name__ == "__main__":
    serve({"info": op_info, "seed": op_seed, "load": op_load, "run": op_run})
