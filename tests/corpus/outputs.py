"""Corpus cases for output folders (inputs never replaced, no writes through links, names,
disk errors, exit codes) and for downloads (checks before the rename, deadlines, caps)."""

from __future__ import annotations

import errno
import io
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import torch

from samkit.errors import DownloadError, OutputError, SamkitError
from tests.corpus.common import (
    Case,
    annotate,
    body,
    cli,
    demo,
    drip,
    expect,
    failed_naming,
    png,
    redirect_to,
)


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
    from samkit.zoo.download import WeightsFile, download_file, ensure_weights

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
