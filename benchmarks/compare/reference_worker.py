"""Reference side of ``compare_reference.py``: runs in the reference interpreter (no samkit).

Meta's ``segment_anything`` (``meta``), Meta's ``sam2`` (``sam2``) and Ultralytics (``ul``)
models are built from checkpoints the orchestrator wrote (samkit's seeded weights), then timed
one call per request. Speaks :mod:`protocol` on stdin/stdout. Started as::

    REF/bin/python benchmarks/compare/reference_worker.py
"""

from __future__ import annotations

import os

os.environ.setdefault("YOLO_OFFLINE", "1")  # never reach for the network (Ultralytics)
os.environ.setdefault("YOLO_VERBOSE", "False")

import importlib.util  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from protocol import serve, timed  # noqa: E402

MODELS: dict[str, dict[str, Any]] = {}  # key -> {"family", "model", "predictor", ...}
IMAGES: dict[str, np.ndarray] = {}  # path -> RGB uint8
META_NAMES = {"sam_b": "vit_b", "sam_l": "vit_l", "sam_h": "vit_h"}
SAM2_CONFIGS = {  # samkit variant -> Meta sam2 config name
    "sam2.1_t": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "sam2.1_s": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1_b+": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "sam2.1_l": "configs/sam2.1/sam2.1_hiera_l.yaml",
}


def _image(path: str) -> np.ndarray:
    if path not in IMAGES:
        IMAGES[path] = np.asarray(Image.open(path).convert("RGB"))
    return IMAGES[path]


def op_info(req: dict) -> dict:
    found = {m: importlib.util.find_spec(m) is not None for m in ("segment_anything", "sam2")}
    info: dict[str, Any] = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    info.update(found)
    if importlib.util.find_spec("ultralytics"):
        import ultralytics

        info["ultralytics"] = ultralytics.__version__
        info["assets"] = str(Path(ultralytics.__file__).parent / "assets")
    return info


def _build(family: str, name: str, checkpoint: str | None):
    if family == "meta":
        from segment_anything import sam_model_registry

        return sam_model_registry[META_NAMES[name]](checkpoint=checkpoint)
    if family == "ul":
        from ultralytics.models.sam import build

        builders = {"sam_b": build.build_sam_vit_b, "mobile_sam": build.build_mobile_sam}
        return builders[name](checkpoint)
    if family == "sam2":
        from sam2.build_sam import build_sam2

        return build_sam2(SAM2_CONFIGS[name], checkpoint, device="cpu", mode="eval")
    raise ValueError(f"unknown family {family!r}")


def op_template(req: dict) -> dict:
    """Key -> shape of a freshly built model's state dict (what a checkpoint must hold)."""
    sd = _build(req["family"], req["name"], None).state_dict()
    return {"keys": {k: [list(v.shape), str(v.dtype)] for k, v in sd.items()}}


def op_load(req: dict) -> dict:
    """Build ``req["name"]`` of ``req["family"]`` from ``req["checkpoint"]`` as ``req["key"]``."""
    family, name, ckpt = req["family"], req.get("name"), req.get("checkpoint")
    entry: dict[str, Any] = {"family": family}

    def build() -> None:
        if family == "meta":
            from segment_anything import SamPredictor

            entry["model"] = _build(family, name, ckpt).eval()
            entry["predictor"] = SamPredictor(entry["model"])
        elif family == "sam2":
            from sam2.sam2_image_predictor import SAM2ImagePredictor

            entry["model"] = _build(family, name, ckpt)
            entry["predictor"] = SAM2ImagePredictor(entry["model"])
        elif family == "ul":
            from ultralytics import SAM
            from ultralytics.models.sam import Predictor

            entry["model"] = SAM(ckpt)
            over = dict(conf=0.25, task="segment", mode="predict", imgsz=1024, model=ckpt)
            entry["predictor"] = Predictor(overrides={**over, "save": False, "verbose": False})
        elif family == "ul_yolo":
            from ultralytics import YOLO

            entry["model"] = YOLO(req["yaml"])  # random weights, built from the yaml
        elif family == "ul_fastsam":
            # FastSAM-s is YOLOv8s-seg with one class; FastSAM only loads .pt files, so the
            # randomly initialised model is saved first.
            from ultralytics import YOLO, FastSAM

            yolo = YOLO(req["yaml"])
            path = Path(req["workdir"]) / "FastSAM-s.pt"
            yolo.save(str(path))
            entry["model"] = FastSAM(str(path))
        else:
            raise ValueError(f"unknown family {family!r}")

    t = timed(build)
    MODELS[req["key"]] = entry
    return {"load_s": t["wall_s"]}


