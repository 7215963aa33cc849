"""Fine-tuning SAM on instance-segmentation data, with prompts simulated from the ground truth.

Each step takes ``batch`` images and up to ``prompts_per_image`` of their instances. An instance
is prompted, as in SAM's training, with its box (each coordinate jittered by noise of std 10 % of
the box side, at most 20 px in a 1024 frame) or with one point drawn uniformly from the mask; then
``error_clicks`` rounds add a click drawn uniformly from the current error region (positive on
missed foreground, negative on false foreground) and feed the previous low-res logits back as the
mask prompt. Loss per mask: ``focal_weight * focal + dice`` (SAM's 20 : 1 by default) (for a single first point, SAM's three outputs
are predicted and only the one with the lowest loss is trained), plus the MSE between the
predicted IoU and the IoU of the mask. Losses are computed on a 256 x 256 grid of the padded input
frame (the input itself when it is smaller).

With the image encoder frozen (the default), embeddings are computed once per image and kept in
memory (float16). Each epoch writes ``weights/last.pt`` and, when the validation mIoU improves,
``weights/best.pt`` (``{"model": state_dict, "samkit_config": ...}``, loadable with ``SAM(path)``),
plus ``results.csv`` and ``results.png`` (loss and mIoU curves) in the run folder.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..data.atomic import atomic_output
from ..data.datasets import SegDataset, load_dataset
from ..errors import SamkitError
from ..models import Sam
from ..ops.boxes import mask_to_box_xyxy
from ..predict.transforms import preprocess_shape, resize_longest_side, scale_boxes
from ..zoo.registry import ModelConfig
from .losses import dice_loss, mask_iou, sigmoid_focal_loss
from .val import SamBackend, ValResults, validate

__all__ = ["TrainError", "TrainResults", "save_checkpoint", "train_sam"]

PARTS = ("image_encoder", "prompt_encoder", "mask_decoder")
LOSS_SIZE = 256


class TrainError(SamkitError):
    """Training arguments or data cannot be used."""


@dataclass
class TrainResults:
    """What a training run produced."""

    run_dir: Path
    best: Path
    last: Path
    best_miou: float | None
    epochs: list[dict] = field(default_factory=list)
    val: ValResults | None = None  # the best epoch's validation


@dataclass
class _Item:
    """One image prepared for training (input frame of side S, loss grid of side L)."""

    index: int
    image: torch.Tensor  # 3 x h x w uint8, long side S
    gt: torch.Tensor  # N x L x L float 0/1, padded frame
    boxes: np.ndarray  # N x 4 XYXY, input-frame pixels


def save_checkpoint(sam: Sam, config: ModelConfig, path: str | os.PathLike, **extra) -> Path:
    """Write ``{"model": state_dict, "samkit_config": config, **extra}`` atomically to ``path``."""
    path = Path(path)
    state = {k: v.detach().cpu() for k, v in sam.state_dict().items()}
    with atomic_output(path) as f:
        torch.save({"model": state, "samkit_config": config.to_dict(), **extra}, f)
    return path


def _prepare(data: SegDataset, i: int, size: int, loss_size: int) -> _Item | None:
    sample = data.load(i)
    masks = sample.masks[sample.masks.any(axis=(1, 2))]
    if not len(masks):
        return None
    h0, w0 = sample.image.shape[:2]
    image = resize_longest_side(sample.image, size)
    hl, wl = preprocess_shape(h0, w0, loss_size)
    gt = np.zeros((len(masks), loss_size, loss_size), np.float32)
    for k, m in enumerate(masks):
        small = cv2.resize(m.astype(np.float32), (wl, hl), interpolation=cv2.INTER_AREA)
        gt[k, :hl, :wl] = small > 0.5
    keep = gt.reshape(len(gt), -1).any(axis=1)
    if not keep.any():
        return None
    boxes = np.stack([mask_to_box_xyxy(m) for m in masks]).astype(np.float64)
    boxes = scale_boxes(boxes, (h0, w0), image.shape[:2])
    return _Item(
        i, torch.from_numpy(image).permute(2, 0, 1), torch.from_numpy(gt[keep]), boxes[keep]
    )


def _jitter_boxes(boxes: np.ndarray, frame: int, rng: np.random.Generator) -> np.ndarray:
    side = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]] * 2, axis=1)
    limit = 20.0 * frame / 1024
    noise = np.clip(rng.normal(0.0, 0.1, boxes.shape) * side, -limit, limit)
    return np.clip(boxes + noise, 0, frame - 1)


def _sample_points(
    region: torch.Tensor, fallback: torch.Tensor, gen: torch.Generator
) -> torch.Tensor:
    """One pixel drawn uniformly from each ``P x L x L`` bool ``region`` (from ``fallback`` where
    the region is empty): ``P x 2`` (x, y) on the grid, on the CPU."""
    flat = region.cpu().flatten(1)
    empty = ~flat.any(1)
    flat[empty] = fallback.cpu().flatten(1)[empty]
    cum = flat.cumsum(1)  # the k-th set pixel is where the running count reaches k
    k = (torch.rand(len(flat), generator=gen) * cum[:, -1]).long() + 1
    idx = torch.searchsorted(cum, k[:, None])[:, 0]
    side = region.shape[-1]
    return torch.stack([idx % side, idx // side], dim=1).float()


class _Trainer:
    def __init__(self, sam: Sam, config: ModelConfig, opts: dict) -> None:
        self.sam, self.config, self.o = sam, config, opts
        self.size = sam.image_size
        self.loss_size = min(LOSS_SIZE, self.size)
        self.rng = np.random.default_rng(opts["seed"])
        self.gen = torch.Generator().manual_seed(opts["seed"])
        self.cache: dict[int, torch.Tensor] = {}
        self.encoder_frozen = "image_encoder" in opts["freeze"]

    def embeddings(self, items: list[_Item]) -> torch.Tensor:
        sam, dev = self.sam, self.sam.device
        todo = [it for it in items if it.index not in self.cache]
        out: dict[int, torch.Tensor] = {}
        if todo:
            x = torch.cat([sam.preprocess(it.image[None].float().to(dev)) for it in todo])
            if self.encoder_frozen:
                with torch.no_grad():
                    emb = sam.image_encoder(x)
                if self.o["cache"]:
                    for it, e in zip(todo, emb):
                        self.cache[it.index] = e.half().cpu()
            else:
                emb = sam.image_encoder(x)
            out = {it.index: e for it, e in zip(todo, emb)}
        return torch.stack(
            [
                out[it.index] if it.index in out else self.cache[it.index].to(dev).float()
                for it in items
            ]
        )

    def decode(self, emb, img_idx, points, boxes, mask_input, tokens):
        sam = self.sam
        sparse, dense = sam.prompt_encoder(points, boxes, mask_input)
        low, iou = sam.mask_decoder.predict_masks(
            emb[img_idx], sam.prompt_encoder.get_dense_pe(), sparse, dense, tokens
        )
        up = low
        if low.shape[-1] != self.loss_size:
            up = F.interpolate(low, (self.loss_size,) * 2, mode="bilinear", align_corners=False)
        return low, up, iou

    def group_loss(self, up, iou, gt):
        """Per-prompt losses of ``P x T`` masks; returns (loss sum, parts, chosen mask index P)."""
        target = gt[:, None].expand_as(up)
        focal = sigmoid_focal_loss(up, target)
        dice = dice_loss(up, target)
        combined = self.o["focal_weight"] * focal + dice
        best = combined.argmin(dim=1)
        rows = torch.arange(len(best))
        iou_mse = F.mse_loss(iou, mask_iou(up, target), reduction="none").mean(1)
        total = combined[rows, best] + iou_mse
        parts = {
            "focal": focal[rows, best].sum().item(),
            "dice": dice[rows, best].sum().item(),
            "iou_mse": iou_mse.sum().item(),
        }
        return total.sum(), parts, best

    def step(self, items: list[_Item]) -> tuple[torch.Tensor, dict]:
        o, dev, s, ls = self.o, self.sam.device, self.size, self.loss_size
        emb = self.embeddings(items)
        img_idx, gts, boxes = [], [], []
        for b, it in enumerate(items):
            n = len(it.gt)
            pick = self.rng.permutation(n)[: o["prompts_per_image"]]
            img_idx += [b] * len(pick)
            gts.append(it.gt[pick])
            boxes.append(it.boxes[pick])
        img_idx_t = torch.tensor(img_idx, device=dev)
        gt = torch.cat(gts).to(dev)
        box_np = np.concatenate(boxes)
        use_box = torch.from_numpy(self.rng.random(len(gt)) < o["box_prob"]).to(dev)
        scale = s / ls
        total, count = torch.zeros((), device=dev), 0
        parts = {"focal": 0.0, "dice": 0.0, "iou_mse": 0.0}
        for is_box in (True, False):
            sel = (use_box == is_box).nonzero()[:, 0]
            if not len(sel):
                continue
            g, idx = gt[sel], img_idx_t[sel]
            if is_box:
                bx = torch.as_tensor(
                    _jitter_boxes(box_np[sel.cpu().numpy()], s, self.rng),
                    dtype=torch.float,
                    device=dev,
                )
                pts = lbl = None
            else:
                bx = None
                pts = (_sample_points(g > 0.5, g > 0.5, self.gen).to(dev) + 0.5) * scale - 0.5
                pts, lbl = pts[:, None], torch.ones((len(sel), 1), dtype=torch.int, device=dev)
            tokens = [0] if is_box else [1, 2, 3][: self.sam.mask_decoder.num_mask_tokens - 1]
            low, up, iou = self.decode(
                emb, idx, (pts, lbl) if pts is not None else None, bx, None, tokens
            )
            for r in range(o["error_clicks"] + 1):
                loss, p, best = self.group_loss(up, iou, g)
                total, count = total + loss, count + len(sel)
                for k in parts:
                    parts[k] += p[k]
                if r == o["error_clicks"]:
                    break
                rows = torch.arange(len(sel), device=dev)
                prev_low = low[rows, best][:, None].detach()
                pred = up[rows, best].detach() > 0
                gtb = g > 0.5
                xy = _sample_points(pred != gtb, gtb, self.gen).to(dev)
                new_lbl = gtb[rows, xy[:, 1].long(), xy[:, 0].long()].int()[:, None]
                new_pts = ((xy + 0.5) * scale - 0.5)[:, None]
                pts = new_pts if pts is None else torch.cat([pts, new_pts], 1)
                lbl = new_lbl if lbl is None else torch.cat([lbl, new_lbl], 1)
                low, up, iou = self.decode(emb, idx, (pts, lbl), bx, prev_low, [0])
        parts = {k: v / max(count, 1) for k, v in parts.items()}
        return total / max(count, 1), parts


def _read_train_state(path: Path) -> dict:
    """What ``last.pt`` holds to continue a run: model, optimizer, scheduler, RNGs, history."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        state = dict(ckpt["train_state"])
        state["model"], state["epoch"] = ckpt["model"], int(ckpt["epoch"])
    except (OSError, RuntimeError, KeyError, TypeError, ValueError) as e:
        raise TrainError(
            f"cannot resume from {path}: not a last.pt written by samkit's trainer ({e})"
        ) from None
    return state


