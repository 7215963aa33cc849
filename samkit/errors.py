"""Exceptions raised by samkit.

Every error a user can trigger with bad input derives from :class:`SamkitError`, so callers (and
the CLI) can tell user errors from bugs. Messages say what was wrong and what to do about it.
"""

from __future__ import annotations


class SamkitError(Exception):
    """Base class of all samkit errors caused by input, files or environment."""


class CheckpointError(SamkitError):
    """A checkpoint file is missing, unreadable, unsafe or does not match a known architecture."""


class DownloadError(SamkitError):
    """A checkpoint could not be downloaded or failed verification."""


class ImageError(SamkitError):
    """An image source could not be read or converted."""


class PromptError(SamkitError):
    """A prompt (points, labels, boxes, masks) is malformed or out of range."""


class ExportError(SamkitError):
    """An export format or option is not supported, or exported files do not fit together."""


class DatasetError(SamkitError):
    """A dataset, a label file or a detector's output is malformed or does not fit the images."""


class DependencyError(SamkitError, ImportError):
    """An optional dependency is not installed; the message gives the ``pip install`` command."""


class OutputError(SamkitError):
    """An output cannot be written where asked: a read-only folder, a full disk, a symbolic link
    inside the output folder, or an existing user file that needs ``overwrite=True``."""
