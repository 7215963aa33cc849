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
    # Eager inference reuses buffers; autograd, tracing (ONNX export) and torch.compile get
    # plain functional ops.
    reuse = not (torch.is_grad_enabled() or torch.jit.is_tracing() or torch.compiler.is_compiling())
    if reuse and q.dtype == torch.bfloat16 and q.device.type == "cpu" and n >= MIN_ROWS_BLOCKED:
        return _blocked_bf16(q, k, v, table_h, table_w, size)
    chunk = max(1, min(g, max_bias_elements // (n * n)))
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


#: ``N`` from which bf16 attention on the CPU runs :func:`_blocked_bf16` (ViT global blocks,
#: ``N = 4096``; windows of 196 tokens are faster through the fused kernel)
MIN_ROWS_BLOCKED = 1024
#: queries per block of :func:`_blocked_bf16`: the ``rows x N`` scores stay in the caches
BLOCK_ROWS = 512


def _blocked_bf16(q, k, v, table_h, table_w, size):
    """bf16 attention with the decomposed bias, in blocks of :data:`BLOCK_ROWS` queries.

    The reference's own order, ``softmax((q * scale) k^T + rel_h + rel_w) v``, one block of
    scores at a time: the two bias terms are added in place by broadcasting (no ``N x N`` bias
    is built) and every pass over a block's scores stays in the caches. On a 2-core Zen 4
    (AVX512-BF16) a ViT-B global block's attention takes ~235 ms against ~410 ms through the
    fused kernel with a bias (its bf16 kernel reaches ~150 GFLOP/s at ``d = 64``). The scores
    are rounded to bf16 before the bias is added (the fused kernel keeps them in fp32): about
    twice the fused kernel's error, the same order as bf16's rounding of q and k themselves.
    Pre-scaling q is exact for 64-channel heads (ViT-B and ViT-L; ``scale = 1/8``) and one more
    bf16 rounding for ViT-H's 80 channels (as the reference, which scales q too).
    """
    h, w = size
    g, n, d = q.shape
    grid = q.reshape(g, h, w, d)
    rel_h = torch.einsum("ghwc,hkc->ghwk", grid, table_h).reshape(g, n, h, 1)
    rel_w = torch.einsum("ghwc,wkc->ghwk", grid, table_w).reshape(g, n, 1, w)
    qs = q * d**-0.5
    kt = k.transpose(1, 2)
    out = torch.empty_like(q)
    for i in range(g):
        for s in range(0, n, BLOCK_ROWS):
            e = min(n, s + BLOCK_ROWS)
            scores = torch.matmul(qs[i, s:e], kt[i])
            scores.view(e - s, h, w).add_(rel_h[i, s:e]).add_(rel_w[i, s:e])
            torch.matmul(scores.softmax(-1), v[i], out=out[i, s:e])
    return out
