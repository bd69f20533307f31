"""`mrseg predict --precision`: bf16 end to end on the CPU gives the fp32 run's annotations up to rounding;
fp16 on the CPU is a fatal error that says what to use; an unknown name is a usage error. Real photos shrunk
to 200x150, the tiny seeded model of tests/engine/conftest.py."""

from __future__ import annotations

import cv2
import numpy as np
from click.testing import CliRunner
from pycocotools.coco import COCO

from mrseg.cli import main


def _run(*args):
    return CliRunner().invoke(main, ["predict", *map(str, args)], catch_exceptions=False)


def _annotations(path) -> tuple[dict[int, list[dict]], COCO]:
    coco = COCO(str(path))
    return {img: coco.imgToAnns[img] for img in sorted(coco.imgs)}, coco


def _iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    return w * h / (aw * ah + bw * bh - w * h)


def test_bf16_runs_end_to_end_and_matches_fp32(tiny_weights, nuts_images, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in nuts_images[:2]:
        cv2.imwrite(str(photos / p.name), cv2.resize(cv2.imread(str(p)), (200, 150)))
    common = [photos, "--weights", tiny_weights, "--score", "0.2", "--device", "cpu", "-q"]
    fp32 = _run(*common, "--out", tmp_path / "fp32")
    bf16 = _run(*common, "--out", tmp_path / "bf16", "--precision", "bf16")
    assert fp32.exit_code == 0 and bf16.exit_code == 0, bf16.output
    ref, _ = _annotations(tmp_path / "fp32" / "annotations.json")
    got, coco = _annotations(tmp_path / "bf16" / "annotations.json")
    assert ref.keys() == got.keys() and len(got) == 2
    assert sum(map(len, ref.values())) >= 2
    score_changed = False
    for img, anns in ref.items():
        for a in anns:  # each fp32 instance has a bf16 twin: same class, nearly the same box and mask area
            same_class = [b for b in got[img] if b["category_id"] == a["category_id"]]
            twins = [b for b in same_class if _iou(a["bbox"], b["bbox"]) > 0.9]
            assert twins, (a, got[img])
            assert abs(twins[0]["area"] - a["area"]) <= 0.05 * a["area"]
            assert abs(twins[0]["score"] - a["score"]) < 0.02
            score_changed |= twins[0]["score"] != a["score"]
    assert score_changed  # the bf16 run did run in bf16
    for anns in got.values():
        for b in anns:
            assert coco.annToMask(b).shape == (150, 200) and np.any(coco.annToMask(b))


def test_fp16_on_the_cpu_is_a_fatal_error_and_unknown_names_usage_errors(tiny_weights, nuts_images, tmp_path):
    fp16 = _run(nuts_images[0], "--weights", tiny_weights, "--device", "cpu", "--precision", "fp16",
                "--out", tmp_path / "fp16")  # fmt: skip
    assert fp16.exit_code == 1
    assert "--precision bf16" in fp16.stderr and "Traceback" not in fp16.output
    assert not (tmp_path / "fp16" / "annotations.json").exists()
    bad = _run(nuts_images[0], "--weights", tiny_weights, "--precision", "fp64", "--out", tmp_path / "bad")
    assert bad.exit_code == 2 and "fp32" in bad.stderr
