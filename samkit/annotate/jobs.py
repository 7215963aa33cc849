"""Per-image folder jobs and the engines that run them: this process, or Ray actors.

A job (:class:`ImageJob`) is a small picklable record of settings with one method, ``load()``,
that loads the model and returns the job's **one per-image step**: ``step(rel) -> counts``
reads the image ``rel``, computes its result and writes that image's result file atomically.
The local engine calls ``load()`` once and the step for every image in order; the Ray engine
(:mod:`samkit.annotate.ray_engine`) calls ``load()`` once per actor and the same step for the
images streamed to it. So both engines write the same files, byte for byte (at the same torch
thread count), and a failure is isolated, reported with the image and the reason, the same way.

:func:`segment_folder` and :func:`embed_folder` (:mod:`.folder_jobs`) and ``auto_annotate``
(:mod:`.run`) run on these engines.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Protocol

from ..errors import SamkitError

logger = logging.getLogger("samkit.annotate")

__all__ = ["FolderSummary", "ImageJob", "JobFailure", "JobRow", "failure_reason", "run_job"]

Step = Callable[[PurePosixPath], Sequence[int]]


class ImageJob(Protocol):
    """What an engine runs: ``counts`` names the integers a step returns; ``load()`` loads the
    model (once per process or actor) and returns the per-image step."""

    counts: tuple[str, ...]

    def load(self) -> Step: ...


@dataclass(frozen=True)
class JobRow:
    """The outcome of one image: its relative path, the step's counts, or why it failed."""

    rel: str
    counts: tuple[int, ...]
    error: str = ""


@dataclass
class JobFailure:
    """An image that got no result (its path or URI), and why."""

    path: str
    reason: str


@dataclass
class FolderSummary:
    """Counts of one folder job run (``done``, ``masks``... count this run's images only)."""

    job: str
    output_dir: str
    images: int = 0  # image files found
    done: int = 0  # images given a result in this run
    skipped: int = 0  # images already done by an earlier run (resume)
    masks: int = 0  # segment-everything: masks written
    empty: int = 0  # segment-everything: images with no mask
    failures: list[JobFailure] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> int:
        return len(self.failures)

    def __str__(self) -> str:
        masks = (
            f"{self.masks} masks ({self.empty} images without), "
            if self.job == "everything"
            else ""
        )
        return (
            f"{self.images} images: {self.done} done, {self.skipped} skipped (already done), "
            f"{self.failed} failed; {masks}{self.seconds:.1f} s; results in {self.output_dir}"
        )


def failure_reason(exc: BaseException) -> str:
    """The reason reported for a failed image: a samkit error's message, else type and text."""
    return str(exc) if isinstance(exc, SamkitError) else f"{type(exc).__name__}: {exc}"


def run_local(todo: list[PurePosixPath], job: ImageJob, desc: str, progress: bool) -> list[JobRow]:
    """Run ``job`` on ``todo`` here, in order; a failing image is a row with its reason."""
    from tqdm import tqdm

    step = job.load()
    rows = []
    for rel in tqdm(todo, desc=desc, unit="img", disable=not progress):
        rows.append(run_step(step, rel, len(job.counts)))
    return rows


def run_step(step: Step, rel: PurePosixPath, n_counts: int) -> JobRow:
    """One image through ``step``, its failure caught (KeyboardInterrupt etc. still stop)."""
    try:
        counts = tuple(int(c) for c in step(rel))
    except Exception as exc:
        return JobRow(rel.as_posix(), (0,) * n_counts, failure_reason(exc))
    return JobRow(rel.as_posix(), counts)


def run_job(
    todo: list[PurePosixPath],
    job: ImageJob,
    engine: str,
    ray_options: object | None,
    desc: str,
    progress: bool,
) -> list[JobRow]:
    """Run ``job`` on ``todo`` with ``engine`` ("local" or "ray"); rows of failed images come
    sorted by path after the others, as the local engine reports them."""
    if not todo:
        return []
    if engine == "ray":
        from .ray_engine import RayOptions, run_on_ray

        options = ray_options if isinstance(ray_options, RayOptions) else RayOptions()
        rows = run_on_ray(todo, job, options, f"{desc} (ray)", progress)
    elif engine == "local":
        rows = run_local(todo, job, desc, progress)
    else:
        raise SamkitError(f"engine must be 'local' or 'ray', got {engine!r}")
    done = [r for r in rows if not r.error]
    failed = sorted((r for r in rows if r.error), key=lambda r: r.rel)
    return done + failed


def plan(
    images: list[PurePosixPath],
    result_name: Callable[[PurePosixPath], str],
    is_done: Callable[[PurePosixPath], bool],
    overwrite: bool,
    summary: FolderSummary,
    where: Callable[[PurePosixPath], str],
) -> list[PurePosixPath]:
    """Images to do now: not yet done (unless ``overwrite``), and no two images with one result
    file (``a.jpg`` and ``a.png`` -> ``a.json``: the second is a failure asking to rename)."""
    todo = []
    owners: dict[str, PurePosixPath] = {}
    for rel in images:
        target = result_name(rel)
        if target in owners:
            reason = f"its result {target} is also the result of {owners[target]}; rename one"
            record_failure(summary, where(rel), reason)
            continue
        owners[target] = rel
        if not overwrite and is_done(rel):
            summary.skipped += 1
        else:
            todo.append(rel)
    if summary.skipped:
        logger.info(
            "%s: %d of %d images already done in %s (overwrite=True redoes them)",
            summary.job,
            summary.skipped,
            len(images),
            summary.output_dir,
        )
    return todo


def record_failure(summary: FolderSummary, path: str, reason: str) -> None:
    logger.warning("%s: %s failed: %s", summary.job, path, reason)
    summary.failures.append(JobFailure(path, reason))
