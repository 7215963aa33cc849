"""Speed benchmark of the SAM variants, per model and encoder precision.

For each (model, precision): image-encoder time per image (``SamPredictor.set_image`` on a
1280 x 720 image, so the 1024 x 1024 encoder input plus resizing), decode time for 1 and 100 box
prompts (``predict_torch``, masks at the original size), segment-everything time per image
(when ``SamAutomaticMaskGenerator`` is available), peak RSS, and the achieved GFLOP/s against the
matmul peak measured on the same machine. When both fp32 and bf16 run, their agreement
(embedding relative error, mask IoU of the 100 box prompts) is reported too.

Timings are the median of ``runs`` runs after ``warmup`` runs; CPU time (all threads) is kept
next to wall time, which tells a loaded machine from a slow path. Each configuration runs in a
fresh subprocess (``python -m samkit.cli.benchmark --worker SPEC``), so peak RSS is its own. Seeded
weights are used unless a checkpoint is given, so it runs offline.

Public: :func:`run_benchmarks` (returns a JSON-ready dict), :func:`format_table`,
:func:`print_table`, :func:`matmul_peak`, :func:`machine_info`.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import SamkitError
from ..predict.threads import configure_cpu, usable_cores
from ..safeio import write_atomic as atomic_write

MODELS = ("sam_b", "sam_l", "sam_h", "mobile_sam")
PRECISIONS = ("fp32", "bf16")
PARITY_IMAGE = Path(__file__).resolve().parents[2] / "tests" / "data" / "image_a.png"


# -- machine -----------------------------------------------------------------------------------
def matmul_peak(dtype: torch.dtype = torch.float32, budget_s: float = 1.5, m: int = 4096) -> float:
    """Best GFLOP/s of a ViT-B MLP-shaped product (``m x 768`` @ ``768 x 3072``, weight stored
    ``3072 x 768`` as in ``nn.Linear``) within about ``budget_s``."""
    k, n = 768, 3072
    a = torch.randn(m, k).to(dtype)
    w = torch.randn(n, k).to(dtype)
    out = torch.empty(m, n, dtype=dtype)
    best = float("inf")
    start = time.perf_counter()
    reps = 0
    with torch.inference_mode():
        torch.mm(a, w.t(), out=out)  # warm-up
        while reps < 3 or time.perf_counter() - start < budget_s:
            t = time.perf_counter()
            torch.mm(a, w.t(), out=out)
            best = min(best, time.perf_counter() - t)
            reps += 1
            if reps >= 50:
                break
    return 2 * m * k * n / best / 1e9


def cpu_model() -> str:
    """CPU model name, with the x86 family/model numbers (they tell CPU generations apart)."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() not in fields:
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return name


