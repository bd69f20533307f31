"""Bad input anywhere (issue 13): corrupt COCO json through the readers that train, eval and convert use
(`mrseg.data.coco.CocoDataset`, `mrseg.engine.evaluate.evaluator.load_ground_truth` + `evaluate`,
`mrseg.data.coco_reader.read_coco`), property-based with hypothesis. Each reader either works or raises its
own error type with a message naming the file; the training dataset never raises on a bad entry but skips
it, counted under a reason and named (by id, else position); a training sample is then always loadable. The
valid starting point is a small COCO file (two 32x24 images on disk, polygon / compressed RLE / uncompressed
RLE / crowd annotations), which the mutations break: keys deleted, values of the wrong type, NaN and
infinities, negative or huge sizes and coordinates, duplicated entries, images deleted from disk, unicode and
odd file names, RLE counts that do not add up or run negative."""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycocotools import mask as mask_utils

from mrseg.data.annotation_source import SourceError
from mrseg.data.coco import CocoDataset, DatasetError
from mrseg.data.coco_reader import read_coco
from mrseg.engine.evaluate.evaluator import EvalInputError, evaluate, load_ground_truth

W, H = 32, 24


def _valid() -> dict:
    m = np.zeros((H, W), np.uint8)
    m[4:12, 6:20] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    rle["counts"] = rle["counts"].decode("ascii")
    # the same rectangle as uncompressed RLE: column-major runs, zeros first
    runs = [6 * H + 4] + [8, H - 8] * 13 + [8, (H - 12) + H * (W - 20)]
    assert sum(runs) == H * W
    return {
        "images": [
            {"id": 1, "file_name": "a.png", "width": W, "height": H},
            {"id": 2, "file_name": "sub/b.png", "width": W, "height": H},
        ],
        "annotations": [
            {
                "id": 10,
                "image_id": 1,
                "category_id": 1,
                "bbox": [2, 2, 10, 8],
                "area": 40,
                "iscrowd": 0,
                "segmentation": [[2, 2, 12, 2, 12, 10, 2, 10]],
            },  # fmt: skip
            {
                "id": 11,
                "image_id": 1,
                "category_id": 2,
                "bbox": [6, 4, 14, 8],
                "area": 112,
                "iscrowd": 0,
                "segmentation": rle,
            },  # fmt: skip
            {
                "id": 12,
                "image_id": 2,
                "category_id": 2,
                "bbox": [6, 4, 14, 8],
                "area": 112,
                "iscrowd": 0,
                "segmentation": {"size": [H, W], "counts": runs},
            },  # fmt: skip
            {
                "id": 13,
                "image_id": 2,
                "category_id": 1,
                "bbox": [20, 14, 6, 6],
                "area": 36,
                "iscrowd": 1,
                "segmentation": {"size": [H, W], "counts": runs},
            },  # fmt: skip
        ],
        "categories": [{"id": 1, "name": "date"}, {"id": 2, "name": "fig"}],
    }


WEIRD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, -5, 10**9, 2**31, 2**63, -(2**63) - 1, 1e308, -0.0, 0.5]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(["", "\ud800", "é/ü.png", "../../etc/passwd", "/abs.png", "a\x00b.png", "a.png"]),
    st.lists(st.integers(-3, 3), max_size=4),
    st.just({}),
    st.just({"size": [H, W], "counts": [W * H + 5, -5]}),  # adds up, but a negative run
    st.just({"size": [H, W], "counts": "not rle"}),
    st.just({"size": ["a", None], "counts": [1]}),
    st.just([[0, 0, 1e300, 0, 1e300, 1e300]]),
    st.just([[float("nan")] * 6]),
)

SECTIONS = ("images", "annotations", "categories")
KEYS = {
    "images": ("id", "file_name", "width", "height"),
    "annotations": ("id", "image_id", "category_id", "bbox", "area", "iscrowd", "segmentation"),
    "categories": ("id", "name"),
}

ANY_KEY = st.sampled_from(sum(KEYS.values(), ()))
MUTATION = st.one_of(
    st.tuples(st.just("delete"), st.sampled_from(SECTIONS), st.integers(0, 3), ANY_KEY),
    st.tuples(st.just("set"), st.sampled_from(SECTIONS), st.integers(0, 3), ANY_KEY, WEIRD_VALUES),
    st.tuples(st.just("bbox"), st.integers(0, 3), st.integers(0, 3), WEIRD_VALUES),
    st.tuples(st.just("duplicate"), st.sampled_from(SECTIONS), st.integers(0, 3)),
    st.tuples(st.just("replace-entry"), st.sampled_from(SECTIONS), st.integers(0, 3), WEIRD_VALUES),
    st.tuples(st.just("top"), st.sampled_from(SECTIONS), WEIRD_VALUES),
    st.tuples(st.just("remove-file"), st.integers(0, 1)),
)


