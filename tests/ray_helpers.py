"""The one Ray cluster of the test suite: a token-authenticated head with 2 CPUs started by the
session fixture ``ray_address`` (tests/conftest.py), or the one ``.ci/run`` started
($SAMKIT_RAY_ADDRESS, with its $RAY_AUTH_TOKEN)."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def prepare_ray_env() -> None:
    """Call before ``import ray``: Ray reads the auth token when it is imported, and the head
    the fixture starts is token-authenticated."""
    if not os.environ.get("SAMKIT_RAY_ADDRESS"):
        os.environ.setdefault("RAY_AUTH_MODE", "token")
        os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(16))


def with_repo_path() -> dict[str, str]:
    """This environment with this checkout first on PYTHONPATH (for Ray workers, scripts)."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, PYTHONPATH=path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def running_head() -> Iterator[str]:
    """Yield the address of a running head: $SAMKIT_RAY_ADDRESS, or one started (and stopped)
    here with 2 CPUs, whose workers import this checkout's samkit."""
    import pytest

    given = os.environ.get("SAMKIT_RAY_ADDRESS")
    if given:
        yield given
        return
    prepare_ray_env()
    ray_exe = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
    port = _free_port()
    cmd = [ray_exe, "start", "--head", f"--port={port}", "--num-cpus=2", "--num-gpus=0"]
    cmd += ["--object-store-memory=300000000", "--include-dashboard=false"]
    cmd += ["--disable-usage-stats"]
    started = subprocess.run(cmd, env=with_repo_path(), capture_output=True, text=True, timeout=300)
    if started.returncode != 0:
        pytest.fail(f"ray start failed: {started.stderr[-2000:]}")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([ray_exe, "stop", "--force"], capture_output=True, timeout=120)
