"""mrseg.export.exporter: ONNX and TorchScript files that run without our extension / torchvision and match
PyTorch (boxes within 1e-2 px, mask IoU >= 0.99)."""

import json
import subprocess
import sys

import onnx
import pytest
import torch

from mrseg.export import ExportError, compare_detections, export_model, load_exported
from mrseg.export.spec import METADATA_KEY, GraphSpec
from mrseg.model.zoo import WeightsError


@pytest.fixture(scope="module")
def onnx_export(tmp_path_factory, model, info):
    out = tmp_path_factory.mktemp("onnx") / "small.onnx"
    return export_model(model=model, info=info, out=out, format="onnx", check_score=0.0)


def all_nodes(graph):
    """Nodes of an ONNX graph and of its subgraphs (If branches)."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from all_nodes(attr.g)


def assert_matches(reference, exported):
    for r, e in zip(reference, exported, strict=True):
        c = compare_detections(r, e, score=0.0)
        assert c.ok, c
        assert c.reference == len(r["scores"])


def test_onnx_checks_itself_and_uses_only_standard_ops(onnx_export, info):
    result = onnx_export
    assert result.ok and len(result.comparisons) == 1
    assert result.comparisons[0].matched == 20  # every detection of the model was compared
    proto = onnx.load(result.path)
    nodes = list(all_nodes(proto.graph))
    assert {n.domain for n in nodes} <= {"", "ai.onnx"}
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 16
    roi_aligns = [n for n in nodes if n.op_type == "RoiAlign"]
    assert len(roi_aligns) == 8  # 4 FPN levels x (box, mask) poolers
    for node in roi_aligns:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["coordinate_transformation_mode"] == b"half_pixel"  # r18-fpn pools with aligned=True
    assert sum(n.op_type == "NonMaxSuppression" for n in nodes) == 2  # RPN and box head
    spec = GraphSpec.from_json({p.key: p.value for p in proto.metadata_props}[METADATA_KEY])
    assert (spec.height, spec.width, spec.batch) == (128, 160, 1)
    assert spec.classes == info.classes


@pytest.fixture(scope="module")
def torchscript_export(tmp_path_factory, model, info):
    out = tmp_path_factory.mktemp("ts") / "small.torchscript"
    return export_model(model=model, info=info, out=out, format="torchscript", check_score=0.0)


# (H, W); the model (min_size 128, max_size 160) upscales the small ones and caps the long side of the large
SIZES = {
    "tiny 40x30": (30, 40),
    "portrait": (300, 120),
    "square": (128, 128),
    "4:3": (96, 128),
    "wide": (60, 200),
    "larger than max_size": (500, 900),
}


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_file_gives_the_model_detections_at_any_size(
    fmt, onnx_export, torchscript_export, model, picture
):
    """The file against the PyTorch model itself (not against the traced graph): boxes within 1e-2 px, mask
    IoU >= 0.99, probabilities within 1e-4, every detection matched."""
    exported, info = load_exported((onnx_export if fmt == "onnx" else torchscript_export).path)
    assert info.classes[0]["name"] == "date"
    for name, (h, w) in SIZES.items():
        image = picture(h, w, seed=h + w)
        with torch.no_grad():
            (reference,) = model([image])
        (got,) = exported([image])
        assert got["masks"].shape[-2:] == (h, w)
        comparison = compare_detections(reference, got, score=0.0)
        assert comparison.ok and comparison.matched == len(reference["scores"]) == 20, (name, comparison)


def test_zero_detections_export_and_run(tmp_path, make_model, info, picture, picture_uint8):
    model = make_model(score_thresh=0.99)  # random heads score ~1/4 per class: nothing passes
    blank = picture_uint8(128, 160) * 0
    out = tmp_path / "empty.onnx"
    result = export_model(model=model, info=info, out=out, samples=[blank], check_score=0.0)
    assert result.ok and result.comparisons[0].reference == 0
    exported, _ = load_exported(result.path)
    for image in (torch.zeros(3, 128, 160), picture(100, 100)):
        (out,) = exported([image])
        assert out["boxes"].shape == (0, 4) and out["masks"].shape == (0, 1, *image.shape[-2:])


def test_batch_of_two(tmp_path, model, info, eager, picture, picture_uint8):
    samples = [picture_uint8(128, 160, seed=8), picture_uint8(128, 160, seed=9)]
    out = tmp_path / "b2.onnx"
    result = export_model(model=model, info=info, out=out, batch=2, samples=samples, check=False)
    exported, _ = load_exported(result.path)
    assert exported.spec.batch == 2
    images = [picture(128, 160, seed=s) for s in (10, 11, 12)]  # a full batch, then a half-empty one
    assert_matches(eager(model, batch=1)(images), exported(images))


LOAD_ALONE = """
import sys, torch, mrseg_kernels
module = torch.jit.load(sys.argv[1])
canvas, sizes = torch.load(sys.argv[2])
with torch.no_grad():
    out = module(canvas, sizes)
mods = sorted(m for m in sys.modules if m.split(".")[0] in ("torchvision", "mrseg", "onnxruntime"))
torch.save({"out": out, "modules": mods}, sys.argv[3])
"""


def test_torchscript_loads_with_only_torch_and_mrseg_kernels(
    tmp_path, torchscript_export, model, eager, picture
):
    result = torchscript_export
    assert result.ok and result.comparisons[0].matched == 20
    from mrseg.export.steps import preprocess

    canvas, sizes = preprocess([picture(128, 160, seed=13)], result.spec)
    torch.save((canvas, sizes), tmp_path / "in.pt")
    args = [str(result.path), str(tmp_path / "in.pt"), str(tmp_path / "out.pt")]
    subprocess.run([sys.executable, "-c", LOAD_ALONE, *args], check=True)
    got = torch.load(tmp_path / "out.pt", weights_only=True)
    assert got["modules"] == []  # neither torchvision nor mrseg's Python package was needed
    with torch.no_grad():
        expected = eager(model).run(canvas, sizes)
    assert len(got["out"]) == 5 and got["out"][0].shape[0] == 20
    # another process, another thread count: float sums may round differently (1.5e-5 seen on a mask
    # probability); the export tolerances (boxes 1e-2 px, probabilities 1e-4) are what matters
    for a, b in zip(got["out"], expected, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-4)


def test_bad_requests_and_foreign_files(tmp_path, model, info):
    with pytest.raises(ExportError, match="--format 'tflite'"):
        export_model(model=model, info=info, out=tmp_path / "x", format="tflite")
    with pytest.raises(WeightsError, match="does not exist"):
        export_model(tmp_path / "missing.pt", out=tmp_path / "x.onnx")
    assert list(tmp_path.iterdir()) == []  # nothing written on failure
    plain = tmp_path / "plain.onnx"
    torch.onnx.export(torch.nn.Linear(2, 2), (torch.zeros(1, 2),), plain, dynamo=False)
    with pytest.raises(WeightsError, match="not written by `mrseg export`"):
        load_exported(plain)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(WeightsError, match="not a readable ONNX model"):
        load_exported(garbage)
    with pytest.raises(WeightsError, match="does not exist"):
        load_exported(tmp_path / "none.torchscript")
    assert json.loads(GraphSpec(1, 2, 1, 3, 4, (0, 0, 0), (1, 1, 1)).to_json())["height"] == 1