def _mutate(data: dict, mutation: tuple, image_dir: Path) -> None:
    mutation = copy.deepcopy(mutation)  # a value drawn twice must not become one object (a cycle)
    kind = mutation[0]
    if kind == "remove-file":
        (image_dir / ("a.png", "sub/b.png")[mutation[1]]).unlink(missing_ok=True)
        return
    if kind == "top":
        data[mutation[1]] = mutation[2]
        return
    if kind == "bbox":
        anns = data.get("annotations")
        if isinstance(anns, list) and anns and isinstance(anns[mutation[1] % len(anns)], dict):
            bbox = anns[mutation[1] % len(anns)].get("bbox")
            if isinstance(bbox, list) and bbox:
                bbox[mutation[2] % len(bbox)] = mutation[3]
        return
    section = data.get(mutation[1])
    if not isinstance(section, list) or not section:
        return
    i = mutation[2] % len(section)
    if kind == "duplicate":
        section.append(copy.deepcopy(section[i]))
    elif kind == "replace-entry":
        section[i] = mutation[3]
    elif isinstance(section[i], dict):
        if kind == "delete":
            section[i].pop(mutation[3], None)
        else:
            section[i][mutation[3]] = mutation[4]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("coco-images")
    (folder / "sub").mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "sub/b.png"):
        cv2.imwrite(str(folder / name), rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
    return folder


def _write(data, folder: Path) -> Path:
    path = folder / "ann.json"
    path.write_text(json.dumps(data, allow_nan=True), encoding="utf-8", errors="surrogatepass")
    return path


def _total(section) -> int:
    return len(section) if isinstance(section, list) else 0


# MRSEG_FUZZ_EXAMPLES=5000 for a longer hunt (the figure in the report)
EXAMPLES = int(os.environ.get("MRSEG_FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FUZZ
@given(mutations=st.lists(MUTATION, min_size=1, max_size=4))
def test_corrupt_coco_never_crashes_a_reader(mutations, images, tmp_path_factory):
    work = tmp_path_factory.mktemp("fuzz")
    image_dir = work / "images"
    shutil.copytree(images, image_dir)
    data = _valid()
    for m in mutations:
        _mutate(data, m, image_dir)
    ann = _write(data, work)

    for train in (True, False):  # mrseg train: its dataset and its validation set
        try:
            ds = CocoDataset(ann, image_dir, train=train)
        except DatasetError as e:
            assert str(ann) in str(e) or str(image_dir) in str(e)
            continue
        report = ds.report
        images_total, anns_total = _total(data.get("images")), _total(data.get("annotations"))
        # every entry is used or skipped, and every skipped one is named under its reason
        assert len(report.skipped) == sum(report.skipped_images.values()) + sum(
            report.skipped_annotations.values()
        )
        assert len(ds.images) + sum(report.skipped_images.values()) == images_total
        used = sum(len(a) for a in ds.annotations)
        skipped = sum(report.skipped_annotations.values())
        assert used + skipped + report.crowd + report.dropped_with_images == anns_total
        message = report.summary(str(ann))
        for kind, _, reason in report.skipped:  # each reason, with (at least) its first entries named
            assert f"{kind}(s) with {reason}: " in message
            assert [e for k, e, r in report.skipped if (k, r) == (kind, reason)][0] in message
        for anns in ds.annotations:
            for a in anns:
                x1, y1, x2, y2 = a["box"]
                assert all(math.isfinite(v) for v in a["box"]) and x2 > x1 and y2 > y1
        for i in range(len(ds)):  # never an exception mid-epoch but "no image readable at all"
            try:
                image, target = ds[i]
            except DatasetError as e:
                assert str(ann) in str(e)
                break
            assert target["masks"].shape[1:] == image.shape[1:]

    try:  # mrseg eval --coco GT.json --pred RESULTS.json
        gt = load_ground_truth(ann)
        image_id, category_id = next(iter(gt.imgs)), next(iter(gt.cats), 1)
        det = {"image_id": image_id, "category_id": category_id, "bbox": [2, 2, 10, 8], "score": 0.9,
               "segmentation": [[2, 2, 12, 2, 12, 10, 2, 10]]}  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            evaluate(gt, [det])
    except EvalInputError as e:
        assert str(ann) in str(e) or "results" in str(e)

    try:  # mrseg convert GT.json
        source = read_coco(ann, image_dir)
        for _ in source.images:
            pass
    except SourceError as e:
        assert ann.name in str(e) or str(ann) in str(e)
