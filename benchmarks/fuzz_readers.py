"""Fuzz the untrusted-input readers: checkpoints, YOLO label lines and COCO JSON.

Every input must give a result or a :class:`samkit.errors.SamkitError`; any other exception
(or a crash) is a bug. Two engines:

    pip install "samkit[fuzz]"                                   # atheris (libFuzzer)
    python benchmarks/fuzz_readers.py checkpoint -atheris_runs=20000
    python benchmarks/fuzz_readers.py coco -max_total_time=60     # libFuzzer flags pass through

    python benchmarks/fuzz_readers.py checkpoint --mutate 2000    # pure Python, no atheris

The pure-Python engine mutates seed inputs (bit flips, byte runs, truncation, splices of two
seeds, numeric edge values) with a fixed seed, prints the outcome counts per exception class
and exits 1 when an input raised something other than a SamkitError.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import json
import os
import random
import sys
import tempfile
import traceback
from pathlib import Path, PurePosixPath

TARGETS = ("checkpoint", "yolo", "coco")


def _import_readers(target: str):
    """The reader under test (only its modules, so atheris instruments little else)."""
    if target == "checkpoint":
        from samkit.zoo.checkpoints import read_checkpoint

        return read_checkpoint
    from samkit.annotate.labels import CocoBoxes, _parse_yolo_line

    return _parse_yolo_line if target == "yolo" else CocoBoxes


class Harness:
    """Runs one input through one reader in a scratch folder."""

    def __init__(self, target: str) -> None:
        import numpy as np

        self.target = target
        self.reader = _import_readers(target)
        self.dir = Path(tempfile.mkdtemp(prefix="samkit-fuzz-"))
        self.image = np.zeros((48, 64, 3), np.uint8)

    def __call__(self, data: bytes) -> None:
        """Raise only for a bug: SamkitError is the expected outcome of a bad input."""
        from samkit.errors import SamkitError

        with contextlib.suppress(SamkitError):
            self._run(data)

    def _run(self, data: bytes) -> None:
        if self.target == "checkpoint":
            path = self.dir / "fuzz.pt"
            path.write_bytes(data)
            self.reader(path)
        elif self.target == "yolo":
            for line in data.decode("utf-8", "replace").splitlines():
                if line.strip():
                    self.reader(line, "fuzz.txt:1")
        else:
            path = self.dir / "fuzz.json"
            path.write_bytes(data)
            rel = PurePosixPath("a.png")
            self.reader(path, [rel])(rel, self.image)


def seeds(target: str) -> list[bytes]:
    """Small valid inputs to start from."""
    if target == "checkpoint":
        import torch
        from safetensors.torch import save as st_save

        from samkit.zoo.registry import DEMO_CONFIG

        out = []
        buf = io.BytesIO()
        torch.save({"image_encoder.pos_embed": torch.zeros(1, 2, 2, 4)}, buf)
        out.append(buf.getvalue())
        buf = io.BytesIO()
        torch.save({"model": {"w": torch.ones(3)}, "samkit_config": DEMO_CONFIG.to_dict()}, buf)
        out.append(buf.getvalue())
        meta = {"samkit_config": json.dumps(DEMO_CONFIG.to_dict())}
        out.append(st_save({"w": torch.ones(2, 2)}, metadata=meta))
        return out
    if target == "yolo":
        return [b"0 0.5 0.5 0.2 0.2\n", b"3 0.1 0.1 0.9 0.1 0.5 0.9\n", b"1 0.5 0.5 0.4 0.4 0.9\n"]
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48}],
        "annotations": [{"id": 1, "image_id": 1, "bbox": [1, 2, 10, 12], "category_id": 3}],
        "categories": [{"id": 3, "name": "cat"}],
    }
    return [json.dumps(coco).encode()]


_EDGE = [b"0", b"-1", b"1e20", b"nan", b"inf", b"\xff" * 8, b"\x00" * 8, b"[" * 64, b'"x"']


def mutate(data: bytes, rng: random.Random, pool: list[bytes]) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        pos = rng.randrange(len(b) + 1) if b else 0
        if op == 0 and b:  # bit flip
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1:  # random run
            b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif op == 2 and b:  # delete a run
            del b[pos : pos + rng.randint(1, 64)]
        elif op == 3:  # truncate
            del b[rng.randrange(len(b) + 1) :]
        elif op == 4:  # splice another seed
            other = rng.choice(pool)
            cut = rng.randrange(len(other) + 1)
            b[pos:] = other[cut:]
        else:  # an edge value
            b[pos : pos + rng.randint(0, 8)] = rng.choice(_EDGE)
    return bytes(b)


def run_mutations(target: str, n: int, seed: int) -> int:
    harness = Harness(target)
    pool = seeds(target)
    rng = random.Random(seed)
    outcomes: collections.Counter = collections.Counter()
    bugs = []
    for i in range(n):
        data = mutate(rng.choice(pool), rng, pool)
        try:
            harness._run(data)
            outcomes["ok"] += 1
        except Exception as exc:  # noqa: BLE001 (classified below)
            from samkit.errors import SamkitError

            name = type(exc).__name__
            outcomes[name] += 1
            if not isinstance(exc, SamkitError):
                bugs.append((i, data[:200], traceback.format_exc(limit=3)))
    print(f"{target}: {n} mutated inputs: " + ", ".join(f"{k} {v}" for k, v in outcomes.items()))
    for i, head, tb in bugs[:5]:
        print(f"--- input {i} (first bytes {head!r}) raised:\n{tb}")
    return 1 if bugs else 0


def run_atheris(target: str, argv: list[str]) -> None:
    try:
        import atheris
    except ImportError:
        sys.exit('atheris is not installed: pip install "samkit[fuzz]" (or use --mutate N)')
    import numpy  # noqa: F401 (heavy dependencies imported first: not instrumented)
    import torch

    if target == "checkpoint":  # torch imports more modules lazily while loading: do it now
        rng = random.Random(0)
        pool = seeds(target)
        for data in pool + [mutate(d, rng, pool) for d in pool * 20]:
            with contextlib.suppress(Exception):
                torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    with atheris.instrument_imports(include=["samkit"]):
        _import_readers(target)
    harness = Harness(target)
    corpus_dir = Path(tempfile.mkdtemp(prefix=f"samkit-fuzz-{target}-seeds-"))
    for i, data in enumerate(seeds(target)):
        (corpus_dir / f"seed{i}").write_bytes(data)
    flags = list(argv[1:])
    if not any(f.startswith("-artifact_prefix") for f in flags):  # crashes go here, not to cwd
        flags.append(f"-artifact_prefix={corpus_dir.parent / f'samkit-fuzz-{target}-crash-'}")
    atheris.Setup([argv[0], *flags, str(corpus_dir)], harness)
    atheris.Fuzz()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", choices=TARGETS)
    parser.add_argument("--mutate", type=int, default=None, help="pure-Python engine: N inputs")
    parser.add_argument("--seed", type=int, default=0)
    args, rest = parser.parse_known_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.mutate is not None:
        sys.exit(run_mutations(args.target, args.mutate, args.seed))
    run_atheris(args.target, [sys.argv[0], *rest])


if __name__ == "__main__":
    main()
