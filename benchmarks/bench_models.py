"""Benchmark the SAM variants: encoder / decoder / segment-everything time, memory, GFLOP/s.

    python benchmarks/bench_models.py                      # all 4 models, fp32 and bf16
    python benchmarks/bench_models.py --models sam_b mobile_sam --precisions bf16 --runs 5
    python benchmarks/bench_models.py --checkpoint sam_b=/path/sam_vit_b_01ec64.pth

Prints a Markdown table (the README's "Performance" section) and writes the full result as JSON
(``--json``, default ``benchmarks/results/latest.json``). Seeded weights unless a checkpoint is
given, so it runs offline. Run it on a quiet machine: other processes inflate the wall times
(the CPU-time column and the load average in the header show how much).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from samkit.cli.benchmark import MODELS, format_table, run_benchmarks  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument(
        "--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "auto"]
    )
    p.add_argument("--runs", type=int, default=3, help="timed runs per measurement (median)")
    p.add_argument("--warmup", type=int, default=1, help="untimed warm-up runs")
    p.add_argument("--no-everything", action="store_true", help="skip segment-everything")
    p.add_argument("--everything-runs", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: cores)")
    p.add_argument(
        "--no-reuse-memory", action="store_true", help="keep glibc's default large-block policy"
    )
    p.add_argument("--checkpoint", action="append", default=[], metavar="MODEL=PATH")
    p.add_argument("--in-process", action="store_true", help="no subprocess per configuration")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "latest.json"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    checkpoints = {}
    for item in args.checkpoint:
        model, sep, path = item.partition("=")
        if not sep or model not in MODELS:
            sys.exit(
                f"--checkpoint expects MODEL=PATH with MODEL in {', '.join(MODELS)}; got {item!r}"
            )
        checkpoints[model] = path
    result = run_benchmarks(
        args.models,
        args.precisions,
        args.runs,
        args.warmup,
        checkpoints=checkpoints,
        everything=not args.no_everything,
        everything_runs=args.everything_runs,
        threads=args.threads,
        reuse_memory=not args.no_reuse_memory,
        isolate=not args.in_process,
        json_path=args.json,
        log=lambda msg: print(msg, file=sys.stderr, flush=True),
    )
    print(format_table(result))
    print(f"\nJSON: {args.json}", file=sys.stderr)
    return 0 if all("error" not in r for r in result["results"]) else 1


if __name__ == "__main__":
    sys.exit(main())
