"""The JSON-lines protocol between ``compare_reference.py`` and its two workers.

A worker reads one JSON object per line on stdin (``{"op": NAME, ...}``) and answers each with
one JSON object per line on its protocol stream: ``{"ok": true, ...}`` or ``{"ok": false,
"error": "..."}``. Anything else the libraries print goes to stderr, so a stray ``print`` cannot
corrupt the protocol. This module imports nothing beyond the standard library: the reference
worker runs in another virtual environment, without samkit.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

Handler = Callable[[dict[str, Any]], dict[str, Any]]


def serve(handlers: dict[str, Handler]) -> None:
    """Answer requests on stdin until it closes (or an ``{"op": "quit"}`` arrives)."""
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # library prints go to stderr
    sys.stdout = sys.stderr
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            req = json.loads(line)
            op = req.get("op")
            if op == "quit":
                break
            if op not in handlers:
                raise KeyError(f"unknown op {op!r}; known: {', '.join(sorted(handlers))}")
            reply = {"ok": True, **handlers[op](req)}
        except Exception as exc:  # reported to the orchestrator, which records it
            tb = traceback.format_exc().strip().splitlines()
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "trace": tb[-6:]}
        out.write(json.dumps(reply) + "\n")


def timed(fn: Callable[[], Any]) -> dict[str, Any]:
    """Run ``fn`` once: wall and CPU seconds (all threads of this process), load average."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    return {
        "wall_s": time.perf_counter() - w,
        "cpu_s": time.process_time() - c,
        "load": list(os.getloadavg()),
    }
