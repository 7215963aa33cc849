"""A corpus of hostile and odd inputs, generated (no committed binaries), with expectations.

Each :class:`Case` builds its files under its own folder when the corpus is made, and ``run``
does the hostile thing. The expectation: the error class (``raises``; None means the call must
succeed, e.g. a batch that skips the bad item), a text the message must contain (the file or
argument: ``names``), and the only folder allowed to change (``out``; None: nothing changes).
``tests/test_corpus.py`` runs every case and checks all three.

    python -m tests.corpus.make_corpus DIR     # (from the repo root) write the files, list cases

Categories: checkpoint, image, labels, output, download, prompt.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import threading
import zipfile
from collections.abc import Callable
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
    ImageError,
    PromptError,
)
from tests.corpus.common import (  # noqa: F401 (Case re-exported for the test)
    Case,
    annotate,
    demo,
    demo_state,
    drip,
    expect,
    failed_naming,
    png,
    png_bytes,
    redirect_to,
    timed,
)
from tests.corpus.outputs import download_cases, output_cases


# -- checkpoints -----------------------------------------------------------------------------
def checkpoint_cases(root: Path) -> list[Case]:
    from safetensors.torch import save_file

    from samkit.zoo.registry import VARIANTS

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

    p = d / "zip_version_25.pt"  # found by the fuzzer: zipfile raised NotImplementedError
    raw = bytearray(buf.getvalue())
    cd = raw.find(b"PK\x01\x02")
    raw[cd + 6 : cd + 8] = (250).to_bytes(2, "little")  # "version needed to extract" 25.0
    p.write_bytes(bytes(raw))
    add("zip entry needing version 25.0", p)

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

    from samkit.data.sources import load_image

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
