"""The checkpoint layout: what make_checkpoint writes, what read_checkpoint accepts and rejects."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from mrseg.model.checkpoint_format import (
    FORMAT,
    CheckpointFormatError,
    is_checkpoint,
    make_checkpoint,
    model_shape,
    read_checkpoint,
)

CLASSES = [{"id": 3, "name": "fig"}]


def _tiny() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 1), FrozenBatchNorm2d(4, eps=0.0))


def test_written_checkpoint_reads_back_and_survives_weights_only_loading(tmp_path):
    model = _tiny()
    ckpt = make_checkpoint(model, arch="r18-fpn", classes=CLASSES, min_size=96, max_size=128, norm="gn",
                           anchor_sizes=(8, 16, 32, 64, 128), channels=64, iteration=7)  # fmt: skip
    torch.save(ckpt, tmp_path / "c.pt")
    obj = torch.load(tmp_path / "c.pt", weights_only=True)
    assert is_checkpoint(obj) and obj["format"] == FORMAT and obj["iteration"] == 7
    read = read_checkpoint(obj, "c.pt")
    assert read.arch == "r18-fpn" and read.classes == CLASSES
    assert read.build_kwargs == {"min_size": 96, "max_size": 128, "frozen_bn_eps": 0.0, "norm": "gn",
                                 "anchor_sizes": (8, 16, 32, 64, 128), "channels": 64}  # fmt: skip
    assert read.state_dict.keys() == model.state_dict().keys()
    shape = model_shape(tmp_path / "c.pt")
    assert shape == {"norm": "gn", "anchor_sizes": [8, 16, 32, 64, 128], "channels": 64}


def test_an_old_checkpoint_gets_the_defaults():
    old = {"format": FORMAT, "version": 1, "arch": "r50-fpn", "classes": CLASSES, "model": {}}
    kwargs = read_checkpoint(old).build_kwargs
    assert kwargs["min_size"] == 800 and kwargs["norm"] is None and kwargs["channels"] == 256


@pytest.mark.parametrize(
    "change, message",
    [
        ({"arch": None}, "no arch"),
        ({"classes": [{"name": "fig"}]}, "classes must be"),
        ({"model": None}, "no model state dict"),
        ({"anchor_sizes": [8, 16]}, "5 sizes"),
    ],
)
def test_broken_fields_name_the_file(change, message):
    ckpt = {"format": FORMAT, "arch": "r18-fpn", "classes": CLASSES, "model": {}, **change}
    with pytest.raises(CheckpointFormatError, match=f"broken.pt: .*{message}"):
        read_checkpoint(ckpt, "broken.pt")


def test_model_shape_ignores_what_is_not_a_checkpoint(tmp_path):
    torch.save({"w": torch.zeros(1)}, tmp_path / "sd.pt")
    (tmp_path / "junk.pt").write_bytes(b"not torch")
    assert model_shape(tmp_path / "sd.pt") == model_shape(tmp_path / "junk.pt") == {}
    assert model_shape("coco-r50-fpn") == {} and not is_checkpoint([FORMAT])
