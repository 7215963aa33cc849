"""``python -m samkit`` runs the command line."""

import sys

from .cli.main import run

sys.exit(run())
