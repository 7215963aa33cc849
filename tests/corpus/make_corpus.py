"""A corpus of hostile and odd inputs, generated (no committed binaries), with expectations.

Each :class:`Case` builds its files under its own folder when the corpus is made, and ``run``
does the hostile thing. The expectation: the error class (``raises``; None means the call must
succeed, e.g. a batch that skips the bad item), a text the message must contain (the file or
argument: ``names``), and the only folder allowed to change (``out``; None: nothing changes).
``tests/test_corpus.py`` runs every case and checks all three.

    python tests/corpus/make_corpus.py DIR     # write the corpus files and list the cases

Categories: checkpoint, image, labels, output, download, prompt.
"""

from __future__ import annotations

import argparse
import errno
import io
import json
import logging
import os
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
from PIL import Image

import samkit
from samkit.errors import (
    CheckpointError,
    DatasetError,
    DownloadError,
    ImageError,
    OutputError,
    PromptError,
    SamkitError,
)


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
    from samkit.registry import DEMO_CONFIG

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


# -- checkpoints -----------------------------------------------------------------------------
def checkpoint_cases(root: Path) -> list[Case]:
    from safetensors.torch import save_file

    from samkit.registry import VARIANTS

    d = root / "checkpoint"
    d.mkdir(parents=True)
    cases = []

    def load(path: Path) -> Callable[[], Any]:
        return lambda: samkit.SAM(str(path), download=False)

    def add(name, path, raises=CheckpointError, names=None):
        cases.append(Case("checkpoint", name, load(path), raises, names or str(path)))

    huge = VARIANTS["sam_h"].config.to_dict()
    p = d / "tiny_claims_vit_h.safetensors"  # ~340 bytes describing a 641 M-parameter model
    save_file({"x": torch.zeros(1)}, p, metadata={"samkit_config": json.dumps(huge)})
    add("tiny file, ViT-H config (would allocate 2.5 GB)", p)

    absurd = json.loads(json.dumps(huge))
    absurd["encoder"].update(embed_dim=8192, depth=128, num_heads=64)
    p = d / "absurd_config.safetensors"
    save_file({"x": torch.zeros(1)}, p, metadata={"samkit_config": json.dumps(absurd)})
    add("config over the parameter limit", p)

    neg = json.loads(json.dumps(huge))
    neg["encoder"]["embed_dim"] = -5
    p = d / "negative_dim.safetensors"
    save_file({"x": torch.zeros(1)}, p, metadata={"samkit_config": json.dumps(neg)})
    add("negative dimension in config", p)

    p = d / "bad_json_config.safetensors"
    save_file({"x": torch.zeros(1)}, p, metadata={"samkit_config": '{"encoder": {'})
    add("malformed samkit_config JSON", p)

    p = d / "deep_json_config.safetensors"
    save_file({"x": torch.zeros(1)}, p, metadata={"samkit_config": "[" * 200_000})
    add("samkit_config nested 200k deep", p)

    p = d / "string_config.pt"
    torch.save({"model": {"x": torch.zeros(1)}, "samkit_config": "not json"}, p)
    add("samkit_config a non-JSON string in a .pt", p)

    sd, cfg = demo_state()
    expanded = {k: torch.zeros((), dtype=v.dtype).expand(v.shape) for k, v in sd.items()}
    p = d / "expanded_stride0.pt"  # every tensor a broadcast view of one value
    torch.save({"model": expanded, "samkit_config": cfg}, p)
    add("stride-0 expanded tensors", p)

    head0 = {
        "image_encoder.patch_embed.proj.weight": torch.zeros(32, 3, 16, 16),
        "image_encoder.pos_embed": torch.zeros(1, 4, 4, 32),
        "image_encoder.blocks.0.attn.rel_pos_h": torch.zeros(7, 0),
    }
    p = d / "head_dim_zero.pt"
    torch.save(head0, p)
    add("head dimension 0", p)

    p = d / "random_bytes.pt"
    rng = np.random.default_rng(7)
    p.write_bytes(b"\x13\x37" + rng.integers(0, 256, 4094, dtype=np.uint8).tobytes())
    add("random bytes", p)

    p = d / "pipe.pt"
    os.mkfifo(p)
    add("a FIFO", p)

    nan_sd = dict(sd)
    key = next(k for k in nan_sd if k.endswith("weight") and nan_sd[k].is_floating_point())
    nan_sd[key] = nan_sd[key].clone()
    nan_sd[key].view(-1)[0] = float("nan")
    p = d / "nan_weights.pt"
    torch.save({"model": nan_sd, "samkit_config": cfg}, p)
    add("NaN weights", p, names=key)

    p = d / "zip_bomb.pt"
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        zf.writestr("archive/data/0", bytes(64 * 2**20))
    add("compressed entry expanding 64 MB (zip bomb)", p)

    p = d / "offsets_beyond_file.safetensors"
    header = json.dumps({"x": {"dtype": "F32", "shape": [10**6], "data_offsets": [0, 4 * 10**6]}})
    p.write_bytes(len(header).to_bytes(8, "little") + header.encode() + bytes(16))
    add("safetensors offsets beyond the file", p)

    p = d / "bad_pickle_stream.pt"  # found by benchmarks/fuzz_readers.py (atheris)
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buf)
    with zipfile.ZipFile(buf) as src, zipfile.ZipFile(p, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            dst.writestr(info, b"\x80\x02}s." if info.filename.endswith("data.pkl") else data)
    add("pickle stream popping an empty stack", p)

    # these already passed before issue 20; kept so they stay passing
    p = d / "empty.pt"
    p.write_bytes(b"")
    add("empty file", p)
    p = d / "a_folder.pt"
    p.mkdir()
    add("a folder", p)
    p = d / "pickled_code.pt"
    torch.save({"args": argparse.Namespace(x=1)}, p)
    add("pickled Python object", p, names="pickled Python objects")
    p = d / "truncated.pt"
    buf = io.BytesIO()
    torch.save(sd, buf)
    p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    add("truncated archive", p)
    p = d / "not_sam.pt"
    torch.save({"layer.weight": torch.zeros(3, 3)}, p)
    add("not a SAM state dict", p)
    return cases


# -- images and batches ----------------------------------------------------------------------
def image_cases(root: Path, server) -> list[Case]:
    d = root / "image"
    cases = []

    batch = d / "batch"
    png(batch / "good.png")
    Image.fromarray(np.full((1, 10000, 3), 200, np.uint8)).save(batch / "thin_10000x1.png")
    png(batch / ("x" * 240 + ".png"))
    (batch / "truncated.png").write_bytes(png(d / "src.png").read_bytes()[:60])

    def run_batch():
        return demo()(str(batch), bboxes=[[0, 0, 5, 1]])

    def check_batch(res):
        failed_naming("truncated.png")(res)
        expect(len(res) == 3, f"expected 3 results (thin and long-named kept), got {len(res)}")

    cases.append(Case("image", "10000 x 1 image, long name, truncated file", run_batch, None,
                      check=check_batch))  # fmt: skip

    iso = d / "isolate"
    for name in ("a.png", "bad_decode.png", "c.png"):
        png(iso / name, seed=len(name))

    def run_isolated():
        original = samkit.Predictor.decode_fitted

        def broken(self, fitted, multimask_output=False):
            if str(self.path).endswith("bad_decode.png"):
                raise RuntimeError("CUDA error: an illegal memory access (injected)")
            return original(self, fitted, multimask_output)

        with mock.patch.object(samkit.Predictor, "decode_fitted", broken):
            return demo()(str(iso), bboxes=[[10, 10, 40, 40]], batch=2)

    def check_isolated(res):
        failed_naming("bad_decode.png")(res)
        expect(len(res) == 2, f"expected the 2 other images, got {len(res)}")

    cases.append(Case("image", "one image raises anything", run_isolated, None,
                      check=check_isolated))  # fmt: skip

    tif = d / "float32.tif"
    Image.fromarray(np.full((20, 30), 1000.0, np.float32), mode="F").save(tif)
    cases.append(
        Case(
            "image",
            "float32 TIFF",
            lambda: demo()(str(tif), bboxes=[[1, 1, 9, 9]]),
            ImageError,
            str(tif),
        )  # fmt: skip
    )

    bomb = d / "bomb.png"
    Image.new("L", (12000, 8000)).save(bomb)
    cases.append(
        Case(
            "image",
            "decompression bomb",
            lambda: demo()(str(bomb), bboxes=[[1, 1, 9, 9]]),
            ImageError,
            str(bomb),
        )  # fmt: skip
    )

    from samkit.sources import load_image

    drip_url = server.url("/drip.png")
    server.routes["/drip.png"] = drip(png_bytes(), 0.2)
    cases.append(
        Case(
            "image",
            "URL sending a byte every 0.2 s",
            lambda: timed(lambda: load_image(drip_url, deadline=1.5), 10),
            ImageError,
            drip_url,
        )  # fmt: skip
    )
    ftp_url = server.url("/to-ftp.png")
    server.routes["/to-ftp.png"] = redirect_to("ftp://127.0.0.1/x.png")
    cases.append(
        Case(
            "image", "URL redirecting to ftp://", lambda: load_image(ftp_url), ImageError, ftp_url
        )  # fmt: skip
    )
    return cases


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


# -- labels ----------------------------------------------------------------------------------
def labels_cases(root: Path) -> list[Case]:
    d = root / "labels"
    cases = []

    def yolo_case(name: str, lines: str, *, as_dir: bool = False) -> None:
        c = d / name.replace(" ", "_")
        png(c / "images" / "a.png")
        png(c / "images" / "b.png", seed=1)
        lab = c / "labels"
        lab.mkdir(parents=True)
        (lab / "b.txt").write_text("0 0.5 0.5 0.4 0.4\n")
        if as_dir:
            (lab / "a.txt").mkdir()
        else:
            (lab / "a.txt").write_text(lines)
        out = c / "out"
        cases.append(
            Case(
                "labels",
                name,
                lambda: annotate(c / "images", out, labels=lab),
                None,
                out=out,
                check=failed_naming(str(lab / "a.txt")),
            )  # fmt: skip
        )

    yolo_case("YOLO class 1e20", "1e20 0.5 0.5 0.2 0.2\n")
    yolo_case("YOLO class -1", "-1 0.5 0.5 0.2 0.2\n")
    yolo_case("YOLO text in a line", "person 0.5 0.5 0.2 0.2\n")
    yolo_case("YOLO pixel coordinates", "0 40 30 20 10\n")
    yolo_case("folder named like a label file", "", as_dir=True)

    def coco_case(name: str, data: Any, *, raises=None, names=None, per_image=None) -> None:
        c = d / name.replace(" ", "_").replace("'", "")
        png(c / "images" / "a.png")
        png(c / "images" / "b.png", seed=1)
        js = c / "boxes.json"
        js.write_text(data if isinstance(data, str) else json.dumps(data))
        out = c / "out"
        check = failed_naming(per_image) if per_image else None
        cases.append(
            Case(
                "labels",
                name,
                lambda: annotate(c / "images", out, labels=js, format="coco"),
                raises,
                names or str(js),
                out=None if raises else out,
                check=check,
            )  # fmt: skip
        )

    def coco(anns, cats=None):
        images = [
            {"id": 1, "file_name": "a.png", "width": 80, "height": 64},
            {"id": 2, "file_name": "b.png", "width": 80, "height": 64},
        ]
        return {"images": images, "annotations": anns, "categories": cats or [{"id": 1}]}

    good = {"id": 7, "image_id": 2, "bbox": [10, 10, 30, 30], "category_id": 1}
    coco_case("COCO annotations not a list", coco("nope"), raises=DatasetError)
    coco_case("COCO categories not a list", coco([good], "x"), raises=DatasetError)
    coco_case("COCO category id 'x' in categories", coco([good], [{"id": "x"}]),
              raises=DatasetError, names="categories[0]")  # fmt: skip
    bad_cat = {"id": 5, "image_id": 1, "bbox": [1, 1, 5, 5], "category_id": "x"}
    coco_case("COCO category id 'x'", coco([bad_cat, good]), per_image="annotation 5")
    bad_box = {"id": 6, "image_id": 1, "bbox": "abc", "category_id": 1}
    coco_case("COCO bbox 'abc'", coco([bad_box, good]), per_image="annotation 6")
    str_box = {"id": 8, "image_id": 1, "bbox": ["a", "b", "c", "d"], "category_id": 1}
    coco_case("COCO bbox of strings", coco([str_box, good]), per_image="annotation 8")
    coco_case("COCO nested 200k deep", "[" * 200_000 + "]" * 200_000, raises=DatasetError)
    coco_case("COCO not an object", "[1, 2]", raises=DatasetError)
    coco_case("COCO not JSON", "{images: ", raises=DatasetError)
    return cases


# -- outputs ---------------------------------------------------------------------------------
def output_cases(root: Path) -> list[Case]:
    d = root / "output"
    cases = []

    def _block0() -> None:
        c = d / "coco_input_is_output"
        png(c / "images" / "a.png")
        js = c / "annotations.json"
        big = {
            "images": [{"id": i, "file_name": f"im{i}.png"} for i in range(20)]
            + [{"id": 99, "file_name": "a.png", "width": 80, "height": 64}],
            "annotations": [{"id": 1, "image_id": 99, "bbox": [5, 5, 20, 20], "category_id": 1}],
            "categories": [{"id": 1, "name": "thing"}],
        }
        js.write_text(json.dumps(big))
        cases.append(
            Case(
                "output",
                "labels JSON is the output annotations.json",
                lambda: annotate(c / "images", c, labels=js, format="coco"),
                SamkitError,
                str(js),
            )  # fmt: skip
        )

    _block0()

    def _block1() -> None:
        def user_file(name: str, fmt: str, text: str) -> None:
            c = d / f"user_{name.replace('.', '_')}"
            png(c / "images" / "a.png")
            (c / "labels").mkdir(parents=True)
            (c / "labels" / "a.txt").write_text("0 0.5 0.5 0.4 0.4\n")
            (c / "labels" / "classes.txt").write_text("cat\n")
            out = c / "out"
            out.mkdir()
            (out / name).write_text(text)
            cases.append(
                Case(
                    "output",
                    f"user {name} in the output folder",
                    lambda: annotate(c / "images", out, labels=c / "labels", format=fmt),
                    OutputError,
                    str(out / name),
                )  # fmt: skip
            )

        user_file("classes.txt", "yolo", "my\nown\nclasses\n")
        user_file("data.yaml", "yolo", "path: /data\nnames: [a]\n")
        user_file("annotations.json", "coco", '{"images": []}')

    _block1()

    def _block2() -> None:
        c = d / "work_dir_link"
        png(c / "images" / "a.png")
        (c / "labels").mkdir(parents=True)
        (c / "labels" / "a.txt").write_text("0 0.5 0.5 0.4 0.4\n")
        victim = c / "victim"
        (victim / "tmp").mkdir(parents=True)
        (victim / "tmp" / "precious.txt").write_text("keep me")
        out = c / "out"
        out.mkdir()
        (out / ".samkit_annotate").symlink_to(victim, target_is_directory=True)
        cases.append(
            Case(
                "output",
                ".samkit_annotate is a link",
                lambda: annotate(c / "images", out, labels=c / "labels"),
                OutputError,
                str(out / ".samkit_annotate"),
            )  # fmt: skip
        )

    _block2()

    def _block3() -> None:
        c = d / "recursive_link"
        png(c / "images" / "sub" / "a.png")
        (c / "labels" / "sub").mkdir(parents=True)
        (c / "labels" / "sub" / "a.txt").write_text("0 0.5 0.5 0.4 0.4\n")
        victim2 = c / "victim"
        victim2.mkdir()
        out2 = c / "out"
        out2.mkdir()
        (out2 / "sub").symlink_to(victim2, target_is_directory=True)
        cases.append(
            Case(
                "output",
                "subfolder of the output is a link (recursive)",
                lambda: annotate(c / "images", out2, labels=c / "labels", recursive=True),
                None,
                out=out2,
                check=failed_naming(str(out2 / "sub")),
            )  # fmt: skip
        )

    _block3()

    def _block4() -> None:
        c = d / "predict_masks_link"
        png(c / "a.png")
        victim3 = c / "victim"
        victim3.mkdir()
        (victim3 / "a_0.png").write_text("not a mask")
        run_dir = c / "runs" / "p"
        run_dir.mkdir(parents=True)
        (run_dir / "masks").symlink_to(victim3, target_is_directory=True)

        def predict_link():
            r = cli("predict", "model=samkit-demo", f"source={c / 'a.png'}", "bboxes=[5,5,40,40]",
                    f"project={c / 'runs'}", "name=p", "exist_ok=true", cwd=c)  # fmt: skip
            if r.returncode != 0:
                raise SamkitError(f"exit {r.returncode}: {r.stderr.strip()}")
            return r

        cases.append(Case("output", "predict exist_ok with masks/ a link", predict_link,
                          SamkitError, str(run_dir / "masks"), out=run_dir))  # fmt: skip

    _block4()

    def _block5() -> None:
        c = d / "disk_full"
        c.mkdir()

        def disk_full():
            res = demo()(png(c / "a.png"), bboxes=[[5, 5, 40, 40]])[0]
            with mock.patch(
                "os.fsync", side_effect=OSError(errno.ENOSPC, "No space left on device")
            ):
                res.save(c / "out" / "overlay.png")

        cases.append(Case("output", "disk full while saving", disk_full, OutputError,
                          str(c / "out" / "overlay.png"), out=c))  # fmt: skip

    _block5()

    def _block6() -> None:
        if os.geteuid() != 0:  # root ignores permissions
            c = d / "read_only"
            ro = c / "ro"
            ro.mkdir(parents=True)
            png(c / "a.png")
            os.chmod(ro, 0o500)

            def read_only():
                demo()(str(c / "a.png"), bboxes=[[5, 5, 40, 40]])[0].save(ro / "x.png")

            cases.append(Case("output", "read-only output folder", read_only, OutputError,
                              str(ro / "x.png")))  # fmt: skip

    _block6()

    def _block7() -> None:
        c = d / "long_names_coco"
        long = "n" * 251 + ".png"
        png(c / "images" / long)
        png(c / "images" / "b.png", seed=2)
        (c / "labels").mkdir(parents=True)
        for stem in (Path(long).stem, "b"):
            (c / "labels" / f"{stem}.txt").write_text("0 0.5 0.5 0.4 0.4\n")
        out = c / "out"

        def long_coco():
            annotate(c / "images", out, labels=c / "labels", format="coco")
            return annotate(c / "images", out, labels=c / "labels", format="coco")  # rerun

        def check_long(summary):
            data = json.loads(summary.annotations_file.read_text())
            names = sorted(i["file_name"] for i in data["images"])
            expect(names == sorted([long, "b.png"]), f"images in annotations.json: {names}")
            expect(summary.skipped == 2 and summary.failed == 0, str(summary))

        cases.append(Case("output", "255-character name, COCO, rerun", long_coco, None, out=out,
                          check=check_long))  # fmt: skip

    _block7()

    def _block8() -> None:
        c = d / "output_inside_input"
        png(c / "images" / "a.png")
        png(c / "images" / "out" / "old.png")
        (c / "labels").mkdir(parents=True)
        (c / "labels" / "a.txt").write_text("0 0.5 0.5 0.4 0.4\n")
        out = c / "images" / "out"

        def inside():
            records: list[str] = []
            handler = logging.Handler()
            handler.emit = lambda rec: records.append(rec.getMessage())
            log = logging.getLogger("samkit.annotate")
            log.addHandler(handler)
            try:
                annotate(c / "images", out, labels=c / "labels", recursive=True)
            finally:
                log.removeHandler(handler)
            return records

        def check_inside(records):
            expect(any(str(out) in r and "inside" in r for r in records), f"no warning: {records}")

        cases.append(Case("output", "recursive, output inside the images", inside, None, out=out,
                          check=check_inside))  # fmt: skip

    _block8()

    def _block9() -> None:
        c = d / "cli_partial"
        for i in range(3):
            png(c / "images" / f"im{i}.png", seed=i)
        (c / "labels").mkdir(parents=True)
        for i in range(3):
            (c / "labels" / f"im{i}.txt").write_text("0 0.5 0.5 0.4 0.4\n" if i else "oops\n")
        out = c / "out"

        def partial():
            r = cli("annotate", f"data={c / 'images'}", f"labels={c / 'labels'}",
                    "sam_model=samkit-demo", f"output_dir={out}", cwd=c)  # fmt: skip
            expect(r.returncode == 3, f"exit {r.returncode} (want 3): {r.stderr[-500:]}")
            expect("im0" in r.stderr, f"the failed image is not named: {r.stderr[-500:]}")
            return r

        cases.append(Case("output", "annotate CLI, 1 of 3 fails: exit 3", partial, None, out=out))

    _block9()

    return cases


# -- downloads -------------------------------------------------------------------------------
def download_cases(root: Path, server) -> list[Case]:
    from samkit.download import WeightsFile, download_file, ensure_weights

    d = root / "download"
    cases = []
    ckpt = io.BytesIO()
    torch.save({"w": torch.zeros(4)}, ckpt)
    good = ckpt.getvalue()

    def fetch(name: str, route, **kw) -> Callable[[], Any]:
        server.routes[f"/{name}"] = route
        cache = d / name.replace(".", "_")
        cache.mkdir(parents=True)
        url = server.url(f"/{name}")

        def run():
            if kw:
                return download_file(url, cache / name, progress=False, **kw)
            return ensure_weights(WeightsFile(name, url, None, None), cache=cache, progress=False)

        def check(_):
            pass

        return run, cache, url, check

    def add(label, name, route, raises=DownloadError, check=None, **kw):
        run, cache, url, _ = fetch(name, route, **kw)

        def check_empty(result):
            left = sorted(p.name for p in cache.iterdir())
            expect(left == [], f"files left in the cache: {left}")

        cases.append(Case("download", label, run, raises, url, out=cache,
                          check=check or check_empty))  # fmt: skip
        return cache

    add("HTML error page with status 200", "sam_b.pt", body(b"<html>rate limited</html>",
        ctype="text/html"))  # fmt: skip
    add("HTML page sent as octet-stream", "sam_l.pt", body(b"<!DOCTYPE html><p>sorry</p>"))
    add("truncated archive, no Content-Length", "mobile_sam.pt",
        body(good[: len(good) // 2], length=False))  # fmt: skip
    add("one byte every 0.2 s", "drip.pt", drip(good, 0.2), deadline=1.5)
    add("no size known, over the cap", "big.pt", body(bytes(5000), length=False), max_bytes=1000)
    add("redirect to ftp://", "ftp.pt", redirect_to("ftp://127.0.0.1/x.pt"))

    cache = d / "stale_part"
    cache.mkdir(parents=True)
    (cache / "w.pt.part-0badf00d").write_bytes(b"half a file")
    server.routes["/w.pt"] = body(good)
    url = server.url("/w.pt")

    def stale():
        return ensure_weights(WeightsFile("w.pt", url, None, None), cache=cache, progress=False)

    def check_stale(_):
        left = sorted(p.name for p in cache.iterdir())
        expect(left == ["w.pt"], f"cache holds {left}")

    cases.append(Case("download", "stale .part file of a killed run", stale, None, out=cache,
                      check=check_stale))  # fmt: skip
    return cases


# -- prompts ---------------------------------------------------------------------------------
def prompt_cases(root: Path) -> list[Case]:
    d = root / "prompt"
    d.mkdir(parents=True)
    img = np.random.default_rng(3).integers(0, 255, (720, 1280, 3), dtype=np.uint8)
    rng = np.random.default_rng(4)
    xy = rng.uniform(0, 1, (10_000, 2)) * [1100, 540]
    boxes = np.concatenate([xy, xy + 100], 1)

    def many():
        p = demo().predictor()
        p.set_image(img)
        return p(bboxes=boxes)

    def streamed():
        p = demo().predictor()
        p.set_image(img)
        whole = p(bboxes=boxes[:5])
        parts = list(p.stream(bboxes=boxes[:5], chunk=2))
        return whole, parts

    def check_stream(result):
        whole, parts = result
        expect([len(r) for r in parts] == [2, 2, 1], "chunk sizes")
        idx = np.concatenate([r.prompt_index for r in parts])
        expect(idx.tolist() == [0, 1, 2, 3, 4], f"prompt_index {idx}")
        masks = np.concatenate([r.masks for r in parts])
        expect(np.array_equal(masks, whole.masks), "streamed masks differ from one call")

    def nan_box():
        return demo()(img, bboxes=[[1, 2, float("nan"), 4]])

    def outside():
        return demo()(img, bboxes=[[2000, 2000, 2100, 2100]])

    return [
        Case("prompt", "10,000 boxes at once on 1280 x 720", many, PromptError, "stream"),
        Case("prompt", "the same prompts streamed per chunk", streamed, None, check=check_stream),
        Case("prompt", "NaN in a box", nan_box, PromptError, "bboxes[0]"),
        Case("prompt", "box outside the image", outside, PromptError, "bboxes[0]"),
    ]


def make_cases(root: Path, server) -> list[Case]:
    """Every case, its files written under ``root``; ``server``: a local HTTP server with a
    ``routes`` dict (path -> handler function) and ``url(path)``."""
    return [
        *checkpoint_cases(root),
        *image_cases(root, server),
        *labels_cases(root),
        *output_cases(root),
        *download_cases(root, server),
        *prompt_cases(root),
    ]


class _Server:
    """A minimal local HTTP server for the corpus (routes: path -> handler(request))."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        routes: dict[str, Callable] = {}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                route = routes.get(self.path)
                if route is None:
                    self.send_error(404)
                else:
                    route(self)

            def log_message(self, *args):
                pass

        self.routes = routes
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path, help="an empty folder to write the corpus into")
    args = parser.parse_args()
    server = _Server()
    try:
        cases = make_cases(args.dir, server)
    finally:
        server.close()
    for case in cases:
        want = case.raises.__name__ if case.raises else "ok"
        print(f"{case.category:<10} {want:<16} {case.name}")


if __name__ == "__main__":
    main()
