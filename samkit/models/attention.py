"""Attention kernels shared by the image encoders: SDPA with a bias built in bounded chunks.

Both helpers compute exactly ``softmax(q k^T * scale + bias) v`` through
``torch.nn.functional.scaled_dot_product_attention``. What they add is memory discipline: the
additive bias (SAM's decomposed relative positions, ``N x N`` per head and window) is built for a
bounded number of (window, head) pairs at a time into one reused buffer, instead of materializing a
``B x heads x N x N`` tensor (805 MB per image for ViT-B's global blocks) and copying it around.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Upper bound on the elements of one bias chunk (16 Mi floats = 64 MiB in fp32): one head of a
# 64 x 64 global block, or several hundred 14 x 14 windows.
MAX_BIAS_ELEMENTS = 1 << 24


def relative_position_table(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Gather relative-position embeddings for every (query, key) pair: ``q_size x k_size x C``.

    ``rel_pos`` (``L x C``) is linearly resized when ``L != 2 * max(q_size, k_size) - 1``.
    """
    max_dist = 2 * max(q_size, k_size) - 1
    if rel_pos.shape[0] != max_dist:
        resized = F.interpolate(
            rel_pos.reshape(1, rel_pos.shape[0], -1).permute(0, 2, 1), size=max_dist, mode="linear"
        )
        rel_pos = resized.reshape(-1, max_dist).permute(1, 0)
    q_coords = torch.arange(q_size, device=rel_pos.device)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size, device=rel_pos.device)[None, :] * max(q_size / k_size, 1.0)
    relative = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return rel_pos[relative.long()]


def rel_pos_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    table_h: torch.Tensor,
    table_w: torch.Tensor,
    size: tuple[int, int],
    max_bias_elements: int = MAX_BIAS_ELEMENTS,
) -> torch.Tensor:
    """Attention with SAM's decomposed relative-position bias.

    Args:
        q, k, v: ``G x N x d`` (G = windows x heads, ``N = h * w`` tokens of an ``h x w`` grid).
        table_h, table_w: ``h x h x d`` and ``w x w x d`` tables from
            :func:`relative_position_table`.
    Returns:
        ``G x N x d``; the bias ``rel_h[q, key_row] + rel_w[q, key_col]`` uses the unscaled
        queries, as in the reference.
    """
    h, w = size
    g, n, d = q.shape
    table_h = table_h.to(q.dtype)
    table_w = table_w.to(q.dtype)
    chunk = max(1, min(g, max_bias_elements // (n * n)))
    # Eager inference reuses one buffer; autograd, tracing (ONNX export) and torch.compile get
    # plain functional ops.
    reuse = not (torch.is_grad_enabled() or torch.jit.is_tracing() or torch.compiler.is_compiling())
    buffer = q.new_empty(chunk, h, w, h, w) if reuse else None
    outs = []
    for start in range(0, g, chunk):
        stop = min(g, start + chunk)
        qc = q[start:stop]
        grid_q = qc.reshape(stop - start, h, w, d)
        rel_h = torch.einsum("ghwc,hkc->ghwk", grid_q, table_h)[:, :, :, :, None]
        rel_w = torch.einsum("ghwc,wkc->ghwk", grid_q, table_w)[:, :, :, None, :]
        if buffer is not None:
            bias = torch.add(rel_h, rel_w, out=buffer[: stop - start])
        else:
            bias = rel_h + rel_w
        outs.append(
            F.scaled_dot_product_attention(
                qc[None],
                k[start:stop][None],
                v[start:stop][None],
                attn_mask=bias.reshape(1, -1, n, n),
            )[0]
        )
    return outs[0] if len(outs) == 1 else torch.cat(outs)
