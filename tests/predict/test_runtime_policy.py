"""samkit's CPU policy (samkit.predict.threads): load-adapted threads restored after each heavy call,
malloc reuse applied once, passive OpenMP waiting set at import, and the SAMKIT_CPU_POLICY=off
opt-out."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from samkit import runtime

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fake_machine(monkeypatch):
    calls = []
    monkeypatch.setattr(runtime, "usable_cores", lambda: 2)
    monkeypatch.setattr(runtime, "keep_freed_memory", lambda: calls.append(1) or True)
    monkeypatch.setattr(runtime, "_state", {"malloc": None, "last": None})
    monkeypatch.delenv(runtime.POLICY_ENV, raising=False)

    def set_others(n: int) -> list:
        monkeypatch.setattr(runtime, "other_runnable_tasks", lambda samples=2: n)
        return calls

    return set_others


@pytest.mark.parametrize(("others", "expected"), [(0, 2), (1, 1), (5, 1)])
def test_threads_follow_the_load_and_are_restored(fake_machine, others, expected):
    calls = fake_machine(others)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with runtime.cpu_policy("encoder") as n:
            assert n == expected == torch.get_num_threads()
        assert torch.get_num_threads() == 2
        with runtime.cpu_policy("prompts"):
            pass
        assert calls == [1]  # malloc policy once per process
        assert runtime.describe_policy()["last_call"]["kind"] == "prompts"
    finally:
        torch.set_num_threads(before)


def test_never_more_threads_than_the_application_set(fake_machine):
    fake_machine(0)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with runtime.cpu_policy() as n:
            assert n == 1
    finally:
        torch.set_num_threads(before)


def test_opt_out_changes_nothing(fake_machine, monkeypatch):
    calls = fake_machine(5)
    monkeypatch.setenv(runtime.POLICY_ENV, "off")
    before = torch.get_num_threads()
    with runtime.cpu_policy() as n:
        assert n == before == torch.get_num_threads()
    assert calls == []
    assert not runtime.describe_policy()["enabled"]


def test_other_runnable_tasks_reads_proc(monkeypatch):
    monkeypatch.setattr(runtime, "_state", {"malloc": None, "last": None})
    n = runtime.other_runnable_tasks()
    assert isinstance(n, int) and n >= 0
    if Path("/proc/stat").exists():
        assert runtime._procs_running() >= 1
        assert runtime._own_running_threads() >= 1


def _wait_policy(code: str, **env: str) -> tuple[str, str]:
    e = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    e.pop(runtime.POLICY_ENV, None)
    e.update(env, PYTHONPATH=str(ROOT))
    code += (
        "; import os; print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return tuple(out.stdout.strip().splitlines()[-1].split())


def test_import_bounds_openmp_spinning_before_torch_loads():
    assert _wait_policy("import samkit") == ("None", "100000")
    assert _wait_policy("import samkit", SAMKIT_CPU_POLICY="off") == ("None", "None")
    assert _wait_policy("import samkit", OMP_WAIT_POLICY="PASSIVE") == ("PASSIVE", "None")
    assert _wait_policy("import samkit", GOMP_SPINCOUNT="5") == ("None", "5")
    assert _wait_policy("import torch; import samkit") == ("None", "None")  # too late


def test_readings_are_spread_so_a_requester_is_not_load(monkeypatch):
    """A process that is running only while it hands over a request (the first reading) is
    not counted: the least of the spread readings is."""
    monkeypatch.setattr(runtime, "_state", {"malloc": None, "last": None})
    readings = iter([3, 1])
    monkeypatch.setattr(runtime, "_procs_running", lambda: next(readings))
    monkeypatch.setattr(runtime, "_own_running_threads", lambda: 1)
    slept = []
    monkeypatch.setattr(runtime, "_pause", slept.append)
    assert runtime.other_runnable_tasks() == 0
    assert slept == [runtime.SAMPLE_GAP_S]
