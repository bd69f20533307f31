"""The three polygon consumers' own rasterisers, for round-trip checks of what our writers produce.

- COCO: pycocotools `frPyObjects` + `merge` + `decode` (what `COCO.annToMask` does), RLE decoded as is.
- labelme: `labelme.utils.shape.shape_to_mask` (labelme's own code; the module file is loaded by path because
  `import labelme` imports onnxruntime and PyQt5 at package level, which the tests do not need), and for
  `shape_type: "mask"` what `labelme.utils.shapes_to_label` does: the base64 PNG (decoded as
  `labelme.utils.img_b64_to_arr` does: base64 -> PIL -> array) pasted at the box `points[0]..points[1]`.
- YOLO-seg: ultralytics `polygon2mask` on the line's normalised points times (W, H), as its dataset does.

Each returns bool `[H, W]`: the union of everything the consumer draws for one instance.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import sys
import types

import numpy as np
import PIL.Image
import pytest
from pycocotools import mask as mask_util

_labelme_shape = None


def labelme_shape_module():
    """labelme's `labelme/utils/shape.py`, loaded without labelme's package `__init__` (Qt, onnxruntime)."""
    global _labelme_shape
    if _labelme_shape is None:
        spec = importlib.util.find_spec("labelme")
        if spec is None or not spec.submodule_search_locations:
            pytest.skip("labelme is not installed (pip install --no-deps labelme)")
        path = f"{spec.submodule_search_locations[0]}/utils/shape.py"
        saved = {k: sys.modules.get(k) for k in ("labelme", "labelme._label_file")}
        stub = types.ModuleType("labelme")
        stub.__path__ = []  # a package, so `labelme._label_file` resolves to the stub below
        label_file = types.ModuleType("labelme._label_file")
        label_file.ShapeDict = dict  # shape.py imports it for type hints only
        sys.modules.update({"labelme": stub, "labelme._label_file": label_file})
        try:
            mod_spec = importlib.util.spec_from_file_location("labelme_utils_shape", path)
            module = importlib.util.module_from_spec(mod_spec)
            mod_spec.loader.exec_module(module)
        finally:
            for k, v in saved.items():
                if v is None:
                    sys.modules.pop(k, None)
                else:
                    sys.modules[k] = v
        _labelme_shape = module
    return _labelme_shape


def coco_mask(segmentation, height: int, width: int) -> np.ndarray:
    """pycocotools' rasterisation of a COCO `segmentation` (polygons or RLE) to bool `[H, W]`."""
    if isinstance(segmentation, list):
        if not segmentation:
            return np.zeros((height, width), bool)
        rle = mask_util.merge(mask_util.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation["counts"], list):
        rle = mask_util.frPyObjects(segmentation, height, width)
    else:
        rle = dict(segmentation, counts=segmentation["counts"].encode("ascii"))
    return mask_util.decode(rle).astype(bool)


def labelme_mask(shapes: list[dict], height: int, width: int) -> np.ndarray:
    """The union of labelme shapes (one instance's) as labelme's `shapes_to_label` rasterises them."""
    shape_module = labelme_shape_module()
    out = np.zeros((height, width), bool)
    for shape in shapes:
        if shape["shape_type"] == "mask":
            crop = np.array(PIL.Image.open(io.BytesIO(base64.b64decode(shape["mask"])))).astype(bool)
            (x1, y1), (x2, y2) = np.asarray(shape["points"]).astype(int)
            out[y1 : y2 + 1, x1 : x2 + 1] |= crop
        else:
            out |= shape_module.shape_to_mask((height, width), shape["points"], shape["shape_type"])
    return out


def labelme_instances(doc: dict, kinds: tuple[str, ...] | None = None) -> list[list[dict]]:
    """A labelme file's shapes grouped into instances as labelme's `shapes_to_label` does: shapes with the
    same label and `group_id` are one instance, a shape without a `group_id` is its own; in file order.
    `kinds`: only shapes of these `shape_type`s (None: all)."""
    groups: dict[object, list[dict]] = {}
    for k, shape in enumerate(doc["shapes"]):
        if kinds is None or shape["shape_type"] in kinds:
            group = shape.get("group_id")
            groups.setdefault((shape["label"], group) if group is not None else k, []).append(shape)
    return list(groups.values())


def yolo_mask(line: str, height: int, width: int) -> np.ndarray:
    """ultralytics' `polygon2mask` of one YOLO-seg label line, denormalised by (W, H) as its loader does."""
    polygon2mask = pytest.importorskip("ultralytics.data.utils").polygon2mask

    values = np.array(line.split()[1:], dtype=np.float64).reshape(-1, 2) * (width, height)
    return polygon2mask((height, width), [values.reshape(-1)]).astype(bool)


def datumaro_import(path, format: str = "coco_instances") -> dict:
    """`path` (a COCO json) imported by datumaro, CVAT's importer, as `tests/outputs/datumaro_import.py`
    reports it. datumaro runs in its own venv (`make test` builds .venv-datumaro; MRSEG_DATUMARO_PYTHON
    names another)."""
    import json
    import os
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    python = os.environ.get("MRSEG_DATUMARO_PYTHON") or str(repo / ".venv-datumaro" / "bin" / "python")
    if not os.path.exists(python):
        pytest.skip("datumaro lives in its own venv, which `make test` builds (.venv-datumaro)")
    script = Path(__file__).with_name("datumaro_import.py")
    args = [python, str(script), str(path), format]
    result = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"datumaro refused {path}:\n{result.stderr[-3000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])
