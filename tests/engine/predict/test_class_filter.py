"""resolve_class_filter: placeholder ("N/A") classes are never emitted and cannot be asked for; torchvision's
own COCO category list (the weights' metadata) is the oracle for which of the 91 labels are placeholders."""

from __future__ import annotations

import pytest
from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights

from mrseg.engine.predict.predictor import PredictError, resolve_class_filter
from mrseg.model.coco_classes import coco_label_classes, real_categories

TV_CATEGORIES = MaskRCNN_ResNet50_FPN_Weights.DEFAULT.meta["categories"]  # index = label = COCO id


def test_default_filter_keeps_exactly_torchvisions_named_labels():
    named = {i for i, n in enumerate(TV_CATEGORIES) if n not in ("N/A", "__background__")}
    assert resolve_class_filter(None, coco_label_classes()) == named
    real = real_categories(coco_label_classes())
    assert [(c["id"], c["name"]) for c in real] == [(i, TV_CATEGORIES[i]) for i in sorted(named)]


def test_no_placeholders_means_no_filter_and_names_ids_both_work():
    classes = [{"id": 5, "name": "date"}, {"id": 2, "name": "Fig"}]
    assert resolve_class_filter(None, classes) is None
    assert resolve_class_filter(["fig", " 5 ", ""], classes) == {1, 2}


@pytest.mark.parametrize("slot", [i for i, n in enumerate(TV_CATEGORIES) if n == "N/A"])
def test_placeholder_ids_are_refused_with_the_valid_names(slot):
    with pytest.raises(PredictError, match=rf"'{slot}' is an unused slot.*person \(1\)") as err:
        resolve_class_filter(["person", str(slot)], coco_label_classes())
    assert "N/A" not in str(err.value)


def test_placeholder_and_unknown_names_are_refused():
    with pytest.raises(PredictError, match="'n/a' is an unused slot"):
        resolve_class_filter(["n/a"], coco_label_classes())
    with pytest.raises(PredictError, match="'unicorn' is not a class of this model.*toothbrush \\(90\\)"):
        resolve_class_filter(["unicorn"], coco_label_classes())
    with pytest.raises(PredictError, match="'91' is not a class"):
        resolve_class_filter(["91"], coco_label_classes())
