"""The ``samkit serve`` application: the annotator page, the JSON API and Label Studio's routes.

>>> from samkit.serve import create_app
>>> app = create_app("samkit-demo", "images/", output="labels/")   # an ASGI app (FastAPI)

Image ids are strings: ``"0"``, ``"1"``, ... for the folder's images (sorted listing) and
``"u<16 hex>"`` for uploaded ones (kept in memory only). An id is looked up, never used as a
path. The OpenAPI schema is at ``/openapi.json`` (no /docs page: FastAPI's loads its viewer from a
CDN, which an offline machine cannot reach).
"""

import contextlib
import functools
import hashlib
import os
import re
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..data.files import list_images
from ..data.sources import load_image
from ..errors import ImageError, PromptError, SamkitError
from ..ops import rle_to_mask
from .engine import Engine, read_upload
from .masks import masks_out
from .schemas import (
    AddObject,
    DecodeRequest,
    DecodeResponse,
    EverythingRequest,
    ImageInfo,
    ImageList,
    Info,
    ObjectOut,
    ObjectsResponse,
    Relabel,
    Rle,
    UploadResponse,
)
from .security import Limits, guard
from .store import AnnotationStore, StoreError

STATIC = Path(__file__).parent / "static"
_FOLDER_ID = re.compile(r"\d{1,9}")
_UPLOAD_ID = re.compile(r"u[0-9a-f]{16}")
MAX_UPLOADS = 16  # uploaded images kept in memory (LRU), and at most UPLOAD_BYTES of pixels
UPLOAD_BYTES = 512 * 2**20


class ApiError(SamkitError):
    """An HTTP error with a JSON body ``{"detail": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ServeState:
    """What the routes share: the engine, the store, the listing and the uploads."""

    def __init__(
        self, engine: Engine, store: AnnotationStore, limits: Limits, ort_dir: Path | None
    ):
        self.engine, self.store, self.limits, self.ort_dir = engine, store, limits, ort_dir
        self.uploads: OrderedDict[str, np.ndarray] = OrderedDict()

    @property
    def images(self):
        return self.store.images

    def resolve(self, image_id: str) -> tuple[str, Any]:
        """``(key, loader)`` of an image id; 404 for anything else."""
        if _FOLDER_ID.fullmatch(image_id) and int(image_id) < len(self.images):
            path = self.store.images_root / self.images[int(image_id)]
            cap = self.limits.max_pixels
            return f"f{int(image_id)}", lambda: load_image(os.fspath(path), "RGB", max_pixels=cap)
        if _UPLOAD_ID.fullmatch(image_id) and image_id in self.uploads:
            img = self.uploads[image_id]
            return image_id, lambda: img
        raise ApiError(404, f"unknown image id {image_id[:40]!r}: see GET /api/images")

    def folder_index(self, image_id: str) -> int:
        if _FOLDER_ID.fullmatch(image_id) and int(image_id) < len(self.images):
            return int(image_id)
        if _UPLOAD_ID.fullmatch(image_id) and image_id in self.uploads:
            raise ApiError(409, "annotations are kept for the folder's images only, not uploads")
        raise ApiError(404, f"unknown image id {image_id[:40]!r}: see GET /api/images")

    def image(self, image_id: str) -> tuple[str, np.ndarray]:
        key, load = self.resolve(image_id)
        return key, self.engine.rgb(key, load)

    def add_upload(self, img: np.ndarray) -> str:
        image_id = "u" + hashlib.blake2b(img.tobytes(), digest_size=8).hexdigest()
        self.uploads[image_id] = img
        self.uploads.move_to_end(image_id)
        while len(self.uploads) > MAX_UPLOADS or (
            len(self.uploads) > 1 and sum(v.nbytes for v in self.uploads.values()) > UPLOAD_BYTES
        ):
            self.uploads.popitem(last=False)
        return image_id


def mask_from_rle(rle: Rle, size: tuple[int, int]) -> np.ndarray:
    """Decode a request's RLE of an ``H x W`` image (422 when it does not fit)."""
    if tuple(rle.size) != tuple(size):
        raise ApiError(422, f"mask size {rle.size} does not match the image [H, W] = {list(size)}")
    try:
        return rle_to_mask({"size": list(size), "counts": rle.counts})
    except (ValueError, TypeError) as exc:
        raise ApiError(422, f"mask is not a valid COCO RLE: {exc}") from None


