"""mrseg_kernels.onnx: mrseg::roi_align exports as ONNX RoiAlign and onnxruntime matches torchvision."""

import io

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torchvision

import mrseg_kernels
from mrseg_kernels.onnx import register_onnx_symbolic


class RoiAlign(torch.nn.Module):
    def __init__(self, sampling_ratio, aligned):
        super().__init__()
        self.sampling_ratio, self.aligned = sampling_ratio, aligned

    def forward(self, x, rois):
        return mrseg_kernels.roi_align(x, rois, (7, 5), 0.25, self.sampling_ratio, self.aligned)


def export(module, args):
    register_onnx_symbolic()
    buf = io.BytesIO()
    torch.onnx.export(
        module, args, buf, dynamo=False, opset_version=17, input_names=["x", "rois"],
        dynamic_axes={"x": [0, 2, 3], "rois": [0]},
    )  # fmt: skip
    return buf.getvalue()


def random_rois(k, batch, generator):
    xy = torch.rand(k, 2, generator=generator) * 70
    wh = torch.rand(k, 2, generator=generator) * 40
    rois = torch.cat([torch.randint(0, batch, (k, 1), generator=generator).float(), xy, xy + wh], 1)
    rois[0, 1:] = torch.tensor([-5.0, -3.0, 120.0, 110.0])  # partly outside the feature map
    return rois


@pytest.mark.parametrize("sampling_ratio", [-1, 2])
@pytest.mark.parametrize("aligned", [True, False])
def test_onnxruntime_matches_torchvision(sampling_ratio, aligned):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 20, 24, generator=g)
    model_bytes = export(RoiAlign(sampling_ratio, aligned), (x, random_rois(9, 2, g)))
    nodes = [n for n in onnx.load_from_string(model_bytes).graph.node if n.domain not in ("", "ai.onnx")]
    assert nodes == [], "the graph must use only standard ONNX ops"
    (node,) = [n for n in onnx.load_from_string(model_bytes).graph.node if n.op_type == "RoiAlign"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["coordinate_transformation_mode"] == (b"half_pixel" if aligned else b"output_half_pixel")
    assert attrs["sampling_ratio"] == max(sampling_ratio, 0)
    session = ort.InferenceSession(model_bytes)
    # Other shapes than at export: the feature map, the batch and the number of RoIs are dynamic.
    for xx, rois in [(x, random_rois(9, 2, g)), (torch.rand(3, 3, 11, 9, generator=g), random_rois(4, 3, g))]:
        expected = torchvision.ops.roi_align(xx, rois, (7, 5), 0.25, sampling_ratio, aligned)
        got = session.run(None, {"x": xx.numpy(), "rois": rois.numpy()})[0]
        np.testing.assert_allclose(got, expected.numpy(), atol=1e-5)


def test_zero_rois_export_and_run():
    x = torch.rand(1, 4, 8, 8)
    session = ort.InferenceSession(export(RoiAlign(-1, True), (x, torch.tensor([[0.0, 1, 1, 20, 20]]))))
    out = session.run(None, {"x": x.numpy(), "rois": np.zeros((0, 5), np.float32)})[0]
    assert out.shape == (0, 4, 7, 5)
