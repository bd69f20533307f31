"""Keypoint R-CNN and Faster R-CNN exports: standard-op ONNX (run by onnxruntime) and TorchScript files that
give the PyTorch model's detections at any image size: boxes within 1e-2 px, scores within 1e-4, keypoints
within 0.5 px and keypoint scores within 1e-3; and what `mrseg predict --weights x.onnx` loads returns
keypoints."""

from __future__ import annotations

import onnx
import pytest
import torch

from mrseg.export import compare_detections, export_model, load_exported
from mrseg.model.coco_classes import coco_person_classes
from mrseg.model.zoo import ModelInfo, build_model

pytestmark = pytest.mark.usefixtures("one_thread")

HEIGHT, WIDTH = 128, 160
# (H, W): upscaled, portrait, and larger than max_size (downscaled)
SIZES = {"tiny 40x30": (30, 40), "portrait": (300, 120), "larger than max_size": (500, 900)}


def small(arch: str, seed: int = 0):
    """A seeded r18-fpn with `arch`'s heads: one class, 64-channel FPN (128-wide keypoint head), 20
    detections."""
    torch.manual_seed(seed)
    model = build_model(
        arch,
        1,
        min_size=HEIGHT,
        max_size=WIDTH,
        channels=64,
        rpn_post_nms_top_n_test=200,
        box_detections_per_img=20,
    )
    classes = coco_person_classes() if "kp" in arch else [{"id": 1, "name": "person"}]
    return model.eval(), ModelInfo(arch=arch, classes=classes, source="test")


def all_nodes(graph):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from all_nodes(attr.g)


@pytest.fixture(scope="module")
def keypoint_model():
    return small("r18-fpn-kp")


@pytest.fixture(scope="module")
def keypoint_onnx(tmp_path_factory, keypoint_model):
    model, info = keypoint_model
    out = tmp_path_factory.mktemp("kp") / "kp.onnx"
    return export_model(model=model, info=info, out=out, format="onnx", check_score=0.0)


def check_sizes(model, exported, picture) -> list:
    """The file against the PyTorch model itself on SIZES; returns the comparisons."""
    comparisons = []
    for name, (h, w) in SIZES.items():
        image = picture(h, w, seed=h + w)
        with torch.no_grad():
            (reference,) = model([image])
        (got,) = exported([image])
        c = compare_detections(reference, got, score=0.0)
        assert c.ok and c.matched == len(reference["scores"]) == 20, (name, c)
        if "keypoints" in reference:
            assert got["keypoints"].shape == reference["keypoints"].shape == (20, 17, 3)
            assert torch.equal(got["keypoints"][..., 2], reference["keypoints"][..., 2])  # visibility 1
        comparisons.append(c)
    return comparisons


def test_keypoint_onnx_uses_standard_ops_and_matches_the_model(keypoint_onnx, keypoint_model, picture):
    result = keypoint_onnx
    assert result.ok and result.comparisons[0].matched == 20
    proto = onnx.load(result.path)
    nodes = list(all_nodes(proto.graph))
    assert {n.domain for n in nodes} <= {"", "ai.onnx"}
    assert sum(n.op_type == "RoiAlign" for n in nodes) == 8  # 4 levels x (box, keypoint) poolers
    assert [o.name for o in proto.graph.output] == [
        "boxes", "scores", "labels", "keypoint_heatmaps", "image_index"
    ]  # fmt: skip
    exported, info = load_exported(result.path)
    assert info.arch == "r18-fpn-kp" and info.classes == coco_person_classes()
    check_sizes(keypoint_model[0], exported, picture)


def test_predict_runtime_returns_keypoints(keypoint_onnx, keypoint_model, picture):
    """mrseg.export.runtime.load_onnx (what `mrseg predict --weights x.onnx` loads) gives the model's output
    dict."""
    from mrseg.export.runtime import load_onnx

    exported = load_onnx(keypoint_onnx.path, "cpu")
    info = exported.info
    assert info.heads == ("keypoint",) and info.classes[0]["skeleton"]
    image = picture(96, 128, seed=3)
    (got,) = exported([image])
    with torch.no_grad():
        (reference,) = keypoint_model[0]([image])
    assert set(got) == set(reference) == {"boxes", "scores", "labels", "keypoints", "keypoints_scores"}
    assert got["keypoints"].dtype == got["keypoints_scores"].dtype == torch.float32


def test_keypoint_torchscript_matches_the_model(tmp_path, keypoint_model, picture):
    model, info = keypoint_model
    result = export_model(
        model=model, info=info, out=tmp_path / "kp.torchscript", format="torchscript", check_score=0.0
    )
    assert result.ok
    exported, _ = load_exported(result.path)
    check_sizes(model, exported, picture)


def test_box_only_onnx_has_no_mask_branch_and_matches_the_model(tmp_path, picture):
    model, info = small("r18-fpn-box")
    result = export_model(model=model, info=info, out=tmp_path / "box.onnx", check_score=0.0)
    assert result.ok
    proto = onnx.load(result.path)
    assert [o.name for o in proto.graph.output] == ["boxes", "scores", "labels", "image_index"]
    assert sum(n.op_type == "RoiAlign" for n in all_nodes(proto.graph)) == 4  # the box pooler only
    exported, _ = load_exported(result.path)
    (got,) = exported([picture(100, 140, seed=1)])
    assert set(got) == {"boxes", "scores", "labels"}
    check_sizes(model, exported, picture)


def test_cli_exports_a_keypoint_checkpoint_with_its_check_table(tmp_path, keypoint_model):
    """`mrseg export --weights best.pt` of a keypoint checkpoint: the check covers keypoints, not masks."""
    from click.testing import CliRunner

    from mrseg.cli import main
    from mrseg.engine.train.checkpoint import save_atomic
    from mrseg.model.checkpoint_format import make_checkpoint

    model, info = keypoint_model
    ckpt = make_checkpoint(
        model, arch=info.arch, classes=info.classes, min_size=HEIGHT, max_size=WIDTH, norm=None, channels=64
    )
    save_atomic(ckpt, tmp_path / "best.pt")
    result = CliRunner().invoke(
        main, ["export", "--weights", str(tmp_path / "best.pt"), "--check-score", "0"]
    )
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "keypoints within 0.5 px" in output and "mask IoU" not in output and "yes" in output
    exported, loaded = load_exported(tmp_path / "best.onnx")
    assert loaded.heads == ("keypoint",) and loaded.classes == info.classes
