"""The ``samkit`` command line: :mod:`.main` (entry point), :mod:`.args` (parsing),
:mod:`.commands` (subcommands), :mod:`.benchmark` (``samkit benchmark``)."""

from .main import main, run

__all__ = ["main", "run"]
