"""``samkit serve``: a browser annotator, a JSON API and a Label Studio ML backend for SAM.

>>> from samkit.serve import create_app, serve
>>> serve("samkit-demo", "images/", output="labels/")          # blocks; prints the URL

Needs the ``serve`` extra (``pip install 'samkit[serve]'``: FastAPI, uvicorn; label-studio-sdk
for the Label Studio routes).
"""

from __future__ import annotations

import os
import secrets
import sys
from typing import Any

__all__ = ["create_app", "serve"]


def __getattr__(name: str) -> Any:
    if name == "create_app":  # imported on use: it needs pydantic/FastAPI (the serve extra)
        from .app import create_app

        return create_app
    raise AttributeError(f"module 'samkit.serve' has no attribute {name!r}")


LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def serve(
    model: Any,
    images: str | os.PathLike,
    output: str | os.PathLike | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    token: str | None = None,
    **options: Any,
) -> None:
    """Run the server until interrupted. A ``host`` other than the loopback needs ``token``
    (``token="auto"`` makes a random one); the page URL (with the token) is printed."""
    from ..errors import SamkitError

    if host not in LOCAL_HOSTS and not token:
        raise SamkitError(
            f"host={host} makes the server reachable from other machines: pass token=SECRET "
            "(or token=auto), or keep the default host=127.0.0.1"
        )
    if token == "auto":
        token = secrets.token_urlsafe(16)
    try:
        import uvicorn
    except ImportError:
        from ..errors import DependencyError

        raise DependencyError("samkit serve needs uvicorn: pip install 'samkit[serve]'") from None
    from .app import create_app

    app = create_app(model, images, output, token=token, **options)
    state = app.state.samkit
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    print(
        f"samkit serve: {len(state.images)} images, annotations in {state.store.out}\n"
        f"  open {url}   (API schema: /openapi.json; Label Studio backend: this URL)",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(app, host=host, port=port, log_level="warning")
