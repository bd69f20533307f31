"""scratch_init: frozen-BN calibration (every FrozenBatchNorm2d then normalises its input on the calibration
photos, as torch's BatchNorm2d does with batch statistics in training mode) and the detectron2-style
re-initialisation of the class-specific output layers. Real photos (tests/assets/nuts) shrunk to 96x72."""

from __future__ import annotations

import cv2
import pytest
import torch
from torch import nn
from torchvision.models import resnet18
from torchvision.ops import FrozenBatchNorm2d

from mrseg.engine.train.scratch_init import PREDICTOR_STD, calibrate_frozen_bn, init_predictors
from mrseg.model.zoo import build_model

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/engine/conftest.py


@pytest.fixture(scope="module")
def photos(nuts_images) -> list[torch.Tensor]:
    """4 real photos as float [3, 72, 96] in 0..1."""
    out = []
    for p in nuts_images[:4]:
        rgb = cv2.cvtColor(cv2.resize(cv2.imread(str(p)), (96, 72), interpolation=cv2.INTER_AREA),
                           cv2.COLOR_BGR2RGB)  # fmt: skip
        out.append(torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)
    return out


class ListInput(nn.Module):
    """A torchvision ResNet-18 that takes a list of [3, H, W] images, as calibrate_frozen_bn calls it."""

    def __init__(self, norm_layer):
        super().__init__()
        self.net = resnet18(num_classes=10, norm_layer=norm_layer)

    def forward(self, images: list[torch.Tensor]) -> torch.Tensor:
        return self.net(torch.stack(images))


def bn_outputs(model: nn.Module, run) -> dict[str, torch.Tensor]:
    """The output of every FrozenBatchNorm2d of `model` during `run()` (copied: an in-place ReLU follows)."""
    out = {}

    def keep(name: str):
        return lambda mod, args, y: out.__setitem__(name, y.clone())

    frozen = [(name, m) for name, m in model.named_modules() if isinstance(m, FrozenBatchNorm2d)]
    handles = [m.register_forward_hook(keep(name)) for name, m in frozen]
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    return out


def assert_normalised(outputs: dict[str, torch.Tensor]) -> None:
    for name, y in outputs.items():
        mean, var = y.mean(dim=(0, 2, 3)), y.var(dim=(0, 2, 3))
        assert mean.abs().max() < 1e-4, name
        assert (var - 1).abs().max() < 0.02, name  # var / (var + eps): a little under 1 for small vars


def test_calibrated_frozen_bns_output_zero_mean_unit_variance_on_the_photos(photos):
    torch.manual_seed(0)
    model = ListInput(FrozenBatchNorm2d)
    before = bn_outputs(model, lambda: model(photos))
    with pytest.raises(AssertionError):  # identity statistics: not normalised to begin with
        assert_normalised(before)
    model.train()
    assert calibrate_frozen_bn(model, photos) == len(before) == 20
    assert model.training  # its mode is given back
    assert_normalised(bn_outputs(model, lambda: model(photos)))


def test_calibration_sets_the_statistics_batchnorm_measures_in_training_mode(photos):
    """torch's BatchNorm2d in training mode normalises each layer with its input's batch statistics, in
    forward order, and records them (momentum None, one batch: the statistics themselves). It normalises
    with the biased variance where a frozen BN uses the recorded unbiased one: a few % apart here."""
    torch.manual_seed(0)
    frozen = ListInput(FrozenBatchNorm2d)
    bn = ListInput(lambda c: nn.BatchNorm2d(c, momentum=None))
    bn.load_state_dict(frozen.state_dict(), strict=False)  # the same convs; BNs at identity either way
    with torch.no_grad():
        bn.train()(photos)
    calibrate_frozen_bn(frozen, photos)
    bns = dict(bn.named_modules())
    for name, m in frozen.named_modules():
        if isinstance(m, FrozenBatchNorm2d):
            ref = bns[name]
            scale = ref.running_var.sqrt()
            torch.testing.assert_close(m.running_mean / scale, ref.running_mean / scale, rtol=0, atol=0.05)
            torch.testing.assert_close(m.running_var, ref.running_var, rtol=0.08, atol=1e-6)


