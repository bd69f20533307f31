"""Our Mask R-CNN against torchvision's with the same (seeded random) weights: detections, proposals,
losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mrseg.model.zoo import build_model

skimage_data = pytest.importorskip("skimage.data", reason="scikit-image provides the test photographs")


def _photo(name: str) -> torch.Tensor:
    try:
        array = getattr(skimage_data, name)()
    except Exception as e:  # pragma: no cover - depends on the install
        pytest.skip(f"skimage.data.{name}() is not available offline: {e}")
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float() / 255


def _capture_proposals(rpn: torch.nn.Module, store: list) -> None:
    rpn.register_forward_hook(lambda module, args, output: store.append([p.clone() for p in output[0]]))


def _mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    inter = (a & b).flatten(1).sum(1).float()
    union = (a | b).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def _compare(tv_model, ours, images):
    tv_props, our_props = [], []
    _capture_proposals(tv_model.rpn, tv_props)
    _capture_proposals(ours.rpn, our_props)
    with torch.inference_mode():
        expected = tv_model(images)
        got = ours(images)
    stats = {"box": 0.0, "score": 0.0, "iou": 1.0, "proposal": 0.0, "detections": 0, "nonempty_masks": 0}
    for p_tv, p_ours in zip(tv_props[0], our_props[0], strict=True):
        assert p_tv.shape == p_ours.shape and p_tv.shape[0] > 100
        stats["proposal"] = max(stats["proposal"], float((p_tv - p_ours).abs().max()))
    for e, g, image in zip(expected, got, images, strict=True):
        assert g["boxes"].shape == e["boxes"].shape
        assert torch.equal(g["labels"], e["labels"])
        assert g["masks"].dtype == torch.bool and g["masks"].shape == (len(e["boxes"]), 1, *image.shape[-2:])
        stats["box"] = max(stats["box"], float((g["boxes"] - e["boxes"]).abs().max()))
        stats["score"] = max(stats["score"], float((g["scores"] - e["scores"]).abs().max()))
        stats["iou"] = min(stats["iou"], float(_mask_iou(g["masks"][:, 0], e["masks"][:, 0] > 0.5).min()))
        stats["detections"] += len(e["boxes"])
        stats["nonempty_masks"] += int(g["masks"].flatten(1).any(1).sum())
    print(f"parity: {stats}")
    assert stats["detections"] >= 10 and stats["nonempty_masks"] >= 5  # the comparison is not vacuous
    assert stats["proposal"] <= 1e-2
    assert stats["box"] <= 1e-2
    assert stats["score"] <= 1e-4
    assert stats["iou"] >= 0.99
    return stats


def test_r50_fpn_matches_torchvision_on_photos(torchvision_maskrcnn, ours_from):
    # two photographs of different sizes in one batch, resized to a 600 short side to keep the test quick
    tv_model = torchvision_maskrcnn(50, v2=False, seed=0, min_size=600, max_size=1000)
    ours = ours_from(tv_model, "r50-fpn", min_size=600, max_size=1000)
    _compare(tv_model, ours, [_photo("coffee"), _photo("chelsea")])


def test_r50_fpn_v2_matches_torchvision_on_a_photo(torchvision_maskrcnn, ours_from):
    tv_model = torchvision_maskrcnn(50, v2=True, seed=1)  # default 800 / 1333 resize
    ours = ours_from(tv_model, "r50-fpn-v2")
    _compare(tv_model, ours, [_photo("astronaut")])


def test_eval_outputs_follow_the_contract_with_and_without_detections():
    def build(**kwargs):
        torch.manual_seed(0)  # the same weights for each
        model = build_model("r18-fpn", 5, min_size=96, max_size=160, box_detections_per_img=20, **kwargs)
        return model.eval()

    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 70, 100, generator=g), torch.rand(3, 90, 60, generator=g)]
    with torch.inference_mode():
        empty = build(box_score_thresh=0.99)(images)  # nothing scores that high with random heads
        full = build(box_score_thresh=0.0)(images)
        raw = build(box_score_thresh=0.0, paste_masks=False)(images)
    for out, image in zip(empty, images, strict=True):
        assert out["boxes"].shape == (0, 4) and out["masks"].shape == (0, 1, *image.shape[-2:])
    for out, image in zip(full, images, strict=True):
        n = len(out["boxes"])
        assert 0 < n <= 20
        assert out["boxes"].dtype == torch.float32 and out["labels"].dtype == torch.int64
        assert out["masks"].dtype == torch.bool and out["masks"].shape == (n, 1, *image.shape[-2:])
        assert (out["labels"] >= 1).all() and (out["labels"] <= 5).all()
        assert (out["boxes"][:, 2] <= image.shape[-1]).all() and (out["boxes"][:, 3] <= image.shape[-2]).all()
        assert (out["scores"][:-1] >= out["scores"][1:]).all()
    for out, ref in zip(raw, full, strict=True):
        assert out["mask_probs"].shape == (len(ref["boxes"]), 1, 28, 28) and "masks" not in out
        assert torch.equal(out["boxes"], ref["boxes"])
