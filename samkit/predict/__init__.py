"""One image: geometry and prompts, hardware (device, precision, CPU threads), the decoders.

:class:`~samkit.predict.sam_predictor.SamPredictor` is the torch-level predictor (Meta's API),
:class:`~samkit.predict.predictor.Predictor` the NumPy/Results-level one on top of it;
:func:`~samkit.predict.decode.decode_prompts` is the one prompt -> masks path both use.
Submodules are imported where used (the torch-free ones serve the onnxruntime predictor).
"""
