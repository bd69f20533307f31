"""Zoo entries, arch names and checkpoints of the keypoint and box-only models: each zoo entry is what
torchvision's builder makes of the same weights file (URL, classes, FrozenBatchNorm eps, resize), and every
way of loading a model (zoo name, checkpoint, bare state dict) builds the heads it has."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import detection as tv_detection
from torchvision.models._api import WeightsEnum
from torchvision.ops import FrozenBatchNorm2d

import mrseg.model.zoo as zoo
from mrseg.model.checkpoint_format import make_checkpoint
from mrseg.model.coco_classes import COCO_PERSON_KEYPOINT_NAMES, coco_label_classes, coco_person_classes
from mrseg.model.convert import mrseg_to_torchvision
from mrseg.model.zoo import ARCH_NAMES, WEIGHTS, WeightsError, build_model, load_model, split_arch

# zoo name -> (torchvision builder, its weights enum member)
TORCHVISION = {
    "coco-kp-r50-fpn": ("keypointrcnn_resnet50_fpn", "KeypointRCNN_ResNet50_FPN_Weights", "COCO_V1"),
    "coco-kp-r50-fpn-legacy": (
        "keypointrcnn_resnet50_fpn",
        "KeypointRCNN_ResNet50_FPN_Weights",
        "COCO_LEGACY",
    ),
    "coco-frcnn-r50-fpn": ("fasterrcnn_resnet50_fpn", "FasterRCNN_ResNet50_FPN_Weights", "COCO_V1"),
    "coco-frcnn-r50-fpn-v2": ("fasterrcnn_resnet50_fpn_v2", "FasterRCNN_ResNet50_FPN_V2_Weights", "COCO_V1"),
}


def _frozen_eps(model) -> set[float]:
    return {float(m.eps) for m in model.modules() if isinstance(m, FrozenBatchNorm2d)}


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_zoo_entry_is_torchvisions_model_of_that_file(name, monkeypatch, tmp_path):
    builder, enum, member = TORCHVISION[name]
    weights = getattr(getattr(tv_detection, enum), member)
    spec = WEIGHTS[name]
    assert spec.url == weights.url
    # torchvision's builder with these weights, the file replaced by seeded random weights of its shape
    torch.manual_seed(0)
    random = getattr(tv_detection, builder)(weights=None, weights_backbone=None,
                                             num_classes=len(weights.meta["categories"]))  # fmt: skip
    own_keys = set(getattr(tv_detection, builder)(weights=None, weights_backbone=None).state_dict())
    state = {k: v for k, v in random.state_dict().items() if k in own_keys}
    if not split_arch(spec.arch)[0].endswith("v2"):  # frozen BN there: no batch counters
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    monkeypatch.setattr(WeightsEnum, "get_state_dict", lambda self, *a, **k: state)
    tv_model = getattr(tv_detection, builder)(weights=weights)

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(state, cache / spec.url.rsplit("/", 1)[1])  # the cached download, as fetch finds it
    ours, info = load_model(name)
    assert info.arch == spec.arch and ours.heads == split_arch(spec.arch)[1]
    assert _frozen_eps(ours) == _frozen_eps(tv_model)  # {0.0} for COCO_V1 v1 files, {1e-5} legacy, {} v2
    assert ours.num_classes == len(weights.meta["categories"]) - 1 == len(info.classes)
    assert ours.transform.min_size == tuple(tv_model.transform.min_size)
    assert ours.transform.max_size == tv_model.transform.max_size
    assert ours.roi_heads.score_thresh == tv_model.roi_heads.score_thresh
    assert ours.roi_heads.detections_per_img == tv_model.roi_heads.detections_per_img
    if "keypoints" in name or "kp" in name:
        assert info.classes == coco_person_classes()
        assert info.classes[0]["keypoints"] == list(weights.meta["keypoint_names"])
        assert ours.roi_heads.keypoint_head.num_keypoints == len(weights.meta["keypoint_names"])
    else:
        assert info.classes == coco_label_classes()
        assert [c["name"] for c in info.classes] == list(weights.meta["categories"])[1:]
    converted = mrseg_to_torchvision(ours.state_dict())
    assert converted.keys() == state.keys()
    assert all(torch.equal(converted[k], state[k]) for k in state)


def test_every_arch_name_builds_its_heads():
    assert len(ARCH_NAMES) == len(set(ARCH_NAMES)) == 4 * len(zoo.ARCHS)
    for arch in ARCH_NAMES:
        if not arch.startswith("r18-fpn"):
            continue  # one layout is enough to build; the names of the others are checked below
        model = build_model(arch, 3)
        assert model.heads == split_arch(arch)[1]
        assert (model.roi_heads.mask_head is None) == ("mask" not in model.heads)
        assert (model.roi_heads.keypoint_head is None) == ("keypoint" not in model.heads)
    assert split_arch("r50-fpn-v2-mask-kp") == ("r50-fpn-v2", ("mask", "keypoint"))
    assert split_arch("r50-fpn-v2") == ("r50-fpn-v2", ("mask",))
    assert build_model("r18-fpn-kp", 1).transform.min_size == zoo.KEYPOINT_TRAIN_MIN_SIZES
    with pytest.raises(ValueError, match="unknown arch 'r50-fpn-pose'.*r50-fpn-kp"):
        build_model("r50-fpn-pose", 1)


def test_checkpoint_says_its_heads_and_load_model_builds_them(tmp_path):
    torch.manual_seed(0)
    classes = coco_person_classes()
    model = build_model("r18-fpn-mask-kp", 1, min_size=96, max_size=128, num_keypoints=17)
    path = tmp_path / "best.pt"
    ckpt = make_checkpoint(model, arch="r18-fpn-mask-kp", classes=classes, min_size=96, max_size=128)
    assert ckpt["heads"] == ["mask", "keypoint"] and ckpt["num_keypoints"] == 17
    torch.save(ckpt, path)
    loaded, info = load_model(path)
    assert loaded.heads == ("mask", "keypoint") and info.heads == ("mask", "keypoint")
    assert info.classes[0]["keypoints"] == list(COCO_PERSON_KEYPOINT_NAMES)
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())

    box_only = build_model("r18-fpn-box", 2)
    torch.save(make_checkpoint(box_only, arch="r18-fpn-box", classes=[{"id": 1, "name": "a"}, {"id": 2,
               "name": "b"}], min_size=96, max_size=128), path)  # fmt: skip
    loaded, info = load_model(path)
    assert loaded.heads == () and info.heads == ()
    with torch.inference_mode():
        (out,) = loaded([torch.rand(3, 64, 80)])
    assert set(out) == {"boxes", "scores", "labels"}

    wrong = torch.load(path, weights_only=True)
    wrong["heads"] = ["keypoint"]
    torch.save(wrong, path)
    with pytest.raises(WeightsError, match="arch 'r18-fpn-box' has the heads \\[\\] but its heads key says"):
        load_model(path)


def test_bare_torchvision_keypoint_state_dict_loads_with_arch(tmp_path):
    torch.manual_seed(0)
    model = build_model("r18-fpn-kp", 1)
    path = tmp_path / "kp.pth"
    torch.save(mrseg_to_torchvision(model.state_dict()), path)
    loaded, info = load_model(path, arch="r18-fpn-kp")
    assert info.classes == coco_person_classes() and loaded.heads == ("keypoint",)
    assert torch.equal(
        loaded.roi_heads.keypoint_head.deconv.weight, model.roi_heads.keypoint_head.deconv.weight
    )
    with pytest.raises(WeightsError, match="missing keys: .*mask_head.*Check --arch"):
        load_model(path, arch="r18-fpn")
