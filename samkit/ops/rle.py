"""COCO-compatible run-length encoding of binary masks.

*Uncompressed RLE* is ``{"size": [h, w], "counts": [int, ...]}``: run lengths of the mask read
in column-major (Fortran) order, alternating 0-runs and 1-runs and always starting with a
0-run (which is 0 when the first pixel is set). ``sum(counts) == h * w``.

*Compressed RLE* is the same with ``counts`` as a COCO string (what ``pycocotools.mask.encode``
produces, but as ``str`` instead of ``bytes``): each count, from the fourth on replaced by its
difference to the count two places before, is written as little-endian 5-bit groups, one
character per group (``chr(48 + group)``, bit 0x20 = "more groups follow", bit 0x10 of the
last group = sign).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch is imported only by masks_to_rle_torch (this module is torch-free)
    import torch

__all__ = [
    "area_from_rle",
    "coco_to_rle",
    "encode_coco_rle",
    "mask_to_rle",
    "masks_to_rle_torch",
    "rle_to_coco",
    "rle_to_mask",
]

RLE = dict[str, Any]


def _counts_from_flat(flat: np.ndarray) -> list[int]:
    """Run lengths of a 1-D bool array, starting with the 0-run."""
    n = flat.size
    if n == 0:
        return [0]
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], change, [n]))
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts.insert(0, 0)
    return counts


def mask_to_rle(mask: np.ndarray | torch.Tensor) -> RLE:
    """Uncompressed RLE of one (H, W) mask (numpy or torch, any dtype; nonzero = set)."""
    if hasattr(mask, "detach"):  # a torch tensor
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must have shape (H, W), got {mask.shape}")
    h, w = mask.shape
    flat = mask.astype(bool, copy=False).ravel(order="F")
    return {"size": [h, w], "counts": _counts_from_flat(flat)}


def masks_to_rle_torch(masks: torch.Tensor) -> list[RLE]:
    """Uncompressed RLEs of a batch of (B, H, W) torch masks, one dict per mask.

    No Python loop over pixels: change points are found by transposing to column-major,
    flattening and comparing neighbours. On accelerators all B masks are processed in one
    vectorized pass on the device (one transfer of the run lengths at the end); on CPU a
    numpy pass per mask is used, which is faster there (cache-friendly, cheaper nonzero).
    """
    import torch

    if not isinstance(masks, torch.Tensor):
        raise TypeError(f"masks must be a torch.Tensor, got {type(masks).__name__}")
    if masks.ndim != 3:
        raise ValueError(f"masks must have shape (B, H, W), got {tuple(masks.shape)}")
    b, h, w = masks.shape
    if b == 0:
        return []
    if h * w == 0:
        return [{"size": [h, w], "counts": [0]} for _ in range(b)]
    masks = masks.detach()
    if masks.device.type == "cpu":
        counts = _batch_counts_numpy(masks)
    else:
        counts = _batch_counts_torch(masks)
    return [{"size": [h, w], "counts": c} for c in counts]


def _batch_counts_numpy(masks: torch.Tensor) -> list[list[int]]:
    arr = masks.numpy()
    if arr.dtype != np.bool_:
        arr = arr != 0
    return [_counts_from_flat(m.ravel(order="F")) for m in arr]


def _batch_counts_torch(masks: torch.Tensor) -> list[list[int]]:
    """Run lengths of all (B, H, W) masks in one vectorized pass (any device)."""
    import torch

    b, h, w = masks.shape
    n = h * w
    flat = masks.bool().transpose(1, 2).reshape(b, n)
    change = flat[:, 1:] != flat[:, :-1]
    rows, cols = change.nonzero(as_tuple=True)
    # Boundaries of all runs of all masks in one global index space (mask r spans
    # [r*n, (r+1)*n)); consecutive differences are the run lengths.
    bounds = torch.cat([rows * n + cols + 1, torch.arange(b + 1, device=rows.device) * n])
    runs = torch.diff(torch.sort(bounds).values).cpu().tolist()
    runs_per_mask = (torch.bincount(rows, minlength=b) + 1).cpu().tolist()
    starts_with_one = flat[:, 0].cpu().tolist()
    out = []
    pos = 0
    for k in range(b):
        counts = runs[pos : pos + runs_per_mask[k]]
        pos += runs_per_mask[k]
        if starts_with_one[k]:
            counts.insert(0, 0)
        out.append(counts)
    return out


def _check_rle(rle: RLE) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in rle["size"])
        rle["counts"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not an RLE dict with 'size' [h, w] and 'counts': {rle!r:.200}") from exc
    return h, w


def _string_to_counts(s: str | bytes) -> list[int]:
    if isinstance(s, bytes):
        s = s.decode("ascii")
    counts: list[int] = []
    p = 0
    n = len(s)
    while p < n:
        x = 0
        k = 0
        while True:
            if p >= n:
                raise ValueError("truncated COCO RLE string")
            c = ord(s[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"invalid character {s[p]!r} in COCO RLE string")
            x |= (c & 0x1F) << (5 * k)
            p += 1
            k += 1
            if not c & 0x20:
                if c & 0x10:  # sign bit of the last group: extend
                    x -= 1 << (5 * k)
                break
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def _counts_to_string(counts: list[int]) -> str:
    chars: list[str] = []
    for i, count in enumerate(counts):
        x = int(count)
        if i > 2:
            x -= int(counts[i - 2])
        while True:
            c = x & 0x1F
            x >>= 5  # arithmetic shift: negative x ends at -1
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            chars.append(chr(c + 48))
            if not more:
                break
    return "".join(chars)


def rle_to_coco(rle: RLE) -> RLE:
    """Compress an uncompressed RLE: returns ``{"size": [h, w], "counts": str}``."""
    h, w = _check_rle(rle)
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        s = counts.decode("ascii") if isinstance(counts, bytes) else counts
        return {"size": [h, w], "counts": s}
    return {"size": [h, w], "counts": _counts_to_string(list(counts))}


def coco_to_rle(rle: RLE) -> RLE:
    """Decompress a COCO RLE (``counts`` as str or bytes) to ``counts`` as a list of ints.

    An already uncompressed RLE is returned as a copy.
    """
    h, w = _check_rle(rle)
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        return {"size": [h, w], "counts": _string_to_counts(counts)}
    return {"size": [h, w], "counts": [int(c) for c in counts]}


def encode_coco_rle(mask: np.ndarray | torch.Tensor) -> RLE:
    """Compressed COCO RLE of one (H, W) mask, like ``pycocotools.mask.encode`` (str counts)."""
    return rle_to_coco(mask_to_rle(mask))


def rle_to_mask(rle: RLE) -> np.ndarray:
    """Decode an RLE (uncompressed or compressed) to a bool (H, W) numpy array."""
    rle = coco_to_rle(rle)
    h, w = rle["size"]
    counts = np.asarray(rle["counts"], dtype=np.int64)
    if counts.size and counts.min() < 0:
        raise ValueError("RLE counts must be non-negative")
    if int(counts.sum()) != h * w:
        raise ValueError(f"RLE counts sum to {int(counts.sum())}, expected h*w = {h * w}")
    values = np.arange(counts.size) % 2 == 1
    flat = np.repeat(values, counts)
    return flat.reshape(w, h).T.copy()


def area_from_rle(rle: RLE) -> int:
    """Number of set pixels of an RLE (uncompressed or compressed)."""
    counts = coco_to_rle(rle)["counts"]
    return int(sum(counts[1::2]))