def server_timing(model_ms: float, masks_t0: float) -> str:
    """A ``Server-Timing`` header value: the model's decode and the mask encoding (since
    ``masks_t0``, a ``time.perf_counter()``), in ms; the browser reads it (the bench too)."""
    masks_ms = (time.perf_counter() - masks_t0) * 1e3
    return f"model;dur={model_ms:.2f}, masks;dur={masks_ms:.2f}"


def create_app(
    model: Any,
    images: str | os.PathLike,
    output: str | os.PathLike | None = None,
    *,
    names: list[str] | None = None,
    token: str | None = None,
    max_upload_bytes: int = 32 * 2**20,
    max_pixels: int = 50_000_000,
    ort_dir: str | os.PathLike | None = None,
    recursive: bool = False,
    prefetch: bool = True,
):
    """The ASGI app. ``model``: a ``samkit.SAM``, a name/path for it or a callable returning
    one (a name or callable loads it on the engine's model thread: faster prompts); ``images``: the folder
    to annotate; ``output``: where annotations go (default ``<images>/../<name>_samkit_labels``);
    ``token``: required on every request when set; ``ort_dir``: a folder with onnxruntime-web's
    ``dist`` files (``ort.min.js``, ``*.wasm``, ``*.mjs``) for the in-browser decoder."""
    try:
        from fastapi import FastAPI, Request
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import FileResponse, JSONResponse, Response
        from fastapi.staticfiles import StaticFiles
        from starlette.concurrency import run_in_threadpool
    except ImportError as exc:  # pragma: no cover - depends on the environment
        from ..errors import DependencyError

        raise DependencyError(
            f"samkit serve needs FastAPI and uvicorn ({exc}): pip install 'samkit[serve]'"
        ) from None

    from ..model import SAM

    if not isinstance(model, SAM) and not callable(model):  # a name or path: load it on the
        model = functools.partial(SAM, model)  # engine's model thread (see serve/engine.py)
    root_in = Path(images).expanduser()
    out = Path(output) if output is not None else root_in.parent / f"{root_in.name}_samkit_labels"
    root, listing = list_images(root_in, recursive=recursive, exclude=out.expanduser())
    if not listing:
        raise ImageError(f"no images found in {root_in} (looked for .jpg, .png, .bmp, .tif, .webp)")
    store = AnnotationStore(root, listing, out, names)
    ort = Path(ort_dir).expanduser().resolve() if ort_dir else None
    if ort is not None and not (ort / "ort.min.js").is_file():
        raise SamkitError(f"ort_dir {ort} has no ort.min.js: point it at onnxruntime-web's dist/")
    limits = Limits(token=token, max_body=max_upload_bytes, max_pixels=max_pixels)
    state = ServeState(Engine(model), store, limits, ort)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        state.engine.close()
        store.close()

    app = FastAPI(
        lifespan=lifespan,
        docs_url=None,  # FastAPI's viewers load from a CDN: offline they are blank pages
        redoc_url=None,
        title="samkit serve",
        version=__version__,
        description="Interactive SAM annotation: images, prompts -> masks, saved objects.",
    )
    app.state.samkit = state

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(StoreError)
    async def _store_error(request: Request, exc: StoreError):
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(PromptError)
    async def _prompt_error(request: Request, exc: PromptError):
        return JSONResponse({"detail": f"bad prompt: {exc}"}, status_code=422)

    @app.exception_handler(ImageError)
    async def _image_error(request: Request, exc: ImageError):
        return JSONResponse({"detail": f"bad image: {exc}"}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        parts = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err.get("loc", ()))
            parts.append(f"{where}: {err.get('msg')}")
        return JSONResponse({"detail": "invalid request: " + "; ".join(parts)}, status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        return JSONResponse(
            {"detail": f"internal error: {type(exc).__name__}: {str(exc)[:200]}"}, status_code=500
        )

    guard(app, limits)

    # -- page -------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/ort/{name}", include_in_schema=False)
    def ort_file(name: str):
        if state.ort_dir is None:
            raise ApiError(404, "no in-browser decoder: start samkit serve with ort_dir=")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,80}\.(js|mjs|wasm)", name):
            raise ApiError(404, f"no such file {name[:40]!r}")
        path = (state.ort_dir / name).resolve()
        if path.parent != state.ort_dir or not path.is_file():
            raise ApiError(404, f"no such file {name[:40]!r}")
        media = "application/wasm" if name.endswith(".wasm") else "text/javascript"
        return FileResponse(path, media_type=media)

    # -- images -----------------------------------------------------------------------------
    @app.get("/api/info", response_model=Info)
    def info():
        return {
            "model": state.engine.model.name,
            "image_size": state.engine.image_size,
            "images": len(state.images),
            "names": list(store.names),
            "output": str(store.out),
            "browser_decoder": state.ort_dir is not None,
            "version": __version__,
        }

    @app.get("/api/images", response_model=ImageList)
    def list_all():
        counts = store.counts()
        entries = [
            {"id": str(i), "file_name": rel.as_posix(), "objects": counts.get(i, 0)}
            for i, rel in enumerate(state.images)
        ]
        return {
            "images": entries,
            "annotated": sum(1 for c in counts.values() if c),
            "total": len(entries),
        }

    @app.post("/api/images", response_model=UploadResponse, status_code=201)
    async def upload(request: Request):
        """Upload an image (the raw file as the body, e.g. ``Content-Type: image/png``)."""
        data = await request.body()
        if not data:
            raise ApiError(400, "empty upload: send the image file as the request body")
        img = await run_in_threadpool(read_upload, data, limits.max_pixels)  # not on the loop
        image_id = state.add_upload(img)
        return {"id": image_id, "width": img.shape[1], "height": img.shape[0]}

    @app.get("/api/images/{image_id}", response_model=ImageInfo)
    def image_info(image_id: str):
        key, img = state.image(image_id)
        index = int(image_id) if key.startswith("f") else None
        return {
            "id": image_id,
            "file_name": store.images[index].as_posix() if index is not None else image_id,
            "width": img.shape[1],
            "height": img.shape[0],
            "revision": store.revision(index) if index is not None else 0,
            "status": state.engine.status(key),
        }

    @app.get("/api/images/{image_id}/file")
    def image_file(image_id: str):
        key, load = state.resolve(image_id)
        if key.startswith("f"):
            return FileResponse(store.images_root / store.images[int(image_id)])
        import cv2

        ok, png = cv2.imencode(".png", np.ascontiguousarray(load()[..., ::-1]))
        return Response(png.tobytes(), media_type="image/png")

    @app.post("/api/images/{image_id}/encode")
    def encode(image_id: str):
        """Encode the image now (the next folder image is then encoded in the background)."""
        key, load = state.resolve(image_id)
        ms = state.engine.encode(key, load)
        if key.startswith("f") and int(image_id) + 1 < len(state.images):
            nxt = str(int(image_id) + 1)
            if prefetch:
                state.engine.prefetch(*state.resolve(nxt))
        return {"id": image_id, **state.engine.status(key), "encode_ms": ms}

    @app.get("/api/images/{image_id}/status")
    def status(image_id: str):
        key, _ = state.resolve(image_id)
        return {"id": image_id, **state.engine.status(key)}

    @app.post(
        "/api/images/{image_id}/decode",
        response_model=DecodeResponse,
        response_model_exclude_none=True,
    )
    def decode(image_id: str, req: DecodeRequest, response: Response):
        """Masks for one object's prompts (points with labels, a box, a mask to refine), as
        COCO RLE (``mask_format="coco"``) or the compact box RLE (``"box"``). The
        ``Server-Timing`` header has the model decode and the mask encoding times (ms)."""
        key, img = state.image(image_id)
        h, w = img.shape[:2]
        if not req.points and req.box is None and req.mask is None:
            raise ApiError(422, "no prompt: give points (with labels), a box or a mask")
        if req.labels is not None and len(req.labels) != len(req.points or []):
            raise ApiError(422, f"{len(req.labels)} labels for {len(req.points or [])} points")
        mask = mask_from_rle(req.mask, (h, w)) if req.mask is not None else None
        out = state.engine.decode(
            key, lambda: img, req.points, req.labels, req.box, mask, req.multimask
        )
        t0 = time.perf_counter()
        masks = masks_out(out.masks, out.scores, mask_format=req.mask_format)
        response.headers["Server-Timing"] = server_timing(out.ms, t0)
        return {"masks": masks, "decode_ms": out.ms, "width": w, "height": h}

    @app.post(
        "/api/images/{image_id}/everything",
        response_model=DecodeResponse,
        response_model_exclude_none=True,
    )
    def everything(image_id: str, response: Response, req: EverythingRequest | None = None):
        """Segment everything: proposals (largest first) to accept or reject."""
        req = req or EverythingRequest()
        key, img = state.image(image_id)
        out = state.engine.everything(key, lambda: img, req.points_stride)
        h, w = img.shape[:2]
        t0 = time.perf_counter()
        masks = masks_out(out.masks, out.scores, req.max_masks, req.mask_format)
        response.headers["Server-Timing"] = server_timing(out.ms, t0)
        return {"masks": masks, "decode_ms": out.ms, "width": w, "height": h}

    @app.get("/api/images/{image_id}/embedding.npy")
    def embedding(image_id: str):
        """The image embedding, float32 ``1 x C x h x w`` ``.npy`` (for an ONNX decoder)."""
        key, load = state.resolve(image_id)
        data, (h, w) = state.engine.embedding_npy(key, load)
        headers = {"X-Image-Height": str(h), "X-Image-Width": str(w)}
        return Response(data, media_type="application/octet-stream", headers=headers)

    @app.get("/api/decoder.onnx")
    def decoder_onnx(masks: str = "all"):
        """The prompt decoder (Meta's ONNX interface). ``masks``: ``all`` (4 outputs: the
        single-mask token, then the 3 multimask ones), ``single`` or ``multi``."""
        if masks not in ("all", "single", "multi"):
            raise ApiError(422, f"masks must be all, single or multi, got {masks[:20]!r}")
        data = state.engine.decoder_onnx(masks)
        return Response(data, media_type="application/octet-stream")

    # -- annotations ------------------------------------------------------------------------
    def objects_response(image_id: str, index: int) -> dict:
        return {
            "image_id": image_id,
            "revision": store.revision(index),
            "objects": store.objects(index),
            "names": list(store.names),
        }

    @app.get("/api/images/{image_id}/annotations", response_model=ObjectsResponse)
    def annotations(image_id: str):
        return objects_response(image_id, state.folder_index(image_id))

    @app.post("/api/images/{image_id}/annotations", response_model=ObjectOut, status_code=201)
    def add_object(image_id: str, req: AddObject):
        """Save an object (saved to disk before the reply)."""
        index = state.folder_index(image_id)
        _, img = state.image(image_id)
        mask = mask_from_rle(req.mask, img.shape[:2])
        return store.add(index, img.shape[:2], mask, req.label, req.score)

    @app.delete("/api/images/{image_id}/annotations/{object_id}", response_model=ObjectsResponse)
    def delete_object(image_id: str, object_id: str):
        index = state.folder_index(image_id)
        store.delete(index, object_id)
        return objects_response(image_id, index)

    @app.patch("/api/images/{image_id}/annotations/{object_id}", response_model=ObjectOut)
    def relabel(image_id: str, object_id: str, req: Relabel):
        return store.relabel(state.folder_index(image_id), object_id, req.label)

    @app.get("/api/export")
    def export(format: str = "coco"):
        """The saved dataset: ``coco`` (the COCO JSON) or ``yolo`` (label files as text)."""
        import json

        if format == "coco":
            path = store.out / "annotations.json"
            if not path.is_file():
                return {"images": [], "annotations": [], "categories": []}
            return JSONResponse(json.loads(path.read_text(encoding="utf-8")))
        if format == "yolo":
            files = {}
            for index in sorted(store.counts()):
                label = store.out / store.images[index].with_suffix(".txt")
                if label.is_file():
                    files[store.images[index].with_suffix(".txt").as_posix()] = label.read_text()
            return {"names": list(store.names), "files": files}
        raise ApiError(422, f"format must be 'coco' or 'yolo', got {format[:20]!r}")

    from .labelstudio import add_label_studio_routes

    add_label_studio_routes(app, state, ApiError)

    return app
