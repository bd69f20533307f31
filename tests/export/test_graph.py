"""mrseg.export.graph + steps: the traced part plus the pre-/post-step reproduce MaskRCNN.forward exactly."""

import pytest
import torch


# (128, 160) fills the canvas as it is; (64, 80) is upscaled x2 onto it by the same resize as the model's.
@pytest.mark.parametrize("size", [(128, 160), (64, 80)])
def test_same_detections_as_the_model(model, eager, picture, canvas, size):
    assert canvas == (128, 160)
    image = picture(*size, seed=3)
    with torch.no_grad():
        (expected,) = model([image])
    (got,) = eager(model)([image])
    assert len(expected["scores"]) == 20  # the model's cap: the comparison covers many detections
    for key in ("boxes", "scores", "labels", "masks"):
        assert got[key].dtype == expected[key].dtype
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0)


def test_batch_of_two_equals_one_at_a_time(model, eager, picture, canvas):
    images = [picture(*canvas, seed=s) for s in (1, 2, 3)]
    one = eager(model, batch=1)(images)
    two = eager(model, batch=2)(images)  # two calls: a full batch, then one image and an empty slot
    assert len(two) == 3
    for a, b in zip(one, two, strict=True):
        for key in ("boxes", "scores", "labels", "masks"):
            torch.testing.assert_close(a[key], b[key])


def test_any_size_is_padded_like_the_model_not_onto_the_trace_size(model, eager, picture):
    portrait = picture(200, 100, seed=4)  # resized to 160 x 80: taller than the 128 x 160 it was traced at
    with torch.no_grad():
        (expected,) = model([portrait])
    (got,) = eager(model)([portrait])
    for key in ("boxes", "scores", "labels", "masks"):
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0)


def test_a_fixed_canvas_file_still_runs(model, picture):
    """Files of format 1 (written before any size ran) pad every batch onto their canvas and shrink what
    does not fit, as they were traced."""
    from mrseg.export.spec import GraphSpec
    from mrseg.export.steps import preprocess

    spec = GraphSpec.from_json(
        '{"height": 128, "width": 160, "batch": 1, "min_size": 128, "max_size": 160, '
        '"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}'
    )
    assert not spec.dynamic
    canvas, sizes = preprocess([picture(200, 100, seed=4)], spec)
    assert canvas.shape == (1, 3, 128, 160) and sizes.tolist() == [[128.0, 64.0]]
