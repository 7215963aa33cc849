"""Worker processes for ``compare_reference.py`` and the fixed background load of ``--load``."""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


class WorkerTimeout(Exception):
    """A request did not finish within its cap; the worker was killed (and will restart)."""


class WorkerError(Exception):
    """A worker answered a request with an error."""


class Worker:
    """A long-lived worker process speaking :mod:`protocol`; restarted after a timeout, with
    its ``load`` requests replayed so that the models are there again."""

    def __init__(self, name: str, python: str, script: str, log_dir: Path, env=None) -> None:
        self.name, self.python, self.script = name, python, str(HERE / script)
        self.log_path = log_dir / f"{name}.log"
        # ``env`` values of None remove the variable
        merged = {**os.environ, **(env or {})}
        self.env = {k: v for k, v in merged.items() if v is not None}
        self.loads: list[dict[str, Any]] = []
        self.proc: subprocess.Popen | None = None

    def _start(self) -> None:
        log = open(self.log_path, "a")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [self.python, self.script],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            cwd=str(HERE),
            env=self.env,
        )
        for req in self.loads:
            self._call(req, None)

    def call(self, req: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """Send ``req`` and wait for the answer (at most ``timeout`` seconds)."""
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        reply = self._call(req, timeout)
        if req.get("op") == "load":
            self.loads.append(req)
        return reply

    def _call(self, req: dict[str, Any], timeout: float | None) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            self.stop()
            raise WorkerTimeout(f"{self.name}: {req.get('op')} {req.get('task', '')} > {timeout} s")
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            self.proc = None
            raise WorkerError(f"{self.name} exited (code {code}); see {self.log_path}")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise WorkerError(f"{self.name}: {reply.get('error')}")
        return reply

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


# A fixed single-threaded compute job (float32 matrix products), pinned to one core.
LOAD_JOB = """
import numpy as np, time
a = np.random.default_rng(0).standard_normal((384, 384), dtype=np.float32)
while True:
    for _ in range(50):
        b = a @ a
    time.sleep(0)
"""


class BackgroundLoad:
    """``--load``: a fixed job on the last usable CPU (the "other core") while both sides run."""

    def __init__(self) -> None:
        cpus = sorted(os.sched_getaffinity(0))
        self.cpu = cpus[-1]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        env["MKL_NUM_THREADS"] = "1"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", LOAD_JOB],
            env=env,
            preexec_fn=lambda: os.sched_setaffinity(0, {self.cpu}),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1.0)

    def describe(self) -> str:
        return f"one single-threaded float32 matmul loop pinned to CPU {self.cpu}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
