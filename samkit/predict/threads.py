"""CPU policy for heavy work: threads that do not collapse on shared cores, and glibc's
large-block policy.

Applied where samkit runs heavy work on the CPU (the image encoder, prompt decoding,
segment-everything: :func:`cpu_policy`), unless ``SAMKIT_CPU_POLICY=off``:

* **Waiting**: an OpenMP thread that waits at a barrier spins a bounded while, then sleeps
  (``GOMP_SPINCOUNT=100000``, set by ``import samkit`` when torch is not imported yet and no
  wait policy is set; libgomp reads it once, when torch loads). Unbounded spinning collapses
  on shared cores: a thread waiting for a descheduled sibling burns the core the sibling needs
  (with another busy process on 2 cores a box took ~1,000-1,260 ms with 2 spinning threads,
  ~180-190 ms with passive waiting, ~135-170 ms with 1 thread). Sleeping at once
  (``OMP_WAIT_POLICY=PASSIVE``, samkit's earlier choice) costs a wake-up at each of a prompt's
  ~300 parallel regions: on a quiet 2-core Zen 4 a box took 24-27 ms passive against
  14-18 ms with bounded spinning. Under load the thread rule below runs 1 thread, which has no
  barriers to wait at.
* **Threads**: each heavy call runs with ``min(threads set, usable cores - other load)``
  torch threads (at least 1), restored afterwards. Other load is the lesser of two readings:
  the tasks of other processes runnable right before the call (``/proc/loadavg``'s
  ``procs_running`` less this process's running threads) and the cores other processes kept
  busy on average since the previous reading (``/proc/stat`` less ``/proc/self/stat``). A
  background job shows in both; a burst does not count, such as the browser that has just sent
  the request (on 2 cores it made half of a browser's clicks run on 1 thread, ~1.6x slower).
  On a quiet machine nothing changes.
* **Allocator**: at the first heavy call, glibc malloc is told to reuse freed large blocks
  (:func:`keep_freed_memory`), once per process.

:func:`configure_cpu` remains for applications that want to set the thread count themselves.

Why the allocator matters: glibc serves blocks above ``M_MMAP_THRESHOLD`` (at most 32 MiB) with
fresh ``mmap`` pages and unmaps them on free, so every large activation (a ViT-B MLP output is
48 MiB) is page-faulted in again on every layer. In a virtual machine that costs about 1 ms per
MiB, more than the arithmetic of the elementwise op writing it. With ``mmap`` disabled for
malloc and a high trim threshold, freed blocks are reused instead. The price: the process keeps
its peak heap mapped (RSS does not shrink after a big image).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

POLICY_ENV = "SAMKIT_CPU_POLICY"  # "off": samkit changes no threads, waiting or allocator
_state: dict[str, Any] = {"malloc": None, "last": None}

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def usable_cores() -> int:
    """Physical cores this process may run on (affinity mask, cgroup CPU quota), at least 1."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)
    cores = set()
    for cpu in cpus:
        topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            key = (topo / "physical_package_id").read_text().strip()
            cores.add((key, (topo / "core_id").read_text().strip()))
        except OSError:
            cores.add(("cpu", str(cpu)))
    n = len(cores) or len(cpus)
    quota = _cgroup_cpu_quota()
    if quota is not None:
        n = min(n, max(1, int(quota + 0.5)))
    return max(1, n)


def _cgroup_cpu_quota() -> float | None:
    """CPUs allowed by a cgroup v2 ``cpu.max`` quota, or None when unlimited or unknown."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return int(quota) / int(period)


def keep_freed_memory(trim_threshold: int = 1 << 30) -> bool:
    """Make glibc malloc reuse freed large blocks instead of unmapping them (Linux/glibc only).

    Returns False where this is not glibc (nothing is changed).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = mallopt(_M_MMAP_MAX, 0) == 1
    return bool(ok and mallopt(_M_TRIM_THRESHOLD, trim_threshold) == 1)


def configure_cpu(threads: int | None = None, reuse_memory: bool = True) -> dict:
    """Set torch's intra-op threads (default: :func:`usable_cores`) and the malloc policy.

    Returns what was set: ``{"threads": n, "reuse_memory": bool}``.
    """
    n = usable_cores() if threads is None else int(threads)
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    torch.set_num_threads(n)
    reused = keep_freed_memory() if reuse_memory else False
    return {"threads": n, "reuse_memory": reused}


def policy_enabled() -> bool:
    """False when ``SAMKIT_CPU_POLICY`` is ``off`` (or ``0`` / ``false`` / ``no``)."""
    return os.environ.get(POLICY_ENV, "auto").strip().lower() not in ("off", "0", "false", "no")


def _procs_running() -> int | None:
    """Runnable tasks on the whole machine now (``/proc/loadavg``'s "running/total")."""
    try:
        return int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return None


def _own_running_threads() -> int:
    n = 0
    try:
        for task in os.scandir("/proc/self/task"):
            try:
                stat = Path(task.path, "stat").read_text()
            except OSError:
                continue
            if stat[stat.rfind(")") + 2 :].startswith("R"):
                n += 1
    except OSError:
        return 1
    return max(1, n)


#: seconds between the readings of :func:`other_runnable_tasks`
SAMPLE_GAP_S = 0.001
_pause = time.sleep  # (a name of this module, so that a test can replace it alone)


def _busy_ticks() -> tuple[int, int] | None:
    """``(busy, own)``: CPU time since boot of the whole machine (all CPUs, idle and iowait
    excluded) and of this process (all threads), in clock ticks; None if unknown."""
    try:
        cpu = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        own = Path("/proc/self/stat").read_text()
        fields = own[own.rfind(")") + 2 :].split()
        user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in cpu[1:8])
        return user + nice + system + irq + softirq, int(fields[11]) + int(fields[12])
    except (OSError, ValueError, IndexError):
        return None


