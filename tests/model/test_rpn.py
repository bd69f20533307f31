import pytest
import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.models.detection.rpn import RPNHead as TVRPNHead

from mrseg.model.anchors import AnchorGenerator
from mrseg.model.box_coder import BoxCoder
from mrseg.model.matcher import Matcher
from mrseg.model.rpn import RPN, RPNHead, top_indices
from mrseg.model.sampler import BalancedSampler

SIZES = (32, 64, 128, 256, 512)


def _pair(num_convs: int, batch_size: int):
    torch.manual_seed(0)
    tv_head = TVRPNHead(16, 3, conv_depth=num_convs)
    for p in tv_head.parameters():  # larger than the 0.01-std init, so proposals differ from the anchors
        torch.nn.init.normal_(p, std=0.2)
    tv = RegionProposalNetwork(
        TVAnchorGenerator(tuple((s,) for s in SIZES), ((0.5, 1.0, 2.0),) * 5),
        tv_head,
        0.7,
        0.3,
        batch_size,
        0.5,
        {"training": 300, "testing": 200},
        {"training": 150, "testing": 100},
        0.7,
    )
    head = RPNHead(in_channels=16, num_anchors=3, num_convs=num_convs)
    state = {}
    for i in range(num_convs):
        state[f"convs.{i}.weight"] = tv_head.conv[i][0].weight
        state[f"convs.{i}.bias"] = tv_head.conv[i][0].bias
    state.update(
        {
            "objectness_logits.weight": tv_head.cls_logits.weight,
            "objectness_logits.bias": tv_head.cls_logits.bias,
            "anchor_deltas.weight": tv_head.bbox_pred.weight,
            "anchor_deltas.bias": tv_head.bbox_pred.bias,
        }
    )
    head.load_state_dict(state)
    ours = RPN(
        anchor_generator=AnchorGenerator(SIZES),
        head=head,
        matcher=Matcher(0.7, 0.3, allow_low_quality_matches=True),
        sampler=BalancedSampler(batch_size, 0.5),
        box_coder=BoxCoder((1.0, 1.0, 1.0, 1.0)),
        pre_nms_top_n={"train": 300, "test": 200},
        post_nms_top_n={"train": 150, "test": 100},
        nms_thresh=0.7,
    )
    return tv, ours


def _inputs():
    g = torch.Generator().manual_seed(1)
    padded = (128, 192)
    features = [torch.randn(2, 16, padded[0] // s, padded[1] // s, generator=g) for s in (4, 8, 16, 32, 64)]
    sizes = [(128, 180), (100, 192)]
    targets = [
        {"boxes": torch.tensor([[10.0, 20.0, 90.0, 100.0], [100.0, 5.0, 170.0, 40.0]])},
        {"boxes": torch.tensor([[30.0, 30.0, 60.0, 90.0]])},
    ]
    return padded, features, sizes, targets


def test_proposals_match_torchvision():
    for num_convs in (1, 2):
        tv, ours = _pair(num_convs, 256)
        padded, features, sizes, _ = _inputs()
        tv.eval()
        ours.eval()
        with torch.no_grad():
            expected, _ = tv(ImageList(torch.zeros(2, 3, *padded), sizes), dict(enumerate(features)))
            got, losses = ours(features, sizes, padded)
        assert losses == {}
        for g, e, (h, w) in zip(got, expected, sizes, strict=True):
            assert g.shape == e.shape and 50 < g.shape[0] <= 100
            torch.testing.assert_close(g, e, rtol=0, atol=1e-4)
            assert (g[:, 2] <= w).all() and (g[:, 3] <= h).all()


def test_losses_match_torchvision_with_every_anchor_sampled():
    tv, ours = _pair(1, 10**9)
    padded, features, sizes, targets = _inputs()
    tv.train()
    ours.train()
    _, expected = tv(ImageList(torch.zeros(2, 3, *padded), sizes), dict(enumerate(features)), targets)
    got_props, got = ours(features, sizes, padded, targets)
    assert all(p.shape[0] <= 150 for p in got_props)
    for k in ("loss_objectness", "loss_rpn_box_reg"):
        assert float(expected[k].detach()) > 0
        torch.testing.assert_close(got[k], expected[k], rtol=1e-5, atol=1e-6)


NO_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: run on a GPU machine")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=NO_CUDA)])
def test_top_indices_orders_equal_scores_by_index(device):
    """Equal logits (many: a uniform background) in ONNX TopK's order, which torch.topk does not promise (on
    CUDA through a stable sort, without a host sync)."""
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 6, (3, 500), generator=g).float()
    scores[1, 7] = float("nan")  # topk and sort both rank NaN first
    stable = scores.sort(dim=1, descending=True, stable=True).indices
    got = top_indices(scores.to(device), 120).cpu()
    assert torch.equal(got, stable[:, :120])
    assert not torch.equal(scores.topk(120, dim=1).indices, stable[:, :120])  # else this tests nothing
    distinct = torch.randn(3, 500, generator=g)
    assert torch.equal(top_indices(distinct.to(device), 120).cpu(), distinct.topk(120, dim=1).indices)
    assert top_indices(distinct.to(device), 0).shape == (3, 0)
