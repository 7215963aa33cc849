"""``SAMPredictor``: the predictor of Ultralytics' SAM page, on samkit.

Code written for ``from ultralytics.models.sam import Predictor as SAMPredictor`` runs with
``from samkit import SAMPredictor``::

    overrides = dict(conf=0.25, task="segment", mode="predict", imgsz=1024, model="mobile_sam.pt")
    predictor = SAMPredictor(overrides=overrides)
    predictor.set_image("zidane.jpg")          # or cv2.imread(...) (BGR), or a PIL image
    results = predictor(bboxes=[439, 437, 524, 709])
    results = predictor(points=[900, 370], labels=[1])
    predictor.reset_image()
    results = predictor(source="zidane.jpg", crop_n_layers=1, points_stride=64)

Calls return a list of :class:`~samkit.results.Results` (one per image), as Ultralytics does.
``overrides`` takes Ultralytics' keys; an unknown key raises an error naming the closest ones.
"""

from __future__ import annotations

import difflib
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .errors import SamkitError
from .pipeline import ResultsList
from .predict.prompts import parse_prompts
from .results import _safe_stem

# Ultralytics' keys that mean something for SAM, with Ultralytics' defaults for SAM (conf 0.25,
# imgsz 1024 set by its SAM model; save off in Python), plus samkit's precision and cache_dir.
DEFAULTS: dict[str, Any] = {
    "model": "sam_b.pt",
    "task": "segment",
    "mode": "predict",
    "conf": 0.25,
    "iou": 0.7,
    "imgsz": 1024,
    "device": None,
    "half": False,
    "batch": 1,
    "vid_stride": 1,
    "retina_masks": True,
    "save": False,
    "save_txt": False,
    "project": None,
    "name": "predict",
    "exist_ok": False,
    "verbose": True,
    "source": None,
    "precision": None,
    "cache_dir": None,
}

# segment-everything arguments of Ultralytics' Predictor.generate, with its defaults (its
# stability_score_offset is 0.95; Meta's is 1.0)
EVERYTHING_DEFAULTS: dict[str, Any] = {
    "crop_n_layers": 0,
    "crop_overlap_ratio": 512 / 1500,
    "crop_downscale_factor": 1,
    "point_grids": None,
    "points_stride": 32,
    "points_batch_size": 64,
    "conf_thres": 0.88,
    "stability_score_thresh": 0.95,
    "stability_score_offset": 0.95,
    "crop_nms_thresh": 0.7,
}