#: the shortest window :func:`recent_other_load` averages over (clock ticks are 10 ms)
MIN_LOAD_WINDOW_S = 0.1
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def recent_other_load() -> float | None:
    """Cores kept busy by other processes, on average since the previous reading (at least
    :data:`MIN_LOAD_WINDOW_S` ago; a younger reading gives the last average again). None
    before a first window."""
    now, prev = time.monotonic(), _state.get("busy")
    if prev is not None and now - prev[0] < MIN_LOAD_WINDOW_S:
        return _state.get("recent_load")
    cur = _busy_ticks()
    if cur is None:
        return None
    _state["busy"] = (now, *cur)
    if prev is None:
        return None
    busy, own = cur[0] - prev[1], cur[1] - prev[2]
    load = max(0.0, (busy - own) / (_CLK_TCK * (now - prev[0])))
    _state["recent_load"] = load
    return load


def other_runnable_tasks(samples: int = 2) -> int:
    """Cores that other processes are using now, 0 if unknown: the runnable tasks of other
    processes (the least of ``samples`` readings :data:`SAMPLE_GAP_S` apart), at most the
    cores they kept busy on average since the previous reading (:func:`recent_other_load`,
    rounded). Remembered for 0.5 s, so that a loop of short calls reads ``/proc`` rarely.

    A request arrives from a process that is still running after writing it (a client, a
    benchmark driver, a browser with its network and compositor threads): back-to-back readings
    counted the requester as load; readings 1 ms apart still caught a browser's threads in
    half of its clicks. The average tells such a burst from a job that keeps a core busy."""
    now = time.monotonic()
    cached = _state.get("others")
    if cached is not None and now - cached[0] < 0.5:
        return cached[1]
    totals = []
    for i in range(samples):
        if i:
            _pause(SAMPLE_GAP_S)
        totals.append(_procs_running())
    if None in totals:
        return 0
    others = max(0, min(totals) - _own_running_threads())
    recent = recent_other_load()
    if recent is not None:
        others = min(others, int(recent + 0.5))
    _state["others"] = (now, others)
    return others


def threads_for_now(ceiling: int | None = None) -> int:
    """Torch threads for a heavy call starting now: ``ceiling`` (default: the current setting)
    less the cores other processes are using, at least 1."""
    ceiling = torch.get_num_threads() if ceiling is None else int(ceiling)
    if _state.get("cores") is None:  # read once: sysfs topology is slow to walk per call
        _state["cores"] = usable_cores()
    free = _state["cores"] - other_runnable_tasks()
    return max(1, min(ceiling, free))


@contextlib.contextmanager
def cpu_policy(kind: str = "work", device: torch.device | str = "cpu") -> Iterator[int]:
    """Run a heavy CPU call (``kind``: "encoder", "prompts", "everything", for the record) under
    samkit's policy: malloc reuse (once) and a load-adapted thread count, restored afterwards.

    Yields the thread count used. Does nothing for other devices or with the policy off.
    """
    before = torch.get_num_threads()
    if torch.device(device).type != "cpu" or not policy_enabled():
        yield before
        return
    if _state["malloc"] is None:
        _state["malloc"] = keep_freed_memory()
    n = threads_for_now(before)
    _state["last"] = {"kind": kind, "threads": n, "threads_set": before}
    if n == before:
        yield n
        return
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


#: at most this many parts side by side (:func:`split_threads`): more Python threads would
#: queue on the interpreter lock between their torch ops
MAX_PARTS = 4


def split_threads(threads: int) -> tuple[int, int]:
    """``(parts, torch threads per part)`` for work split over ``threads`` torch threads:
    one thread per part up to :data:`MAX_PARTS` parts, the rest shared out among them."""
    threads = max(1, int(threads))
    parts = min(threads, MAX_PARTS)
    return parts, threads // parts


def run_in_threads(calls: list[Callable[[], Any]], torch_threads: int = 1) -> list[Any]:
    """Run the callables at the same time, each in its own thread with ``torch_threads`` torch
    threads (the first in the calling thread); return their results in order. The calling
    thread's torch thread count is restored; the first exception is raised after all have
    finished.

    For work made of many small products (a decoder's per-prompt work): split across threads,
    it keeps the cores busy where one torch op at a time on all cores waits on its own
    synchronisation and on memory."""
    before = torch.get_num_threads()
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException | None] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            torch.set_num_threads(torch_threads)
            results[i] = calls[i]()
        except BaseException as exc:  # noqa: BLE001 (re-raised in the calling thread)
            errors[i] = exc

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(1, len(calls))]
    for t in threads:
        t.start()
    try:
        if calls:
            run(0)
    finally:
        for t in threads:
            t.join()
        torch.set_num_threads(before)
    for exc in errors:
        if exc is not None:
            raise exc
    return results


def describe_policy() -> dict[str, Any]:
    """What the policy does in this process (for benchmark records)."""
    return {
        "enabled": policy_enabled(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "gomp_spincount": os.environ.get("GOMP_SPINCOUNT"),
        "wait_policy_set_by_samkit": os.environ.get("SAMKIT_SET_OMP_WAIT_POLICY") == "1",
        "malloc_reuse": _state["malloc"],
        "last_call": _state["last"],
        "other_runnable_tasks_now": other_runnable_tasks(),
        "recent_other_load": _state.get("recent_load"),
    }


recent_other_load()  # the start of the first window
