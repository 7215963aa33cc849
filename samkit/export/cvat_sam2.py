"""CVAT's SAM 2 interactor (decoded server side): the names of :mod:`samkit.export.cvat`.

One implementation serves SAM and SAM 2 (request decoding, the function folder's files); this
module keeps the SAM 2 names where they were (the ``main.py`` of deployed functions imports
``CvatSam2Handler`` from here).
"""

from __future__ import annotations

from .cvat import (
    MAX_POINTS,
    CvatSam2Handler,
    function_name,
    read_prompt,
)
from .cvat import sam2_function_files as function_files

__all__ = ["MAX_POINTS", "CvatSam2Handler", "function_files", "function_name", "read_prompt"]
