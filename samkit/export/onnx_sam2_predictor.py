"""SAM 2 / 2.1 on onnxruntime alone: :class:`~samkit.export.onnx_predictor.Sam2OnnxPredictor`.

>>> predictor = Sam2OnnxPredictor.from_export("sam2_onnx")   # folder written by model.export()
>>> predictor.set_image("photo.jpg")                         # path, URL, NumPy (BGR) or PIL
>>> r = predictor(bboxes=[[100, 80, 400, 300]])              # Results
>>> masks, scores, logits = predictor.predict(box=np.array([100, 80, 400, 300]))

One torch-free predictor serves SAM and SAM 2 (:mod:`samkit.export.onnx_predictor`); this module
keeps the SAM 2 names where they were.
"""

from __future__ import annotations

from .onnx_predictor import IMAGENET_MEAN, IMAGENET_STD, Sam2OnnxPredictor

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Sam2OnnxPredictor"]
