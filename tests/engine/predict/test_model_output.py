"""`detection_arrays`: the score and class filters, and masks pasted as torchvision pastes them."""

import numpy as np
import pytest
import torch
from torchvision.models.detection.roi_heads import paste_masks_in_image

from mrseg.engine.predict.model_output import detection_arrays
from mrseg.outputs.mask_crop import CroppedMasks


def _output(n=6, size=(37, 53), seed=0):
    g = torch.Generator().manual_seed(seed)
    h, w = size
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w - 8.0, h - 8.0])
    wh = 1.0 + torch.rand(n, 2, generator=g) * 20
    boxes = torch.cat([xy, xy + wh], 1)
    return {
        "boxes": boxes,
        "scores": torch.linspace(0.95, 0.2, n),
        "labels": torch.tensor([1, 2, 3, 1, 2, 3])[:n],
        "mask_probs": torch.rand(n, 1, 28, 28, generator=g),
    }


@pytest.mark.parametrize("crops", [True, False])
def test_masks_are_torchvisions_paste_thresholded(crops):
    o = _output()
    got = detection_arrays(o, (37, 53), score=0.0, keep_labels=None, mask_threshold=0.5, crops=crops)
    assert isinstance(got["masks"], CroppedMasks) == crops
    want = paste_masks_in_image(o["mask_probs"], o["boxes"], (37, 53))[:, 0] > 0.5
    np.testing.assert_array_equal(np.asarray(got["masks"]), want.numpy())
    np.testing.assert_array_equal(got["boxes"], o["boxes"].numpy())


def test_score_and_class_filters_keep_the_same_rows_of_every_field():
    o = _output()
    got = detection_arrays(o, (37, 53), score=0.5, keep_labels={2, 3}, mask_threshold=0.5, crops=False)
    keep = (o["scores"] >= 0.5) & torch.isin(o["labels"], torch.tensor([2, 3]))
    assert 0 < int(keep.sum()) < len(keep)
    np.testing.assert_array_equal(got["scores"], o["scores"][keep].numpy())
    np.testing.assert_array_equal(got["labels"], o["labels"][keep].numpy())
    want = paste_masks_in_image(o["mask_probs"][keep], o["boxes"][keep], (37, 53))[:, 0] > 0.5
    np.testing.assert_array_equal(got["masks"], want.numpy())
    assert got["keypoints"] is None


def test_keypoints_and_full_size_masks_pass_through_filtered():
    o = _output(n=3)
    del o["mask_probs"]
    o["masks"] = torch.rand(3, 1, 37, 53)
    o["keypoints"] = torch.rand(3, 17, 3)
    o["keypoints_scores"] = torch.rand(3, 17)
    got = detection_arrays(o, (37, 53), score=0.5, keep_labels=None, mask_threshold=0.5, crops=False)
    keep = o["scores"] >= 0.5
    np.testing.assert_array_equal(got["masks"], (o["masks"][keep, 0] > 0.5).numpy())
    np.testing.assert_array_equal(got["keypoints"], o["keypoints"][keep].numpy())
    np.testing.assert_array_equal(got["keypoint_scores"], o["keypoints_scores"][keep].numpy())
