"""Shared pieces of the bad-input corpus: the Case record, the demo model, small file makers,
the CLI runner, checks and HTTP routes for the local test server."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

import samkit


@dataclass
class Case:
    category: str
    name: str
    run: Callable[[], Any]
    raises: type[BaseException] | None
    names: str | None = None  # must appear in the error message (or in check's subject)
    out: Path | None = None  # the only folder allowed to change
    check: Callable[[Any], None] | None = None  # extra check of the return value


# -- shared helpers --------------------------------------------------------------------------
_DEMO: dict[str, Any] = {}


def demo():
    """The packaged demo model (loaded once)."""
    if "sam" not in _DEMO:
        _DEMO["sam"] = samkit.SAM("samkit-demo", device="cpu", precision="fp32")
    return _DEMO["sam"]


def demo_state() -> tuple[dict[str, torch.Tensor], dict]:
    from samkit.zoo.registry import DEMO_CONFIG

    return {k: v.clone() for k, v in demo().model.state_dict().items()}, DEMO_CONFIG.to_dict()


def png(path: Path, h: int = 64, w: int = 80, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 90, np.uint8)
    img[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = rng.integers(150, 255, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)
    return path


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``python -m samkit`` of the tree under test (offline)."""
    tree = str(Path(samkit.__file__).resolve().parents[1])
    env = dict(os.environ, SAMKIT_OFFLINE="1", PYTHONPATH=tree)
    return subprocess.run(
        [sys.executable, "-m", "samkit", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


def expect(cond: bool, what: str) -> None:
    if not cond:
        raise AssertionError(what)


def annotate(data: Path, out: Path, **kw):
    kw.setdefault("sam_model", demo())
    kw.setdefault("progress", False)
    return samkit.auto_annotate(data, output_dir=out, **kw)


def failed_naming(text: str, count: int = 1) -> Callable[[Any], None]:
    """Check: an annotate summary / results list with ``count`` failures naming ``text``."""

    def check(result: Any) -> None:
        failures = getattr(result, "failures", None)
        if failures is None:
            failures = result.errors
        reasons = [f"{getattr(f, 'path', '')}: {f.reason}" for f in failures]
        expect(len(failures) == count, f"expected {count} failure(s), got {reasons}")
        expect(all(text in r for r in reasons), f"failures do not name {text!r}: {reasons}")

    return check


def timed(fn: Callable[[], Any], limit: float) -> Any:
    """Run ``fn``; fail if it takes longer than ``limit`` seconds (deadline not enforced)."""
    t0 = time.monotonic()
    try:
        return fn()
    finally:
        spent = time.monotonic() - t0
        expect(spent < limit, f"took {spent:.1f} s, over {limit} s")


def png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


# -- http routes -----------------------------------------------------------------------------
def drip(body: bytes, every: float):
    """Send ``body`` one byte every ``every`` seconds (no Content-Length)."""

    def route(h) -> None:
        h.send_response(200)
        h.end_headers()
        for b in body:
            try:
                h.wfile.write(bytes([b]))
                h.wfile.flush()
            except OSError:
                return
            time.sleep(every)

    return route


def redirect_to(location: str):
    def route(h) -> None:
        h.send_response(302)
        h.send_header("Location", location)
        h.send_header("Content-Length", "0")
        h.end_headers()

    return route


def body(data: bytes, length: bool = True, ctype: str = "application/octet-stream"):
    def route(h) -> None:
        h.send_response(200)
        h.send_header("Content-Type", ctype)
        if length:
            h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    return route
