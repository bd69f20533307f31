"""The keypoint loss against torchvision's `keypointrcnn_loss` (alone, and inside the whole model with the
same weights and deterministic sampling), and a few SGD steps of a keypoint model that must lower its loss."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models.detection.roi_heads import keypointrcnn_loss, keypoints_to_heatmap

from mrseg.model.keypoint_head import keypoint_loss, keypoint_targets
from mrseg.model.zoo import build_model
from tests.model.conftest import KEEP_EVERY_SAMPLE

pytestmark = pytest.mark.usefixtures("one_thread")

PHOTO = Path(__file__).resolve().parents[1] / "assets" / "nuts" / "images" / "3.jpg"  # 800x600
LOSS_NAMES = ("loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_keypoint")


def _rois_and_keypoints(generator: torch.Generator, n: int, k: int = 17) -> tuple[torch.Tensor, torch.Tensor]:
    """n boxes and k keypoints each: most inside their box, some outside, some on the right / bottom edge,
    visibility 0, 1 or 2."""
    xy0 = torch.rand(n, 2, generator=generator) * 100
    wh = 5 + torch.rand(n, 2, generator=generator) * 80
    boxes = torch.cat([xy0, xy0 + wh], dim=1)
    frac = torch.rand(n, k, 2, generator=generator) * 1.3 - 0.15  # about 20% fall outside the box
    xy = xy0[:, None] + frac * wh[:, None]
    xy[:, 0, 0] = boxes[:, 2]  # exactly on the right edge
    xy[:, 1, 1] = boxes[:, 3]  # exactly on the bottom edge
    vis = torch.randint(0, 3, (n, k), generator=generator).float()
    return boxes, torch.cat([xy, vis[..., None]], dim=-1)


def test_heatmap_targets_are_torchvisions():
    boxes, keypoints = _rois_and_keypoints(torch.Generator().manual_seed(0), 40)
    cells, valid = keypoint_targets(keypoints, boxes, 56)
    tv_cells, tv_valid = keypoints_to_heatmap(keypoints, boxes, 56)
    assert torch.equal(valid, tv_valid.bool()) and torch.equal(cells, tv_cells)
    assert valid.any() and not valid.all()
    assert (cells[:, 0][valid[:, 0]] % 56 == 55).all()  # the right edge maps to the last column


def test_keypoint_loss_matches_torchvisions_on_a_fixed_batch():
    generator = torch.Generator().manual_seed(1)
    per_image = [_rois_and_keypoints(generator, n) for n in (7, 0, 12)]
    logits = torch.randn(19, 17, 56, 56, generator=generator, requires_grad=True)
    # torchvision takes ground truth per image and the matched index of each RoI
    gt = [kp.flip(0) for _, kp in per_image]
    matched = [torch.arange(len(kp)).flip(0) for _, kp in per_image]
    expected = keypointrcnn_loss(logits, [b for b, _ in per_image], gt, matched)
    got = keypoint_loss(logits, torch.cat([kp for _, kp in per_image]), torch.cat([b for b, _ in per_image]))
    assert expected.item() > 0
    assert abs(got.item() - expected.item()) <= 1e-6 * expected.item()
    (grad,) = torch.autograd.grad(got, logits)
    (tv_grad,) = torch.autograd.grad(expected, logits)
    assert torch.allclose(grad, tv_grad, atol=1e-9)


def test_no_valid_keypoint_gives_a_zero_loss_that_still_backpropagates():
    boxes, keypoints = _rois_and_keypoints(torch.Generator().manual_seed(2), 3)
    keypoints[..., 2] = 0
    logits = torch.randn(3, 17, 56, 56, requires_grad=True)
    loss = keypoint_loss(logits, keypoints, boxes)
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad is not None and float(logits.grad.abs().sum()) == 0.0


def _batch(generator: torch.Generator):
    """A real photograph, downscaled, with hand-placed people: boxes and 17 keypoints each."""
    photo = np.asarray(Image.open(PHOTO).convert("RGB"))[::4, ::4]
    image = torch.from_numpy(photo.copy()).permute(2, 0, 1).float() / 255
    boxes = torch.tensor([[20.0, 10.0, 90.0, 140.0], [100.0, 30.0, 180.0, 120.0], [60.0, 60.0, 130.0, 148.0]])
    wh = boxes[:, 2:] - boxes[:, :2]
    xy = boxes[:, None, :2] + torch.rand(3, 17, 2, generator=generator) * wh[:, None]
    vis = torch.randint(0, 3, (3, 17), generator=generator).float()
    target = {
        "boxes": boxes,
        "labels": torch.ones(3, dtype=torch.int64),
        "keypoints": torch.cat([xy, vis[..., None]], -1),
    }
    return [image], [target]


def test_model_losses_match_torchvision(torchvision_detector, ours_from, deterministic_sampling):
    tv_model = torchvision_detector("keypoint", seed=3, min_size=160, max_size=256)
    sampling = {**KEEP_EVERY_SAMPLE, "rpn_post_nms_top_n_train": 30}  # a lighter second stage
    ours = ours_from(tv_model, "r50-fpn-kp", min_size=160, max_size=256, **sampling)
    deterministic_sampling(tv_model, post_nms_top_n=30)
    images, targets = _batch(torch.Generator().manual_seed(4))
    tv_model.train()
    ours.train()
    expected = tv_model(images, [dict(t) for t in targets])
    got = ours(images, [dict(t) for t in targets])
    assert set(got) == set(expected) == set(LOSS_NAMES)
    diffs = {k: abs(float(got[k].detach()) - float(expected[k].detach())) for k in LOSS_NAMES}
    print(f"keypoint model loss diffs: {diffs}")
    for k in LOSS_NAMES:
        assert float(expected[k].detach()) > 0
        assert diffs[k] <= 1e-4 * max(1.0, abs(float(expected[k].detach()))), k
    got["loss_keypoint"].backward()
    assert ours.roi_heads.keypoint_head.deconv.weight.grad.abs().sum() > 0
    assert ours.roi_heads.keypoint_head.convs[0].conv.weight.grad.abs().sum() > 0


def test_sgd_steps_lower_the_keypoint_loss():
    torch.manual_seed(0)
    images, targets = _batch(torch.Generator().manual_seed(5))
    model = build_model("r18-fpn-kp", 1, min_size=128, max_size=192, rpn_post_nms_top_n_train=50,
                        box_batch_size_per_image=16).train()  # fmt: skip
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.005, momentum=0.9)
    totals, keypoint = [], []
    for _ in range(8):
        losses = model(images, targets)
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        totals.append(total.item())
        keypoint.append(losses["loss_keypoint"].item())
    print("total / keypoint loss per step:", [round(t, 3) for t in totals], [round(k, 3) for k in keypoint])
    assert all(np.isfinite(totals))
    # Sampling draws other RoIs each step, so single steps are noisy: compare the first and last three.
    assert np.mean(totals[-3:]) < 0.9 * np.mean(totals[:3]) and np.mean(keypoint[-3:]) < np.mean(keypoint[:3])


def test_training_needs_keypoints_of_the_right_shape():
    model = build_model("r18-fpn-kp", 1, min_size=64, max_size=96).train()
    image = torch.rand(3, 64, 80)
    good = {"boxes": torch.tensor([[1.0, 2.0, 30.0, 40.0]]), "labels": torch.tensor([1])}
    with pytest.raises(ValueError, match="target 0 has no 'keypoints'"):
        model([image], [good])
    with pytest.raises(ValueError, match=r"keypoints must be float \[N, P, 3\]"):
        model([image], [{**good, "keypoints": torch.zeros(2, 17, 3)}])
    losses = model([image], [{**good, "keypoints": torch.zeros(1, 17, 3)}])  # no mask needed, none labelled
    assert "loss_mask" not in losses and losses["loss_keypoint"].item() == 0.0
