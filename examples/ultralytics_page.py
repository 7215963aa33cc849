"""Every example of Ultralytics' SAM documentation page, in samkit form, run offline.

    python examples/ultralytics_page.py            # seeded stand-in checkpoints, small grids
    python examples/ultralytics_page.py --full     # the page's grid sizes (crop example: minutes)
    python examples/ultralytics_page.py --real     # your real checkpoints (cache or download)
    python examples/ultralytics_page.py --light    # seeded MobileSAM under every name (tests)

By default the checkpoints are seeded stand-ins written under the official file names
(``sam_b.pt``, ``mobile_sam.pt``) into a temporary cache (``SAMKIT_CACHE_DIR``, with
``SAMKIT_OFFLINE=1``), and the page's images are synthetic ones of the same sizes
(``zidane.jpg`` 1280 x 720, ``bus.jpg`` 810 x 1080). Seeded weights give meaningless masks (often
none in segment-everything mode: the summary line says which filter removed them); the point is
that every call runs as written. Without ``--full`` the segment-everything grids are small
(``points_stride`` 8 instead of 32, 4 instead of 64) so that the script runs in the test suite.

The page's FastSAM / YOLO rows and the SAM 2 examples have no samkit equivalent here.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]


def make_assets(folder: Path) -> dict[str, Path]:
    """Synthetic stand-ins for the page's ``ultralytics/assets`` images, same sizes."""
    from samkit.data.synthetic import make_shapes_image

    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, (h, w), seed in (("zidane.jpg", (720, 1280), 1), ("bus.jpg", (1080, 810), 2)):
        shapes = make_shapes_image(np.random.default_rng(seed), h, w, max_objects=6)
        cv2.imwrite(str(folder / name), shapes.image[..., ::-1])
        out[name] = folder / name
    return out


def seed_cache(cache: Path, light: bool = False) -> None:
    """Seeded checkpoints under the official names the page uses. ``light``: MobileSAM weights
    under every name (samkit reads the architecture from the file, so every call runs the same
    way; ViT-B's encoder costs about 10x MobileSAM's)."""
    from samkit import write_seeded_checkpoint

    for variant, filename in (("sam_b", "sam_b.pt"), ("mobile_sam", "mobile_sam.pt")):
        if not (cache / filename).exists():
            write_seeded_checkpoint("mobile_sam" if light else variant, cache / filename)


# -- the page's examples --------------------------------------------------------------------
def segment_with_prompts(assets: dict[str, Path], grid: dict[str, int]) -> None:
    from samkit import SAM

    model = SAM("sam_b.pt")  # Load a model
    model.info()  # Display model information (optional)
    zidane = str(assets["zidane.jpg"])
    model(zidane, bboxes=[439, 437, 524, 709])  # Run inference with bboxes prompt
    model(zidane, points=[900, 370], labels=[1])  # single point
    model(zidane, points=[[400, 370], [900, 370]], labels=[1, 1])  # multiple points (objects)
    model(zidane, points=[[[400, 370], [900, 370]]], labels=[[1, 1]])  # points per object
    results = model(zidane, points=[[[400, 370], [900, 370]]], labels=[[1, 0]])  # negative
    assert len(results) == 1 and len(results[0]) == 1


def segment_everything(assets: dict[str, Path], grid: dict[str, int]) -> None:
    from samkit import SAM

    model = SAM("sam_b.pt")
    model.info()
    results = model(str(assets["zidane.jpg"]), points_stride=grid["everything"], verbose=True)
    assert len(results) == 1


def segment_everything_cli(assets: dict[str, Path], grid: dict[str, int], runs: Path) -> None:
    # yolo predict model=sam_b.pt source=path/to/image.jpg
    cmd = [sys.executable, "-m", "samkit", "predict", "model=sam_b.pt"]
    cmd += [f"source={assets['zidane.jpg']}", f"points_stride={grid['everything']}"]
    cmd += [f"project={runs}"]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    print("$ samkit " + " ".join(cmd[3:]), flush=True)
    subprocess.run(cmd, check=True, env=env)
    assert (runs / "predict" / "results.json").is_file()


