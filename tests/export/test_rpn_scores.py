"""The exported RPN keeps the proposals PyTorch keeps, in two cases where the order of the candidates decides
which of two overlapping boxes NMS keeps (issue 15: a trained model's ONNX export changed a few proposals
per image, and with them a few detections by 3-10 px):

- equal objectness logits (a uniform background gives the same features at many anchors): torch.topk leaves
  them in no set order, ONNX TopK orders them by index;
- close, low logits: onnxruntime's Sigmoid op is an approximation (about 1e-7 absolute error, not monotonic)
  that reorders them.
"""

import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from mrseg.export.exporter import ONNX_OPSET
from mrseg.model.anchors import AnchorGenerator
from mrseg.model.box_coder import BoxCoder
from mrseg.model.matcher import Matcher
from mrseg.model.rpn import RPN, RPNHead
from mrseg.model.sampler import BalancedSampler

pytestmark = pytest.mark.usefixtures("one_thread")

IMAGE = (256, 256)
CLUSTERS, PER_CLUSTER = 30, 10
JITTER = 1.0  # px


def small_rpn(pre_nms_top_n: int = 1000) -> RPN:
    return RPN(
        anchor_generator=AnchorGenerator((32, 64, 128, 256, 512)),
        head=RPNHead(in_channels=4, num_anchors=3),
        matcher=Matcher(0.7, 0.3, allow_low_quality_matches=True),
        sampler=BalancedSampler(256, 0.5),
        box_coder=BoxCoder((1.0, 1.0, 1.0, 1.0)),
        pre_nms_top_n={"train": pre_nms_top_n, "test": pre_nms_top_n},
        post_nms_top_n={"train": 1000, "test": 1000},
        nms_thresh=0.7,
    ).eval()


class Selection(nn.Module):
    """RPN.select_proposals on given decoded boxes [1, R, 4] and logits [1, R] (one level, one image)."""

    def __init__(self, rpn: RPN, count: int):
        super().__init__()
        self.rpn, self.count = rpn, count

    def forward(self, proposals, objectness):
        return self.rpn.select_proposals(proposals, objectness, [IMAGE], [self.count])[0]


def session(proto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(proto, options, providers=["CPUExecutionProvider"])


def pytorch_and_onnxruntime(module, boxes, logits, tmp_path):
    """(the module's proposals in PyTorch, those of its ONNX export in onnxruntime)."""
    path = str(tmp_path / "select.onnx")
    with torch.no_grad():
        expected = module(boxes, logits)
        torch.onnx.export(
            module,
            (boxes, logits),
            path,
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=["proposals", "objectness"],
            output_names=["boxes"],
        )
    (got,) = session(path).run(None, {"proposals": boxes.numpy(), "objectness": logits.numpy()})
    return expected, torch.from_numpy(got)


def close_duplicates():
    """Clusters of near-duplicate boxes (IoUs around the 0.7 threshold) with low, close objectness logits,
    as a trained RPN gives around an object: probabilities ~5e-5 that differ by ~1e-5 relative."""
    g = torch.Generator().manual_seed(0)
    centers = torch.rand(CLUSTERS, 1, 2, generator=g) * 200 + 28
    sizes = torch.rand(CLUSTERS, 1, 2, generator=g) * 30 + 20
    center = centers + torch.randn(CLUSTERS, PER_CLUSTER, 2, generator=g) * JITTER
    size = sizes + torch.randn(CLUSTERS, PER_CLUSTER, 2, generator=g) * JITTER
    boxes = torch.cat([center - size / 2, center + size / 2], -1).reshape(1, -1, 4)
    # distinct logits 1e-5 apart: far above float32 rounding, far below onnxruntime's Sigmoid error here
    logits = -10.0 + torch.randperm(CLUSTERS * PER_CLUSTER, generator=g)[None].float() * 1e-5
    return boxes, logits


def uniform_background():
    """A 32 x 32 grid of anchors of three sizes, stride 8 (neighbours overlap with IoU 0.78 at size 64), on a
    uniform background: every anchor of a size gets the same logit, bar a few of an object."""
    ys, xs = torch.meshgrid(torch.arange(32) * 8.0, torch.arange(32) * 8.0, indexing="ij")
    centers = torch.stack([xs, ys], -1).reshape(-1, 1, 2)
    half = torch.tensor([16.0, 32.0, 64.0])[None, :, None] / 2
    boxes = torch.cat([centers - half, centers + half], -1).reshape(1, -1, 4)  # [1, 3072, 4]
    logits = torch.tensor([-2.0, -1.5, -3.0]).repeat(32 * 32)[None].clone()
    logits[0, 3 * (16 * 32 + 16) : 3 * (16 * 32 + 20)] = torch.linspace(2.0, 4.0, 12)
    return boxes, logits


def test_onnxruntime_sigmoid_reorders_the_close_candidates():
    """The close case is one where the ONNX Sigmoid op changes the order (else the next test is moot)."""
    _, logits = close_duplicates()
    node = onnx.helper.make_node("Sigmoid", ["x"], ["y"])
    graph = onnx.helper.make_graph(
        [node],
        "sigmoid",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, None)],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", ONNX_OPSET)])
    (probs,) = session(model.SerializeToString()).run(None, {"x": logits.numpy()})
    expected = torch.sigmoid(logits).argsort(descending=True, stable=True)
    assert not torch.equal(torch.from_numpy(probs).argsort(descending=True, stable=True), expected)


def test_close_logits_keep_pytorchs_proposals(tmp_path):
    boxes, logits = close_duplicates()
    expected, got = pytorch_and_onnxruntime(Selection(small_rpn(), boxes.shape[1]), boxes, logits, tmp_path)
    assert CLUSTERS < expected.shape[0] < boxes.shape[1]  # NMS dropped some of each cluster, not all
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_equal_logits_keep_pytorchs_proposals(tmp_path):
    boxes, logits = uniform_background()
    assert logits.unique().numel() < 20  # thousands of exact ties
    # 1000 of 3072 candidates: the top-k cut falls inside a group of equal logits, as on a real level
    module = Selection(small_rpn(pre_nms_top_n=1000), boxes.shape[1])
    expected, got = pytorch_and_onnxruntime(module, boxes, logits, tmp_path)
    assert 20 < expected.shape[0] < 1000
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
