"""The example scripts run as a new user runs them (a subprocess, offline)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_ultralytics_page_examples_run_offline(tmp_path):
    sys.path.insert(0, str(REPO / "examples"))
    try:
        from ultralytics_page import EXAMPLES
    finally:
        sys.path.remove(str(REPO / "examples"))
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, PYTHONPATH=path, SAMKIT_OFFLINE="1", SAMKIT_CACHE_DIR=str(tmp_path))
    r = subprocess.run(
        [sys.executable, str(REPO / "examples" / "ultralytics_page.py"), "--light"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=1800,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    for title, _ in EXAMPLES:
        assert re.search(rf"== {re.escape(title)}: ok, [0-9.]+ s", r.stdout), title
    # segment everything says what its filters kept (seeded weights: usually nothing)
    assert "segment everything: 64 points -> 192 masks decoded" in r.stderr
    assert "5 crops" in r.stderr  # the crop example's progress bar
    assert list(tmp_path.iterdir()) == []  # the script's files went to its temporary folder
