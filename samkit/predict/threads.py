"""Process-wide CPU settings for fast inference: thread count and glibc's large-block policy.

Opt-in (call :func:`configure_cpu` once, early): both settings affect the whole process, so a
library must not change them behind an application's back. The CLI and the benchmarks call it.

Why the allocator matters: glibc serves blocks above ``M_MMAP_THRESHOLD`` (at most 32 MiB) with
fresh ``mmap`` pages and unmaps them on free, so every large activation (a ViT-B MLP output is
48 MiB) is page-faulted in again on every layer. In a virtual machine that costs about 1 ms per
MiB, more than the arithmetic of the elementwise op writing it. With ``mmap`` disabled for
malloc and a high trim threshold, freed blocks are reused instead. The price: the process keeps
its peak heap mapped (RSS does not shrink after a big image).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from pathlib import Path

import torch

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
