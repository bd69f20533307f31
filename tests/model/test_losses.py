"""Training losses of our Mask R-CNN against torchvision's with the same weights and deterministic sampling,
and a few SGD steps that must lower the loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mrseg.model.zoo import build_model
from tests.model.conftest import KEEP_EVERY_SAMPLE

skimage_data = pytest.importorskip("skimage.data", reason="scikit-image provides the test photograph")

LOSS_NAMES = ("loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask")


def _batch():
    """Two real photographs (downscaled) with hand-placed objects: boxes and elliptical masks."""
    images, targets = [], []
    for name, objects in (
        ("chelsea", [((40, 30, 200, 180), 17), ((230, 60, 300, 150), 3)]),
        ("coffee", [((60, 20, 250, 170), 47), ((10, 150, 120, 198), 1), ((200, 100, 290, 190), 51)]),
    ):
        photo = np.ascontiguousarray(getattr(skimage_data, name)()[::2, ::2])
        image = torch.from_numpy(photo).permute(2, 0, 1).float() / 255
        h, w = image.shape[-2:]
        yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        boxes, masks, labels = [], [], []
        for (x0, y0, x1, y1), label in objects:
            cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
            masks.append((((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1).to(torch.uint8))
            boxes.append([x0, y0, x1, y1])
            labels.append(label)
        images.append(image)
        targets.append(
            {
                "boxes": torch.tensor(boxes, dtype=torch.float32),
                "labels": torch.tensor(labels),
                "masks": torch.stack(masks),
            }
        )
    return images, targets


@pytest.mark.parametrize("depth,v2,arch", [(18, False, "r18-fpn"), (50, True, "r50-fpn-v2")])
def test_losses_match_torchvision(depth, v2, arch, torchvision_maskrcnn, ours_from, deterministic_sampling):
    tv_model = torchvision_maskrcnn(depth, v2=v2, seed=3, min_size=160, max_size=256)
    ours = ours_from(tv_model, arch, min_size=160, max_size=256, **KEEP_EVERY_SAMPLE)
    deterministic_sampling(tv_model)
    images, targets = _batch()
    tv_model.train()
    ours.train()
    expected = tv_model(images, [dict(t) for t in targets])
    got = ours(images, [dict(t) for t in targets])
    assert set(got) == set(LOSS_NAMES)
    diffs = {k: abs(float(got[k].detach()) - float(expected[k].detach())) for k in LOSS_NAMES}
    print(f"{arch} loss diffs: {diffs}")
    for k in LOSS_NAMES:
        assert float(expected[k].detach()) > 0
        assert diffs[k] <= 1e-4 * max(1.0, abs(float(expected[k].detach()))), k
    # gradients flow into every trainable part
    sum(got.values()).backward()
    assert ours.roi_heads.mask_head.predictor.weight.grad.abs().sum() > 0
    assert ours.rpn.head.objectness_logits.weight.grad.abs().sum() > 0
    assert ours.backbone.bottom_up.res5[0].conv1.weight.grad.abs().sum() > 0
    assert ours.backbone.bottom_up.stem.conv1.weight.grad is None  # frozen (freeze_at=2)


def test_sgd_steps_lower_the_loss():
    torch.manual_seed(0)
    images, targets = _batch()
    # a lighter second stage keeps the test quick
    model = build_model(
        "r18-fpn", 60, min_size=160, max_size=256, rpn_post_nms_top_n_train=100, box_batch_size_per_image=32
    ).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    totals = []
    for _ in range(8):
        losses = model(images[:1], targets[:1])
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        totals.append(total.item())
    print("total loss per step:", [round(t, 3) for t in totals])
    assert all(np.isfinite(totals))
    assert totals[-1] < 0.7 * totals[0]


def test_training_needs_well_formed_targets():
    model = build_model("r18-fpn", 3, min_size=64, max_size=96).train()
    image = torch.rand(3, 64, 80)
    good = {
        "boxes": torch.tensor([[1.0, 2.0, 30.0, 40.0]]),
        "labels": torch.tensor([1]),
        "masks": torch.ones(1, 64, 80, dtype=torch.uint8),
    }
    with pytest.raises(ValueError, match="targets are required"):
        model([image])
    with pytest.raises(ValueError, match="target 0 has no 'masks'"):
        model([image], [{"boxes": good["boxes"], "labels": good["labels"]}])
    with pytest.raises(ValueError, match="target 0 box 0 .* has no area"):
        model([image], [{**good, "boxes": torch.tensor([[5.0, 5.0, 5.0, 9.0]])}])
    with pytest.raises(ValueError, match="labels must be int64"):
        model([image], [{**good, "labels": torch.tensor([1], dtype=torch.int32)}])


def test_image_without_objects_trains():
    model = build_model("r18-fpn", 3, min_size=64, max_size=96).train()
    empty = {
        "boxes": torch.zeros(0, 4),
        "labels": torch.zeros(0, dtype=torch.int64),
        "masks": torch.zeros(0, 64, 80, dtype=torch.uint8),
    }
    losses = model([torch.rand(3, 64, 80)], [empty])
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_mask"].item() == 0.0 and losses["loss_box_reg"].item() == 0.0
    sum(losses.values()).backward()
