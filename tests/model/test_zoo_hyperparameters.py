"""build_model's training hyperparameters reach the modules at construction (nobody patches a built model)."""

from __future__ import annotations

import torch

from mrseg.model.zoo import build_model


def _proposals(model, mode: str) -> list[torch.Tensor]:
    """RPN proposals per image for one random 64x64 image (train mode needs a target)."""
    model.train(mode == "train")
    image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))
    target = {"boxes": torch.tensor([[8.0, 8.0, 40.0, 40.0]]), "labels": torch.tensor([1]),
              "masks": torch.zeros(1, 64, 64, dtype=torch.uint8)}  # fmt: skip
    batch, sizes, targets = model.transform([image], [target] if mode == "train" else None)
    with torch.no_grad():
        proposals, _ = model.rpn(model.backbone(batch), sizes, tuple(batch.shape[-2:]), targets)
    return proposals


def test_rpn_top_n_and_roi_batch_are_constructor_arguments():
    torch.manual_seed(0)
    model = build_model(
        "r18-fpn",
        2,
        min_size=64,
        max_size=64,
        rpn_pre_nms_top_n_train=30,
        rpn_post_nms_top_n_train=7,
        rpn_post_nms_top_n_test=3,
        box_batch_size_per_image=5,
    )
    assert 0 < len(_proposals(model, "train")[0]) <= 7
    assert 0 < len(_proposals(model, "eval")[0]) <= 3
    # RoI sampling: 200 random proposals around one object -> at most 5 RoIs per image
    boxes = torch.rand(200, 2) * 40
    proposals = [torch.cat([boxes, boxes + 20], dim=1)]
    target = {"boxes": torch.tensor([[8.0, 8.0, 40.0, 40.0]]), "labels": torch.tensor([1])}
    sampled, labels, _, _ = model.roi_heads.sample_proposals(proposals, [target])
    assert len(sampled[0]) == 5 and (labels[0] > 0).any()


def test_defaults_are_the_papers():
    model = build_model("r18-fpn", 2)
    assert model.rpn.pre_nms_top_n == {"train": 2000, "test": 1000}
    assert model.rpn.post_nms_top_n == {"train": 2000, "test": 1000}
    assert model.roi_heads.sampler.batch_size == 512
