"""The synthetic shapes generator behind the demo: deterministic, exact and consistent annotations."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

ROOT = Path(__file__).resolve().parents[2]


def _generator():
    spec = importlib.util.spec_from_file_location(
        "shapes_generate", ROOT / "examples" / "shapes" / "generate.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_same_seed_same_bytes_and_splits_differ(tmp_path):
    gen = _generator()
    a = gen.generate_split(str(tmp_path / "a"), "train", 5, 64, seed=3)
    b = gen.generate_split(str(tmp_path / "b"), "train", 5, 64, seed=3)
    v = gen.generate_split(str(tmp_path / "a"), "val", 5, 64, seed=3)
    assert Path(a).read_bytes() == Path(b).read_bytes()
    for name in sorted(p.name for p in (tmp_path / "a" / "train").iterdir()):
        assert (tmp_path / "a" / "train" / name).read_bytes() == (
            tmp_path / "b" / "train" / name
        ).read_bytes()
    assert Path(a).read_text() != Path(v).read_text()  # the held-out split is other images


def test_annotations_are_exact_visible_masks(tmp_path):
    gen = _generator()
    path = gen.generate_split(str(tmp_path), "train", 30, 96, seed=0, max_shapes=4)
    data = json.loads(Path(path).read_text())
    assert {c["name"] for c in data["categories"]} == {"circle", "square", "triangle"}
    by_image: dict[int, list] = {}
    for ann in data["annotations"]:
        m = mask_utils.decode(ann["segmentation"])
        assert m.shape == (96, 96) and int(m.sum()) == ann["area"] > 0
        x, y, w, h = ann["bbox"]
        ys, xs = np.nonzero(m)
        assert [x, y, x + w, y + h] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        by_image.setdefault(ann["image_id"], []).append(m)
    for masks in by_image.values():
        assert int(np.sum(masks, axis=0).max()) == 1  # visible parts never overlap
    counts = [len(by_image.get(img["id"], [])) for img in data["images"]]
    assert max(counts) > 1 and len(data["annotations"]) > 30
