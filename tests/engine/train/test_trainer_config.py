"""train() resolves its config into a copy: the caller's TrainConfig is never changed."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

from mrseg.engine.train.trainer import TrainConfig, train
from mrseg.model.checkpoint_format import make_checkpoint
from mrseg.model.zoo import build_model

ROOT = Path(__file__).resolve().parents[3]


def test_finetuning_a_narrow_checkpoint_resolves_channels_without_touching_the_config(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "shapes_generate", ROOT / "examples" / "shapes" / "generate.py"
    )
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    gen.generate_split(str(tmp_path), "train", 2, 64, seed=1, max_shapes=1, min_shape=20, max_shape=30)
    classes = json.loads((tmp_path / "train.json").read_text())["categories"]
    src = build_model("r18-fpn", len(classes), min_size=64, max_size=64, channels=64, norm="gn")
    torch.save(
        make_checkpoint(
            src, arch="r18-fpn", classes=classes, min_size=64, max_size=64, channels=64, norm="gn"
        ),
        tmp_path / "src.pt",
    )
    cfg = TrainConfig(
        coco=str(tmp_path / "train.json"),
        images=str(tmp_path / "train"),
        arch="r18-fpn",
        weights=str(tmp_path / "src.pt"),
        iters=1,
        batch=1,
        lr=0.0,
        min_size=(64,),
        max_size=64,
        workers=0,
        out=str(tmp_path / "run"),
        roi_batch=8,
        rpn_train_proposals=20,
        quiet=True,
    )
    before = cfg.to_json()
    train(cfg)
    assert cfg.to_json() == before and cfg.channels == 256
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["channels"] == 64  # the source checkpoint's width, recorded as what this run used
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert last["channels"] == 64 and last["norm"] == "gn" and last["config"]["channels"] == 64
