"""The benchmark harness: agreement math, one in-process run on a tiny model, error isolation."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from samkit import benchmark
from samkit.errors import SamkitError
from samkit.zoo.registry import ModelConfig

from ..conftest import TINY_VIT, tiny_model


def test_agreement_of_known_outputs(tmp_path):
    e32 = np.ones((1, 4, 2, 2), np.float32)
    e16 = e32.copy()
    e16[0, 0, 0, 0] = 1.5  # one element off by 0.5: ||d|| / ||e|| = 0.5 / 4
    m32 = np.zeros((2, 4, 8), bool)
    m32[0, :2] = True  # 16 pixels
    m16 = m32.copy()
    m16[0, 2, :4] = True  # 4 more: IoU 16 / 20
    np.savez(tmp_path / "a.npz", embedding=e32, masks=np.packbits(m32, axis=-1))
    np.savez(tmp_path / "b.npz", embedding=e16, masks=np.packbits(m16, axis=-1))
    got = benchmark.agreement(tmp_path / "a.npz", tmp_path / "b.npz")
    assert got["embedding_rel_error"] == pytest.approx(0.125)
    assert got["embedding_max_error"] == pytest.approx(0.5)
    assert got["mask_iou_min"] == pytest.approx(0.8)
    assert got["mask_iou_mean"] == pytest.approx(0.9)  # the empty pair counts as IoU 1


class _FakeGenerator:
    calls: list = []

    def __init__(self, sam, precision="fp32"):
        self.precision = precision

    def generate(self, image):
        _FakeGenerator.calls.append((self.precision, image.shape))
        return []


@pytest.mark.slow
def test_in_process_run_on_a_tiny_model(monkeypatch, tmp_path):
    config = ModelConfig(replace(TINY_VIT.encoder, out_chans=64), TINY_VIT.decoder)
    monkeypatch.setattr(benchmark, "_build", lambda model, ckpt: (tiny_model(config), config, 2e9))
    monkeypatch.setattr(benchmark, "_mask_generator_class", lambda: _FakeGenerator)
    out = benchmark.run_benchmarks(
        ["sam_b"],
        ["fp32"],
        runs=2,
        warmup=0,
        isolate=False,
        measure_peak=False,
        reuse_memory=False,
        image_hw=(120, 160),
        json_path=tmp_path / "r" / "bench.json",
        log=None,
    )
    (res,) = out["results"]
    assert res["model"] == "sam_b" and res["precision"] == "fp32"
    assert len(res["encoder_runs_s"]) == 2 and res["encoder_s"] > 0
    # encoder_s is rounded to 0.1 ms; the rate comes from the unrounded time
    rel = 0.01 + 5e-5 / res["encoder_s"]
    assert res["encoder_gflops"] == pytest.approx(2.0 / res["encoder_s"], rel=rel)
    assert res["decode_1_ms"] > 0 and res["decode_100_ms"] > 0
    assert res["everything_s"] is not None and _FakeGenerator.calls[-1] == ("fp32", (120, 160, 3))
    assert res["peak_rss_gib"] >= res["encoder_peak_rss_gib"] > 0
    assert json.loads((tmp_path / "r" / "bench.json").read_text()) == json.loads(json.dumps(out))
    table = benchmark.format_table(out)
    assert "| sam_b | fp32 |" in table and "GFLOP/s" in table


def test_failing_configuration_is_reported_not_raised():
    spec = {"model": "sam_b", "precision": "fp32", "checkpoint": "/nonexistent/ckpt.pth"}
    res = benchmark._run_worker(spec, isolate=True)
    assert "error" in res and res["model"] == "sam_b"
    assert "error" in benchmark.format_table({"machine": _machine(), "results": [res]})


def test_bad_arguments_raise_samkit_errors():
    with pytest.raises(SamkitError, match="unknown model"):
        benchmark.run_benchmarks(["sam_x"], log=None)
    with pytest.raises(SamkitError, match="unknown precision"):
        benchmark.run_benchmarks(["sam_b"], ["fp16"], log=None)
    with pytest.raises(SamkitError, match="runs must be"):
        benchmark.run_benchmarks(["sam_b"], runs=0, log=None)


def _machine():
    return {
        "cpu": "x",
        "usable_cores": 1,
        "torch_threads": 1,
        "isa": [],
        "native_bf16": False,
        "torch": "t",
    }
