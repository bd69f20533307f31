"""CocoDataset on the real nuts photos and on a hand-made file with every kind of broken annotation."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from mrseg.data.augment import train_transforms
from mrseg.data.coco import CocoDataset, DatasetError, collate

NUTS = Path(__file__).resolve().parents[1] / "assets" / "nuts"
needs_nuts = pytest.mark.skipif(
    not (NUTS / "trainval.json").is_file(),
    reason=f"real test photos not found at {NUTS} (see tests/assets/PROVENANCE.md)",
)


@needs_nuts
def test_nuts_real_photos_match_pycocotools():
    ds = CocoDataset(NUTS / "trainval.json", NUTS / "images")
    data = json.loads((NUTS / "trainval.json").read_text())
    assert len(ds) == 18
    assert [c["name"] for c in ds.classes] == ["date", "fig", "hazelnut"]
    assert ds.report.summary("x") is None  # nothing skipped
    coco = COCO(str(NUTS / "trainval.json"))
    assert ds.images[0]["id"] == 0  # image ids start at 0 here
    total = 0
    for i in (0, 7, 17):
        image, target = ds[i]
        info = ds.images[i]
        assert image.shape == (3, info["height"], info["width"]) and image.dtype == torch.float32
        assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
        anns = coco.loadAnns(coco.getAnnIds(imgIds=info["id"], iscrowd=False))
        assert len(target["labels"]) == len(anns)
        expected_masks = np.stack([coco.annToMask(a) for a in anns])
        np.testing.assert_array_equal(target["masks"].numpy(), expected_masks)
        x, y, w, h = np.array([a["bbox"] for a in anns], np.float32).T
        np.testing.assert_allclose(target["boxes"].numpy(), np.stack([x, y, x + w, y + h], 1), atol=1e-4)
        assert target["labels"].tolist() == [
            a["category_id"] for a in anns
        ]  # ids 1..3 are already contiguous
        assert int(target["image_id"]) == info["id"]
        total += len(anns)
    assert total > 0
    assert sum(len(a) for a in ds.annotations) == len(data["annotations"]) == 165


def _write_image(path: Path, h: int, w: int, value: int = 100) -> None:
    img = np.full((h, w, 3), value, np.uint8)
    cv2.imwrite(str(path), img)


@pytest.fixture
def messy(tmp_path: Path) -> Path:
    """Non-contiguous category ids, every mask encoding, crowd, a negative, and one of each broken kind."""
    h, w = 40, 60
    for name in ("a.png", "b.png", "neg.png", "crowd_only.png"):
        _write_image(tmp_path / name, h, w)
    square = np.zeros((h, w), np.uint8)
    square[5:15, 10:30] = 1
    rle = mask_utils.encode(np.asfortranarray(square))
    rle["counts"] = rle["counts"].decode("ascii")
    # uncompressed RLE: column-major run lengths starting with zeros
    flat = square.flatten(order="F")
    runs, current, n = [], 0, 0
    for v in flat:
        if v != current:
            runs.append(n)
            current, n = v, 0
        n += 1
    runs.append(n)
    poly = [[40.0, 20.0, 55.0, 20.0, 55.0, 35.0, 40.0, 35.0]]
    ok = {"iscrowd": 0, "area": 200.0}
    anns = [
        {"id": 1, "image_id": 10, "category_id": 17, "bbox": [40, 20, 15, 15], "segmentation": poly, **ok},
        {"id": 2, "image_id": 10, "category_id": 5, "bbox": [10, 5, 20, 10], "segmentation": rle, **ok},
        {
            "id": 3,
            "image_id": 11,
            "category_id": 5,
            "bbox": [10, 5, 20, 10],
            "segmentation": {"size": [h, w], "counts": runs},
            **ok,
        },
        {"id": 4, "image_id": 11, "category_id": 17, "bbox": [10, 5, 0, 10], "segmentation": poly, **ok},
        {
            "id": 5,
            "image_id": 11,
            "category_id": 17,
            "bbox": [10, 5, 5, 5],
            "segmentation": [[1.0, 1.0, 2.0, 2.0, 3.0, 3.0]],
            **ok,
        },  # collinear: degenerate
        {"id": 6, "image_id": 11, "category_id": 17, "bbox": [100, 100, 10, 10], "segmentation": poly, **ok},
        {"id": 7, "image_id": 11, "category_id": 99, "bbox": [10, 5, 20, 10], "segmentation": poly, **ok},
        {
            "id": 8,
            "image_id": 11,
            "category_id": 5,
            "bbox": [0, 0, 60, 40],
            "segmentation": rle,
            "iscrowd": 1,
            "area": 200.0,
        },
        {
            "id": 9,
            "image_id": 13,
            "category_id": 5,
            "bbox": [0, 0, 60, 40],
            "segmentation": rle,
            "iscrowd": 1,
            "area": 200.0,
        },
        {"id": 10, "image_id": 12, "category_id": 5, "bbox": [10, 5, 20, 10], "segmentation": rle, **ok},
        {"id": 11, "image_id": 999, "category_id": 5, "bbox": [10, 5, 20, 10], "segmentation": rle, **ok},
        {
            "id": 12,
            "image_id": 11,
            "category_id": 5,
            "bbox": [10, 5, 20, 10],
            "segmentation": {"size": [h + 1, w], "counts": rle["counts"]},
            **ok,
        },
    ]
    images = [
        {"id": 10, "file_name": "a.png", "height": h, "width": w},
        {"id": 11, "file_name": "b.png", "height": h, "width": w},
        {"id": 12, "file_name": "missing.png", "height": h, "width": w},
        {"id": 13, "file_name": "crowd_only.png", "height": h, "width": w},
        {"id": 14, "file_name": "neg.png", "height": h, "width": w},
    ]
    cats = [{"id": 17, "name": "seventeen"}, {"id": 5, "name": "five"}]
    path = tmp_path / "ann.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


def test_broken_annotations_are_skipped_and_reported_once(messy, caplog):
    with caplog.at_level(logging.WARNING, logger="mrseg.data.coco"):
        ds = CocoDataset(messy, messy.parent)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert str(messy) in message and "zero area" in message and "degenerate polygon" in message
    r = ds.report
    assert r.skipped_annotations == {
        "zero area": 1,
        "degenerate polygon": 1,
        "box outside the image": 1,
        "unknown category_id": 1,
        "unknown image_id": 1,
        "RLE size differs from the image size": 1,
    }
    assert r.skipped_images == {"missing image file": 1, "only crowd annotations": 1}
    assert r.crowd == 2
    # sorted category ids 5, 17 -> labels 1, 2; names kept
    assert ds.classes == [{"id": 5, "name": "five"}, {"id": 17, "name": "seventeen"}]
    assert [info["id"] for info in ds.images] == [10, 11, 14]

    _, a = ds[0]
    assert a["labels"].tolist() == [2, 1]
    assert a["masks"].shape == (2, 40, 60) and a["masks"].dtype == torch.uint8
    assert int(a["masks"][1].sum()) == 200  # compressed RLE: the 10x20 square
    assert a["masks"][0, 20:35, 40:55].float().mean() > 0.9  # polygon
    _, b = ds[1]  # only the uncompressed RLE survives; the crowd one is dropped from the targets
    assert b["labels"].tolist() == [1]
    assert torch.equal(b["masks"][0], a["masks"][1])
    assert b["boxes"].tolist() == [[10.0, 5.0, 30.0, 15.0]]
    _, neg = ds[2]  # a negative: empty targets of the right shapes
    assert neg["boxes"].shape == (0, 4) and neg["labels"].shape == (0,) and neg["masks"].shape == (0, 40, 60)

    images, targets = collate([ds[0], ds[2]])
    assert len(images) == 2 and len(targets) == 2


def test_validation_mode_keeps_crowd_only_images(messy):
    ds = CocoDataset(messy, messy.parent, train=False)
    assert [info["id"] for info in ds.images] == [10, 11, 13, 14]


def test_unreadable_image_is_replaced_not_fatal(messy, caplog):
    (messy.parent / "a.png").write_bytes(b"not an image")
    ds = CocoDataset(messy, messy.parent)
    with caplog.at_level(logging.WARNING, logger="mrseg.data.coco"):
        image, target = ds[0]
    assert int(target["image_id"]) == 11  # the next image
    assert any("a.png" in r.getMessage() for r in caplog.records)


def test_transforms_get_a_seeded_rng(messy):
    ds = CocoDataset(messy, messy.parent, transforms=train_transforms(flip=0.5))
    flips = set()
    for seed in range(12):
        one, t1 = ds[(0, seed)]
        two, t2 = ds[(0, seed)]
        assert torch.equal(one, two) and torch.equal(t1["boxes"], t2["boxes"])
        flips.add(float(t1["boxes"][1, 0]))
    assert flips == {10.0, 30.0}  # x1 of the square, unflipped and flipped (60 - 30)


def test_bad_inputs_raise_clear_errors(tmp_path, messy):
    with pytest.raises(DatasetError, match="annotation file not found"):
        CocoDataset(tmp_path / "nope.json", tmp_path)
    with pytest.raises(DatasetError, match="image folder not found"):
        CocoDataset(messy, tmp_path / "nope")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        CocoDataset(tmp_path / "bad.json", tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="no usable images"):
        CocoDataset(messy, empty)


def test_annotations_that_would_fail_mid_epoch_are_dropped_at_load(tmp_path, caplog):
    """Issue 13.6: compressed RLE counts that do not add up to the image, a NaN bbox and an infinite polygon
    coordinate are dropped when the dataset is built (counted, named), so no sample raises later."""
    h, w = 40, 60
    _write_image(tmp_path / "a.png", h, w)
    square = np.zeros((h, w), np.uint8)
    square[5:15, 10:30] = 1
    good = mask_utils.encode(np.asfortranarray(square))
    good["counts"] = good["counts"].decode("ascii")
    other = mask_utils.encode(np.asfortranarray(np.ones((h + 7, w), np.uint8)))  # runs of another size
    bad_rle = {"size": [h, w], "counts": other["counts"].decode("ascii")}
    poly = [10.0, 5.0, 30.0, 5.0, 30.0, 15.0, 10.0, 15.0]
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 5, 20, 10], "segmentation": good},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [10, 5, 20, 10], "segmentation": bad_rle},
        {"id": 3, "image_id": 1, "category_id": 1, "bbox": [10, math.nan, 20, 10], "segmentation": [poly]},
        {"id": 4, "image_id": 1, "category_id": 1, "bbox": [10, 5, 20, 10],
         "segmentation": [[10.0, 5.0, math.inf, 5.0, 30.0, 15.0, 10.0, 15.0]]},
    ]  # fmt: skip
    with pytest.raises(ValueError):  # what the bad RLE did mid-epoch before
        mask_utils.decode({"size": [h, w], "counts": bad_rle["counts"].encode("ascii")})
    path = tmp_path / "ann.json"
    path.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "a.png", "height": h, "width": w}],
                "annotations": anns,
                "categories": [{"id": 1, "name": "thing"}],
            }
        )
    )
    with caplog.at_level(logging.WARNING, logger="mrseg.data.coco"):
        ds = CocoDataset(path, tmp_path)
    assert ds.report.skipped_annotations == {
        "malformed RLE": 1,
        "non-finite bbox": 1,
        "non-finite polygon coordinate": 1,
    }
    message = " ".join(r.getMessage() for r in caplog.records)
    assert "annotation id 2" in message and "annotation id 3" in message and "annotation id 4" in message
    _, target = ds[0]  # the survivor loads; nothing raises
    assert target["labels"].tolist() == [1] and int(target["masks"][0].sum()) == 200
