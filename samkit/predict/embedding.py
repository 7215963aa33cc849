"""Image embeddings: the one image encoder path, and a bounded LRU cache keyed by image content.

An :class:`Embedding` is what :class:`~samkit.predict.sam_predictor.SamPredictor` keeps after
``set_image``; ``SamPredictor.set_embedding`` puts one back, so many images encoded in one
batch (or found in the cache) can be decoded without encoding again.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from ..models import Sam
from ..models.sam2 import Sam2
from .precision import encode
from .threads import cpu_policy
from .transforms import resize_to_input


@dataclass(frozen=True)
class Embedding:
    """Encoder output of one image, with the sizes the prompts are scaled by.

    ``features`` ``1 x C x h x w`` float32; ``original_size`` ``(H, W)`` of the image,
    ``input_size`` ``(h, w)`` after the resize (before padding); ``high_res_feats``: extra
    higher-resolution maps ``1 x C_i x h_i x w_i`` of encoders that have them (SAM 2: two),
    else None.
    """

    features: torch.Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    high_res_feats: tuple[torch.Tensor, ...] | None = None

    @property
    def nbytes(self) -> int:
        maps = (self.features, *(self.high_res_feats or ()))
        return sum(t.numel() * t.element_size() for t in maps)


def image_key(image_rgb: np.ndarray, *context: object) -> str:
    """Content hash (BLAKE2b-128) of an RGB uint8 image's pixels and shape, plus ``context``
    (model identity, device, dtype) so that different settings never share an entry."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((image_rgb.shape, str(image_rgb.dtype), *context)).encode())
    h.update(np.ascontiguousarray(image_rgb).data)
    return h.hexdigest()


class EmbeddingCache:
    """Least-recently-used embeddings, bounded by entry count and by bytes.

    ``max_items=0`` disables caching. An embedding larger than ``max_bytes`` is not stored.
    """

    def __init__(self, max_items: int = 16, max_bytes: int = 512 * 2**20) -> None:
        self.max_items = int(max_items)
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict[str, Embedding] = OrderedDict()
        self.nbytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def get(self, key: str) -> Embedding | None:
        emb = self._entries.get(key)
        if emb is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return emb

    def put(self, key: str, emb: Embedding) -> None:
        if self.max_items <= 0 or emb.nbytes > self.max_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self.nbytes -= old.nbytes
        self._entries[key] = emb
        self.nbytes += emb.nbytes
        while len(self._entries) > self.max_items or self.nbytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.nbytes -= evicted.nbytes

    def clear(self) -> None:
        self._entries.clear()
        self.nbytes = 0


@torch.inference_mode()
def encode_batch(
    model: Sam, x: torch.Tensor, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
    """Run the image encoder on ``B x 3 x S x S`` preprocessed images under samkit's CPU policy,
    autocasting to ``dtype`` (fp32 or bf16); the features (and high-res maps) come out float32.
    SAM 2: :meth:`~samkit.models.Sam2.encode` (``no_mem_embed`` added, high-res maps projected)."""
    encoder = model.encode if isinstance(model, Sam2) else model.encode_image
    with cpu_policy("encoder", x.device):
        return encode(encoder, x, "bf16" if dtype == torch.bfloat16 else "fp32")


@torch.inference_mode()
def encode_images(
    model: Sam,
    images_rgb: list[np.ndarray],
    dtype: torch.dtype = torch.float32,
    batch_size: int | None = None,
) -> list[Embedding]:
    """Encode ``H x W x 3`` RGB uint8 images, ``batch_size`` per encoder pass (default: all).

    Pre-processing is the model's :class:`~samkit.models.InputSpec` (SAM v1: long-side resize
    with Pillow bilinear, normalize, pad), as ``SamPredictor.set_image`` does.
    """
    if isinstance(model, Sam2):  # square antialiased resize, two high-res maps
        from .sam2_predictor import encode_images_sam2

        return encode_images_sam2(model, images_rgb, dtype)  # type: ignore[return-value]
    device = model.device
    spec = model.input_spec
    step = max(1, len(images_rgb) if batch_size is None else int(batch_size))
    out: list[Embedding] = []
    for start in range(0, len(images_rgb), step):
        batch, sizes = [], []
        for image in images_rgb[start : start + step]:
            t = resize_to_input(image, spec, device)
            batch.append(model.preprocess(t))
            sizes.append(((image.shape[0], image.shape[1]), (t.shape[-2], t.shape[-1])))
        features, high_res = encode_batch(model, torch.cat(batch), dtype)
        for i, (orig, inp) in enumerate(sizes):
            one = len(batch) == 1

            def row(t: torch.Tensor, i: int = i, one: bool = one) -> torch.Tensor:
                return t if one else t[i : i + 1].clone()

            maps = None if high_res is None else tuple(row(t) for t in high_res)
            out.append(Embedding(row(features), orig, inp, maps))
    return out
