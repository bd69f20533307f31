import pytest
import torch

from mrseg.model.matcher import BELOW_LOW_THRESHOLD, BETWEEN_THRESHOLDS, Matcher


def test_thresholds_hand_computed():
    # 2 ground truths x 5 predictions
    iou = torch.tensor([[0.9, 0.5, 0.1, 0.0, 0.71], [0.2, 0.6, 0.25, 0.3, 0.7]])
    m = Matcher(0.7, 0.3)(iou)
    assert m.tolist() == [0, BETWEEN_THRESHOLDS, BELOW_LOW_THRESHOLD, BETWEEN_THRESHOLDS, 0]


def test_low_quality_matches_give_every_gt_its_best_prediction():
    iou = torch.tensor([[0.9, 0.5, 0.1, 0.0], [0.2, 0.6, 0.25, 0.6]])
    plain = Matcher(0.7, 0.3)(iou)
    assert plain.tolist() == [0, BETWEEN_THRESHOLDS, BELOW_LOW_THRESHOLD, BETWEEN_THRESHOLDS]
    low = Matcher(0.7, 0.3, allow_low_quality_matches=True)(iou)
    # gt 1's best IoU 0.6 is tied by predictions 1 and 3: both are matched to their own best gt (1)
    assert low.tolist() == [0, 1, BELOW_LOW_THRESHOLD, 1]


def test_equal_thresholds_have_no_ignored_band():
    iou = torch.tensor([[0.5, 0.49, 0.8]])
    assert Matcher(0.5, 0.5)(iou).tolist() == [0, BELOW_LOW_THRESHOLD, 0]


def test_errors():
    with pytest.raises(ValueError, match="no ground-truth"):
        Matcher(0.7, 0.3)(torch.zeros(0, 4))
    with pytest.raises(ValueError, match="low threshold"):
        Matcher(0.3, 0.7)
