"""``auto_annotate(..., engine="ray")``: the same job as a Ray Data pipeline on a cluster.

The driver plans the run exactly as the local engine does (which images are still to do, the
box source, the writer), then streams the images to do through ``ray.data``:
``from_items(relative paths) -> map_batches(actor pool)``. Each actor loads SAM once, and for each
image runs :func:`samkit.annotate.run.annotate_image`, the local engine's per-image step, which
writes that image's result file atomically; the actor returns only counts (or the failure
reason) to the driver. The driver then assembles ``classes.txt`` / ``data.yaml`` or the COCO JSON
with the same writer as the local engine, so both engines write the same files, byte for byte
(given the same torch thread count per model: float reductions depend on it).

Every node must see the image folder and the output folder at the same path (one machine, a
shared file system, or a bucket mounted with s3fs / gcsfuse / Mountpoint). A killed driver
leaves finished images' files in place; the next run skips them (resume), like the local engine.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from ..errors import DependencyError, SamkitError
from .run import (
    AnnotateSummary,
    _load_sam,
    _predictor,
    annotate_image,
    failure_reason,
    record_failure,
    record_success,
)

__all__ = ["RayOptions", "run_ray"]

#: Object store of a local cluster started by samkit (bytes): only small rows travel through it.
LOCAL_OBJECT_STORE = 256 * 1024**2


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide to run: ``address`` of a running cluster (None: start a local one),
    ``actors`` (None: one per ``threads`` CPUs, or one per GPU share), ``gpus`` per actor, and
    ``threads`` (torch CPU threads, and Ray CPUs reserved) per actor."""

    address: str | None = None
    actors: int | None = None
    gpus: float = 0.0
    threads: int = 1

    def __post_init__(self) -> None:
        if self.actors is not None and (not isinstance(self.actors, int) or self.actors < 1):
            raise SamkitError(f"ray_actors must be a positive integer, got {self.actors!r}")
        if not isinstance(self.threads, int) or self.threads < 1:
            raise SamkitError(f"ray_threads must be a positive integer, got {self.threads!r}")
        if not isinstance(self.gpus, (int, float)) or self.gpus < 0:
            raise SamkitError(f"ray_gpus must be >= 0, got {self.gpus!r}")


class AnnotateActor:
    """One Ray actor: the model loaded once, then one image per call (``batch_size=1``)."""

    def __init__(
        self,
        root: str,
        source: Any,
        keep: set[int] | None,
        sam_model: Any,
        precision: str,
        device: str,
        writer: Any,
        to_output: dict[int, int] | None,
        tile: int | bool | None,
        threads: int,
    ) -> None:
        import torch

        torch.set_num_threads(threads)
        self.root = Path(root)
        self.source = source
        self.keep = keep
        self.writer = writer
        self.to_output = to_output
        self.tile = tile
        self.predictor = _predictor(_load_sam(sam_model, device), precision)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        out: dict[str, list] = {"rel": [], "written": [], "dropped": [], "error": []}
        for value in batch["rel"]:
            rel = PurePosixPath(str(value))
            written = dropped = 0
            error = ""
            try:
                written, dropped = annotate_image(
                    rel,
                    self.root,
                    self.source,
                    self.keep,
                    self.predictor,
                    self.writer,
                    self.to_output,
                    self.tile,
                )
            except Exception as exc:  # isolated like the local engine; the driver reports it
                error = failure_reason(exc)
            out["rel"].append(rel.as_posix())
            out["written"].append(written)
            out["dropped"].append(dropped)
            out["error"].append(error)
        return out


def run_ray(
    todo: list[PurePosixPath],
    root: Path,
    source: Any,
    keep: set[int] | None,
    sam_model: Any,
    precision: str,
    device: str,
    writer: Any,
    summary: AnnotateSummary,
    progress: bool,
    tile: int | bool | None,
    options: RayOptions,
) -> None:
    """Annotate ``todo`` (paths relative to ``root``) on Ray; counts and failures go into
    ``summary`` as the local engine records them."""
    ray = _import_ray()
    from tqdm import tqdm

    started = _connect(ray, options)
    try:
        actors = options.actors or _default_actors(ray, options)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # samkit's own bar below counts images
        worker_writer = copy.copy(writer)
        worker_writer._lock_fd = None  # the driver holds the output folder's lock
        to_output = source.to_output_ids if summary.format == "yolo" else None
        items = [{"rel": rel.as_posix()} for rel in todo]
        ds = ray.data.from_items(items, override_num_blocks=min(len(items), 64 * actors))
        ds = ds.map_batches(
            AnnotateActor,
            fn_constructor_kwargs={
                "root": str(root),
                "source": source,
                "keep": keep,
                "sam_model": sam_model,
                "precision": precision,
                "device": device or "cpu",
                "writer": worker_writer,
                "to_output": to_output,
                "tile": tile,
                "threads": options.threads,
            },
            batch_size=1,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=options.threads,
            num_gpus=options.gpus,
        )
        failures = []
        bar = tqdm(total=len(todo), desc="auto_annotate (ray)", unit="img", disable=not progress)
        with bar:
            for row in ds.iter_rows():
                if row["error"]:
                    failures.append((str(row["rel"]), str(row["error"])))
                else:
                    record_success(summary, int(row["written"]), int(row["dropped"]))
                bar.update(1)
        for rel, reason in sorted(failures):  # the local engine's order: sorted paths
            record_failure(summary, root / rel, reason)
    finally:
        if started:
            ray.shutdown()


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise DependencyError(
            'engine="ray" needs Ray Data: pip install "samkit[ray]"  (i.e. "ray[data]")'
        ) from exc
    return ray


def _connect(ray, options: RayOptions) -> bool:
    """Join ``options.address`` (or ``$RAY_ADDRESS``), or start a local cluster; returns
    whether this call started Ray (and so shuts it down at the end)."""
    if ray.is_initialized():
        return False
    address = options.address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if address is None:
        kwargs["object_store_memory"] = LOCAL_OBJECT_STORE
        # the local workers import the very samkit this driver runs (a checkout, not another copy)
        here = str(Path(__file__).resolve().parents[2])
        path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)
        kwargs["runtime_env"] = {"env_vars": {"PYTHONPATH": path}}
    try:
        ray.init(address=address, **kwargs)
    except ConnectionError as exc:
        raise SamkitError(
            f"could not join the Ray cluster at {address!r} ({exc}); start one with "
            "`ray start --head` or leave ray_address unset for a local one"
        ) from None
    return True


def _default_actors(ray, options: RayOptions) -> int:
    resources = ray.cluster_resources()
    if options.gpus > 0:
        n = int(resources.get("GPU", 0) // options.gpus)
        if n < 1:
            raise SamkitError(
                f"ray_gpus={options.gpus} per actor, but the cluster has "
                f"{resources.get('GPU', 0)} GPUs"
            )
        return n
    return max(1, int(resources.get("CPU", 1) // options.threads))