def _closest(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def check_overrides(overrides: dict[str, Any] | None) -> dict[str, Any]:
    """Ultralytics-style ``overrides`` -> complete settings; unknown keys and values that
    samkit cannot honour raise :class:`SamkitError` naming the key."""
    args = dict(DEFAULTS)
    for key, value in (overrides or {}).items():
        if key not in DEFAULTS:
            raise SamkitError(
                f"unknown override {key!r}{_closest(key, list(DEFAULTS))}; SAMPredictor accepts "
                f"{', '.join(DEFAULTS)}"
            )
        args[key] = value
    if args["task"] != "segment":
        raise SamkitError(f"override 'task' must be 'segment' for SAM, got {args['task']!r}")
    if args["mode"] != "predict":
        raise SamkitError(
            f"override 'mode' must be 'predict' for SAMPredictor, got {args['mode']!r}"
        )
    if not args["retina_masks"]:
        raise SamkitError("override 'retina_masks': samkit always returns masks at image size")
    if not 0 <= float(args["conf"]) <= 1:
        raise SamkitError(f"override 'conf' must be in [0, 1], got {args['conf']!r}")
    return args


class SAMPredictor:
    """Ultralytics' SAM ``Predictor`` interface: ``overrides``, ``set_image``, ``__call__``,
    ``reset_image``, ``set_prompts``, ``setup_model``.

    Args:
        overrides: Ultralytics settings: ``model`` (path, official file name or variant name),
            ``conf`` (drop masks whose predicted IoU is not above it, 0.25), ``imgsz`` (must be
            the model's input size: 1024 for SAM and MobileSAM), ``device``, ``half`` (runs
            bf16: samkit has no fp16 path), ``iou`` (box NMS of segment-everything), ``save`` /
            ``save_txt`` / ``project`` / ``name`` / ``exist_ok`` (overlays and YOLO labels in
            ``runs/segment/predict``, numbered), ``verbose`` (a line per image; segment
            everything: progress and what each filter kept), ``batch``, ``vid_stride``,
            ``source``; samkit's ``precision`` and ``cache_dir``. ``task`` / ``mode`` must be
            "segment" / "predict".
        model: an already loaded :class:`samkit.SAM` to use instead of ``overrides["model"]``.
    """

    def __init__(self, cfg: Any = None, overrides: dict[str, Any] | None = None, model=None):
        if cfg is not None and not isinstance(cfg, dict):
            raise SamkitError("cfg must be a dict of settings (or pass overrides=)")
        self.args = check_overrides({**(cfg or {}), **(overrides or {})})
        self.model = model
        self.prompts: dict[str, Any] = {}
        self._predictor = None
        self._save_dir: Path | None = None
        if model is not None:
            self._check_imgsz()

    # -- model --------------------------------------------------------------------------------
    def setup_model(self, model: Any = None, verbose: bool = False) -> None:
        """Load ``model`` (a :class:`samkit.SAM`, or None for ``overrides["model"]``)."""
        from .model import SAM

        if model is None:
            precision = self.args["precision"] or ("bf16" if self.args["half"] else "auto")
            model = SAM(
                self.args["model"],
                device=self.args["device"],
                cache_dir=self.args["cache_dir"],
                precision=precision,
            )
        self.model = model
        self._predictor = None
        self._check_imgsz()
        if verbose:
            print(f"SAMPredictor: {model!r} on {model.device}", file=sys.stderr)

    def _check_imgsz(self) -> None:
        size = self.args["imgsz"]
        sizes = [size] * 2 if np.isscalar(size) else list(size)
        native = int(self.model.model.image_size)
        if [int(s) for s in sizes] != [native, native]:
            raise SamkitError(
                f"override 'imgsz'={size!r}: {self.model.name} runs at its input size {native} "
                f"(images are resized to it and padded, as in Ultralytics); use imgsz={native}"
            )

    def _model(self):
        if self.model is None:
            self.setup_model()
        return self.model

    @property
    def predictor(self):
        """The :class:`samkit.Predictor` that holds the current image."""
        if self._predictor is None:
            self._predictor = self._model().predictor()
        return self._predictor

    # -- image --------------------------------------------------------------------------------
    def set_image(self, image: Any) -> None:
        """Encode one image: a path, URL, ``H x W x 3`` NumPy array (BGR, as cv2.imread gives)
        or PIL image. Later calls without ``source`` prompt this image."""
        self.predictor.set_image(image)

    def reset_image(self) -> None:
        """Forget the current image."""
        if self._predictor is not None:
            self._predictor.reset_image()

    def set_prompts(self, prompts: dict[str, Any]) -> None:
        """Prompts (``bboxes``, ``points``, ``labels``, ``masks``) for the next call only."""
        unknown = set(prompts) - {"bboxes", "points", "labels", "masks"}
        if unknown:
            raise SamkitError(f"set_prompts: unknown prompt(s) {sorted(unknown)}")
        self.prompts = dict(prompts)

    # -- inference ----------------------------------------------------------------------------
    def __call__(
        self,
        source: Any = None,
        stream: bool = False,
        bboxes: Any = None,
        points: Any = None,
        labels: Any = None,
        masks: Any = None,
        multimask_output: bool = False,
        **kwargs: Any,
    ) -> list:
        """Segment ``source`` (or the image of :meth:`set_image` when ``source`` is None).

        Prompts as Ultralytics (pixels of the original image): ``bboxes`` ``(4,)`` / ``(N, 4)``
        XYXY, ``points`` ``(2,)`` / ``(N, 2)`` / ``(N, K, 2)`` with ``labels``, ``masks``. No
        prompt: segment everything, with ``Predictor.generate``'s arguments (``crop_n_layers``,
        ``points_stride`` = points per side, per crop, ``points_batch_size``, ``conf_thres``,
        ``stability_score_thresh``, ``stability_score_offset``, ``crop_nms_thresh``, ...).
        Returns a list of Results (an iterator with ``stream=True``).
        """
        given = {"bboxes": bboxes, "points": points, "labels": labels, "masks": masks}
        for key, value in self.prompts.items():
            given[key] = value
        self.prompts = {}
        prompts = parse_prompts(**given)  # bad prompts fail before any model work
        unknown = set(kwargs) - set(EVERYTHING_DEFAULTS)
        if unknown:
            known = list(EVERYTHING_DEFAULTS)
            key = sorted(unknown)[0]
            raise SamkitError(
                f"unknown argument {key!r}{_closest(key, known)}; SAMPredictor calls take source, "
                f"stream, bboxes, points, labels, masks, multimask_output and, without prompts, "
                f"{', '.join(known)}"
            )
        if kwargs and not prompts.empty:
            raise SamkitError(
                f"segment-everything arguments ({', '.join(sorted(kwargs))}) are only used "
                "without prompts"
            )
        source = self.args["source"] if source is None else source
        if source is None and (self._predictor is None or not self._predictor.is_image_set):
            raise SamkitError("no image: pass source=... or call set_image(...) first")
        everything = {**EVERYTHING_DEFAULTS, "iou": float(self.args["iou"]), **kwargs}
        everything = {k: v for k, v in everything.items() if k != "point_grids" or v is not None}
        if everything.get("point_grids") is not None:
            everything["points_stride"] = None
        results = self._run(source, given, prompts.empty, multimask_output, stream, everything)
        if stream:
            return results
        out = ResultsList(results)
        out.errors = getattr(results, "errors", [])
        return out

    def _run(self, source, prompts, everything_mode, multimask_output, stream, everything):
        model = self._model()
        verbose = bool(self.args["verbose"])
        if source is None:  # the image of set_image
            p = self.predictor
            if everything_mode:
                found = model(p.image_rgb, image_format="RGB", verbose=verbose, **everything)
                found[0].path = p.path
            else:
                found = [p(**prompts, multimask_output=multimask_output)]
        else:
            kw = {} if not everything_mode else {**everything, "verbose": verbose}
            found = model(
                source,
                **prompts,
                multimask_output=multimask_output,
                stream=stream,
                batch=int(self.args["batch"]),
                vid_stride=int(self.args["vid_stride"]),
                **kw,
            )
        gen = self._postprocess(found)
        if stream:
            return gen
        results = list(gen)
        return _with_errors(results, getattr(found, "errors", []))

    def _postprocess(self, found):
        conf = float(self.args["conf"])
        for i, r in enumerate(found):
            t0 = time.perf_counter()
            r = r[r.scores > conf] if len(r) else r
            if self.args["save"] or self.args["save_txt"]:
                self._save(r, i)
            if self.args["verbose"]:
                h, w = r.shape
                ms = sum(r.speed.values()) + (time.perf_counter() - t0) * 1e3
                print(
                    f"image {i + 1}: {r.path} {w}x{h} {len(r)} masks, {ms:.1f}ms", file=sys.stderr
                )
            yield r

    def _save(self, r, i: int) -> None:
        from .data.run_dirs import increment_dir

        if self._save_dir is None:
            project = Path(self.args["project"] or "runs/segment")
            self._save_dir = increment_dir(project, str(self.args["name"]), self.args["exist_ok"])
        stem = _safe_stem(str(r.path)) if r.path else f"image{i}"
        if r.frame is not None:
            stem = f"{stem}_{r.frame}"
        if self.args["save"]:
            r.save(self._save_dir / f"{stem}.jpg")
        if self.args["save_txt"]:
            labels = self._save_dir / "labels"
            labels.mkdir(parents=True, exist_ok=True)
            (labels / f"{stem}.txt").write_text(r.to_yolo(0))


def _with_errors(results: list, errors: list) -> list:
    out = ResultsList(results)
    out.errors = list(errors)
    return out
