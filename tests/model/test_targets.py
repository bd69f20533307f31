"""The training targets, computed for all images of a batch at once, against torchvision's per-image code on
random cases: RPN anchor labels and matched boxes (`RegionProposalNetwork.assign_targets_to_anchors`), RoI
labels and matched ground truths (`RoIHeads.assign_targets_to_proposals`), and the sampler's subsets."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.detection.roi_heads import RoIHeads as TVRoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.ops import box_iou

from mrseg.model.box_coder import BoxCoder
from mrseg.model.matcher import Matcher, box_iou_batched
from mrseg.model.roi_heads import RoIHeads
from mrseg.model.rpn import RPN
from mrseg.model.sampler import BalancedSampler


def _boxes(g: torch.Generator, n: int, size: float = 128.0) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=g) * size * 0.8
    wh = 4 + torch.rand(n, 2, generator=g) * size * 0.5
    return torch.cat([xy, xy + wh], dim=1)


def _targets(g: torch.Generator, counts: list[int]) -> list[dict[str, torch.Tensor]]:
    targets = []
    for n in counts:
        boxes = _boxes(g, n)
        if n >= 3:
            boxes[2] = boxes[0]  # a duplicated ground truth: ties between two rows
        targets.append({"boxes": boxes, "labels": torch.randint(1, 4, (n,), generator=g)})
    return targets


def _anchors(g: torch.Generator) -> torch.Tensor:
    # a grid of anchors like the generator's, plus random ones (some far outside the image)
    ys, xs = torch.meshgrid(torch.arange(0, 128, 8.0), torch.arange(0, 128, 8.0), indexing="ij")
    centres = torch.stack([xs.flatten(), ys.flatten()], dim=1)
    grid = [torch.cat([centres - s / 2, centres + s / 2], dim=1) for s in (16.0, 32.0, 64.0)]
    return torch.cat([*grid, _boxes(g, 200, 200.0) - 30])


CASES = [[3, 1, 5, 2], [0, 4], [0, 0, 0], [1], [7, 0, 1]]


@pytest.mark.parametrize("counts", CASES)
def test_box_iou_batched_is_box_iou_per_image(counts):
    g = torch.Generator().manual_seed(sum(counts))
    targets, anchors = _targets(g, counts), _anchors(g)
    for t in targets:
        assert torch.equal(box_iou_batched(t["boxes"], anchors), box_iou(t["boxes"], anchors))


@pytest.mark.parametrize("counts", CASES)
def test_rpn_anchor_targets_match_torchvision(counts):
    g = torch.Generator().manual_seed(len(counts) * 7 + sum(counts))
    targets, anchors = _targets(g, counts), _anchors(g)
    tv = RegionProposalNetwork(None, None, 0.7, 0.3, 256, 0.5, {}, {}, 0.7)
    tv_labels, tv_matched = tv.assign_targets_to_anchors([anchors] * len(targets), targets)
    ours = RPN(
        anchor_generator=None,
        head=None,
        matcher=Matcher(0.7, 0.3, allow_low_quality_matches=True),
        sampler=BalancedSampler(256, 0.5),
        box_coder=BoxCoder((1.0, 1.0, 1.0, 1.0)),
        pre_nms_top_n={},
        post_nms_top_n={},
    )
    labels, matched = ours.anchor_targets(anchors, targets)
    ours.max_batched_ious = 1  # one image at a time: the grouping for large inputs gives the same targets
    labels_grouped, matched_grouped = ours.anchor_targets(anchors, targets)
    assert torch.equal(labels_grouped, labels) and torch.equal(matched_grouped, matched)
    for i in range(len(targets)):
        assert torch.equal(labels[i], tv_labels[i]), i
        positive = tv_labels[i] == 1
        assert torch.equal(matched[i][positive], tv_matched[i][positive]), i
    assert (labels == 1).any() or sum(counts) == 0


@pytest.mark.parametrize("counts", CASES)
def test_roi_labels_and_matches_match_torchvision(counts):
    g = torch.Generator().manual_seed(100 + sum(counts))
    targets = _targets(g, counts)
    # proposals near the ground truths (positives and ignored ones) and elsewhere, a different count per image
    proposals = []
    for i, t in enumerate(targets):
        near = t["boxes"].repeat(3, 1) + torch.randn(3 * t["boxes"].shape[0], 4, generator=g) * 6
        near = torch.cat([near[:, :2], torch.maximum(near[:, 2:], near[:, :2] + 1)], dim=1)
        proposals.append(torch.cat([near, _boxes(g, 20 + 7 * i)]))
    tv = TVRoIHeads(None, None, None, 0.5, 0.5, 512, 0.25, None, 0.05, 0.5, 100)
    ours = RoIHeads(
        box_pooler=None,
        box_head=None,
        box_predictor=None,
        mask_pooler=None,
        mask_head=None,
        matcher=Matcher(0.5, 0.5, allow_low_quality_matches=False),
        sampler=BalancedSampler(10**9, 0.25),  # keeps every candidate: the assignment itself is compared
        box_coder=BoxCoder((10.0, 10.0, 5.0, 5.0)),
    )
    boxes, labels, matched, regression = ours.sample_proposals(proposals, targets)
    tv_props = [torch.cat([p, t["boxes"]]) for p, t in zip(proposals, targets, strict=True)]
    tv_matched, tv_labels = tv.assign_targets_to_proposals(
        tv_props, [t["boxes"] for t in targets], [t["labels"] for t in targets]
    )
    tv_coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    for i, t in enumerate(targets):
        keep = tv_labels[i] >= 0  # torchvision marks the ignored band -1, as we do
        assert torch.equal(boxes[i], tv_props[i][keep])
        assert torch.equal(labels[i], tv_labels[i][keep])
        if t["boxes"].numel():
            assert torch.equal(matched[i], tv_matched[i][keep])
            pos = labels[i] > 0
            expected = tv_coder.encode(t["boxes"][matched[i][pos]], boxes[i][pos])
            torch.testing.assert_close(regression[i][pos], expected, rtol=0, atol=0)
        else:
            assert (labels[i] == 0).all()


def test_sampler_rows_are_independent_uniform_subsets():
    torch.manual_seed(0)
    labels = torch.tensor([[1] * 6 + [0] * 30 + [-1] * 4, [2] * 2 + [0] * 3 + [-1] * 35, [-1] * 40])
    sampler = BalancedSampler(8, 0.5)
    pos_freq = torch.zeros(labels.shape)
    neg_freq = torch.zeros(labels.shape)
    draws = 3000
    for _ in range(draws):
        pos, neg = sampler(labels)
        assert pos.sum(1).tolist() == [4, 2, 0] and neg.sum(1).tolist() == [4, 3, 0]
        assert not (pos & neg).any() and (labels[pos] >= 1).all() and (labels[neg] == 0).all()
        pos_freq += pos
        neg_freq += neg
    # every candidate of row 0 equally likely: 4 of 6 positives, 4 of 30 negatives
    assert torch.allclose(pos_freq[0, :6] / draws, torch.full((6,), 4 / 6), atol=0.04)
    assert torch.allclose(neg_freq[0, 6:36] / draws, torch.full((30,), 4 / 30), atol=0.03)
    # a row sampled alone draws the same sizes as inside a batch
    pos, neg = sampler(labels[1])
    assert int(pos.sum()) == 2 and int(neg.sum()) == 3
