"""Training: losses, a short run on synthetic shapes, checkpoints, arguments."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from samkit import SAM
from samkit.data.datasets import DatasetError
from samkit.data.synthetic import write_shapes_dataset
from samkit.ops.rle import encode_coco_rle, rle_to_mask
from samkit.train import TrainError, save_checkpoint
from samkit.train.losses import dice_loss, mask_iou, sigmoid_focal_loss
from samkit.zoo.checkpoints import read_checkpoint
from samkit.zoo.registry import DecoderConfig, ModelConfig, TinyViTConfig, ViTConfig

# 64 x 64 input (4 x 4 embedding grid): small enough for hundreds of steps in seconds.
MICRO = ModelConfig(
    ViTConfig(
        embed_dim=32, depth=2, num_heads=2, global_attn_indexes=(1,), window_size=2, img_size=64,
        out_chans=32,
    ),
    DecoderConfig(transformer_dim=32, depth=2, num_heads=2, mlp_dim=64, iou_head_hidden_dim=32),
)  # fmt: skip


@pytest.fixture(scope="module")
def shapes64(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes64")
    return write_shapes_dataset(
        root, n_train=32, n_val=8, seed=2, height=64, width=64, max_objects=3
    )


def test_losses_hand_cases():
    t = torch.zeros(1, 1, 4, 4)
    t[..., :2, :] = 1.0  # half the pixels are foreground
    sure = (t * 2 - 1) * 20  # confident and right
    assert sigmoid_focal_loss(sure, t).item() < 1e-12
    assert dice_loss(sure, t).item() < 1e-6
    assert mask_iou(sure, t).item() == 1.0
    # logits 0: p = 0.5 everywhere; dice = 1 - (2 * 4 + 1) / (8 + 8 + 1)
    zero = torch.zeros_like(t)
    assert dice_loss(zero, t).item() == pytest.approx(1 - 9 / 17)
    # focal at p = 0.5: ce = log 2, (1 - p_t)^2 = 1/4, alpha 0.25 / 0.75 on fg / bg halves
    assert sigmoid_focal_loss(zero, t).item() == pytest.approx(math.log(2) / 4 * 0.5)
    assert mask_iou(-sure, t).item() == 0.0
    assert mask_iou(-torch.ones_like(t), torch.zeros_like(t)).item() == 1.0  # both empty


def _loose_labels(root: Path, grow: int = 3) -> None:
    """Rewrite the COCO files of a synthetic dataset with masks grown by ``grow`` pixels, as
    if annotators had drawn loose outlines: data the demo model was not trained on."""
    kernel = np.ones((2 * grow + 1, 2 * grow + 1), np.uint8)
    for split in ("train", "val"):
        path = root / "annotations" / f"instances_{split}.json"
        coco = json.loads(path.read_text())
        for ann in coco["annotations"]:
            mask = rle_to_mask(ann["segmentation"]).astype(np.uint8)
            ann["segmentation"] = encode_coco_rle(cv2.dilate(mask, kernel).astype(bool))
        path.write_text(json.dumps(coco))


@pytest.mark.slow
def test_short_fine_tuning_raises_val_miou(tmp_path):
    # The default fine-tuning setup (frozen image encoder, cached embeddings) on new data.
    root = write_shapes_dataset(tmp_path / "loose", n_train=16, n_val=8, seed=5).parent
    _loose_labels(root)
    train, val = root / "annotations/instances_train.json", root / "annotations/instances_val.json"
    torch.manual_seed(0)
    model = SAM("samkit-demo")
    encoder_before = {k: v.clone() for k, v in model.model.image_encoder.state_dict().items()}
    decoder_before = {k: v.clone() for k, v in model.model.mask_decoder.state_dict().items()}
    before = model.val(val, "box", verbose=False).miou
    results = model.train(
        train, val_data=val, epochs=3, batch=4, lr=1e-3, error_clicks=1, project=tmp_path,
        verbose=False,
    )  # fmt: skip
    losses = [row["loss"] for row in results.epochs]
    assert losses[-1] < losses[0]
    assert results.best_miou > before + 0.03
    # outputs of the run
    run = results.run_dir
    assert run == tmp_path / "exp"
    assert (run / "results.csv").read_text().count("\n") == 4
    assert (run / "results.png").stat().st_size > 0
    assert results.last.exists() and results.best.exists()
    # the frozen encoder did not move, the decoder did
    for k, v in model.model.image_encoder.state_dict().items():
        assert torch.equal(v, encoder_before[k]), k
    assert any(
        not torch.equal(v, decoder_before[k])
        for k, v in model.model.mask_decoder.state_dict().items()
    )
    # best.pt round-trips through the loader and scores what training reported
    loaded = SAM(results.best)
    assert loaded.config == model.config and loaded.name == "samkit_demo"
    assert loaded.val(val, "box", verbose=False).miou == pytest.approx(results.best_miou, abs=1e-9)
    for k, v in model.model.state_dict().items():  # the model now holds the best weights
        assert torch.equal(v, loaded.model.state_dict()[k]), k


@pytest.mark.slow
def test_training_from_scratch_lowers_the_loss(shapes64, tmp_path):
    torch.manual_seed(0)
    model = SAM.from_config(MICRO)
    results = model.train(
        shapes64, epochs=6, batch=4, lr=3e-3, project=tmp_path, verbose=False, plots=False
    )
    losses = [row["loss"] for row in results.epochs]
    assert losses[-1] < 0.9 * losses[0]


def test_error_clicks_points_and_a_trainable_encoder_run(shapes64, tmp_path):
    torch.manual_seed(1)
    model = SAM.from_config(MICRO)
    before = model.model.image_encoder.patch_embed.proj.weight.clone()
    results = model.train(
        shapes64, epochs=1, batch=8, freeze=(), box_prob=0.5, error_clicks=2, project=tmp_path,
        name="clicks", verbose=False, plots=False,
    )  # fmt: skip
    row = results.epochs[0]
    assert all(math.isfinite(row[k]) for k in ("loss", "focal", "dice", "iou_mse", "val_miou"))
    assert not torch.equal(before, model.model.image_encoder.patch_embed.proj.weight)
    assert not (results.run_dir / "results.png").exists()
    # a second run with the same name gets a new folder
    again = model.train(
        shapes64, epochs=1, batch=8, project=tmp_path, name="clicks", verbose=False, plots=False
    )
    assert again.run_dir == tmp_path / "clicks2"


def test_checkpoint_keeps_what_the_weights_cannot_show(tmp_path):
    # TinyViT's input size and the decoder's heads are not visible in the weights
    config = ModelConfig(
        TinyViTConfig(
            embed_dims=(16, 32, 48, 64), depths=(1, 1, 1, 1), num_heads=(1, 2, 3, 4),
            window_sizes=(7, 7, 14, 7), img_size=256, out_chans=32, num_classes=0,
        ),
        DecoderConfig(transformer_dim=32, depth=1, num_heads=2, mlp_dim=64, iou_head_hidden_dim=32),
    )  # fmt: skip
    sam = config.build()
    path = save_checkpoint(sam, config, tmp_path / "w" / "tiny.pt", epoch=3)
    assert read_checkpoint(path).config == config
    loaded = SAM(path)
    assert loaded.model.image_size == 256
    for k, v in sam.state_dict().items():
        assert torch.equal(v, loaded.model.state_dict()[k])
    assert not list(path.parent.glob(".*tmp*"))


def test_bad_training_arguments(shapes64, tmp_path):
    model = SAM.from_config(MICRO)
    with pytest.raises(TrainError, match="unknown part"):
        model.train(shapes64, freeze=("encoder",), project=tmp_path)
    with pytest.raises(TrainError, match="nothing would be trained"):
        model.train(
            shapes64, freeze=("image_encoder", "prompt_encoder", "mask_decoder"), project=tmp_path
        )
    with pytest.raises(DatasetError, match="not found"):
        model.train(tmp_path / "missing.yaml", project=tmp_path)
    only_val = write_shapes_dataset(tmp_path / "v", n_train=0, n_val=2, height=64, width=64)
    with pytest.raises(TrainError, match="no training images"):
        model.train(only_val, project=tmp_path)
    assert np.isfinite(model.val(only_val, "point", verbose=False).miou)


@pytest.mark.slow
def test_resume_continues_an_interrupted_run_exactly(shapes64, tmp_path, monkeypatch):
    import samkit.train.loop as train_loop

    kwargs = dict(epochs=2, batch=8, lr=3e-3, freeze=(), error_clicks=1, verbose=False, plots=False)
    torch.manual_seed(0)
    straight = SAM.from_config(MICRO)
    full = straight.train(shapes64, project=tmp_path, name="full", **kwargs)

    # the same run, killed while validating epoch 2 (after epoch 1's last.pt was written)
    real_validate, calls = train_loop.validate, []

    def dies_in_epoch_2(*args, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_validate(*args, **kw)

    monkeypatch.setattr(train_loop, "validate", dies_in_epoch_2)
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        SAM.from_config(MICRO).train(shapes64, project=tmp_path, name="cut", **kwargs)
    monkeypatch.setattr(train_loop, "validate", real_validate)

    last = tmp_path / "cut" / "weights" / "last.pt"
    resumed = SAM.from_config(MICRO)  # weights come from last.pt
    again = resumed.train(shapes64, resume=last, **kwargs)
    assert again.run_dir == tmp_path / "cut"
    drop = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert drop(again.epochs) == drop(full.epochs)
    for k, v in straight.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    with pytest.raises(TrainError, match="cannot resume"):
        resumed.train(shapes64, resume=tmp_path / "full" / "weights" / "best.pt", **kwargs)
