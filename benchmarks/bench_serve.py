"""Click-to-mask latency of ``samkit serve``: server-side vs in-browser decoding, and the
``/decode`` throughput with concurrent clients.

    python benchmarks/bench_serve.py [--models demo,mobile_sam] [--clicks 20] [--seconds 5]
                                     [--ort-dir node_modules/onnxruntime-web/dist] [--threads N]

For each model (the shipped demo model; MobileSAM with seeded weights, as no real weights are
available offline) a server runs on a folder of synthetic 1280x720 images. In headless Chromium
(Debian's ``chromium`` via Playwright) the page is clicked on objects; the page records the time
from the pointer event to the mask drawn on the canvas (``window.samkit.timings``): with the
server decoding (HTTP round trip + RLE decode + drawing) and, with ``--ort-dir``, with the
decoder running in the page (onnxruntime-web, wasm, 1 thread). A second table splits a click
into phases, medians in ms: click -> request sent, the HTTP round trip (the server included),
the server's model decode and mask encoding (its ``Server-Timing`` header), reading + parsing the
JSON body, decoding the box RLE, ``draw()``, and the rasterization that a one-pixel readback of
the canvas forces afterwards (not part of click -> canvas); plus the response size. Then 1 client
posts ``/decode`` for ``--seconds`` with COCO RLE and with box RLE masks (round trip, KB), and
``--clients`` threads post ``/decode`` and the requests per second are counted (the server
decodes one prompt at a time: the model is shared).
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_model(name: str):
    from samkit import SAM, VARIANTS

    if name == "demo":
        return SAM("samkit-demo")  # precision "auto", as `samkit serve` loads it
    return SAM.from_config(VARIANTS[name].config, seeded=True)


def make_folder(root: Path, n: int = 3, size=(720, 1280), seed: int = 0) -> list:
    from PIL import Image

    from samkit.data.synthetic import make_shapes_image

    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    shapes = []
    for i in range(n):
        s = make_shapes_image(rng, *size, max_objects=5, radius_range=(0.1, 0.25))
        Image.fromarray(s.image).save(root / "images" / f"{i}.png")
        shapes.append(s)
    return shapes


def start(app):
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{port}/"


def click_points(shapes, k: int) -> list[tuple[int, int]]:
    import cv2

    pts = []
    for m in shapes[0].masks:
        dist = cv2.distanceTransform(m.astype(np.uint8), cv2.DIST_L2, 5)
        ys, xs = np.nonzero(dist > 0.5 * dist.max())
        rng = np.random.default_rng(len(pts))
        for j in rng.permutation(len(xs))[: max(1, k // len(shapes[0].masks) + 1)]:
            pts.append((int(xs[j]), int(ys[j])))
    return pts[:k]


def browser_clicks(url: str, points, mode: str, chromium: str) -> list[dict]:
    """Click ``points`` on the page; per click ``{"ms": click -> mask drawn, "phases": {...}}``
    (see ``recordTiming`` in the page's app.js)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(url)
        page.wait_for_function("window.samkit && window.samkit.ready", timeout=120000)
        page.wait_for_function(
            "!document.getElementById('status').textContent.startsWith('encoding')",
            timeout=120000,
        )
        if mode == "browser":
            page.select_option("#decoder-mode", "browser")
            page.wait_for_function(
                "document.getElementById('status').textContent.includes('decoder ready')",
                timeout=120000,
            )
        # read the canvas back after each drawing: the browser then rasterizes what was drawn
        page.evaluate("window.samkit.timingFlush = true")
        box = page.locator("#canvas").bounding_box()
        for i, (x, y) in enumerate([points[0], *points]):  # the first click warms up
            page.keyboard.press("Escape")
            # a person's clicks are far apart: let the page finish drawing the cleared prompt
            page.wait_for_timeout(150)
            cx, cy = page.evaluate(f"window.samkit.imageToCanvas({x} + 0.5, {y} + 0.5)")
            page.mouse.click(box["x"] + cx, box["y"] + cy)
            # (interval polling: the default polls on every animation frame, which keeps the
            # renderer busy on the cores the server decodes on; the page times itself)
            page.wait_for_function(
                f"window.samkit.timings.length === {i + 1}", polling=50, timeout=60000
            )
        timings = page.evaluate("window.samkit.timings")[1:]
        browser.close()
    return timings


def decode_rps(
    url: str, points, clients: int, seconds: float, mask_format: str = "coco"
) -> tuple[float, float, float, float]:
    """``(requests/s, median round trip ms, median server decode ms, median response KB)``."""
    import httpx

    count = [0] * clients
    lat: list[float] = []
    dec: list[float] = []
    size: list[int] = []
    stop = time.perf_counter() + seconds

    def worker(k: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as c:
            j = k
            while time.perf_counter() < stop:
                x, y = points[j % len(points)]
                body = {"points": [[x, y]], "labels": [1], "mask_format": mask_format}
                t0 = time.perf_counter()
                r = c.post("api/images/0/decode", json=body)
                r.raise_for_status()
                dec.append(r.json()["decode_ms"])
                lat.append((time.perf_counter() - t0) * 1e3)
                size.append(len(r.content))
                count[k] += 1
                j += clients

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rps = sum(count) / (time.perf_counter() - t0)
    return rps, statistics.median(lat), statistics.median(dec), statistics.median(size) / 1024


PHASES = (  # (column, key in the page's phases) of the click breakdown, median ms
    ("click->request sent", "before"),
    ("HTTP round trip", "request"),
    ("server: model", "server.model"),
    ("server: mask encoding", "server.masks"),
    ("body read + JSON.parse", "parse"),
    ("in-browser decoder", "infer"),
    ("mask decode", "decode"),
    ("draw()", "draw"),
    ("rasterize (readback)", "flush"),
)


def phase_row(name: str, mode: str, timings: list[dict]) -> str:
    """One markdown row: median click -> canvas, then each phase's median (ms)."""

    def values(key: str) -> list[float]:
        out = []
        for t in timings:
            v = t["phases"]
            for part in key.split("."):
                v = v.get(part) if isinstance(v, dict) else None
            if isinstance(v, (int, float)):
                out.append(float(v))
        return out

    cells = [f"{statistics.median(t['ms'] for t in timings):.1f}"]
    for _, key in PHASES:
        v = values(key)
        cells.append(f"{statistics.median(v):.1f}" if v else "-")
    kb = values("bytes")
    cells.append(f"{statistics.median(kb) / 1024:.1f}" if kb and max(kb) else "-")
    return f"| {name} | {mode} | " + " | ".join(cells) + " |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="demo,mobile_sam")
    ap.add_argument("--clicks", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--ort-dir", default=os.environ.get("SAMKIT_ORT_DIR"))
    ap.add_argument("--threads", type=int, default=None, help="torch threads of the server")
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = ap.parse_args()
    import torch

    from samkit.serve import create_app

    if args.threads:
        torch.set_num_threads(args.threads)
    have_browser = os.path.isfile(args.chromium)
    rows = []
    for name in args.models.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            shapes = make_folder(Path(tmp))
            # a loader, not a model: the server loads it on its model thread (serve/engine.py)
            loader = functools.partial(make_model, name)
            app = create_app(loader, Path(tmp) / "images", Path(tmp) / "out", ort_dir=args.ort_dir)
            server, url = start(app)
            points = click_points(shapes, args.clicks)
            row = {"model": name}
            if have_browser:
                row["server"] = browser_clicks(url, points, "server", args.chromium)
                if args.ort_dir:
                    row["browser"] = browser_clicks(url, points, "browser", args.chromium)
            row["one"] = decode_rps(url, points, 1, args.seconds)
            row["one_box"] = decode_rps(url, points, 1, args.seconds, "box")
            row["many"] = decode_rps(url, points, args.clients, args.seconds)
            server.should_exit = True
            rows.append(row)
            time.sleep(0.5)
    print(f"\ntorch threads: {torch.get_num_threads()}, clicks: {args.clicks}, 1280x720 images")
    print(
        "| model | click->mask, server decode (median / p90 ms) | click->mask, in-browser decode "
        "(median / p90 ms) | /decode: model decode / HTTP round trip, 1 client (median ms) | "
        f"/decode req/s, {args.clients} clients (median round trip) |"
    )
    print("|---|---|---|---|---|")

    def fmt(v):
        if not v:
            return "n/a"
        ms = [t["ms"] for t in v]
        return f"{statistics.median(ms):.0f} / {np.percentile(ms, 90):.0f}"

    for r in rows:
        print(
            f"| {r['model']} | {fmt(r.get('server'))} | {fmt(r.get('browser'))} | "
            f"{r['one'][2]:.0f} / {r['one'][1]:.0f} | {r['many'][0]:.1f} ({r['many'][1]:.0f} ms) |"
        )
    print("\nwhere a click's time goes (median ms; the page's response is the box RLE):")
    print(
        "| model | decoder | click->canvas | "
        + " | ".join(c for c, _ in PHASES)
        + " | response KB |"
    )
    print("|---|---|" + "---|" * (len(PHASES) + 2))
    for r in rows:
        for mode in ("server", "browser"):
            if r.get(mode):
                print(phase_row(r["model"], mode, r[mode]))
    print("\n/decode from Python, 1 client (median): mask_format coco vs box")
    print("| model | coco: round trip ms / KB | box: round trip ms / KB |")
    print("|---|---|---|")
    for r in rows:
        c, b = r["one"], r["one_box"]
        print(f"| {r['model']} | {c[1]:.1f} / {c[3]:.1f} | {b[1]:.1f} / {b[3]:.1f} |")


if __name__ == "__main__":
    main()
