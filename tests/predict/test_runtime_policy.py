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


class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def monotonic(self) -> float:
        return self.t


@pytest.mark.parametrize(
    ("runnable", "busy", "expected"),
    [
        # a browser's threads caught running at the request, 5% of a core on average: no load
        ([7, 6], (5, 0), 0),
        # a job keeping the other core busy (this process: 0.3 of a core): one core
        ([2, 2], (130, 30), 1),
        # two such jobs: both count, the runnable reading is the lesser
        ([3, 3], (230, 30), 2),
        ([2, 2], (230, 30), 1),
    ],
)
def test_load_is_what_keeps_cores_busy_not_a_burst(monkeypatch, runnable, busy, expected):
    """Other load = the runnable tasks of other processes, at most the cores they kept busy on
    average since the previous reading (/proc/stat less this process's own CPU time)."""
    monkeypatch.setattr(runtime, "_state", {"malloc": None, "last": None})
    clock = _Clock()
    monkeypatch.setattr(runtime.time, "monotonic", clock.monotonic)
    monkeypatch.setattr(runtime, "_pause", lambda s: None)
    monkeypatch.setattr(runtime, "_own_running_threads", lambda: 1)
    monkeypatch.setattr(runtime, "_CLK_TCK", 100)
    ticks = iter([(50_000, 2_000), (50_000 + busy[0], 2_000 + busy[1])])
    monkeypatch.setattr(runtime, "_busy_ticks", lambda: next(ticks))
    assert runtime.recent_other_load() is None  # the first reading starts the window
    clock.t += 1.0
    readings = iter(runnable)
    monkeypatch.setattr(runtime, "_procs_running", lambda: next(readings))
    assert runtime.other_runnable_tasks() == expected
    assert runtime._state["recent_load"] == pytest.approx((busy[0] - busy[1]) / 100)


def test_load_window_is_at_least_a_tenth_of_a_second(monkeypatch):
    """A reading sooner than MIN_LOAD_WINDOW_S after the last gives the last average again
    (ticks are 10 ms: a shorter window would be noise); without history only the runnable
    tasks count."""
    monkeypatch.setattr(runtime, "_state", {"malloc": None, "last": None})
    clock = _Clock()
    monkeypatch.setattr(runtime.time, "monotonic", clock.monotonic)
    monkeypatch.setattr(runtime, "_CLK_TCK", 100)
    ticks = iter([(0, 0), (100, 0), (100, 0)])
    monkeypatch.setattr(runtime, "_busy_ticks", lambda: next(ticks))
    assert runtime.recent_other_load() is None
    clock.t += 1.0
    assert runtime.recent_other_load() == pytest.approx(1.0)
    clock.t += runtime.MIN_LOAD_WINDOW_S / 2
    assert runtime.recent_other_load() == pytest.approx(1.0)  # too soon: the last average
    clock.t += runtime.MIN_LOAD_WINDOW_S
    assert runtime.recent_other_load() == pytest.approx(0.0)


def test_busy_ticks_read_this_machine():
    busy, own = runtime._busy_ticks()
    assert busy >= own >= 0
    sum(i * i for i in range(2_000_000))  # about 0.1 s of this process's CPU time
    busy2, own2 = runtime._busy_ticks()
    assert own2 > own and busy2 - busy >= own2 - own - 1


def test_run_in_threads_gives_results_in_order_on_one_thread():
    import threading

    before = torch.get_num_threads()
    seen = []
    together = threading.Barrier(3, timeout=10)  # all three run at the same time

    def call(i):
        def run():
            together.wait()
            seen.append((i, torch.get_num_threads(), threading.get_ident()))
            return i * 10

        return run

    assert runtime.run_in_threads([call(i) for i in range(3)]) == [0, 10, 20]
    assert sorted(i for i, _, _ in seen) == [0, 1, 2]
    assert all(n == 1 for _, n, _ in seen)
    assert len({ident for _, _, ident in seen}) == 3  # each in its own thread
    assert dict((i, ident) for i, _, ident in seen)[0] == threading.get_ident()  # first here
    assert torch.get_num_threads() == before
    assert runtime.run_in_threads([]) == []


def test_split_threads_one_per_part_up_to_the_cap():
    assert runtime.split_threads(1) == (1, 1)
    assert runtime.split_threads(2) == (2, 1)
    assert runtime.split_threads(runtime.MAX_PARTS) == (runtime.MAX_PARTS, 1)
    assert runtime.split_threads(16) == (runtime.MAX_PARTS, 16 // runtime.MAX_PARTS)
    assert runtime.split_threads(0) == (1, 1)


def test_run_in_threads_raises_after_all_have_finished():
    before = torch.get_num_threads()
    done = []

    def bad():
        raise ValueError("part 1 failed")

    def slow():
        import time

        time.sleep(0.05)
        done.append(1)

    with pytest.raises(ValueError, match="part 1 failed"):
        runtime.run_in_threads([slow, bad, slow])
    assert done == [1, 1] and torch.get_num_threads() == before


def test_sam2_and_sam_predictors_run_under_the_policy(fake_machine, monkeypatch):
    """SAM 2's encoder, SAM 2's prompts (both predictor APIs) and SAM's Meta-style predict run
    with the policy's thread count (here 1: another process keeps a core busy), then restore."""
    import numpy as np

    from samkit.predict.sam2_predictor import Sam2Predictor
    from samkit.predict.sam_predictor import SamPredictor
    from tests.conftest import tiny_model
    from tests.sam2_helpers import TINY, seeded_sam2

    fake_machine(1)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    seen: dict[str, list[int]] = {}

    def spy(obj, name, key):
        orig = getattr(obj, name)

        def wrapper(*args, **kwargs):
            seen.setdefault(key, []).append(torch.get_num_threads())
            return orig(*args, **kwargs)

        monkeypatch.setattr(obj, name, wrapper)

    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    try:
        sam2 = seeded_sam2(TINY)
        spy(sam2, "encode", "sam2 encoder")
        pred2 = Sam2Predictor(sam2)
        pred2.set_image(image)
        spy(pred2, "_decode", "sam2 prompts")
        pred2.predict(box=np.array([4.0, 4.0, 40.0, 30.0]), multimask_output=False)
        pred2.predict(point_coords=np.array([[10.0, 12.0]]), point_labels=np.array([1]))
        sam = tiny_model().eval()
        pred = SamPredictor(sam)
        pred.set_image(image)
        spy(pred, "_decode", "sam prompts")
        pred.predict(box=np.array([4.0, 4.0, 40.0, 30.0]), multimask_output=False)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert seen == {"sam2 encoder": [1], "sam2 prompts": [1, 1], "sam prompts": [1]}


def test_run_in_threads_gives_each_part_its_torch_threads():
    before = torch.get_num_threads()
    seen = runtime.run_in_threads([torch.get_num_threads] * 2, torch_threads=2)
    assert seen == [2, 2] and torch.get_num_threads() == before
