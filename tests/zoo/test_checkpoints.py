"""Checkpoint reading, architecture inference and every error path of loading."""

from __future__ import annotations

import http.server
import os
import threading
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from samkit import SAM, CheckpointError, DownloadError
from samkit.zoo.checkpoints import read_checkpoint, resolve_checkpoint
from samkit.zoo.registry import VARIANTS, infer_config

from ..conftest import TINY_TINYVIT, TINY_VIT, tiny_model


@pytest.mark.parametrize("arch", list(VARIANTS))
def test_infer_config_recovers_every_variant(arch):
    config = VARIANTS[arch].config
    with torch.device("meta"):
        sd = config.build().state_dict()
    if config.encoder.kind == "tiny_vit":
        # TinyViT's input size is not visible in its weights: inference assumes SAM's 1024
        # (the demo model at 256 stores its config in the file's metadata instead)
        config = replace(config, encoder=replace(config.encoder, img_size=1024))
    assert infer_config(sd) == config


@pytest.mark.parametrize("config", [TINY_VIT, TINY_TINYVIT], ids=["vit", "tinyvit"])
def test_tiny_configs_roundtrip_through_a_file(config, tmp_path):
    model = tiny_model(config)
    path = tmp_path / "any_name_at_all.bin"
    torch.save(model.state_dict(), path)
    loaded = SAM(path)
    assert loaded.name == "custom"
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[k], v)


def test_file_name_does_not_decide_the_architecture(tmp_path):
    # A MobileSAM-shaped file named like ViT-H still loads as what it is.
    path = tmp_path / "sam_vit_h_4b8939.pth"
    torch.save(tiny_model(TINY_TINYVIT).state_dict(), path)
    ckpt = read_checkpoint(path)
    assert ckpt.config.encoder.kind == "tiny_vit"


@pytest.mark.parametrize("wrapper", ["model", "state_dict"])
def test_wrapped_state_dicts(wrapper, tmp_path):
    sd = tiny_model().state_dict()
    path = tmp_path / "wrapped.pt"
    torch.save({wrapper: sd, "epoch": 3}, path)
    assert set(read_checkpoint(path).state_dict) == set(sd)


def test_module_prefix_is_mapped(tmp_path):
    sd = {"module." + k: v for k, v in tiny_model().state_dict().items()}
    path = tmp_path / "ddp.pt"
    torch.save(sd, path)
    SAM(path)


def test_safetensors(tmp_path):
    from safetensors.torch import save_file

    sd = {k: v.contiguous() for k, v in tiny_model().state_dict().items()}
    path = tmp_path / "tiny.safetensors"
    save_file(sd, str(path))
    m = SAM(path)
    assert torch.equal(
        m.model.state_dict()["mask_decoder.iou_token.weight"], sd["mask_decoder.iou_token.weight"]
    )


def test_mobile_sam_classifier_head_and_bn_counters_load(tmp_path):
    with torch.device("meta"):
        template = VARIANTS["mobile_sam"].config.build().state_dict()
    assert "image_encoder.head.weight" in template
    assert any(k.endswith("num_batches_tracked") for k in template)


class _Payload:
    """Unpickling this runs ``_mark`` (a stand-in for ``os.system``)."""

    def __reduce__(self):
        return (_mark, (str(MARKER),))


MARKER = Path(os.environ.get("TMPDIR", "/tmp")) / f"samkit_pickle_payload_{os.getpid()}"


def _mark(path):
    Path(path).write_text("payload ran")
    return {}


def test_hostile_pickle_is_refused_and_never_runs(tmp_path):
    MARKER.unlink(missing_ok=True)
    path = tmp_path / "evil.pt"
    sd = dict(tiny_model().state_dict())
    sd["payload"] = _Payload()
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match="refused") as err:
        SAM(path)
    assert str(path) in str(err.value)
    assert not MARKER.exists(), "the pickle payload was executed"