def machine_info(measure_peak: bool = True) -> dict[str, Any]:
    """CPU, cores, threads, bf16 support, torch version, load and (optionally) matmul peaks."""
    from ..predict.precision import cpu_flags, cpu_has_native_bf16

    flags = cpu_flags()
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cores": usable_cores(),
        "torch_threads": torch.get_num_threads(),
        "isa": sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "bf16"}),
        "native_bf16": cpu_has_native_bf16(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average": _load(),
    }
    if measure_peak:
        info["matmul_peak_gflops"] = {
            "fp32": round(matmul_peak(torch.float32), 1),
            # emulated bf16 is ~10x slower: a smaller product keeps this to a few seconds
            "bf16": round(matmul_peak(torch.bfloat16, m=4096 if info["native_bf16"] else 256), 1),
        }
    return info


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _peak_rss_reset() -> None:
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _peak_rss_bytes() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# -- inputs ------------------------------------------------------------------------------------
def benchmark_image(h: int = 720, w: int = 1280, seed: int = 0) -> np.ndarray:
    """A deterministic RGB uint8 photo-sized image: smooth gradients, noise and flat shapes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    img = np.stack([xx / w * 200, yy / h * 200, (xx + yy) / (h + w) * 120], -1)
    img += rng.normal(0, 12, (h, w, 3))
    for _ in range(12):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(20, 160)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(0, 256, 3)
    return np.clip(img, 0, 255).astype(np.uint8)


def benchmark_boxes(n: int, h: int, w: int, seed: int = 1) -> np.ndarray:
    """``n x 4`` XYXY boxes (pixels of an ``h x w`` image), deterministic."""
    rng = np.random.default_rng(seed)
    x0 = rng.uniform(0, w * 0.7, n)
    y0 = rng.uniform(0, h * 0.7, n)
    bw = rng.uniform(0.1, 0.3, n) * w
    bh = rng.uniform(0.1, 0.3, n) * h
    return np.stack([x0, y0, np.minimum(x0 + bw, w), np.minimum(y0 + bh, h)], 1)


# -- one configuration (runs in the worker process) ------------------------------------------
def _timed(fn: Callable[[], Any], runs: int, warmup: int) -> tuple[list[float], list[float]]:
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(runs):
        w, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return wall, cpu


def _mask_generator_class() -> type | None:
    from ..everything.automatic import SamAutomaticMaskGenerator

    return SamAutomaticMaskGenerator


def _build(model: str, checkpoint: str | None):
    from ..model import SAM
    from ..zoo.info import encoder_flops
    from ..zoo.registry import get_variant
    from ..zoo.seeded import seeded_model

    if checkpoint:
        sam = SAM(checkpoint)
        return sam.model, sam.config, encoder_flops(sam.config.encoder)
    variant = get_variant(model)
    if variant is None:
        raise SamkitError(f"unknown model {model!r}; choose from {', '.join(MODELS)}")
    return seeded_model(model).eval(), variant.config, encoder_flops(variant.config.encoder)


def bench_one(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Benchmark one (model, precision) in this process; see :func:`run_benchmarks`."""
    from ..predict.precision import resolve_precision
    from ..predict.sam_predictor import SamPredictor

    runs, warmup = int(spec.get("runs", 3)), int(spec.get("warmup", 1))
    t0 = time.perf_counter()
    sam, config, flops = _build(spec["model"], spec.get("checkpoint"))
    build_s = time.perf_counter() - t0
    settings = configure_cpu(spec.get("threads"), spec.get("reuse_memory", True))
    _peak_rss_reset()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        precision = resolve_precision(spec["precision"], sam.device, sam)
    notes = [str(w.message) for w in caught]
    predictor = SamPredictor(sam, precision=precision)
    image = benchmark_image(*spec.get("image_hw", (720, 1280)))
    enc_wall, enc_cpu = _timed(lambda: predictor.set_image(image), runs, warmup)
    encoder_rss = _peak_rss_bytes()

    h, w = image.shape[:2]
    boxes = torch.as_tensor(
        predictor.model.image_size / max(h, w) * benchmark_boxes(100, h, w), dtype=torch.float
    )
    decode: dict[str, float] = {}
    masks = None
    for n in (1, 100):
        box = boxes[:n]
        wall, _ = _timed(
            lambda box=box: predictor.predict_torch(None, None, box, multimask_output=False),
            runs,
            1 if n == 1 else 0,
        )
        decode[f"decode_{n}_ms"] = round(1000 * statistics.median(wall), 2)
    if spec.get("save"):
        masks, _, _ = predictor.predict_torch(None, None, boxes, multimask_output=False)
        np.savez(
            spec["save"],
            embedding=predictor.features.numpy(),
            masks=np.packbits(masks[:, 0].numpy(), axis=-1),
        )

    everything: float | None = None
    cls = _mask_generator_class()
    if cls is None:
        notes.append("segment-everything: SamAutomaticMaskGenerator not available")
    elif spec.get("everything", True):
        kw = {"precision": precision} if "precision" in inspect.signature(cls).parameters else {}
        generator = cls(sam, **kw)
        wall, _ = _timed(lambda: generator.generate(image), int(spec.get("everything_runs", 1)), 0)
        everything = round(statistics.median(wall), 3)

    enc = statistics.median(enc_wall)
    return {
        "model": spec["model"],
        "checkpoint": spec.get("checkpoint"),
        "precision": precision,
        "requested_precision": spec["precision"],
        "threads": settings["threads"],
        "reuse_memory": settings["reuse_memory"],
        "build_s": round(build_s, 2),
        "encoder_s": round(enc, 4),
        "encoder_runs_s": [round(x, 4) for x in enc_wall],
        "encoder_cpu_s": round(statistics.median(enc_cpu), 4),
        "encoder_gflop": round(flops / 1e9, 1),
        "encoder_gflops": round(flops / enc / 1e9, 1),
        **decode,
        "everything_s": everything,
        "encoder_peak_rss_gib": round(encoder_rss / 2**30, 2),
        "peak_rss_gib": round(_peak_rss_bytes() / 2**30, 2),
        "load_average": _load(),
        "notes": notes,
    }