def _run_dir(project: str | os.PathLike, name: str, exist_ok: bool) -> Path:
    base = Path(project) / name
    if exist_ok or not base.exists():
        return base
    for k in range(2, 10_000):
        cand = Path(project) / f"{name}{k}"
        if not cand.exists():
            return cand
    raise TrainError(f"too many runs called {name!r} in {project}")


def _write_csv(path: Path, rows: list[dict]) -> None:
    with atomic_output(path, "w") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _plot(path: Path, step_losses: list[float], rows: list[dict]) -> bool:
    """Loss per step (and its running mean) and val mIoU per epoch, as a PNG. False without
    matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return False
    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    steps = np.arange(1, len(step_losses) + 1)
    ax1.plot(steps, step_losses, lw=0.5, alpha=0.5, label="loss")
    k = max(1, len(step_losses) // 50)
    if len(step_losses) >= k:
        smooth = np.convolve(step_losses, np.ones(k) / k, mode="valid")
        ax1.plot(steps[k - 1 :], smooth, label=f"mean of {k}")
    ax1.set(xlabel="step", ylabel="loss", title="training loss", yscale="log")
    ax1.legend()
    ep = [r["epoch"] for r in rows if r.get("val_miou") is not None]
    ax2.plot(ep, [r["val_miou"] for r in rows if r.get("val_miou") is not None], "o-")
    ax2.set(xlabel="epoch", ylabel="mIoU", title="validation mIoU")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_output(path) as f:
        fig.savefig(f, dpi=100, format="png")
    return True


def train_sam(
    sam: Sam,
    config: ModelConfig,
    data: str | os.PathLike | SegDataset,
    *,
    epochs: int = 10,
    batch: int = 4,
    lr: float = 1e-4,
    weight_decay: float = 0.01,
    lrf: float = 0.01,
    warmup_steps: int = 100,
    freeze: tuple[str, ...] | list[str] = ("image_encoder",),
    prompts_per_image: int = 8,
    box_prob: float = 0.5,
    error_clicks: int = 2,
    grad_clip: float = 1.0,
    focal_weight: float = 20.0,
    val_data: str | os.PathLike | SegDataset | None = None,
    val_prompt: str = "box",
    val_images: int | None = None,
    cache: bool = True,
    project: str | os.PathLike = "runs/train",
    name: str = "exp",
    exist_ok: bool = False,
    seed: int = 0,
    plots: bool = True,
    verbose: bool = True,
    resume: str | os.PathLike | None = None,
) -> TrainResults:
    """Fine-tune ``sam`` in place on ``data`` (train split) and validate on its val split.

    ``freeze``: parts kept fixed, any of ``image_encoder``, ``prompt_encoder``, ``mask_decoder``.
    ``lr`` is AdamW's peak learning rate, reached after ``warmup_steps`` and decayed by a cosine
    to ``lr * lrf``. ``val_data`` defaults to the ``val`` split of ``data`` (no validation if it
    has none: then ``best.pt`` is the epoch with the lowest training loss). ``val_prompt`` is
    the protocol of :func:`samkit.val.validate` used to pick the best epoch; ``val_images``
    limits it to the first images. Outputs go to ``project/name`` (``name2``, ... if taken).
    ``resume``: the ``weights/last.pt`` of an interrupted run, continued in its folder (pass the
    same arguments; model, optimizer, schedule and random state are restored).
    """
    from tqdm import tqdm

    freeze = tuple(freeze)
    bad = [p for p in freeze if p not in PARTS]
    if bad:
        raise TrainError(f"freeze: unknown part(s) {bad}; choose from {list(PARTS)}")
    if len(freeze) == len(PARTS):
        raise TrainError("freeze: every part is frozen, nothing would be trained")
    if epochs < 1 or batch < 1 or prompts_per_image < 1 or error_clicks < 0:
        raise TrainError("epochs, batch and prompts_per_image must be >= 1, error_clicks >= 0")
    train_ds = load_dataset(data, "train")
    if val_data is None and not isinstance(data, SegDataset):
        try:
            val_ds: SegDataset | None = load_dataset(data, "val")
        except SamkitError:
            val_ds = None
    else:
        val_ds = load_dataset(val_data, "val") if val_data is not None else None
    if not len(train_ds):
        raise TrainError(f"no training images in {train_ds.source}")

    torch.manual_seed(seed)
    opts = dict(
        seed=seed,
        freeze=freeze,
        prompts_per_image=prompts_per_image,
        box_prob=box_prob,
        error_clicks=error_clicks,
        cache=cache,
        focal_weight=focal_weight,
    )
    trainer = _Trainer(sam, config, opts)
    for part in PARTS:
        module = getattr(sam, part)
        module.requires_grad_(part not in freeze)
    params = [p for p in sam.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(train_ds) / batch)
    total_steps = epochs * steps_per_epoch
    warm = min(warmup_steps, max(1, total_steps // 5))

    def lr_factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(1, total_steps - warm)
        return lrf + (1 - lrf) * 0.5 * (1 + math.cos(math.pi * t))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    order_rng = np.random.default_rng(seed)
    rows: list[dict] = []
    step_losses: list[float] = []
    best_score, best_val, start = -math.inf, None, 1
    if resume is not None:
        run = Path(resume).parent.parent
        state = _read_train_state(Path(resume))
        sam.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        trainer.rng.bit_generator.state = state["rng"]
        order_rng.bit_generator.state = state["order_rng"]
        trainer.gen.set_state(state["torch_rng"])
        rows, step_losses = list(state["rows"]), list(state["step_losses"])
        best_score, start = state["best_score"], state["epoch"] + 1
    else:
        run = _run_dir(project, name, exist_ok)
    (run / "weights").mkdir(parents=True, exist_ok=True)
    args = {
        k: (str(v) if isinstance(v, (Path, SegDataset)) else v)
        for k, v in locals().items()
        if k in _ARG_NAMES
    }
    (run / "args.json").write_text(json.dumps(args, indent=1, default=str))
    if verbose:
        print(
            f"training {sum(p.numel() for p in params):,} parameters ({', '.join(p for p in PARTS if p not in freeze)}) on {train_ds!r}; run folder {run}"
        )
        for line in train_ds.problems[:5]:
            print("  note:", line)

    best_path, last_path = run / "weights" / "best.pt", run / "weights" / "last.pt"
    skipped: list[str] = []
    for epoch in range(start, epochs + 1):
        for part in PARTS:
            getattr(sam, part).train(part not in freeze)
        t0 = time.time()
        sums = {"loss": 0.0, "focal": 0.0, "dice": 0.0, "iou_mse": 0.0}
        n_steps = 0
        order = order_rng.permutation(len(train_ds))
        bar = tqdm(
            range(steps_per_epoch),
            desc=f"epoch {epoch}/{epochs}",
            disable=not verbose,
            leave=verbose,
        )
        for s in bar:
            items = []
            for i in order[s * batch : (s + 1) * batch]:
                try:
                    item = _prepare(train_ds, int(i), sam.image_size, trainer.loss_size)
                except SamkitError as e:
                    if epoch == 1:
                        skipped.append(str(e))
                    continue
                if item is not None:
                    items.append(item)
            if not items:
                continue
            loss, parts = trainer.step(items)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip:
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            opt.step()
            sched.step()
            n_steps += 1
            step_losses.append(loss.item())
            sums["loss"] += loss.item()
            for k, v in parts.items():
                sums[k] += v
            bar.set_postfix(loss=f"{sums['loss'] / n_steps:.4f}")
        row = {"epoch": epoch, **{k: v / max(n_steps, 1) for k, v in sums.items()}}
        row["lr"] = opt.param_groups[0]["lr"]
        sam.eval()
        val_res = None
        if val_ds is not None and len(val_ds):
            val_res = validate(
                SamBackend(sam), val_ds, val_prompt, max_images=val_images, verbose=False
            )
            row["val_miou"] = val_res.miou
        row["seconds"] = time.time() - t0
        rows.append(row)
        score = row.get("val_miou", -row["loss"])
        if score > best_score:
            best_score, best_val = score, val_res
            save_checkpoint(sam, config, best_path, epoch=epoch, val_miou=row.get("val_miou"))
        train_state = {
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "rng": trainer.rng.bit_generator.state,
            "order_rng": order_rng.bit_generator.state,
            "torch_rng": trainer.gen.get_state(),
            "rows": rows,
            "step_losses": step_losses,
            "best_score": best_score,
        }
        save_checkpoint(sam, config, last_path, epoch=epoch, train_state=train_state)
        _write_csv(run / "results.csv", rows)
        if plots:
            _plot(run / "results.png", step_losses, rows)
        if verbose:
            shown = f", val {val_prompt} mIoU {row['val_miou']:.4f}" if "val_miou" in row else ""
            print(f"epoch {epoch}: loss {row['loss']:.4f}{shown} ({row['seconds']:.0f} s)")
    if skipped and verbose:
        print(f"{len(skipped)} training images skipped (first: {skipped[0]})")
    sam.requires_grad_(True)
    sam.eval()
    best_miou = max((r["val_miou"] for r in rows if "val_miou" in r), default=None)
    return TrainResults(
        run_dir=run,
        best=best_path,
        last=last_path,
        best_miou=best_miou,
        epochs=rows,
        val=best_val,
    )


_ARG_NAMES = (
    "data", "epochs", "batch", "lr", "weight_decay", "lrf", "warmup_steps", "freeze",
    "prompts_per_image", "box_prob", "error_clicks", "grad_clip", "focal_weight", "val_data", "val_prompt",
    "val_images", "cache", "seed",
)  # fmt: skip
