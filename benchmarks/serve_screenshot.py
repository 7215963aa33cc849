"""Make ``docs/serve.png``: the ``samkit serve`` page with accepted objects and a live mask.

    python benchmarks/serve_screenshot.py [docs/serve.png]

Runs the demo model on synthetic shapes in headless Chromium (Debian's ``chromium``).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_serve import click_points, make_folder, make_model, start  # noqa: E402


def main() -> None:
    from PIL import Image
    from playwright.sync_api import sync_playwright

    from samkit.data.synthetic import SHAPE_NAMES
    from samkit.serve import create_app

    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/serve.png")
    with tempfile.TemporaryDirectory() as tmp:
        shapes = make_folder(Path(tmp), n=4, size=(480, 640), seed=3)
        app = create_app(
            make_model("demo"),
            Path(tmp) / "images",
            Path(tmp) / "out",
            names=None,
        )
        server, url = start(app)
        points = click_points(shapes, 10)
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path="/usr/bin/chromium",
                args=["--headless", "--no-sandbox", "--disable-gpu"],
            )
            page = browser.new_page(viewport={"width": 1180, "height": 620})
            page.goto(url)
            page.wait_for_function("window.samkit && window.samkit.ready", timeout=60000)
            box = page.locator("#canvas").bounding_box()
            seen = set()
            done = 0
            for x, y in points:
                key = int(np.argmax([m[y, x] for m in shapes[0].masks]))
                if key in seen:
                    continue
                seen.add(key)
                page.keyboard.press("Escape")
                cx, cy = page.evaluate(f"window.samkit.imageToCanvas({x}, {y})")
                page.mouse.click(box["x"] + cx, box["y"] + cy)
                page.wait_for_function("window.samkit.candidates.length === 1")
                if len(seen) == len(shapes[0].masks):  # the last one stays a live preview
                    break
                page.fill("#label", SHAPE_NAMES[int(shapes[0].classes[key])])
                page.click("#accept")
                done += 1
                page.wait_for_function(f"window.samkit.objects.length === {done}")
            page.screenshot(path=str(out))
            browser.close()
        server.should_exit = True
    img = Image.open(out).convert("RGB").quantize(colors=48, method=Image.Quantize.MEDIANCUT)
    img.save(out, optimize=True)
    print(f"{out}: {out.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
