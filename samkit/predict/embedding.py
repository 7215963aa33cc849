"""Image embeddings: batched encoding and a bounded LRU cache keyed by image content.

An :class:`Embedding` is what :class:`~samkit.predict.sam_predictor.SamPredictor` keeps after
``set_image``; :func:`attach` puts one into a predictor, so many images encoded in one batch
(or found in the cache) can be decoded without encoding again.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from ..models import Sam
from ..models.sam2 import Sam2
from .precision import autocast
from .sam_predictor import SamPredictor
from .threads import cpu_policy
from .transforms import resize_longest_side


@dataclass(frozen=True)
class Embedding:
    """Encoder output ``1 x C x h x w`` of one image, with the sizes the prompts are scaled by."""

    features: torch.Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]

    @property
    def nbytes(self) -> int:
        return self.features.numel() * self.features.element_size()


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
def encode_images(
    model: Sam, images_rgb: list[np.ndarray], dtype: torch.dtype = torch.float32
) -> list[Embedding]:
    """Encode ``H x W x 3`` RGB uint8 images in one forward pass (same pre-processing as
    ``SamPredictor.set_image``: long-side resize with Pillow bilinear, normalize, pad)."""
    if not images_rgb:
        return []
    if isinstance(model, Sam2):  # square antialiased resize, extra feature maps
        from .sam2_predictor import encode_images_sam2

        return encode_images_sam2(model, images_rgb, dtype)  # type: ignore[return-value]
    size = model.image_size
    device = model.device
    batch, sizes = [], []
    for image in images_rgb:
        resized = resize_longest_side(image, size)
        if not resized.flags.writeable:
            resized = resized.copy()
        t = torch.from_numpy(resized).to(device).permute(2, 0, 1).contiguous()[None]
        batch.append(model.preprocess(t))
        sizes.append(((image.shape[0], image.shape[1]), (resized.shape[0], resized.shape[1])))
    with cpu_policy("encoder", device), autocast(device, dtype):
        features = model.image_encoder(torch.cat(batch))
    features = features.float()  # fp32 embeddings whatever the encoder's precision
    return [
        Embedding(features[i : i + 1].clone() if len(batch) > 1 else features, orig, inp)
        for i, (orig, inp) in enumerate(sizes)
    ]


def attach(predictor: SamPredictor, emb: Embedding) -> None:
    """Make ``predictor`` answer prompts for the image ``emb`` was computed from."""
    predictor.set_embedding(emb)
