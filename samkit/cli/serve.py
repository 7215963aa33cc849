"""``samkit serve model=... images=...``: arguments and runner (registered by samkit's CLI)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from .args import Arg, UsageError

SERVE_USAGE = "model=mobile_sam.pt images=path/to/folder [output=DIR] [host=127.0.0.1] [port=8765]"
SERVE_ARGS = [
    Arg("model", "sam_b.pt", "checkpoint path, official file name or variant (samkit-demo)", "str"),
    Arg("images", None, "folder of images to annotate (required)", "path"),
    Arg("output", None, "annotation folder (default: <images>_samkit_labels next to it)", "path"),
    Arg("names", None, "class names: [cat,dog] or a classes.txt / data.yaml path", "any"),
    Arg("host", "127.0.0.1", "address to bind; anything but the loopback needs token=", "str"),
    Arg("port", 8765, "TCP port", "int"),
    Arg("token", None, "access token required on every request (token=auto: random)", "str"),
    Arg("max_upload_mb", 32, "largest request body accepted (MB)", "int"),
    Arg("max_pixels", 50_000_000, "largest image accepted (width x height)", "int"),
    Arg("ort_dir", None, "onnxruntime-web's dist/ folder: enables the in-browser decoder", "path"),
    Arg("recursive", False, "include images in subfolders", "bool"),
    Arg("device", None, "cpu, cuda, cuda:N or mps", "str"),
]


def _names(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    from ..annotate.labels import names_list, read_names_file

    path = Path(str(value)).expanduser()
    if not path.is_file():
        raise UsageError(f"argument 'names': {value!r} is neither a list like [cat,dog] nor a file")
    return names_list(read_names_file(path))


def run_serve(args: dict[str, Any]) -> int:
    if args["images"] is None:
        raise UsageError("argument 'images' is required: samkit serve model=... images=folder/")
    for key in ("max_upload_mb", "max_pixels", "port"):
        if args[key] <= 0:
            raise UsageError(f"argument '{key}' must be positive, got {args[key]}")
    from ..model import SAM
    from ..serve import serve

    # loaded by the server on its model thread (all torch work on one thread: faster prompts)
    model = functools.partial(SAM, args["model"], device=args["device"])
    serve(
        model,
        args["images"],
        args["output"],
        host=args["host"],
        port=args["port"],
        token=args["token"],
        names=_names(args["names"]),
        max_upload_bytes=args["max_upload_mb"] * 2**20,
        max_pixels=args["max_pixels"],
        ort_dir=args["ort_dir"],
        recursive=args["recursive"],
    )
    return 0