# -- orchestration -----------------------------------------------------------------------------
def _run_worker(spec: dict[str, Any], isolate: bool) -> dict[str, Any]:
    if not isolate:
        return bench_one(spec)
    with tempfile.TemporaryDirectory(prefix="samkit-bench-") as tmp:
        out = Path(tmp) / "result.json"
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        cmd = [sys.executable, "-m", "samkit.cli.benchmark", "--worker", json.dumps(spec), str(out)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            return {**spec, "error": " | ".join(tail) or f"exit code {proc.returncode}"}
        return json.loads(out.read_text())


def agreement(fp32_npz: str | Path, bf16_npz: str | Path) -> dict[str, float]:
    """bf16 vs fp32: embedding relative errors and mask IoU of the 100 box prompts."""
    a, b = np.load(fp32_npz), np.load(bf16_npz)
    e32, e16 = a["embedding"].astype(np.float64), b["embedding"].astype(np.float64)
    m32, m16 = np.unpackbits(a["masks"], axis=-1), np.unpackbits(b["masks"], axis=-1)
    inter = (m32 & m16).reshape(len(m32), -1).sum(1)
    union = (m32 | m16).reshape(len(m32), -1).sum(1)
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return {
        "embedding_rel_error": float(np.linalg.norm(e16 - e32) / np.linalg.norm(e32)),
        "embedding_max_error": float(np.abs(e16 - e32).max() / np.abs(e32).max()),
        "mask_iou_mean": float(iou.mean()),
        "mask_iou_min": float(iou.min()),
    }


def run_benchmarks(
    models: Sequence[str] = MODELS,
    precisions: Sequence[str] = PRECISIONS,
    runs: int = 3,
    warmup: int = 1,
    *,
    checkpoints: Mapping[str, str] | None = None,
    everything: bool = True,
    everything_runs: int = 1,
    threads: int | None = None,
    reuse_memory: bool = True,
    isolate: bool = True,
    measure_peak: bool = True,
    image_hw: tuple[int, int] = (720, 1280),
    json_path: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Benchmark ``models`` x ``precisions``; returns ``{"machine", "results", "agreement"}``.

    Args:
        models: variant names (``sam_b``, ``sam_l``, ``sam_h``, ``mobile_sam``).
        precisions: ``"fp32"``, ``"bf16"``, ``"auto"``.
        runs, warmup: timed runs (median reported) and untimed warm-up runs per measurement.
        checkpoints: ``{model: checkpoint path}`` to time real weights instead of seeded ones.
        everything: time segment-everything (``everything_runs`` runs, no warm-up).
        threads, reuse_memory: passed to :func:`samkit.runtime.configure_cpu`.
        isolate: run each configuration in a fresh subprocess (own peak RSS).
        measure_peak: measure the matmul peak (a few seconds) for the "% of peak" column.
        image_hw: size of the synthetic test image (decode times include upsampling to it).
        json_path: also write the result there (atomically).
        log: progress printer (None for silence).
    """
    say = log or (lambda _msg: None)
    if runs < 1 or warmup < 0:
        raise SamkitError(f"runs must be >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    for m in models:
        if m not in MODELS:
            raise SamkitError(f"unknown model {m!r}; choose from {', '.join(MODELS)}")
    for p in precisions:
        if p not in ("fp32", "bf16", "auto"):
            raise SamkitError(f"unknown precision {p!r}; choose from fp32, bf16, auto")
    configure_cpu(threads, reuse_memory)
    machine = machine_info(measure_peak)
    say(
        f"machine: {machine['cpu']}, {machine['usable_cores']} cores, "
        f"matmul peak {machine.get('matmul_peak_gflops', '?')} GFLOP/s"
    )
    results, agree = [], {}
    # fp32 first, so that bf16 can be compared with it
    order = sorted(dict.fromkeys(precisions), key=lambda p: p != "fp32")
    with tempfile.TemporaryDirectory(prefix="samkit-bench-") as tmp:
        for model in models:
            saved: dict[str, str] = {}
            for precision in order:
                save = str(Path(tmp) / f"{model}-{precision}.npz")
                spec = {
                    "model": model,
                    "precision": precision,
                    "checkpoint": (checkpoints or {}).get(model),
                    "runs": runs,
                    "warmup": warmup,
                    "everything": everything,
                    "everything_runs": everything_runs,
                    "threads": threads,
                    "reuse_memory": reuse_memory,
                    "image_hw": list(image_hw),
                    "save": save,
                }
                say(f"{model} {precision} ...")
                res = _run_worker(spec, isolate)
                res.pop("save", None)
                results.append(res)
                if "error" in res:
                    say(f"  error: {res['error']}")
                    continue
                say(
                    f"  encoder {res['encoder_s']:.3f} s ({res['encoder_gflops']} GFLOP/s), "
                    f"decode 1/100 boxes {res['decode_1_ms']}/{res['decode_100_ms']} ms"
                )
                saved[res["precision"]] = save
            if "fp32" in saved and "bf16" in saved:
                agree[model] = {
                    k: round(v, 5) for k, v in agreement(saved["fp32"], saved["bf16"]).items()
                }
    peaks = machine.get("matmul_peak_gflops", {})
    for res in results:
        peak = peaks.get(res.get("precision"))
        if peak and "encoder_gflops" in res:
            res["pct_of_peak"] = round(100 * res["encoder_gflops"] / peak, 1)
    machine["load_average_end"] = _load()
    out = {"machine": machine, "results": results, "agreement": agree}
    if json_path is not None:
        _write_json(Path(json_path), out)
    return out


def _write_json(path: Path, data: dict) -> None:
    atomic_write(path, json.dumps(data, indent=2) + "\n")


# -- report ------------------------------------------------------------------------------------
def _fmt(value: Any, spec: str = "") -> str:
    return "n/a" if value is None else format(value, spec)


def format_table(result: Mapping[str, Any]) -> str:
    """Markdown tables: machine, timings per (model, precision), bf16 agreement."""
    m = result["machine"]
    peak = m.get("matmul_peak_gflops", {})
    lines = [
        f"Machine: {m['cpu']}, {m['usable_cores']} cores ({m['torch_threads']} torch threads), "
        f"ISA {'/'.join(m['isa']) or '?'}, native bf16: {'yes' if m['native_bf16'] else 'no'}; "
        f"torch {m['torch']}; matmul peak fp32 {_fmt(peak.get('fp32'))} / bf16 "
        f"{_fmt(peak.get('bf16'))} GFLOP/s; load average {m.get('load_average')} -> "
        f"{m.get('load_average_end')}",
        "",
        "| model | precision | encoder s/img | encoder CPU s | GFLOP/s | % of peak | "
        "decode 1 box ms | decode 100 boxes ms | everything s/img | peak RSS GiB: encoder / all |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["results"]:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['precision']} | error: {r['error'][:80]} |")
            continue
        lines.append(
            f"| {r['model']} | {r['precision']} | {r['encoder_s']:.3f} | {r['encoder_cpu_s']:.2f} | "
            f"{r['encoder_gflops']:.0f} | {_fmt(r.get('pct_of_peak'))} | {r['decode_1_ms']:.1f} | "
            f"{r['decode_100_ms']:.0f} | {_fmt(r['everything_s'], '.2f')} | "
            f"{r['encoder_peak_rss_gib']:.2f} / {r['peak_rss_gib']:.2f} |"
        )
    if result.get("agreement"):
        lines += [
            "",
            "| model | bf16 vs fp32: embedding rel. error | max error / max | mask IoU mean | min |",
            "|---|---|---|---|---|",
        ]
        for model, a in result["agreement"].items():
            lines.append(
                f"| {model} | {a['embedding_rel_error']:.4f} | {a['embedding_max_error']:.4f} | "
                f"{a['mask_iou_mean']:.4f} | {a['mask_iou_min']:.4f} |"
            )
    notes = sorted({n for r in result["results"] for n in r.get("notes", [])})
    lines += [""] + [f"Note: {n}" for n in notes] if notes else []
    return "\n".join(lines)


def print_table(result: Mapping[str, Any]) -> None:
    print(format_table(result))


def _worker_main(argv: Sequence[str]) -> int:
    spec, out = json.loads(argv[0]), Path(argv[1])
    _write_json(out, bench_one(spec))
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "--worker":
        sys.exit(_worker_main(sys.argv[2:]))
    sys.exit("usage: python benchmarks/bench_models.py --help (this module's CLI is for workers)")
