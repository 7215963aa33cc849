"""``python -m samkit.cli`` runs the command line (as ``python -m samkit`` does)."""

import sys

from .main import run

sys.exit(run())