def test_missing_file():
    with pytest.raises(CheckpointError, match="not found"):
        SAM("/nonexistent/dir/weights.pt")


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(CheckpointError, match="directory"):
        SAM(tmp_path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        SAM(path)


def test_truncated_file(tmp_path, tiny_checkpoint):
    data = tiny_checkpoint.read_bytes()
    path = tmp_path / "cut.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as err:
        SAM(path)
    assert str(path) in str(err.value)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "photo.pt"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    with pytest.raises(CheckpointError):
        SAM(path)


def test_a_tensor_instead_of_a_dict(tmp_path):
    path = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), path)
    with pytest.raises(CheckpointError, match="expected a state dict"):
        SAM(path)


def test_unknown_architecture(tmp_path):
    path = tmp_path / "resnet.pt"
    torch.save({"conv1.weight": torch.zeros(8, 3, 3, 3), "fc.bias": torch.zeros(10)}, path)
    with pytest.raises(CheckpointError, match="not a SAM state dict") as err:
        SAM(path)
    assert "conv1.weight" in str(err.value) and str(path) in str(err.value)


def test_missing_and_unexpected_keys_are_named(tmp_path):
    sd = dict(tiny_model().state_dict())
    del sd["mask_decoder.iou_prediction_head.layers.2.bias"]
    sd["mask_decoder.extra.weight"] = torch.zeros(2)
    path = tmp_path / "edited.pt"
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as err:
        SAM(path)
    msg = str(err.value)
    assert "Missing keys: mask_decoder.iou_prediction_head.layers.2.bias" in msg
    assert "Unexpected keys: mask_decoder.extra.weight" in msg
    assert str(path) in msg


def test_wrong_shapes_are_named(tmp_path):
    sd = dict(tiny_model().state_dict())
    sd["mask_decoder.iou_prediction_head.layers.2.weight"] = torch.zeros(5, 64)
    path = tmp_path / "shapes.pt"
    torch.save(sd, path)
    with pytest.raises(
        CheckpointError, match=r"Wrong shapes: .*iou_prediction_head\.layers\.2\.weight"
    ):
        SAM(path)


def test_unknown_name_lists_known_names():
    with pytest.raises(CheckpointError, match="sam_vit_b_01ec64.pth"):
        resolve_checkpoint("sam_z.pt")


def test_official_name_offline_says_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMKIT_OFFLINE", "1")
    with pytest.raises(DownloadError) as err:
        SAM("sam_b.pt", cache_dir=tmp_path)
    msg = str(err.value)
    assert "https://github.com/ultralytics/assets/releases/download/v8.4.0/sam_b.pt" in msg
    assert str(tmp_path / "sam_b.pt") in msg


def test_variant_name_uses_cached_official_file(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMKIT_OFFLINE", "1")
    torch.save(tiny_model(TINY_TINYVIT).state_dict(), tmp_path / "mobile_sam.pt")
    assert resolve_checkpoint("mobile_sam", cache=tmp_path) == tmp_path / "mobile_sam.pt"


def test_download_of_a_synthetic_checkpoint_from_a_local_server(tmp_path, monkeypatch):
    """SAM('mobile_sam.pt') downloads from the official URL; here that URL is served locally."""
    served = tmp_path / "served"
    served.mkdir()
    torch.save(tiny_model(TINY_TINYVIT).state_dict(), served / "mobile_sam.pt")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(served), **kw)

        def translate_path(self, path):
            return str(served / Path(path).name)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        from samkit import registry

        url = f"http://127.0.0.1:{server.server_address[1]}/mobile_sam.pt"
        variant = registry.VARIANTS["mobile_sam"]
        patched = variant.files[0].__class__("mobile_sam.pt", url, None, None)
        monkeypatch.setitem(
            registry.VARIANTS,
            "mobile_sam",
            registry.Variant(
                variant.name, variant.title, variant.config, (patched,), variant.aliases
            ),
        )
        cache = tmp_path / "cache"
        model = SAM("mobile_sam.pt", cache_dir=cache)
        assert (cache / "mobile_sam.pt").read_bytes() == (served / "mobile_sam.pt").read_bytes()
        assert model.config.encoder.kind == "tiny_vit"
    finally:
        server.shutdown()
