"""Many prompts against one image embedding, fast and exact.

:class:`PointDecoder` computes what SAM's mask decoder computes for ``B`` one-point prompts
(multimask output, :meth:`PointDecoder.decode`) or for any prompts without a mask input
(:meth:`PointDecoder.decode_sparse`: boxes, several points), reorganised so that
segment-everything and batches of boxes waste no work:

* Everything that does not depend on the prompt is computed once per image: the image-side
  projections of the first two-way block (its keys are the same for every prompt).
* Attention against the per-prompt image tokens is re-associated so that the 4096 x 256
  image tokens meet a ``(heads * tokens) x 256`` matrix instead of being projected to 128
  channels first: ``softmax(q Wk x^T + q (Wk pe^T)) x Wv^T`` and ``x Wq^T k + (pe Wq^T) k``.
  The image pe's projections ``Wk pe^T`` / ``Wq pe^T`` are cached per image (``H x d x N``),
  so ``x + pe`` is never formed and the pe part of the scores is a d-deep product; the
  later token-to-image attentions are one fused attention call each (the image tokens are
  both keys and values). The bias of the key projection cancels in the softmax. The last
  token-to-image attention only runs for the tokens that are read (the IoU token and the
  requested mask tokens).
* IoU predictions come before the expensive output upscaling, which then runs only for
  prompts with at least one mask that passes the IoU threshold, and the hypernetwork
  product only for those masks.

In float32 the results equal :class:`~samkit.models.MaskDecoder`'s up to rounding (the
re-association changes the summation order: IoU differences ~1e-6). ``dtype=torch.bfloat16``
runs the matrix products in bfloat16 (faster on CPUs with bf16 units, less exact).
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..models import Sam
from ..models.transformer import Attention
from .threads import run_in_threads, split_threads

__all__ = ["PointDecoder", "UpscaleRest", "own_dtype", "rest_block"]


def own_dtype(method):
    """Run a decoder method in inference mode and in the decoder's own dtype, whatever
    ``torch.autocast`` context the caller is in (the decoder casts what it needs itself)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        device = self.prompt_encoder.no_mask_embed.weight.device
        with torch.inference_mode(), torch.autocast(device.type, enabled=False):
            return method(self, *args, **kwargs)

    return wrapper