def test_a_mask_rcnn_is_calibrated_through_its_transform_and_backbone_only(photos):
    torch.manual_seed(0)
    model = build_model("r18-fpn", 3, min_size=64, max_size=96).train()
    heads_ran = []
    for head in (model.rpn, model.roi_heads):
        head.register_forward_pre_hook(lambda mod, args: heads_ran.append(mod))
    n_frozen = sum(isinstance(m, FrozenBatchNorm2d) for m in model.modules())
    assert n_frozen > 0 and calibrate_frozen_bn(model, photos) == n_frozen
    assert heads_ran == [] and model.training
    model.eval()
    assert_normalised(bn_outputs(model, lambda: model.backbone(model.transform(photos)[0])))


def test_a_failed_calibration_leaves_no_hooks_behind(photos):
    torch.manual_seed(0)
    model = ListInput(FrozenBatchNorm2d).train()
    with pytest.raises(RuntimeError):
        calibrate_frozen_bn(model, [photos[0][:2]])  # 2 channels: the first conv refuses it
    assert model.training
    stats = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.eval()(photos)
    assert all(torch.equal(stats[k], v) for k, v in model.state_dict().items())


def predictor_layers(model: nn.Module) -> dict[str, nn.Module]:
    modules = dict(model.named_modules())
    return {name: modules[name] for name in PREDICTOR_STD if name in modules}


def test_predictors_start_normal_with_detectron2s_std_and_zero_bias():
    torch.manual_seed(0)
    model = build_model("r18-fpn", 3, min_size=64, max_size=96)
    layers = predictor_layers(model)
    assert set(layers) == {"roi_heads.box_predictor.cls_score", "roi_heads.box_predictor.bbox_pred",
                           "roi_heads.mask_head.predictor"}  # fmt: skip
    # detectron2: FastRCNNOutputLayers std 0.01 (scores), 0.001 (deltas); the mask predictor std 0.001
    assert [PREDICTOR_STD[n] for n in layers] == [0.01, 0.001, 0.001]
    with torch.no_grad():
        for layer in layers.values():
            layer.weight.fill_(1.0)
            layer.bias.fill_(1.0)
    assert sorted(init_predictors(model)) == sorted(layers)
    for name, layer in layers.items():
        w = layer.weight.detach().flatten()
        assert w.numel() >= 768
        assert float(w.std()) == pytest.approx(PREDICTOR_STD[name], rel=0.1), name
        assert abs(float(w.mean())) < 4 * PREDICTOR_STD[name] / w.numel() ** 0.5, name
        assert not layer.bias.any(), name


def test_only_the_layers_owning_the_given_keys_are_reinitialised():
    torch.manual_seed(0)
    model = build_model("r18-fpn", 3, min_size=64, max_size=96)
    with torch.no_grad():
        for layer in predictor_layers(model).values():
            layer.bias.fill_(1.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    only = ["roi_heads.mask_head.predictor.weight", "roi_heads.mask_head.predictor.bias"]
    assert init_predictors(model, only=only) == ["roi_heads.mask_head.predictor"]
    changed = {k for k, v in model.state_dict().items() if not torch.equal(before[k], v)}
    assert changed == set(only)
    # a key of a layer whose name merely starts like a predictor's is no reason to touch it
    assert init_predictors(model, only=["roi_heads.box_predictor.cls_score_extra.weight"]) == []


def test_a_model_without_a_mask_head_gets_its_box_predictors_only():
    torch.manual_seed(0)
    model = build_model("r18-fpn-box", 3, min_size=64, max_size=96)
    assert sorted(init_predictors(model)) == ["roi_heads.box_predictor.bbox_pred",
                                              "roi_heads.box_predictor.cls_score"]  # fmt: skip
