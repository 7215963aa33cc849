"""A named model: its architecture config and the official weight files it is published as.

Its own small module so that model-family modules (:mod:`samkit.zoo.sam2`) can list their
variants without importing the registry, which imports them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .download import WeightsFile


@dataclass(frozen=True)
class Variant:
    """A named model: architecture plus the official weight files it is published as.

    ``config``: a :class:`~samkit.zoo.registry.ModelConfig`, or the whole-model config of a
    family that has one (:class:`~samkit.zoo.sam2.Sam2Config`). ``packaged`` names a weights
    file shipped inside the package (``samkit/assets/``) instead of downloadable ``files``.
    """

    name: str
    title: str
    config: Any
    files: tuple[WeightsFile, ...]
    aliases: tuple[str, ...] = ()
    packaged: str | None = None

    @property
    def default_file(self) -> WeightsFile:
        return self.files[0]