def _run(entry: dict, task: str, req: dict):
    """A zero-argument callable doing one ``task`` call on model ``entry``."""
    family = entry["family"]
    pred = entry.get("predictor")
    rgb = _image(req["image"]) if "image" in req else None
    boxes = np.asarray(req.get("boxes", []), dtype=np.float32).reshape(-1, 4)
    if family in ("meta", "sam2"):
        if task == "set_image":
            return lambda: pred.set_image(rgb)
        if task == "box1":
            return lambda: pred.predict(box=boxes[0], multimask_output=False)
        if task == "boxes" and family == "meta":

            def many():
                t = pred.transform.apply_boxes_torch(torch.as_tensor(boxes), pred.original_size)
                with torch.inference_mode():
                    pred.predict_torch(None, None, t, multimask_output=False)

            return many
        if task == "boxes":
            return lambda: pred.predict(box=boxes, multimask_output=False)
        if task == "everything":
            if family == "meta":
                from segment_anything import SamAutomaticMaskGenerator as Gen
            else:
                from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator as Gen
            gen = Gen(entry["model"], **req.get("params", {}))
            return lambda: gen.generate(rgb)
    if family == "ul":
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        if task == "set_image":
            return lambda: (pred.reset_image(), pred.set_image(bgr))
        if task == "box1":
            return lambda: pred(bboxes=boxes[:1].tolist())
        if task == "boxes":
            return lambda: pred(bboxes=boxes.tolist())
        if task == "everything":
            params = req.get("params", {})
            if not params:  # model(image): the call of Ultralytics' comparison table
                return lambda: entry["model"](bgr, verbose=False)
            # SAMPredictor(...)(source, points_stride=..., crop_n_layers=...): the page's way to
            # pass generator arguments (model(...) rejects them); a fresh encode each call
            return lambda: (pred.reset_image(), pred(source=bgr, **params))
    if family in ("ul_yolo", "ul_fastsam") and task == "everything":
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        return lambda: entry["model"](bgr, verbose=False, **req.get("params", {}))
    raise ValueError(f"task {task!r} is not defined for family {family!r}")


#: torch's thread count at start-up. Ultralytics' ``select_device`` sets the whole process to
#: ``cpu_count - 1`` threads (1 on 2 cores) when it builds a model; Meta's models get this back.
START_THREADS = torch.get_num_threads()


def _image_is_set(entry: dict) -> bool:
    pred = entry.get("predictor")
    if entry["family"] == "ul":
        return getattr(pred, "features", None) is not None
    return bool(getattr(pred, "is_image_set", getattr(pred, "_is_image_set", False)))


def op_run(req: dict) -> dict:
    """Time ``req["task"]`` on model ``req["key"]``: ``warmup`` untimed calls, then one timed.

    Meta's models (``segment_anything``, ``sam2``) run with torch's default thread count;
    Ultralytics' with the count it sets itself, as its users get them."""
    entry = MODELS[req["key"]]
    if entry.get("family") in ("meta", "sam2"):
        torch.set_num_threads(START_THREADS)
    fn = _run(entry, req["task"], req)
    if req["task"] in ("box1", "boxes") and not _image_is_set(entry):
        # a row run on its own (``--only box1_b``): encode the image first, untimed
        _run(entry, "set_image", req)()
    with torch.inference_mode():
        for _ in range(int(req.get("warmup", 0))):
            fn()
        return timed(fn)


def op_threads(req: dict) -> dict:
    if req.get("threads"):
        torch.set_num_threads(int(req["threads"]))
    return {"threads": torch.get_num_threads()}


if __name__ == "__main__":
    serve(
        {
            "info": op_info,
            "template": op_template,
            "load": op_load,
            "run": op_run,
            "threads": op_threads,
        }
    )
