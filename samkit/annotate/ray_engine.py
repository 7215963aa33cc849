"""The Ray engine of the folder jobs: ``auto_annotate(..., engine="ray")``, ``segment_folder``
and ``embed_folder`` as Ray Data pipelines on a cluster.

The driver plans the run exactly as the local engine does (which images are still to do, the
job's settings, the writer), then streams the images to do through ``ray.data``:
``from_items(relative paths) -> map_batches(actor pool)``. Each actor calls the job's ``load()``
once (the model loaded once per actor, on ``num_gpus`` GPUs or ``threads`` CPUs), then, for each
image, the job's per-image step, the local engine's (:mod:`samkit.annotate.jobs`), which writes
that image's result file atomically; the actor returns only counts (or the failure reason) to
the driver, which assembles whatever is assembled from all images (classes.txt, the COCO JSON)
with the same writer as the local engine. So both engines write the same files, byte for byte
(given the same torch thread count per model: float reductions depend on it).

Every node must reach the input and output folders under the same name: one machine, a shared
file system (a bucket mounted with s3fs / gcsfuse / Mountpoint works too) or, for
``segment_folder`` and ``embed_folder``, object storage URIs (``s3://``, ``gs://``) that each
actor opens with pyarrow. A killed driver leaves finished images' files in place; the next run
skips them (resume), like the local engine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from ..errors import DependencyError, SamkitError
from .jobs import ImageJob, JobRow, failure_reason, run_step

__all__ = ["RayOptions", "run_on_ray"]

#: Object store of a local cluster started by samkit (bytes): only small rows travel through it.
LOCAL_OBJECT_STORE = 256 * 1024**2


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide to run: ``address`` of a running cluster (None: ``$RAY_ADDRESS``,
    else a local one), ``actors`` (None: one per ``threads`` CPUs, or one per GPU share),
    ``gpus`` per actor, and ``threads`` (torch CPU threads, and Ray CPUs reserved) per actor."""

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

    def device(self, device: str | None) -> str:
        """The actors' torch device: ``device`` if given, else CUDA with GPUs, else the CPU."""
        return device or ("cuda" if self.gpus > 0 else "cpu")


class JobActor:
    """One Ray actor: the job's model loaded once, then one image per call (``batch_size=1``)."""

    def __init__(self, job: ImageJob, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self.n_counts = len(job.counts)
        self.step = job.load()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        out: dict[str, list] = {"rel": [], "counts": [], "error": []}
        for value in batch["rel"]:
            row = run_step(self.step, PurePosixPath(str(value)), self.n_counts)
            out["rel"].append(row.rel)
            out["counts"].append(",".join(map(str, row.counts)))  # one string column
            out["error"].append(row.error)
        return out


def run_on_ray(
    todo: list[PurePosixPath], job: ImageJob, options: RayOptions, desc: str, progress: bool
) -> list[JobRow]:
    """Run ``job``'s per-image step on ``todo`` in a Ray actor pool; one row per image, in the
    order they finish. Joins ``options.address`` or starts (and stops) a local cluster."""
    ray = _import_ray()
    from tqdm import tqdm

    started = _connect(ray, options)
    try:
        actors = options.actors or _default_actors(ray, options)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # samkit's own bar below counts images
        items = [{"rel": rel.as_posix()} for rel in todo]
        ds = ray.data.from_items(items, override_num_blocks=min(len(items), 64 * actors))
        ds = ds.map_batches(
            JobActor,
            fn_constructor_kwargs={"job": job, "threads": options.threads},
            batch_size=1,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=options.threads,
            num_gpus=options.gpus,
        )
        rows = []
        with tqdm(total=len(todo), desc=desc, unit="img", disable=not progress) as bar:
            for row in ds.iter_rows():
                counts = tuple(int(c) for c in str(row["counts"]).split(",") if c)
                rows.append(JobRow(str(row["rel"]), counts, str(row["error"])))
                bar.update(1)
        return rows
    except ray.exceptions.RayError as exc:  # e.g. an actor could not load the model
        cause = getattr(exc, "cause", None) or exc
        raise SamkitError(f"{desc}: the Ray job failed: {failure_reason(cause)}") from None
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
