"""Mask losses used to train SAM: sigmoid focal loss, dice loss and the IoU of hard masks.

All functions take mask logits and 0/1 targets of the same shape ``B x C x H x W`` and return one
value per mask, ``B x C`` (reduce them as needed).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["dice_loss", "mask_iou", "sigmoid_focal_loss"]


def sigmoid_focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Focal loss (Lin et al. 2017) averaged over pixels: ``B x C``.

    ``alpha`` weighs foreground pixels (``1 - alpha`` background); a negative ``alpha`` disables
    the weighting.
    """
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.flatten(2).mean(-1)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft dice loss ``1 - (2 |p t| + eps) / (|p| + |t| + eps)`` with ``p = sigmoid(logits)``:
    ``B x C``."""
    p = logits.sigmoid().flatten(2)
    t = targets.flatten(2)
    return 1 - (2 * (p * t).sum(-1) + eps) / (p.sum(-1) + t.sum(-1) + eps)


@torch.no_grad()
def mask_iou(logits: torch.Tensor, targets: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """IoU of ``logits > threshold`` with ``targets > 0.5``: ``B x C`` (1 when both are empty)."""
    pred = (logits > threshold).flatten(2)
    gt = (targets > 0.5).flatten(2)
    inter = (pred & gt).sum(-1).float()
    union = (pred | gt).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
