"""The training loop: checkpoints, exact resume, fine-tuning, DDP (the lr schedule and the resumable data
order: test_lr_schedule.py, test_batch_sampler.py)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mrseg.engine.train.checkpoint import (
    CheckpointError,
    load_checkpoint,
    rng_state,
    save_atomic,
    set_rng_state,
)
from mrseg.engine.train.trainer import TrainConfig, TrainError, resume_config, train
from mrseg.model.zoo import load_model
from tests.engine.conftest import load_example

ROOT = Path(__file__).resolve().parents[3]


def _shapes_module():
    return load_example("shapes", "generate.py")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    """8 training and 3 held-out 64x64 images of the synthetic shapes dataset."""
    out = tmp_path_factory.mktemp("shapes")
    gen = _shapes_module()
    gen.generate_split(str(out), "train", 8, 64, seed=1, max_shapes=2, min_shape=20, max_shape=30)
    gen.generate_split(str(out), "val", 3, 64, seed=1, max_shapes=2, min_shape=20, max_shape=30)
    return out


def tiny_config(shapes: Path, out: Path, **kw) -> TrainConfig:
    """r18-fpn from scratch on 64 px images, few RoIs: a few seconds per iteration on 2 CPU cores."""
    base = dict(
        coco=str(shapes / "train.json"),
        images=str(shapes / "train"),
        arch="r18-fpn",
        weights="none",
        iters=4,
        batch=2,
        lr=0.01,
        min_size=(64,),
        max_size=64,
        workers=0,
        threads=1,
        out=str(out),
        roi_batch=16,
        rpn_train_proposals=50,
        log_every=1,
        warmup_iters=2,
        device="cpu",
        quiet=True,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_rng_state_survives_weights_only_checkpoint(tmp_path):
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    save_atomic({"rng": rng_state()}, tmp_path / "r.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    set_rng_state(torch.load(tmp_path / "r.pt", weights_only=True)["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1]) and expected[2] == got[2]
    assert [p.name for p in tmp_path.iterdir()] == ["r.pt"]  # no temp file left behind


def test_resume_gives_the_same_weights(shapes, tmp_path):
    straight = train(tiny_config(shapes, tmp_path / "straight", iters=4))
    assert straight.iteration == 4 and not straight.interrupted

    def interrupt_at_2(iteration: int) -> None:
        if iteration == 2:
            os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C does: finish the step, save last.pt, stop

    stopped = train(tiny_config(shapes, tmp_path / "split", iters=4), on_step=interrupt_at_2)
    assert stopped.interrupted and stopped.iteration == 2
    half = load_checkpoint(tmp_path / "split" / "last.pt")
    assert half["iteration"] == 2
    result = train(resume_config(tmp_path / "split" / "last.pt"))
    assert result.iteration == 4 and not result.interrupted
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "split" / "last.pt", weights_only=True)
    assert a["iteration"] == b["iteration"] == 4
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    moved = [
        k for k, v in a["model"].items() if v.is_floating_point() and not torch.equal(v, half["model"][k])
    ]
    assert moved  # the last two iterations did change the weights
    # metrics.jsonl reads as one run: iterations 1..4, once each
    lines = [json.loads(line) for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in lines if r["type"] == "train"] == [1, 2, 3, 4]
    for r in lines:
        assert {"loss_mask", "loss_classifier", "lr", "sec_per_iter", "images_per_sec", "memory_mb"} <= set(r)


def test_checkpoint_loads_for_predict_and_validation_writes_best(shapes, tmp_path):
    cfg = tiny_config(
        shapes,
        tmp_path / "run",
        iters=2,
        val_coco=str(shapes / "val.json"),
        val_images=str(shapes / "val"),
        eval_every=2,
    )
    result = train(cfg)
    for name in ("last.pt", "best.pt", "metrics.jsonl", "config.json"):
        assert (tmp_path / "run" / name).is_file(), name
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert ckpt["format"] == "mrseg-checkpoint" and ckpt["arch"] == "r18-fpn"
    assert [c["name"] for c in ckpt["classes"]] == ["circle", "square", "triangle"]
    assert ckpt["transform"] == {"min_size": 64, "max_size": 64}
    evals = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in evals if r["type"] == "eval"]
    assert len(evals) == 1 and set(evals[0]) >= {"bbox", "segm"} and "AP" in evals[0]["segm"]
    assert result.best_ap == evals[0]["segm"]["AP"]
    model, info = load_model(tmp_path / "run" / "best.pt")  # what `mrseg predict --weights best.pt` does
    assert info.arch == "r18-fpn" and info.classes == ckpt["classes"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, ckpt["model"][key]), key


def test_from_scratch_trains_batchnorm_and_the_checkpoint_rebuilds_the_model(shapes, tmp_path):
    from torch import nn

    cfg = tiny_config(shapes, tmp_path / "run", iters=2, anchor_sizes=(8, 16, 32, 64, 128), channels=64)
    train(cfg)
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert ckpt["norm"] == "bn"  # the default from scratch
    assert ckpt["anchor_sizes"] == [8, 16, 32, 64, 128] and ckpt["channels"] == 64
    assert ckpt["model"]["backbone.bottom_up.stem.bn1.num_batches_tracked"] == 2  # batch statistics were used
    model, _ = load_model(tmp_path / "run" / "last.pt")
    assert isinstance(model.backbone.bottom_up.stem.bn1, nn.BatchNorm2d)
    assert model.rpn.anchor_generator.sizes == (8, 16, 32, 64, 128) and model.backbone.out_channels == 64
    for key, value in model.state_dict().items():
        assert torch.equal(value, ckpt["model"][key]), key

    frozen = tiny_config(shapes, tmp_path / "frozen", iters=1, norm="frozen-bn")
    train(frozen)
    ckpt = torch.load(tmp_path / "frozen" / "last.pt", weights_only=True)
    assert ckpt["norm"] == "frozen-bn"
    assert "backbone.bottom_up.stem.bn1.num_batches_tracked" not in ckpt["model"]
    assert ckpt["model"]["backbone.bottom_up.stem.bn1.running_var"].ne(1).any()  # calibrated from the data


def test_finetune_from_checkpoint_with_other_classes(shapes, tmp_path):
    # frozen BN: with lr 0 nothing changes (BatchNorm would update its running statistics)
    train(tiny_config(shapes, tmp_path / "src", iters=1, norm="frozen-bn"))
    src = torch.load(tmp_path / "src" / "last.pt", weights_only=True)["model"]
    data = json.loads((shapes / "train.json").read_text())
    data["categories"] = data["categories"][:2]
    data["annotations"] = [a for a in data["annotations"] if a["category_id"] <= 2]
    (shapes / "two.json").write_text(json.dumps(data))
    # lr 0 (and no weight decay): the weights stay as loaded, so we can see what was kept
    cfg = tiny_config(
        shapes,
        tmp_path / "ft",
        iters=1,
        coco=str(shapes / "two.json"),
        lr=0.0,
        weights=str(tmp_path / "src" / "last.pt"),
        weight_decay=0.0,
    )
    train(cfg)
    ft = torch.load(tmp_path / "ft" / "last.pt", weights_only=True)
    assert ft["norm"] == "frozen-bn"  # inherited from the source checkpoint (weights not "none")
    assert ft["model"]["roi_heads.box_predictor.cls_score.weight"].shape[0] == 3
    for key in ("backbone.bottom_up.stem.conv1.weight", "backbone.bottom_up.stem.bn1.running_var"):
        assert torch.equal(ft["model"][key], src[key]), key
    assert not torch.equal(
        ft["model"]["roi_heads.mask_head.predictor.weight"][:3],
        src["roi_heads.mask_head.predictor.weight"][:3],
    )


def test_bad_config_and_resume_errors(shapes, tmp_path):
    with pytest.raises(TrainError, match="--epochs or --iters"):
        train(tiny_config(shapes, tmp_path / "x", iters=2, epochs=1))
    with pytest.raises(TrainError, match="--arch"):
        train(tiny_config(shapes, tmp_path / "x", arch="r7"))
    with pytest.raises(TrainError, match="--norm"):
        train(tiny_config(shapes, tmp_path / "x", norm="batch"))
    with pytest.raises(TrainError, match="5 sizes"):
        train(tiny_config(shapes, tmp_path / "x", anchor_sizes=(16, 32)))
    with pytest.raises(TrainError, match="--channels"):
        train(tiny_config(shapes, tmp_path / "x", channels=100))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save({"model": {}}, tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="not an mrseg training checkpoint"):
        load_checkpoint(tmp_path / "bare.pt")


def test_torchrun_two_cpu_processes(shapes, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "mrseg",
        "train",
        "--coco",
        str(shapes / "train.json"),
        "--images",
        str(shapes / "train"),
        "--arch",
        "r18-fpn",
        "--weights",
        "none",
        "--iters",
        "2",
        "--batch",
        "2",
        "--lr",
        "0.01",
        "--min-size",
        "64",
        "--max-size",
        "64",
        "--workers",
        "0",
        "--roi-batch",
        "16",
        "--rpn-proposals",
        "50",
        "--log-every",
        "1",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "ddp"),
        "--quiet",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads((tmp_path / "ddp" / "config.json").read_text())
    assert config["world_size"] == 2
    ckpt = torch.load(tmp_path / "ddp" / "last.pt", weights_only=True)
    assert ckpt["iteration"] == 2 and len(ckpt["rng_per_rank"]) == 2
    lines = (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["iter"] for x in lines] == [1, 2]  # rank 0 alone writes
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == ["config.json", "last.pt", "metrics.jsonl"]


def _boxes_only(src: Path, dst: Path) -> Path:
    data = json.loads(src.read_text())
    for ann in data["annotations"]:
        del ann["segmentation"]
    dst.write_text(json.dumps(data))
    return dst


def test_mask_model_on_a_box_only_train_json_is_refused_before_training(shapes, tmp_path):
    train_json = _boxes_only(shapes / "train.json", tmp_path / "train_boxes.json")
    cfg = tiny_config(shapes, tmp_path / "run", iters=2, coco=str(train_json))
    with pytest.raises(Exception, match=r"none of its annotations has a segmentation .*--arch <layout>-box"):
        train(cfg)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_box_only_validation_json_scores_box_ap_and_best_follows_it(shapes, tmp_path, caplog):
    """A mask model validated on boxes only: box AP, said before training; it crashed at the first eval."""
    val_json = _boxes_only(shapes / "val.json", tmp_path / "val_boxes.json")
    cfg = tiny_config(shapes, tmp_path / "run", iters=2, val_coco=str(val_json),
                      val_images=str(shapes / "val"), eval_every=2)  # fmt: skip
    with caplog.at_level("WARNING", logger="mrseg.train"):
        result = train(cfg)
    assert "validation scores box AP only" in caplog.text
    evals = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    (record,) = [r for r in evals if r["type"] == "eval"]
    assert "segm" not in record and result.best_ap == record["bbox"]["AP"]
    assert (tmp_path / "run" / "best.pt").is_file() and (tmp_path / "run" / "last.pt").is_file()
