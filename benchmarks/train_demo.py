"""Train the packaged demo model (``SAM("samkit-demo")``) on synthetic shapes and measure it.

Reproduces ``samkit/assets/samkit_demo.safetensors``:

    PYTHONPATH=$PWD nice -n 10 python benchmarks/train_demo.py --out samkit/assets/samkit_demo.safetensors

1. writes a synthetic-shapes dataset (YOLO + COCO layout) with ``--seed``;
2. trains :data:`samkit.zoo.registry.DEMO_CONFIG` from random weights with ``SAM.train`` (whole
   model trainable: there is no pretrained encoder to keep);
3. stores the best epoch as float16 safetensors (the positional-encoding matrix stays float32;
   loading casts to float32) with the architecture in the metadata;
4. loads that file back with ``SAM(path)`` and prints ``model.val`` on a held-out synthetic set
   (another seed) for box, point and 3-click prompts: the figures quoted in the README.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from samkit import SAM
from samkit.data.synthetic import write_shapes_dataset
from samkit.zoo.registry import DEMO_CONFIG

HELDOUT_SEED = 20240601


def write_asset(checkpoint: Path, out: Path) -> Path:
    """Convert a training checkpoint to the packaged float16 safetensors file (atomic)."""
    from safetensors.torch import save_file

    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    tensors = {}
    for key, value in ckpt["model"].items():
        keep32 = key.endswith("positional_encoding_gaussian_matrix")
        tensors[key] = value if keep32 or not value.is_floating_point() else value.half()
    meta = {"samkit_config": json.dumps(ckpt["samkit_config"])}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=meta)
    os.replace(tmp, out)
    return out


def heldout(root: Path, n: int) -> Path:
    """``n`` held-out synthetic images (seed :data:`HELDOUT_SEED`, never used for training)."""
    return write_shapes_dataset(root, n_train=0, n_val=n, seed=HELDOUT_SEED)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/demo/samkit_demo.safetensors"))
    ap.add_argument("--work", type=Path, default=Path("runs/demo"), help="datasets and the run")
    ap.add_argument("--train-images", type=int, default=4000)
    ap.add_argument("--val-images", type=int, default=50)
    ap.add_argument("--heldout-images", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup-steps", type=int, default=200)
    ap.add_argument("--prompts-per-image", type=int, default=6)
    ap.add_argument("--box-prob", type=float, default=0.8)
    ap.add_argument("--error-clicks", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resume", type=Path, help="weights/last.pt of an interrupted run")
    ap.add_argument("--init", type=Path, help="start from these weights (a second, lower-lr phase)")
    ap.add_argument("--name", default="train", help="run folder name under --work")
    ap.add_argument("--reuse-data", action="store_true", help="keep an existing --work/shapes")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    t0, c0 = time.time(), time.process_time()
    data = args.work / "shapes" / "data.yaml"
    if not (args.reuse_data and data.exists()):
        write_shapes_dataset(
            args.work / "shapes", args.train_images, args.val_images, seed=args.seed
        )
    torch.manual_seed(args.seed)
    model = SAM(args.init) if args.init else SAM.from_config(DEMO_CONFIG)
    results = model.train(
        data,
        epochs=args.epochs,
        batch=args.batch,
        lr=args.lr,
        freeze=(),
        warmup_steps=args.warmup_steps,
        prompts_per_image=args.prompts_per_image,
        box_prob=args.box_prob,
        error_clicks=args.error_clicks,
        project=args.work,
        name=args.name,
        seed=args.seed,
        resume=args.resume,
    )
    asset = write_asset(results.best, args.out)
    print(f"training: {time.time() - t0:.0f} s wall, {time.process_time() - c0:.0f} s CPU")
    print(f"wrote {asset} ({asset.stat().st_size / 1e6:.2f} MB) from {results.best}")

    demo = SAM(asset)
    hold = heldout(args.work / "heldout", args.heldout_images)
    print(f"\nheld-out synthetic shapes ({args.heldout_images} images, seed {HELDOUT_SEED}):")
    for prompt in ("box", "point", "points3"):
        demo.val(hold, prompt)


if __name__ == "__main__":
    main()
