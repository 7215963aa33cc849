"""samkit against the reference implementations, on this machine, in one run: speed ratios.

The reference (Meta's ``segment_anything``, Meta's ``sam2`` once samkit has SAM 2.1, and
Ultralytics) runs in another interpreter (``--reference-python``: a separate venv, see
``shared/FACTS.md``), samkit in this one; each side is a worker process
(``benchmarks/compare/``) answering one timed call per request, and the calls alternate between
the sides (interleaved, the order swapped every round), so load changes hit both alike. Both
load the same checkpoints, written here with samkit's seeded weights (plus the prompt encoder
and mask decoder trained on shapes, ``tests/data/sam_b_shapes_decoder.pt``, so that masks pass
the filters as with real weights; ``--decoder seeded`` for purely seeded weights), and the same
image (Ultralytics' ``zidane.jpg``, 1280 x 720).

    python benchmarks/compare_reference.py --reference-python /work/ref/bin/python [--quick]
        [--load] [--baseline QUIET.json] [--cap S] [--only ROW ...]

Writes ``benchmarks/results/compare-*.json`` and ``.md`` (the README's table) and prints it.
``--load`` runs a fixed background job (a single-threaded matmul loop) pinned to the last CPU
for the whole run, for both sides; with ``--baseline`` (a quiet run's JSON) it checks the
acceptance rule: ratios within 1.5x of the quiet ones, no samkit figure above 2x its quiet one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "compare"))
sys.path.insert(0, str(HERE.parent))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from rows import Row, build_rows  # noqa: E402
from workers import BackgroundLoad, Worker, WorkerError, WorkerTimeout  # noqa: E402

from samkit.cli.benchmark import benchmark_boxes, benchmark_image  # noqa: E402

FIXTURE = HERE.parent / "tests" / "data" / "sam_b_shapes_decoder.pt"
#: The reference runs with torch's defaults: what ``import samkit`` set in this process's
#: environment (its OpenMP wait policy) is taken out of the reference worker's (None = unset).
REF_ENV: dict[str, str | None] = (
    {"GOMP_SPINCOUNT": None, "OMP_WAIT_POLICY": None, "SAMKIT_SET_OMP_WAIT_POLICY": None}
    if os.environ.get("SAMKIT_SET_OMP_WAIT_POLICY") == "1"
    else {}
)
#: pause before each timed call, so that the previous call's threads are asleep
SETTLE_S = 0.02
DOCS_BOX = [439.0, 437.0, 524.0, 709.0]  # the box of Ultralytics' SAM page (zidane.jpg)


def _image(workdir: Path, assets: str | None) -> tuple[Path, str]:
    src = Path(assets or "") / "zidane.jpg"
    if assets and src.is_file():
        rgb, name = np.asarray(Image.open(src).convert("RGB")), "zidane.jpg (Ultralytics assets)"
    else:
        rgb, name = benchmark_image(720, 1280), "synthetic 1280 x 720 (samkit.cli.benchmark)"
    path = workdir / "image.png"
    Image.fromarray(rgb).save(path)
    return path, name


def _boxes(h: int, w: int) -> list[list[float]]:
    rest = benchmark_boxes(99, h, w).round(1).tolist()
    return [DOCS_BOX, *rest]


def _checkpoints(ref: Worker, sk: Worker, workdir: Path, fixture: Path | None) -> dict:
    """Seeded checkpoints both sides load: ``sam_b.pt`` (Meta's template, which Ultralytics'
    SAM-b shares) and ``mobile_sam.pt`` (Ultralytics' template, TinyViT's head included)."""
    out = {}
    for name, family in (("sam_b", "meta"), ("mobile_sam", "ul")):
        keys = ref.call({"op": "template", "family": family, "name": name}, 600)["keys"]
        path = workdir / f"{name}.pt"
        req = {"op": "seed", "keys": keys, "path": str(path)}
        if fixture is not None:
            req["decoder_fixture"] = str(fixture)
        out[name] = sk.call(req, 600)
    from samkit.zoo.registry import get_variant

    if get_variant("sam2.1_t") is not None:  # SAM 2.1 landed: Meta's sam2 file layout
        keys = ref.call({"op": "template", "family": "sam2", "name": "sam2.1_t"}, 600)["keys"]
        path = workdir / "sam2.1_hiera_tiny.pt"
        req = {"op": "seed", "keys": keys, "path": str(path), "wrap_model": True}
        out["sam2.1_t"] = sk.call(req, 600)
    return out


def _measure(
    row: Row, ref: Worker, sk: Worker, common: dict, runs: int, cap: float, failed: dict
) -> dict:
    sides = [("reference", ref, row.ref), ("samkit", sk, row.samkit)]
    times: dict[str, list[float]] = {"reference": [], "samkit": []}
    cpu: dict[str, list[float]] = {"reference": [], "samkit": []}
    notes: dict[str, str] = {}
    for side, _, spec in sides:
        if spec is not None and spec["key"] in failed:
            notes[side] = failed[spec["key"]]
    loads = []
    threads_used: dict[str, list[int]] = {}
    warm = row.warmup
    for r in range(runs):
        order = sides if r % 2 == 0 else sides[::-1]
        for side, worker, spec in order:
            if spec is None or side in notes:
                continue
            req = {"op": "run", **common, **spec, "warmup": warm if r == 0 else 0}
            # Let the other side's OpenMP threads finish their bounded spin first: a thread
            # still spinning when a call starts is load (to samkit's thread rule too).
            time.sleep(SETTLE_S)
            loads.append(os.getloadavg()[0])
            limit = row.cap or cap
            try:
                reply = worker.call(req, limit * (1 + req["warmup"]))
            except WorkerTimeout:
                notes[side] = f"did not finish in {limit:.0f} s"
                continue
            except WorkerError as exc:
                notes[side] = f"error: {exc}"
                continue
            times[side].append(reply["wall_s"])
            if reply.get("threads") is not None:
                threads_used.setdefault(side, []).append(reply["threads"])
            cpu[side].append(reply["cpu_s"])
    out: dict[str, Any] = {
        "row": row.key,
        "label": row.label,
        "model": row.model,
        "peer": row.peer,
        "target": row.target,
        "notes": notes,
    }
    for side in ("reference", "samkit"):
        if times[side]:
            out[f"{side}_s"] = statistics.median(times[side])
            out[f"{side}_runs_s"] = [round(t, 4) for t in times[side]]
            out[f"{side}_cpu_s"] = statistics.median(cpu[side])
    if "reference_s" in out and "samkit_s" in out:
        out["ratio"] = out["reference_s"] / out["samkit_s"]
    elif "samkit_s" in out and "reference" in notes and notes["reference"].startswith("did not"):
        out["ratio_at_least"] = (row.cap or cap) / out["samkit_s"]
    if threads_used:  # samkit's CPU policy: torch threads per timed call
        out["threads_used"] = threads_used
    out["load_during"] = [round(min(loads), 2), round(max(loads), 2)] if loads else None
    return out


def _fmt_s(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x * 1e3:.1f} ms" if x < 1 else f"{x:.2f} s"


def _note(note: str | None) -> str | None:
    """A note fit for a table cell: first line, at most 60 characters."""
    if not note:
        return None
    line = note.strip().splitlines()[0].replace("|", "/")
    return line if len(line) <= 60 else line[:57] + "..."


def format_table(result: dict) -> str:
    m = result["machine"]
    peak = m.get("matmul_peak_gflops", {})
    lines = [
        f"Machine: {m['cpu']}, {m['usable_cores']} cores, ISA {'/'.join(m['isa'])}, native bf16 "
        f"{'yes' if m['native_bf16'] else 'no'}; matmul peak fp32 {peak.get('fp32', '?')} / bf16 "
        f"{peak.get('bf16', '?')} GFLOP/s. samkit: torch {m['torch']}, precision "
        f"{result['samkit_precision']}; reference: torch {result['reference']['torch']}, "
        f"Ultralytics {result['reference'].get('ultralytics', '-')}. Image: {result['image']}. "
        f"Load average {result['load_start']} -> {result['load_end']}"
        + (f"; background load: {result['background']}" if result.get("background") else "")
        + ".",
        "",
        "| measurement | model | peer | peer | samkit | ratio | target | met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        ref = r.get("reference_s")
        ref_txt = _note(r["notes"].get("reference")) or _fmt_s(ref)
        sk_txt = _note(r["notes"].get("samkit")) or _fmt_s(r.get("samkit_s"))
        if "ratio" in r:
            ratio = f"{r['ratio']:.1f}x"
        elif "ratio_at_least" in r:
            ratio = f"> {r['ratio_at_least']:.0f}x"
        else:
            ratio = "-"
        met = "-"
        if r.get("target"):
            best = r.get("ratio", r.get("ratio_at_least"))
            met = "-" if best is None else ("yes" if best >= r["target"] else "no")
        target = f">= {r['target']}x" if r.get("target") else ""
        lines.append(
            f"| {r['label']} | {r['model']} | {r['peer']} | {ref_txt} | {sk_txt} | {ratio} | "
            f"{target} | {met} |"
        )
    if result.get("load_check"):
        lines += ["", "Under load against the quiet run:", ""]
        lines += [f"- {c}" for c in result["load_check"]]
    return "\n".join(lines)


def load_check(result: dict, baseline: dict) -> list[str]:
    """The acceptance rule under load: ratios within 1.5x of quiet, samkit within 2x of quiet."""
    quiet = {r["row"]: r for r in baseline["rows"]}
    out = []
    for r in result["rows"]:
        q = quiet.get(r["row"])
        if not q or "samkit_s" not in r or "samkit_s" not in q:
            continue
        slow = r["samkit_s"] / q["samkit_s"]
        msg = f"{r['label']} ({r['model']}): samkit {slow:.2f}x its quiet time"
        ok = slow <= 2.0
        if "ratio" in r and "ratio" in q:
            rr = q["ratio"] / r["ratio"]
            msg += f", ratio {r['ratio']:.1f}x vs quiet {q['ratio']:.1f}x"
            ok = ok and rr <= 1.5
        out.append(("ok: " if ok else "MISSED: ") + msg)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference-python", help="python of the reference venv")
    ap.add_argument("--table", type=Path, help="only print the table of a (partial) result JSON")
    ap.add_argument("--quick", action="store_true", help="1 run, 16 x 16 grids, no crop example")
    ap.add_argument("--load", action="store_true", help="fixed background job on the last CPU")
    ap.add_argument("--baseline", type=Path, help="a quiet run's JSON (for --load's check)")
    ap.add_argument("--cap", type=float, default=None, help="seconds per call before giving up")
    ap.add_argument("--precision", default="auto", help="samkit precision (default auto)")
    ap.add_argument("--decoder", choices=["shapes", "seeded"], default="shapes")
    ap.add_argument("--only", nargs="*", help="row keys to run (see rows.py)")
    ap.add_argument("--runs", type=int, help="at most this many timed runs per row")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    if args.table:
        data = json.loads(args.table.read_text())
        data.setdefault("load_end", data.get("load_start"))
        print(format_table(data) + ("\n\n(partial run)" if data.get("partial") else ""))
        return 0
    if not args.reference_python:
        ap.error("--reference-python is required")
    cap = args.cap or (120.0 if args.quick else 600.0)

    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    tag = "-quick" * args.quick + "-load" * args.load
    base = args.out / f"compare-{stamp}{tag}"
    background = None
    with tempfile.TemporaryDirectory(prefix="samkit-compare-") as tmp:
        workdir = Path(tmp)
        ref = Worker(
            "reference", args.reference_python, "reference_worker.py", workdir, env=REF_ENV
        )
        sk = Worker("samkit", sys.executable, "samkit_worker.py", workdir)
        try:
            ref_info = ref.call({"op": "info"}, 300)
            machine = sk.call({"op": "info", "peak": True}, 300)["machine"]
            image, image_name = _image(workdir, ref_info.get("assets"))
            h, w = Image.open(image).size[::-1]
            fixture = FIXTURE if args.decoder == "shapes" else None
            ckpts = _checkpoints(ref, sk, workdir, fixture)
            rows = build_rows(args.quick, args.precision, ckpts, str(workdir), args.only)
            failed: dict[str, str] = {}
            for row in rows:  # load everything first (not timed against each other)
                for worker, req in ((ref, row.ref_load), (sk, row.samkit_load)):
                    if not req or req["key"] in {x["key"] for x in worker.loads} | set(failed):
                        continue
                    try:
                        worker.call({"op": "load", **req}, 900)
                    except (WorkerError, WorkerTimeout) as exc:
                        failed[req["key"]] = f"load failed: {exc}"
                        print(failed[req["key"]], flush=True)
            common = {"image": str(image), "boxes": _boxes(h, w)}
            if args.load:
                background = BackgroundLoad()
            load_start = [round(x, 2) for x in os.getloadavg()]
            results = []
            for row in rows:
                runs = row.runs_quick if args.quick else row.runs
                runs = min(runs, args.runs) if args.runs else runs
                print(f"{row.label} / {row.model} ...", flush=True)
                res = _measure(row, ref, sk, common, runs, cap, failed)
                print(f"  {json.dumps({k: v for k, v in res.items() if 'runs' not in k})}")
                results.append(res)
                partial = {
                    "machine": machine,
                    "reference": ref_info,
                    "samkit_precision": args.precision,
                    "image": image_name,
                    "background": background.describe() if background else None,
                    "load_start": load_start,
                    "load_end": [round(x, 2) for x in os.getloadavg()],
                    "partial": True,
                    "rows": results,
                }
                base.with_suffix(".partial.json").write_text(json.dumps(partial, indent=2))
        finally:
            if background is not None:
                background.stop()
            ref.stop()
            sk.stop()
    result = {
        "machine": machine,
        "reference": ref_info,
        "samkit_precision": args.precision,
        "image": image_name,
        "quick": args.quick,
        "background": background.describe() if background else None,
        "load_start": load_start,
        "load_end": [round(x, 2) for x in os.getloadavg()],
        "rows": results,
    }
    if args.baseline:
        result["load_check"] = load_check(result, json.loads(args.baseline.read_text()))
    table = format_table(result)
    base.with_suffix(".partial.json").unlink(missing_ok=True)
    base.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    base.with_suffix(".md").write_text(table + "\n")
    print(table)
    print(f"\nwrote {base}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