def sam_predictor_prompts(assets: dict[str, Path], grid: dict[str, int]) -> None:
    from samkit import SAMPredictor

    # Create SAMPredictor
    overrides = dict(conf=0.25, task="segment", mode="predict", imgsz=1024, model="mobile_sam.pt")
    predictor = SAMPredictor(overrides=overrides)
    # Set image
    predictor.set_image(str(assets["zidane.jpg"]))  # set with image file
    predictor.set_image(cv2.imread(str(assets["zidane.jpg"])))  # set with np.ndarray
    results = predictor(bboxes=[439, 437, 524, 709])
    results = predictor(points=[900, 370], labels=[1])
    assert len(results) == 1
    # Reset image
    predictor.reset_image()


def sam_predictor_everything(assets: dict[str, Path], grid: dict[str, int]) -> None:
    from samkit import SAMPredictor

    overrides = dict(conf=0.25, task="segment", mode="predict", imgsz=1024, model="mobile_sam.pt")
    predictor = SAMPredictor(overrides=overrides)
    # Segment with additional args (the page: crop_n_layers=1, points_stride=64)
    results = predictor(
        source=str(assets["zidane.jpg"]), crop_n_layers=1, points_stride=grid["crop"]
    )
    assert len(results) == 1


def profile_models(assets: dict[str, Path], grid: dict[str, int]) -> None:
    from samkit import SAM

    folder = str(assets["zidane.jpg"].parent)  # model('ultralytics/assets')
    for name in ("sam_b.pt", "mobile_sam.pt"):  # Profile SAM-b, then MobileSAM
        model = SAM(name)
        model.info()
        results = model(folder, points_stride=grid["everything"], verbose=True)
        assert len(results) == 2


def auto_annotation(assets: dict[str, Path], grid: dict[str, int], work: Path) -> None:
    from samkit import auto_annotate

    # The page: auto_annotate(data="path/to/images", det_model="yolov8x.pt", sam_model="sam_b.pt")
    # det_model needs `pip install "samkit[yolo]"` and the YOLO weights; offline, the boxes come
    # from YOLO detection labels (labels=) instead. Classes are named in data.yaml (names=).
    labels = work / "det_labels"
    labels.mkdir(parents=True, exist_ok=True)
    (labels / "zidane.txt").write_text("0 0.375 0.797 0.066 0.375\n")  # a box, YOLO xywhn
    summary = auto_annotate(
        data=str(assets["zidane.jpg"].parent),
        labels=str(labels),
        sam_model="sam_b.pt",
        output_dir=str(work / "annotated"),
        names=["person"],
    )
    assert summary.images == 2 and not summary.failures, summary


EXAMPLES: list[tuple[str, Callable]] = [
    ("Segment with prompts", segment_with_prompts),
    ("Segment everything", segment_everything),
    ("Segment everything (CLI)", segment_everything_cli),
    ("SAMPredictor: prompt inference", sam_predictor_prompts),
    ("SAMPredictor: segment everything with additional args", sam_predictor_everything),
    ("Profile SAM-b and MobileSAM", profile_models),
    ("Auto-annotation", auto_annotation),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true", help="the page's grid sizes")
    parser.add_argument("--real", action="store_true", help="real checkpoints, not seeded")
    parser.add_argument(
        "--light", action="store_true", help="seeded MobileSAM weights under every name (fast)"
    )
    parser.add_argument("--only", nargs="*", help="run only the examples with these words")
    args = parser.parse_args(argv)
    grid = {"everything": 32, "crop": 64} if args.full else {"everything": 8, "crop": 4}
    with tempfile.TemporaryDirectory(prefix="samkit-ultralytics-page-") as tmp:
        work = Path(tmp)
        if not args.real:
            os.environ["SAMKIT_CACHE_DIR"] = str(work / "cache")
            os.environ["SAMKIT_OFFLINE"] = "1"
            seed_cache(work / "cache", light=args.light)
        assets = make_assets(work / "assets")
        cwd = os.getcwd()
        os.chdir(work)  # runs/ of the examples go to the temporary folder
        try:
            for title, fn in EXAMPLES:
                if args.only and not any(w.lower() in title.lower() for w in args.only):
                    continue
                print(f"\n== {title} ==", flush=True)
                t0 = time.perf_counter()
                extra = ()
                if fn is segment_everything_cli:
                    extra = (work / "runs",)
                elif fn is auto_annotation:
                    extra = (work,)
                fn(assets, grid, *extra)
                print(f"== {title}: ok, {time.perf_counter() - t0:.1f} s", flush=True)
        finally:
            os.chdir(cwd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