def _pe_proj(pos: torch.Tensor, attn: Attention, which: str) -> torch.Tensor:
    """``H x d x N``: the image pe ``pos`` (``N x C``) through ``attn``'s ``which`` ("q" or
    "k") projection weight (no bias), per head."""
    proj = attn.q_proj if which == "q" else attn.k_proj
    w = proj.weight.view(attn.num_heads, attn.internal_dim // attn.num_heads, -1)  # H x d x C
    return torch.matmul(w, pos.T).contiguous()


def _heads(x: torch.Tensor, h: int) -> torch.Tensor:
    """``B x T x (h*d)`` -> ``B x T x h x d``."""
    b, t, c = x.shape
    return x.view(b, t, h, c // h)


class PointDecoder:
    """Decode single foreground points (multimask) against one cached image embedding.

    Args:
        sam: the model (its prompt encoder and mask decoder are used, not modified).
        dtype: compute dtype, ``torch.float32`` (exact) or ``torch.bfloat16``.
        chunk: prompts processed together inside :meth:`decode` (bounds the working set:
            about 20 MB per prompt in float32).
    """

    #: position of the IoU token among the output tokens, and of the first mask token
    iou_index = 0
    mask_offset = 1

    def __init__(self, sam: Sam, dtype: torch.dtype = torch.float32, chunk: int = 4) -> None:
        if dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"dtype must be torch.float32 or torch.bfloat16, got {dtype}")
        self.dtype = dtype
        self.chunk = max(1, int(chunk))
        self.prompt_encoder = sam.prompt_encoder
        dec = sam.mask_decoder
        if dtype != torch.float32:
            dec = copy.deepcopy(dec).to(dtype)
        self.dec = dec
        self.input_size = sam.prompt_encoder.input_image_size  # (h, w) of the model input
        self.token_indices = list(range(1, dec.num_mask_tokens))  # the multimask outputs
        self._features: torch.Tensor | None = None

    # -- per image ---------------------------------------------------------------------------
    @own_dtype
    def set_features(self, features: torch.Tensor) -> None:
        """Cache ``1 x C x h x w`` image features and everything shared by all prompts."""
        dt = self.dtype
        pe_enc = self.prompt_encoder
        tr = self.dec.transformer
        dense = pe_enc.no_mask_embed.weight.reshape(1, -1, 1, 1)
        src = (features.float() + dense).flatten(2)[0].T  # N x C
        pos = pe_enc.get_dense_pe().flatten(2)[0].T.to(src.dtype)
        self.keys0 = src.to(dt).contiguous()
        pos = pos.to(dt).contiguous()
        kp0 = self.keys0 + pos
        first = tr.layers[0]
        self.shared_first = first.skip_first_layer_pe
        t2i, i2t = first.cross_attn_token_to_image, first.cross_attn_image_to_token
        h = t2i.num_heads
        # Keys/values of the first token->image attention and queries of the first
        # image->token attention: the same for all prompts.
        self.k0t = t2i.k_proj(kp0).view(-1, h, t2i.internal_dim // h).permute(1, 2, 0)
        self.k0t = self.k0t.contiguous()  # H x d x N
        self.v0 = t2i.v_proj(self.keys0).view(-1, h, t2i.internal_dim // h).transpose(0, 1)
        self.v0 = self.v0.contiguous()
        hi = i2t.num_heads
        q0 = i2t.q_proj(kp0).view(-1, hi, i2t.internal_dim // hi)  # N x H x d
        self.q0t = q0.permute(1, 2, 0).contiguous()  # H x d x N
        self.base0 = (self.keys0 + i2t.out_proj.bias).contiguous()  # residual + out bias
        # The image pe seen through the key projections of the later token->image attentions
        # and the query projections of the later image->token attentions, per head: the pe
        # part of those scores is then a d-deep product instead of a C-deep one, and
        # ``image tokens + pe`` is never formed. (The key bias cancels in the softmax.)
        # (The first block uses the shared projections above instead.)
        later = tr.layers[1:]
        self.pe_keys = [None] + [_pe_proj(pos, b.cross_attn_token_to_image, "k") for b in later]
        self.pe_queries = [None] + [_pe_proj(pos, b.cross_attn_image_to_token, "q") for b in later]
        self.pe_keys_final = _pe_proj(pos, tr.final_attn_token_to_image, "k")
        self.grid = features.shape[-2:]

    # -- prompts -----------------------------------------------------------------------------
    def point_tokens(self, coords: torch.Tensor | np.ndarray) -> torch.Tensor:
        """``B x T x C`` tokens for ``B x 2`` (x, y) foreground points in the input frame.

        The token order is the reference's: IoU token, mask tokens, point, padding point.
        """
        pe_enc = self.prompt_encoder
        h, w = self.input_size
        # Pixel centres, normalized in float64 like the reference (numpy float64 prompts).
        norm = (np.asarray(coords, dtype=np.float64) + 0.5) / np.array([w, h], dtype=np.float64)
        device = pe_enc.no_mask_embed.weight.device
        norm = torch.as_tensor(norm, dtype=torch.float32, device=device)
        emb = pe_enc.pe_layer._encode(norm[:, None, :])  # B x 1 x C
        point = emb + pe_enc.point_embeddings[1].weight
        b = point.shape[0]
        pad = pe_enc.not_a_point_embed.weight.expand(b, 1, -1)
        return self._with_output_tokens(torch.cat([point, pad], 1))

    def _with_output_tokens(self, prompt: torch.Tensor) -> torch.Tensor:
        """The IoU token and mask tokens in front of ``B x T x C`` prompt tokens (the
        reference's order), in the compute dtype."""
        dec = self.dec
        out = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], 0).float()
        return torch.cat([out.expand(prompt.shape[0], -1, -1), prompt.float()], 1).to(self.dtype)

    def _hypernet(self, mask_tokens: torch.Tensor, indices: list[int]) -> torch.Tensor:
        """``B x M x C/8`` hypernetwork outputs of the final mask tokens ``B x M x C``, where
        column ``j`` is mask token ``indices[j]``."""
        mlps = self.dec.output_hypernetworks_mlps
        return torch.stack([mlps[t](mask_tokens[:, j]) for j, t in enumerate(indices)], dim=1)

    def decode(
        self,
        coords: torch.Tensor | np.ndarray,
        iou_threshold: float | None = None,
        region: tuple[int, int] | None = None,
        workers: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Decode ``B x 2`` points (input frame, float64 ok).

        Args:
            iou_threshold: masks with predicted IoU above it get logits (None: all).
            region: ``(h, w)``: only ``logits[..., :h, :w]`` are computed (the part of the
                low-res frame that the resized image covers; the upscaling is per pixel, so
                skipping the rest changes nothing). Default: the whole ``4h x 4w`` frame.
            workers: the points are split into this many consecutive parts decoded at the
                same time, each on one torch thread. Default on the CPU: one part per torch
                thread (as samkit's CPU policy has set them for the call), at most
                :data:`~samkit.predict.threads.MAX_PARTS` parts sharing the threads out; one part
                on other devices. Per prompt this is mostly small products and passes over a
                4 MB image-token matrix, which scale poorly across threads; one prompt per
                thread keeps both cores of a 2-core CPU busy (SAM 2.1 tiny, fp32: 10.7 -> 8.6
                ms a point, ``benchmarks/bench_split_decode.py``). The results equal the serial
                ones up to float rounding.
        Returns:
            ``(iou B x M float32, keep B x M bool, logits K x h x w float32)``, M = 3
            multimask outputs, on the CPU; ``keep`` is ``iou > iou_threshold`` and ``logits``
            are the low-res logits of the kept masks, in row-major order of ``keep``.
        """
        if self._features_missing():
            raise RuntimeError("PointDecoder.set_features must be called before decode")
        region = self._region(region)
        coords = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
        device = self.prompt_encoder.no_mask_embed.weight.device
        if workers is None:
            workers, each = (
                split_threads(torch.get_num_threads()) if device.type == "cpu" else (1, 1)
            )
        else:
            each = 1
        parts = self._split(len(coords), workers)
        if len(parts) == 1:
            return self._decode_serial(coords, iou_threshold, region)
        outs = run_in_threads(
            [
                functools.partial(self._decode_serial, coords[p], iou_threshold, region)
                for p in parts
            ],
            torch_threads=each,
        )
        return tuple(torch.cat([o[i] for o in outs]) for i in range(3))  # type: ignore[return-value]

    def _split(self, n: int, workers: int) -> list[slice]:
        """Consecutive parts of ``n`` points for ``workers`` threads, whole chunks each."""
        chunks = -(-n // self.chunk)
        workers = max(1, min(int(workers), chunks))
        if workers == 1:
            return [slice(0, n)]
        per = -(-chunks // workers) * self.chunk
        return [slice(s, min(s + per, n)) for s in range(0, n, per)]

    @own_dtype
    def _decode_serial(
        self, coords: np.ndarray, iou_threshold: float | None, region: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`decode` of ``coords`` (``B x 2`` float64) in the calling thread."""
        rh, rw = region
        m = len(self.token_indices)
        ious, keeps, logits = [torch.zeros((0, m))], [torch.zeros((0, m), dtype=torch.bool)], []
        dec = self.dec
        for s in range(0, len(coords), self.chunk):
            q, pe, keys = self._layers(self.point_tokens(coords[s : s + self.chunk]))
            final = self.dec.transformer.final_attn_token_to_image
            # The final attention treats every token on its own: the IoU token first ...
            i = self.iou_index
            iou_tok = self._final(final, q[:, i : i + 1], pe[:, i : i + 1], keys)
            iou = dec.iou_prediction_head(iou_tok[:, 0])[:, self.token_indices].float()
            keep = torch.ones_like(iou, dtype=torch.bool)
            if iou_threshold is not None:
                keep = iou > iou_threshold
            rows = keep.any(1).nonzero()[:, 0]
            if len(rows):
                # ... then the mask tokens, only for prompts with a mask to upscale.
                sel = [self.mask_offset + t for t in self.token_indices]
                if len(rows) < len(q):  # (no copies when every prompt goes on)
                    q, pe, keys = q[rows], pe[rows], keys[rows]
                mask_tok = self._final(final, q[:, sel], pe[:, sel], keys)
                hyper = self._hypernet(mask_tok, self.token_indices)
                low = self.upscale(keys, hyper, (rh, rw))  # R x M x rh x rw
                logits.append(low[keep[rows]].cpu())
            ious.append(iou.cpu())
            keeps.append(keep.cpu())
        out = torch.cat(logits) if logits else torch.zeros((0, rh, rw))
        return torch.cat(ious), torch.cat(keeps), out

    @own_dtype
    def decode_sparse(
        self,
        sparse: torch.Tensor,
        multimask_output: bool | list[int],
        chunk: int | None = None,
        region: tuple[int, int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode any prompts without a mask input, as :class:`~samkit.models.MaskDecoder` does.

        Args:
            sparse: ``B x T x C`` sparse prompt embeddings from the prompt encoder (points,
                box corners, padding), the same ``T`` for every prompt.
            multimask_output: three masks per prompt, else the single-mask token (or a list
                of mask token indices).
            chunk: prompts per pass (default :attr:`chunk`).
            region: ``(rh, rw)``: only ``logits[..., :rh, :rw]`` are computed (as in
                :meth:`decode`). Default: the whole ``4h x 4w`` frame.
        Returns:
            ``(low-res logits B x M x rh x rw float32, iou B x M float32)`` on the features'
            device, M = 3 or 1: the module decoder's values up to float rounding.
        """
        region = self._region(region)
        ious, logits = [], []
        for keys, hyper, iou in self._sparse_chunks(sparse, multimask_output, chunk):
            ious.append(iou)
            logits.append(self.upscale(keys, hyper, region))
        return torch.cat(logits), torch.cat(ious)

    @own_dtype
    def decode_sparse_split(
        self,
        sparse: torch.Tensor,
        multimask_output: bool,
        region: tuple[int, int],
        chunk: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, UpscaleRest | None]:
        """:meth:`decode_sparse` for ``region``, plus what :meth:`complete` needs for the rest
        of the frame (None when the region is the whole frame). The region must span the
        frame's full width or height (an image resized into SAM's square input does)."""
        rh, rw = self._region(region)
        split = rest_block(self.grid, (rh, rw))
        ious, logits, rests = [], [], []
        for keys, hyper, iou in self._sparse_chunks(sparse, multimask_output, chunk):
            ious.append(iou)
            logits.append(self.upscale(keys, hyper, (rh, rw)))
            if split is not None:
                axis, start = split
                grid = keys.view(keys.shape[0], *self.grid, -1)
                tokens = grid[:, start:] if axis == 0 else grid[:, :, start:]
                rests.append(UpscaleRest(tokens.clone(), hyper, axis, start))
        return torch.cat(logits), torch.cat(ious), UpscaleRest.cat(rests) if rests else None

    def _sparse_chunks(
        self, sparse: torch.Tensor, multimask_output: bool | list[int], chunk: int | None
    ):
        """Per ``chunk`` prompts: ``(image tokens R x N x C, hypernetwork outputs R x M x C/8,
        iou R x M)``, everything before the output upscaling (callers check the features).
        ``multimask_output``: the multimask tokens, else the single-mask one; or a list of
        mask token indices."""
        dec = self.dec
        if isinstance(multimask_output, list):
            indices = multimask_output
        else:
            indices = self.token_indices if multimask_output else [0]
        # the IoU token, then the requested mask tokens
        sel = [self.iou_index] + [self.mask_offset + t for t in indices]
        step = max(1, int(chunk or self.chunk))
        for s in range(0, sparse.shape[0], step):
            q, pe, keys = self._layers(self._with_output_tokens(sparse[s : s + step]))
            out = self._final(
                dec.transformer.final_attn_token_to_image, q[:, sel], pe[:, sel], keys
            )
            iou = dec.iou_prediction_head(out[:, 0])[:, indices].float()
            yield keys, self._hypernet(out[:, 1:], indices), iou

    def _features_missing(self) -> bool:
        return not hasattr(self, "keys0")

    def _region(self, region: tuple[int, int] | None) -> tuple[int, int]:
        """``(rh, rw)`` of the low-res logits to compute, checked (default: the whole frame)."""
        if self._features_missing():
            raise RuntimeError("PointDecoder.set_features must be called before decoding")
        gh, gw = self.grid
        if region is None:
            return 4 * gh, 4 * gw
        rh, rw = int(region[0]), int(region[1])
        if not (0 < rh <= 4 * gh and 0 < rw <= 4 * gw):
            raise ValueError(f"region must be within the {4 * gh} x {4 * gw} frame, got {region}")
        return rh, rw

    # -- the two-way transformer -----------------------------------------------------------
    def _layers(self, tokens: torch.Tensor):
        """The two-way blocks: returns ``(tokens, token pe, image tokens B x N x C)``."""
        tr = self.dec.transformer
        pe = tokens  # the query positional encoding is the initial tokens
        q = tokens
        keys = None
        for i, layer in enumerate(tr.layers):
            if i == 0 and self.shared_first:
                q = layer.norm1(layer.self_attn(q, q, q))
            else:
                qq = q + pe
                q = layer.norm1(q + layer.self_attn(qq, qq, q))
            if keys is None:
                q = layer.norm2(q + self._attend_shared(layer.cross_attn_token_to_image, q + pe))
                q = layer.norm3(q + layer.mlp(q))
                keys = layer.norm4(self._i2t_shared(layer.cross_attn_image_to_token, q, pe))
            else:
                t2i = layer.cross_attn_token_to_image
                q = layer.norm2(q + self._attend(t2i, q + pe, keys, self.pe_keys[i]))
                q = layer.norm3(q + layer.mlp(q))
                i2t = layer.cross_attn_image_to_token
                keys = layer.norm4(self._i2t(i2t, q, pe, keys, self.pe_queries[i]))
        if keys is None:  # no blocks: the image tokens are the shared ones
            keys = self.keys0.expand(q.shape[0], -1, -1)
        return q, pe, keys

    def _final(self, attn: Attention, q, pe, keys) -> torch.Tensor:
        """Final token->image attention and norm for the tokens ``q`` (``B x T x C``)."""
        out = self._attend(attn, q + pe, keys, self.pe_keys_final)
        return self.dec.transformer.norm_final_attn(q + out)

    def _attend_shared(self, attn: Attention, q: torch.Tensor) -> torch.Tensor:
        """Token->image attention against the shared first-layer keys/values (``B x T x C``)."""
        b, t, _ = q.shape
        h = attn.num_heads
        d = attn.internal_dim // h
        qh = _heads(attn.q_proj(q), h).permute(2, 0, 1, 3).reshape(h, b * t, d) * d**-0.5
        # (explicit products: for these few queries with d = 16 they beat the fused kernel)
        out = torch.bmm(torch.bmm(qh, self.k0t).softmax(dim=-1), self.v0)  # H x BT x d
        out = out.view(h, b, t, -1).permute(1, 2, 0, 3).reshape(b, t, -1)
        return attn.out_proj(out)

    def _i2t_shared(self, attn: Attention, q: torch.Tensor, pe: torch.Tensor) -> torch.Tensor:
        """Image->token attention of the first layer (shared image queries); returns the
        pre-norm new image tokens ``B x N x C`` (residual and output bias included)."""
        b, t, c = q.shape
        h = attn.num_heads
        d = attn.internal_dim // h
        k = _heads(attn.k_proj(q + pe), h).transpose(1, 2) * d**-0.5  # B x H x T x d
        s = torch.matmul(k, self.q0t)  # B x H x T x N
        p = s.softmax(dim=2).view(b, h * t, -1)
        u = self._value_out(attn, q)  # B x HT x C
        return torch.baddbmm(self.base0.expand(b, -1, -1), p.transpose(1, 2), u)

    @staticmethod
    def _value_out(attn: Attention, tokens: torch.Tensor) -> torch.Tensor:
        """``v_proj(tokens)`` per head pushed through ``out_proj``: ``B x (H*T) x C``."""
        b, t, c = tokens.shape
        h = attn.num_heads
        v = _heads(attn.v_proj(tokens), h)  # B x T x H x d
        wo = attn.out_proj.weight.view(c, h, -1)  # C x H x d
        return torch.einsum("bthe,che->bhtc", v, wo).reshape(b, h * t, c)

    def _attend(
        self, attn: Attention, q: torch.Tensor, keys: torch.Tensor, pe_keys: torch.Tensor
    ) -> torch.Tensor:
        """Token->image attention with per-prompt image tokens, re-associated.

        ``q`` B x T x C (tokens + pe), ``keys`` B x N x C (the image tokens, also the values),
        ``pe_keys`` H x d x N (the image pe through the key projection, :func:`_pe_proj`).
        The scores are ``(q Wq) Wk keys^T + (q Wq) pe_keys``; one fused attention call reads
        the image tokens once for the scores and the weighted sum.
        """
        b, t, c = q.shape
        h = attn.num_heads
        d = attn.internal_dim // h
        qh = _heads(attn.q_proj(q), h).transpose(1, 2) * d**-0.5  # B x H x T x d
        a = torch.matmul(qh, attn.k_proj.weight.view(h, d, c))  # B x H x T x C
        s_pe = torch.matmul(qh, pe_keys).view(b, 1, h * t, -1)  # B x 1 x HT x N
        if self.dtype == torch.bfloat16:
            # explicit products: for these few query rows the fused kernel's bf16 path is
            # about 2x slower (ViT-B box: 1.8 vs 1.0 ms for the 56 rows of the second block)
            s = torch.baddbmm(s_pe.view(b, h * t, -1), a.view(b, h * t, c), keys.transpose(1, 2))
            z = torch.bmm(s.softmax(dim=-1), keys).view(b, h, t, c)
        else:
            kv = keys[:, None]
            z = F.scaled_dot_product_attention(
                a.view(b, 1, h * t, c), kv, kv, attn_mask=s_pe, scale=1.0
            ).view(b, h, t, c)
        o = torch.einsum("bhtc,hec->bthe", z, attn.v_proj.weight.view(h, d, c))
        o = o + attn.v_proj.bias.view(h, d)
        return attn.out_proj(o.reshape(b, t, h * d))

    @staticmethod
    def _i2t(
        attn: Attention, q: torch.Tensor, pe: torch.Tensor, keys: torch.Tensor, pe_queries
    ) -> torch.Tensor:
        """Image->token attention with per-prompt image tokens; returns the pre-norm new
        image tokens ``B x N x C`` (residual and output bias included), written into ``keys``.
        ``pe_queries`` H x d x N: the image pe through the query projection."""
        b, t, c = q.shape
        h = attn.num_heads
        d = attn.internal_dim // h
        k = _heads(attn.k_proj(q + pe), h).transpose(1, 2) * d**-0.5  # B x H x T x d
        g = torch.matmul(k, attn.q_proj.weight.view(h, d, c)).view(b, h * t, c)
        bias = torch.matmul(k, attn.q_proj.bias.view(h, d, 1))  # B x H x T x 1
        s = torch.matmul(k, pe_queries).add_(bias).view(b, h * t, -1)  # the pe part
        s = s.baddbmm_(g, keys.transpose(1, 2))
        p = s.view(b, h, t, -1).softmax(dim=2).view(b, h * t, -1)
        # Every pixel's weights sum to h (one softmax per head): the output bias folds into u.
        u = PointDecoder._value_out(attn, q) + attn.out_proj.bias / h
        return keys.baddbmm_(p.transpose(1, 2), u)  # the old image tokens are not needed

    # -- output upscaling --------------------------------------------------------------------
    @own_dtype
    def upscale(
        self, keys: torch.Tensor, hyper: torch.Tensor, region: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """Mask logits ``R x M x h x w`` (float32) from image tokens ``R x N x C`` and
        hypernetwork outputs ``R x M x C/8``; ``region = (h, w)`` (default ``4 x`` the grid):
        only the image tokens under ``region`` are upscaled."""
        r, _, c = keys.shape
        rh, rw = self._region(region)
        grid = keys.view(r, *self.grid, c)
        if (rh, rw) != (4 * grid.shape[1], 4 * grid.shape[2]):
            grid = grid[:, : -(-rh // 4), : -(-rw // 4)]
        return self.upscale_grid(grid, hyper)[:, :, :rh, :rw]

    @own_dtype
    def upscale_grid(self, grid: torch.Tensor, hyper: torch.Tensor) -> torch.Tensor:
        """Mask logits ``R x M x 4gh x 4gw`` (float32) of a block ``R x gh x gw x C`` of image
        tokens and hypernetwork outputs ``R x M x C/8``.

        The two 2x2 stride-2 transposed convolutions are per-pixel matrix products, computed
        channels-last so that LayerNorm2d is a plain layer norm over the last dimension: every
        token's 4 x 4 output pixels depend on that token alone.
        """
        conv1, ln, _, conv2, _ = self.dec.output_upscaling
        r, gh, gw, c = grid.shape
        n = gh * gw
        c1 = conv1.out_channels
        c2 = conv2.out_channels
        w1 = conv1.weight.permute(0, 2, 3, 1).reshape(c, 4 * c1)  # (a, b, o) per input chan
        w2 = conv2.weight.permute(0, 2, 3, 1).reshape(c1, 4 * c2)
        y = torch.addmm(conv1.bias.repeat(4), grid.reshape(r * n, c), w1).view(r, n * 4, c1)
        y = self._add_stride8(y, (gh, gw))
        y = F.gelu(F.layer_norm(y, (c1,), ln.weight, ln.bias, ln.eps))
        z = torch.addmm(conv2.bias.repeat(4), y.view(r * n * 4, c1), w2).view(r, n * 16, c2)
        z = F.gelu(self._add_stride4(z, (gh, gw)))  # R x (N 4 4) x C2
        m = hyper.shape[1]
        logits = torch.bmm(z, hyper.transpose(1, 2))  # R x N*16 x M
        # (i, j, a, b, a2, b2) -> rows 4i + 2a + a2, cols 4j + 2b + b2
        logits = logits.view(r, gh, gw, 2, 2, 2, 2, m).permute(0, 7, 1, 3, 5, 2, 4, 6)
        return logits.reshape(r, m, 4 * gh, 4 * gw).float()

    def _add_stride8(self, y: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
        """Hook after the first transposed convolution (``R x (N 2 2) x C/4`` rows in token,
        then pixel order): SAM 2 adds its stride-8 features here. SAM adds nothing."""
        return y

    def _add_stride4(self, z: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
        """Hook after the second transposed convolution (``R x (N 4 4) x C/8``)."""
        return z

    @own_dtype
    def complete(self, part: torch.Tensor, rest: UpscaleRest) -> torch.Tensor:
        """Whole-frame logits ``R x M x 4h x 4w`` from the ``region`` logits of
        :meth:`decode_sparse_split` and its :class:`UpscaleRest` (the same rows of both).
        Needs the decoder's weights only, not :meth:`set_features`."""
        r, m, rh, rw = part.shape
        block = self.upscale_grid(rest.tokens, rest.hyper)  # R x M x bh' x bw'
        off = 4 * rest.start
        if rest.axis == 0:
            return torch.cat([part, block[..., rh - off :, :]], dim=2)
        return torch.cat([part, block[..., :, rw - off :]], dim=3)


@dataclass
class UpscaleRest:
    """What the low-res logits outside a region need (:meth:`PointDecoder.decode_sparse_split`):
    the image tokens of the grid rows (``axis`` 0) or columns (1) from ``start`` on, ``R x bh x
    bw x C``, and the hypernetwork outputs ``R x M x C/8``."""

    tokens: torch.Tensor
    hyper: torch.Tensor
    axis: int
    start: int

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def take(self, prompts: torch.Tensor) -> UpscaleRest:
        return UpscaleRest(self.tokens[prompts], self.hyper[prompts], self.axis, self.start)

    @staticmethod
    def cat(parts: list[UpscaleRest]) -> UpscaleRest:
        """The prompts of several parts (of one image and region) in order."""
        tokens = torch.cat([p.tokens for p in parts])
        return UpscaleRest(
            tokens, torch.cat([p.hyper for p in parts]), parts[0].axis, parts[0].start
        )


def rest_block(grid: tuple[int, int], region: tuple[int, int]) -> tuple[int, int] | None:
    """``(axis, start)`` of the image-token block outside ``region`` of the ``4h x 4w`` frame of
    a ``grid = (h, w)``: token rows (axis 0) or columns (1) from ``start`` on; None when the
    region is the whole frame. The region must span the frame's full width or height (an
    image resized into SAM's square input does)."""
    (gh, gw), (rh, rw) = grid, region
    if (rh, rw) == (4 * gh, 4 * gw):
        return None
    if rh < 4 * gh and rw < 4 * gw:
        raise ValueError(
            f"region {region} must span the {4 * gh} x {4 * gw} frame's width or height"
        )
    return (0, rh // 4) if rh < 4 * gh else (1, rw // 4)
