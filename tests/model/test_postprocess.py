import torch
import torch.nn.functional as F
from torchvision.models.detection.roi_heads import paste_masks_in_image

import mrseg.model.postprocess as postprocess
from mrseg.model.postprocess import paste_mask_crops, paste_masks, scale_boxes


def _random_masks(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    logits = F.avg_pool2d(torch.randn(n, 1, 28, 28, generator=g), 5, 1, 2) * 8
    return logits.sigmoid()


def _random_boxes(n: int, height: int, width: int, max_side: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * torch.tensor([width, height])
    boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * max_side + 0.3], 1)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    return boxes


def _iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    inter = (a & b).flatten(1).sum(1).float()
    union = (a | b).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def test_paste_reproduces_torchvision():
    height, width = 300, 400
    masks = _random_masks(60, 0)
    boxes = _random_boxes(60, height, width, 250, 1)
    boxes[0] = torch.tensor([0.0, 0.0, width, height])  # whole image
    boxes[1] = torch.tensor([5.2, 6.7, 5.9, 7.1])  # sub-pixel box
    boxes[2] = torch.tensor([390.0, 290.0, 400.0, 300.0])  # touching the corner
    ref = paste_masks_in_image(masks, boxes, (height, width))[:, 0] > 0.5
    ours = paste_masks(masks, boxes, (height, width))
    assert ours.dtype == torch.bool and ours.shape == (60, height, width)
    assert ref.sum() > 10000
    assert _iou(ours, ref).min() >= 0.99
    assert (ours != ref).sum() <= 5  # identical up to float ties at the threshold


def test_paste_small_chunks_give_the_same_result():
    masks = _random_masks(20, 2)
    boxes = _random_boxes(20, 120, 160, 100, 3)
    whole = paste_masks(masks, boxes, (120, 160))
    chunked = paste_masks(masks[:, 0], boxes, (120, 160), chunk_pixels=500)
    assert torch.equal(whole, chunked)


def test_paste_on_a_large_image_keeps_float_work_bounded(monkeypatch):
    # 8000 x 4000 image: the float work area per chunk stays within chunk_pixels, never N full-size masks
    largest = []
    original = postprocess._paste_chunk

    def spy(masks, ibox, max_w, max_h, image_size, in_size, threshold):
        largest.append((len(masks), len(masks) * max_w * max_h))
        return original(masks, ibox, max_w, max_h, image_size, in_size, threshold)

    monkeypatch.setattr(postprocess, "_paste_chunk", spy)
    height, width = 4000, 8000
    masks = _random_masks(12, 4)
    boxes = _random_boxes(12, height, width, 3000, 5)
    out = paste_masks(masks, boxes, (height, width), chunk_pixels=1 << 22)
    assert out.shape == (12, height, width) and out.dtype == torch.bool
    assert len(largest) > 1
    assert all(n == 1 or work <= 1 << 22 for n, work in largest)  # a chunk holds one mask or fits the budget
    ref = paste_masks_in_image(masks[:4], boxes[:4], (height, width))[:, 0] > 0.5
    assert _iou(out[:4], ref).min() >= 0.99


def test_paste_mask_crops_hold_the_pasted_pixels_in_box_windows():
    height, width = 90, 130
    masks = _random_masks(40, 6)
    boxes = _random_boxes(40, height, width, 80, 7)
    boxes[0] = torch.tensor([-20.0, -10.0, 40.0, 30.0])  # window starts outside the image
    boxes[1] = torch.tensor([100.0, 70.0, 160.0, 120.0])  # and ends outside it
    boxes[2] = torch.tensor([50.0, 50.0, 49.0, 49.0])  # degenerate
    full = paste_masks(masks, boxes, (height, width))
    chunks = paste_mask_crops(masks, boxes, (height, width), chunk_pixels=3000)
    assert len(chunks) > 1
    seen = torch.zeros(40, dtype=torch.int64)
    rebuilt = torch.zeros_like(full)
    for c in chunks:
        assert c.crops.dtype == torch.bool and c.crops.shape[0] == len(c.index)
        seen[c.index] += 1
        for k, i in enumerate(c.index.tolist()):
            (x, y), (w, h) = c.origins[k].tolist(), c.sizes[k].tolist()
            crop = c.crops[k]
            assert not crop[h:].any() and not crop[:, w:].any()  # nothing past the window
            ys = torch.arange(crop.shape[0])[:, None] + y
            xs = torch.arange(crop.shape[1])[None, :] + x
            inside = (ys >= 0) & (ys < height) & (xs >= 0) & (xs < width)
            assert not (crop & ~inside).any()  # nothing outside the image
            yy, xx = torch.where(crop)
            rebuilt[i, yy + y, xx + x] = True
    assert torch.equal(seen, torch.ones(40, dtype=torch.int64))  # every instance exactly once
    assert torch.equal(rebuilt, full) and full.sum() > 1000
    assert paste_mask_crops(masks[:0], boxes[:0], (height, width)) == []


def test_paste_no_masks():
    assert paste_masks(torch.zeros(0, 1, 28, 28), torch.zeros(0, 4), (10, 20)).shape == (0, 10, 20)


def test_scale_boxes():
    boxes = torch.tensor([[10.0, 20.0, 30.0, 40.0]])
    assert scale_boxes(boxes, (100, 200), (50, 400)).tolist() == [[20.0, 10.0, 60.0, 20.0]]
