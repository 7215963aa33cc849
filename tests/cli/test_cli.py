"""The installed ``samkit`` command, run in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from samkit.cli.args import Arg, UsageError, parse_args, parse_value, split_argv


def samkit_cmd() -> list[str]:
    exe = shutil.which("samkit")
    return [exe] if exe else [sys.executable, "-m", "samkit"]


REPO = Path(__file__).resolve().parents[2]


def run(*args: str, env_extra: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    # PYTHONPATH: the command runs this tree's samkit, not whichever one is installed
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, SAMKIT_OFFLINE="1", PYTHONPATH=path, **(env_extra or {}))
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
    assert parse_value("[sam_b,mobile_sam]") == ["sam_b", "mobile_sam"]
    assert parse_value("[fp32, 2]") == ["fp32", 2]
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
    assert "model" in r.stdout and "(default: sam_b.pt)" in r.stdout


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


@pytest.fixture
def cli_workspace(tmp_path, tiny_checkpoint):
    from PIL import Image

    from ..conftest import synthetic_image

    Image.fromarray(synthetic_image(seed=1)).save(tmp_path / "a.png")
    Image.fromarray(synthetic_image(seed=2)).save(tmp_path / "b.png")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    return tmp_path, tiny_checkpoint


def test_predict_boxes_writes_outputs_equal_to_python_api(cli_workspace):
    from samkit import SAM
    from samkit.ops.rle import rle_to_mask

    ws, ckpt = cli_workspace
    boxes = "[[20,30,120,110],[150,100,300,220]]"
    r = run(
        "predict",
        f"model={ckpt}",
        f"source={ws / 'a.png'}",
        f"bboxes={boxes}",
        "save_txt=true",
        cwd=ws,
    )
    assert r.returncode == 0, r.stderr
    out = ws / "runs" / "predict"
    assert "1 image(s), 2 mask(s)" in r.stdout and str(Path("runs/predict")) in r.stdout
    data = json.loads((out / "results.json").read_text())
    [image] = data["images"]
    assert data["mode"] == "prompts" and data["prompts"]["bboxes"] == [
        [20, 30, 120, 110],
        [150, 100, 300, 220],
    ]
    expected = SAM(ckpt)(str(ws / "a.png"), bboxes=[[20, 30, 120, 110], [150, 100, 300, 220]])[0]
    assert len(image["masks"]) == len(expected) == 2
    for entry, mask in zip(image["masks"], expected.masks):
        np.testing.assert_array_equal(rle_to_mask(entry["segmentation"]), mask)
    assert (out / "a.png").exists()
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["a_0.png", "a_1.png"]
    assert (out / "labels" / "a.txt").read_text() == expected.to_yolo(0)


def test_predict_numbers_run_dirs_and_skips_bad_images(cli_workspace):
    ws, ckpt = cli_workspace
    for _ in range(2):
        r = run(
            "predict", "--model", str(ckpt), "--source", str(ws), "--points", "[[60,60]]", cwd=ws
        )
        assert r.returncode == 3, r.stderr  # finished, one input skipped
    assert (ws / "runs" / "predict").is_dir() and (ws / "runs" / "predict2").is_dir()
    assert "2 image(s)" in r.stdout and "1 skipped" in r.stdout
    assert "broken.png" in r.stderr
    data = json.loads((ws / "runs" / "predict2" / "results.json").read_text())
    assert [Path(i["path"]).name for i in data["images"]] == ["a.png", "b.png"]
    assert Path(data["skipped"][0]["path"]).name == "broken.png"


def test_predict_errors(cli_workspace):
    ws, ckpt = cli_workspace
    r = run("predict", f"model={ckpt}", cwd=ws)
    assert r.returncode == 2 and "'source' is required" in r.stderr
    r = run("predict", f"model={ckpt}", f"source={ws / 'a.png'}", "bboxes=[1,2,3]", cwd=ws)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "box" in r.stderr.lower()
    r = run("predict", f"model={ckpt}", f"source={ws / 'missing.png'}", cwd=ws)
    assert r.returncode == 1 and "missing.png" in r.stderr
    assert not (ws / "runs").exists()  # failed runs leave no empty run directory
    r = run("predict", f"model={ckpt}", f"source={ws / 'a.png'}", "name=../escape", cwd=ws)
    assert r.returncode == 2 and not (ws.parent / "escape").exists()


def test_annotate_from_yolo_detection_labels(cli_workspace):
    ws, ckpt = cli_workspace
    images = ws / "images"
    images.mkdir()
    for name in ("a.png", "b.png"):
        (ws / name).rename(images / name)
    labels = ws / "det_labels"
    labels.mkdir()
    (labels / "a.txt").write_text("3 0.2 0.3 0.2 0.2\n1 0.7 0.6 0.3 0.4\n")
    (labels / "b.txt").write_text("")
    out = ws / "dataset"
    r = run(
        "annotate",
        f"data={images}",
        f"labels={labels}",
        f"sam_model={ckpt}",
        f"output_dir={out}",
        "names=['a','b','c','d']",
    )
    assert r.returncode == 0, r.stderr
    assert "2 image(s): 2 annotated" in r.stdout
    lines = (out / "a.txt").read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["3", "1"]
    assert (out / "b.txt").read_text() == ""
    r = run(
        "annotate", f"data={images}", f"labels={labels}", f"sam_model={ckpt}", f"output_dir={out}"
    )
    assert r.returncode == 0 and "2 already done" in r.stdout
    r = run("annotate", f"labels={labels}")
    assert r.returncode == 2 and "'data' is required" in r.stderr


def test_export_onnx_pair_runs_in_onnxruntime(cli_workspace):
    import onnxruntime as ort

    ws, ckpt = cli_workspace
    r = run(
        "export",
        f"model={ckpt}",
        "format=onnx",
        f"output_dir={ws / 'onnx'}",
        "quantize=true",
        "--opset",
        "17",
    )
    assert r.returncode == 0, r.stderr
    files = {line.split()[0]: line.split()[1] for line in r.stdout.splitlines()}
    assert {"encoder", "decoder", "decoder_int8", "metadata"} <= set(files)
    meta = json.loads(Path(files["metadata"]).read_text())
    assert meta
    dec = ort.InferenceSession(files["decoder"], providers=["CPUExecutionProvider"])
    names = {i.name for i in dec.get_inputs()}
    assert names == {
        "image_embeddings",
        "point_coords",
        "point_labels",
        "mask_input",
        "has_mask_input",
        "orig_im_size",
    }
    r = run("export", f"model={ckpt}", "format=tflite", f"output_dir={ws / 'x'}")
    assert r.returncode == 2 and "one of onnx" in r.stderr and not (ws / "x").exists()


def test_predict_without_prompts_segments_everything(cli_workspace):
    ws, ckpt = cli_workspace
    r = run(
        "predict",
        f"model={ckpt}",
        f"source={ws / 'a.png'}",
        "points_stride=4",
        "conf_thres=0.0",
        "stability_score_thresh=0.0",
        "save=false",
        cwd=ws,
    )
    assert r.returncode == 0, r.stderr
    data = json.loads((ws / "runs" / "predict" / "results.json").read_text())
    assert data["mode"] == "everything" and data["prompts"] is None
    assert len(data["images"][0]["masks"]) >= 1
    assert not (ws / "runs" / "predict" / "a.png").exists()
    r = run(
        "predict",
        f"model={ckpt}",
        f"source={ws / 'a.png'}",
        "bboxes=[1,2,30,40]",
        "points_stride=4",
        cwd=ws,
    )
    assert r.returncode == 2 and "only used without prompts" in r.stderr


@pytest.mark.slow
def test_benchmark_subcommand_prints_table_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    r = run(
        "benchmark",
        "models=[mobile_sam]",
        "precisions=[fp32]",
        "runs=1",
        "warmup=0",
        "everything=false",
        f"json={out}",
    )
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    assert data["results"] and "machine" in data
    assert "mobile_sam" in r.stdout
    r = run("benchmark", "models=[sam_x]")
    assert r.returncode == 2 and "unknown ['sam_x']" in r.stderr


def test_prompt_errors_exit_2_before_the_model_loads(cli_workspace, tmp_path):
    ws, _ = cli_workspace
    missing_model = tmp_path / "nowhere" / "sam_b.pt"  # loading it would fail with exit 1
    r = run(
        "predict",
        f"model={missing_model}",
        f"source={ws / 'a.png'}",
        "points=[900,370]",
        "labels=[1,0]",
        cwd=ws,
    )
    assert r.returncode == 2, r.stderr
    assert "one point (x, y), so labels needs one label per point" in r.stderr
    assert not (ws / "runs").exists()


def test_point_outside_the_image_exits_2_and_leaves_no_run_dir(cli_workspace):
    ws, ckpt = cli_workspace
    r = run("predict", f"model={ckpt}", f"source={ws / 'a.png'}", "points=[5000,5]", cwd=ws)
    assert r.returncode == 2 and "lies outside" in r.stderr and "Traceback" not in r.stderr
    assert not (ws / "runs").exists()
    r = run("predict", f"model={ckpt}", f"source={ws / 'a.png'}", "points=[[60,60]]", cwd=ws)
    assert r.returncode == 0 and (ws / "runs" / "predict").is_dir()  # not predict2


def test_everything_with_no_mask_exits_0_and_names_the_filter(tmp_path):
    import cv2

    cv2.imwrite(str(tmp_path / "grey.png"), np.full((240, 320, 3), 128, np.uint8))
    r = run("predict", "model=samkit-demo", "source=grey.png", "points_stride=8", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    data = json.loads((tmp_path / "runs" / "predict" / "results.json").read_text())
    assert data["mode"] == "everything" and data["images"][0]["masks"] == []
    assert "1 image(s), 0 mask(s)" in r.stdout
    assert "64 points -> 192 masks decoded" in r.stderr
    assert "no mask passed: the predicted-IoU filter (conf_thres=0.88) removed all 192" in r.stderr
    r = run(
        "predict",
        "model=samkit-demo",
        "source=grey.png",
        "points_stride=8",
        "conf_thres=0",
        "verbose=false",
        cwd=tmp_path,
    )
    assert r.returncode == 0 and "no mask passed the segment-everything filters" in r.stderr
    assert "stability filter" in r.stderr  # the library's warning names the filter


def test_help_shows_each_default_once_and_short():
    r = run("predict", "--help")
    assert r.returncode == 0
    assert "(default: -)" not in r.stdout and "3413333" not in r.stdout
    for line in r.stdout.splitlines():
        assert line.count("(default") <= 1 and not ("(required)" in line and "default" in line)
    assert "(default: 0.3413)" in r.stdout and "(default: 0.88)" in r.stdout


def test_seed_writes_a_stand_in_checkpoint_that_loads_under_its_official_name(tmp_path):
    import torch

    from samkit import SAM, VARIANTS
    from samkit.zoo.seeded import seeded_state_dict

    r = run("seed", "model=mobile_sam", f"out={tmp_path / 'mobile_sam.pt'}")
    assert r.returncode == 0, r.stderr
    assert "seeded stand-in weights of MobileSAM" in r.stdout and "meaningless" in r.stdout
    model = SAM("mobile_sam", cache_dir=tmp_path, download=False)  # found in the cache
    assert model.name == "mobile_sam"
    expected = seeded_state_dict(VARIANTS["mobile_sam"].config.build())
    loaded = torch.load(tmp_path / "mobile_sam.pt", weights_only=True)
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)
    assert [p.name for p in tmp_path.iterdir()] == ["mobile_sam.pt"]  # no temporary left
    r = run("seed", "model=sam_x")
    assert r.returncode == 2 and "give one of sam_b, sam_l, sam_h, mobile_sam" in r.stderr


def test_main_in_process_leaves_sigpipe_alone(capsys):
    """Only the program (``run``) takes the default SIGPIPE action; ``main`` called in-process
    must not change the caller's handler (a later write to a closed socket would kill it)."""
    import signal

    from samkit.cli import main

    before = signal.getsignal(signal.SIGPIPE)
    assert main(["--version"]) == 0
    assert signal.getsignal(signal.SIGPIPE) == before
