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


def test_images_that_do_not_fit_are_shrunk_onto_the_canvas(model, eager, picture):
    portrait = picture(200, 100, seed=4)  # the model would resize it to 160 x 80: taller than 128
    (got,) = eager(model)([portrait])
    assert got["masks"].shape[-2:] == (200, 100)
    assert (got["boxes"][:, 2] <= 100).all() and (got["boxes"][:, 3] <= 200).all()
    assert len(got["scores"]) > 0
