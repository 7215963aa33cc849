"""Images/s of a folder job: the local engine vs the Ray Data engine with 1 and 2 actors.

``--job annotate`` (default): auto_annotate on synthetic shapes images with their YOLO boxes,
SAM masks written as YOLO labels; ``--job everything``: segment_folder (``--grid`` points per
side, one SA-1B JSON per image); ``--job embeddings``: embed_folder (one .npz per image). Every
configuration runs the same job with 1 torch thread per model, on a local Ray cluster that
this script starts once (so cluster start-up is not counted; it is printed separately). The
per-image overhead of Ray is the 1-actor time minus the local time, per image.

    PYTHONPATH=. python benchmarks/bench_ray.py --images 40 --model samkit-demo
    PYTHONPATH=. python benchmarks/bench_ray.py --images 20 --model mobile_sam --size 640
    PYTHONPATH=. python benchmarks/bench_ray.py --images 40 --job everything --grid 16
    PYTHONPATH=. python benchmarks/bench_ray.py --images 40 --job embeddings
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

import samkit
from samkit.cli.benchmark import machine_info
from samkit.data.synthetic import write_shapes_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--size", type=int, default=256, help="synthetic image side (px)")
    ap.add_argument("--model", default="samkit-demo", help="samkit-demo, or a seeded variant")
    ap.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--job", choices=["annotate", "everything", "embeddings"], default="annotate")
    ap.add_argument("--grid", type=int, default=16, help="everything: points per side")
    args = ap.parse_args()

    import ray

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="bench_ray_"))
    try:
        write_shapes_dataset(
            work / "ds", args.images, 0, seed=11, height=args.size, width=args.size
        )
        images, labels = work / "ds" / "images" / "train", work / "ds" / "labels" / "train"
        sam_model = args.model
        if args.model != "samkit-demo":
            from samkit.zoo.seeded import write_seeded_checkpoint

            sam_model = str(write_seeded_checkpoint(args.model, work / f"{args.model}.pt"))

        def job(engine: str, actors: int | None = None) -> float:
            out = work / f"out_{engine}_{actors}"
            shutil.rmtree(out, ignore_errors=True)
            t0 = time.perf_counter()
            common = dict(engine=engine, ray_actors=actors, progress=False)
            if args.job == "annotate":
                s = samkit.auto_annotate(
                    images,
                    labels=labels,
                    sam_model=sam_model,
                    output_dir=out,
                    names=["ellipse", "rectangle", "polygon"],
                    **common,
                )
                done = s.annotated
            elif args.job == "everything":
                s = samkit.segment_folder(
                    images, sam_model, out, points_per_side=args.grid, **common
                )
                done = s.done
            else:
                s = samkit.embed_folder(images, sam_model, out, **common)
                done = s.done
            dt = time.perf_counter() - t0
            assert done == args.images, s
            return dt

        rows = {"local": job("local")}
        t0 = time.perf_counter()
        here = str(Path(samkit.__file__).resolve().parents[1])
        path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)
        ray.init(
            num_cpus=max(args.actors),
            include_dashboard=False,
            log_to_driver=False,
            object_store_memory=256 * 1024**2,
            runtime_env={"env_vars": {"PYTHONPATH": path}},
        )
        start_s = time.perf_counter() - t0
        for n in args.actors:
            rows[f"ray x{n}"] = job("ray", n)
        ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    info = machine_info(measure_peak=False)
    print(f"machine: {info['cpu']}, {info['logical_cpus']} CPUs; load {os.getloadavg()}")
    print(
        f"job {args.job}: {args.images} images {args.size}x{args.size}, "
        f"model {args.model}, 1 thread"
    )
    print(f"local Ray cluster start: {start_s:.1f} s (not counted below)")
    print("| engine | s | images/s | s/image |")
    print("|---|---|---|---|")
    for name, dt in rows.items():
        print(f"| {name} | {dt:.1f} | {args.images / dt:.2f} | {dt / args.images:.3f} |")
    if "ray x1" in rows:
        over = (rows["ray x1"] - rows["local"]) / args.images
        print(f"Ray overhead per image (1 actor vs local): {over * 1000:.0f} ms")
    print(json.dumps({k: round(v, 3) for k, v in rows.items()}))


if __name__ == "__main__":
    main()
