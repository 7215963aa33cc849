"""What ``compare_reference.py`` measures: one :class:`Row` per line of its table.

Targets are the acceptance ratios of issue 22 (reference time / samkit time, same run).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Row:
    key: str
    label: str
    model: str
    peer: str
    ref: dict[str, Any] | None  # {"key", "task", "params"} for the reference worker
    samkit: dict[str, Any] | None
    ref_load: dict[str, Any] | None = None
    samkit_load: dict[str, Any] | None = None
    runs: int = 3
    runs_quick: int = 1
    warmup: int = 1
    cap: float | None = None  # seconds per call (None: the run's --cap)
    target: float | None = None
    quick: bool = True  # part of --quick
    notes: list[str] = field(default_factory=list)


def build_rows(
    quick: bool, precision: str, ckpts: dict, workdir: str, only: list[str] | None = None
) -> list[Row]:
    """The rows of one run (``quick`` drops the long ones)."""
    b, m = ckpts["sam_b"]["path"], ckpts["mobile_sam"]["path"]
    meta_b = {"key": "meta_sam_b", "family": "meta", "name": "sam_b", "checkpoint": b}
    ul_m = {"key": "ul_mobile_sam", "family": "ul", "name": "mobile_sam", "checkpoint": m}
    ul_b = {"key": "ul_sam_b", "family": "ul", "name": "sam_b", "checkpoint": b}
    sk_b = {"key": "sk_sam_b", "checkpoint": b, "precision": precision}
    sk_m = {"key": "sk_mobile_sam", "checkpoint": m, "precision": precision}
    yolo = {"key": "ul_yolov8n_seg", "family": "ul_yolo", "yaml": "yolov8n-seg.yaml"}
    fast = {"key": "ul_fastsam_s", "family": "ul_fastsam", "yaml": "yolov8s-seg.yaml"}
    fast["workdir"] = workdir

    def task(load: dict, name: str, **params: Any) -> dict:
        return {"key": load["key"], "task": name, "params": params}

    rows = []
    for model, peer, ref_load, sk_load in (
        ("ViT-B", "Meta", meta_b, sk_b),
        ("MobileSAM", "Ultralytics", ul_m, sk_m),
    ):
        short = "b" if model == "ViT-B" else "m"
        common = {"model": model, "peer": peer, "ref_load": ref_load, "samkit_load": sk_load}
        rows += [
            Row(
                f"set_image_{short}",
                "set_image",
                ref=task(ref_load, "set_image"),
                samkit=task(sk_load, "set_image"),
                target=3,
                **common,
            ),
            Row(
                f"box1_{short}",
                "one box after set_image",
                ref=task(ref_load, "box1"),
                samkit=task(sk_load, "box1"),
                runs=10,
                runs_quick=3,
                warmup=2,
                target=4,
                **common,
            ),
            Row(
                f"boxes100_{short}",
                "100 boxes after set_image",
                ref=task(ref_load, "boxes"),
                samkit=task(sk_load, "boxes"),
                target=4,
                **common,
            ),
        ]
        for n in (16, 32):
            if peer == "Meta":
                ref_t = task(ref_load, "everything", points_per_side=n)
                sk_t = task(sk_load, "everything_meta", points_per_side=n)
            else:
                ref_t = task(ref_load, "everything", points_stride=n)
                sk_t = task(sk_load, "everything", points_stride=n)
            rows.append(
                Row(
                    f"everything{n}_{short}",
                    f"segment-everything {n} x {n} (with encoder)",
                    ref=ref_t,
                    samkit=sk_t,
                    runs=1,
                    warmup=0,
                    quick=n == 16,
                    target=25 if n == 32 else None,
                    **common,
                )
            )
    # the crop example of Ultralytics' SAM page: SAMPredictor(...)(source, crop_n_layers=1,
    # points_stride=64) with mobile_sam.pt; 5 crops x 4,096 points
    crop = {"crop_n_layers": 1, "points_stride": 64}
    rows.append(
        Row(
            "crop_m",
            "crop example (crop_n_layers=1, points_stride=64)",
            "MobileSAM",
            "Ultralytics",
            ref=task(ul_m, "everything", **crop),
            samkit=task(sk_m, "everything", **crop),
            ref_load=ul_m,
            samkit_load=sk_m,
            runs=1,
            warmup=0,
            quick=False,
        )
    )
    # the comparison table of Ultralytics' SAM page: model(image), segment-everything defaults
    rows.append(
        Row(
            "table_sam_b",
            "Ultralytics page table: model(image)",
            "SAM-b",
            "Ultralytics",
            ref=task(ul_b, "everything"),
            samkit=task(sk_b, "everything"),
            ref_load=ul_b,
            samkit_load=sk_b,
            runs=1,
            warmup=0,
            quick=False,
        )
    )
    for load, name in ((fast, "FastSAM-s (random weights)"), (yolo, "YOLOv8n-seg (random)")):
        rows.append(
            Row(
                f"table_{load['key']}",
                "Ultralytics page table: model(image)",
                name,
                "Ultralytics",
                ref=task(load, "everything"),
                samkit=None,
                ref_load=load,
                runs=5,
                runs_quick=2,
                warmup=1,
            )
        )
    rows += sam2_rows(ckpts, precision)
    keep = [r for r in rows if (r.quick or not quick) and (not only or r.key in only)]
    return keep


def sam2_rows(ckpts: dict, precision: str) -> list[Row]:
    """SAM 2.1 rows against Meta's ``sam2``: added once samkit has SAM 2.1 (a ``sam2.1_t``
    checkpoint written by the orchestrator in ``ckpts``); until then none."""
    ck = ckpts.get("sam2.1_t")
    if ck is None:
        return []
    ref_load = {"key": "meta_sam2.1_t", "family": "sam2", "name": "sam2.1_t", "checkpoint": ck}
    sk_load = {"key": "sk_sam2.1_t", "checkpoint": ck["path"], "precision": precision}
    ref_load["checkpoint"] = ck["path"]
    common = {
        "model": "SAM 2.1 t",
        "peer": "Meta sam2",
        "ref_load": ref_load,
        "samkit_load": sk_load,
    }
    return [
        Row(
            "set_image_s2t",
            "set_image",
            ref={"key": ref_load["key"], "task": "set_image"},
            samkit={"key": sk_load["key"], "task": "set_image"},
            target=3,
            **common,
        ),
        Row(
            "box1_s2t",
            "one box after set_image",
            ref={"key": ref_load["key"], "task": "box1"},
            samkit={"key": sk_load["key"], "task": "box1"},
            runs=10,
            runs_quick=3,
            warmup=2,
            target=4,
            **common,
        ),
    ]
