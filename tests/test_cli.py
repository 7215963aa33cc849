"""The installed ``samkit`` command, run in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from samkit.cli_args import Arg, UsageError, parse_args, parse_value, split_argv


def samkit_cmd() -> list[str]:
    exe = shutil.which("samkit")
    return [exe] if exe else [sys.executable, "-m", "samkit"]


def run(*args: str, env_extra: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, SAMKIT_OFFLINE="1", **(env_extra or {}))
    return subprocess.run(
        [*samkit_cmd(), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


def test_parse_value_types():
    assert parse_value("3") == 3 and parse_value("0.5") == 0.5
    assert parse_value("true") is True and parse_value("False") is False
    assert parse_value("none") is None
    assert parse_value("[439,437,524,709]") == [439, 437, 524, 709]
    assert parse_value("[[1,2],[3,4]]") == [[1, 2], [3, 4]]
    assert parse_value("img.jpg") == "img.jpg"
    with pytest.raises(UsageError, match="cannot parse"):
        parse_value("[1,2")


def test_both_argument_styles_give_the_same_values():
    spec = [
        Arg("conf", 0.25, "", "float"),
        Arg("save_txt", False, "", "bool"),
        Arg("source", None, "", "str"),
    ]
    a = parse_args(["conf=0.5", "save_txt=true", "source=x.jpg"], spec, "t")
    b = parse_args(["--conf", "0.5", "--save_txt", "--source=x.jpg"], spec, "t")
    c = parse_args(["--conf=0.5", "--save-txt", "true", "--source", "x.jpg"], spec, "t")
    assert a == b == c == {"conf": 0.5, "save_txt": True, "source": "x.jpg"}
    assert split_argv(["--a", "--b", "1"]) == {"a": None, "b": "1"}


def test_bad_values_name_the_argument():
    spec = [Arg("conf", 0.25, "", "float"), Arg("format", "yolo", "", "choice", ("yolo", "coco"))]
    with pytest.raises(UsageError, match="argument 'conf': expected a number"):
        parse_args(["conf=abc"], spec, "t")
    with pytest.raises(UsageError, match="one of yolo, coco"):
        parse_args(["format=voc"], spec, "t")
    with pytest.raises(UsageError, match="did you mean 'conf'"):
        parse_args(["cnf=0.1"], spec, "t")


def test_version_and_top_help():
    r = run("version")
    assert r.returncode == 0 and r.stdout.startswith("samkit ")
    r = run("--help")
    assert r.returncode == 0
    for sub in ("info", "version"):
        assert sub in r.stdout


def test_info_on_a_synthetic_checkpoint(tiny_checkpoint):
    r = run("info", f"model={tiny_checkpoint}", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["parameters"] == sum(info["parameters_per_part"].values()) > 0
    assert info["encoder_gflops"] > 0
    r2 = run("info", "--model", str(tiny_checkpoint))
    assert r2.returncode == 0 and "parameters" in r2.stdout


def test_subcommand_help_lists_arguments_and_defaults():
    r = run("info", "--help")
    assert r.returncode == 0
    assert "model" in r.stdout and "(default: 'sam_b.pt')" in r.stdout


def test_usage_errors_exit_2_without_traceback():
    r = run("info", "modle=x.pt")
    assert r.returncode == 2
    assert "did you mean 'model'" in r.stderr and "Traceback" not in r.stderr
    r = run("predcit")
    assert r.returncode == 2 and "unknown subcommand" in r.stderr


def test_missing_model_exits_1_with_placement_message(tmp_path):
    r = run("info", "model=sam_b.pt", f"cache_dir={tmp_path}")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert "sam_b.pt" in r.stderr and str(tmp_path) in r.stderr
    r = run("info", "model=sam_b.pt", f"cache_dir={tmp_path}", "--debug")
    assert "Traceback" in r.stderr
