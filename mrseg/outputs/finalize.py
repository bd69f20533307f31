"""The end-of-run files of a predict run (annotations.json, results.json, predictions.jsonl, data.yaml), built
once from the run journal(s) after every rank is done; `formats.finalize` picks them per format.

`read_records` streams the journal lines of one or more record files sorted by image id: a torn line (no
newline, as after a crash) or invalid JSON is skipped, and the last complete line of an image id wins (a
resumed run may redo an input). Only an index of (id, file, offset) is held in memory.
"""

from __future__ import annotations

import datetime
import json
import os
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

from mrseg import __version__
from mrseg.model.coco_classes import real_categories
from mrseg.outputs.atomic import atomic_open
from mrseg.outputs.masks import segmentation_area_bbox
from mrseg.outputs.records import coco_results, public_line
from mrseg.outputs.yolo import YOLO_DIR, data_yaml

COCO_NAME = "annotations.json"
RESULTS_NAME = "results.json"
YOLO_YAML = f"{YOLO_DIR}/data.yaml"


def _index(paths: list[Path]) -> list[tuple[int, int, int]]:
    """Sorted (image_id, file_index, offset) of the last complete line for each image id."""
    latest: dict[int, tuple[int, int]] = {}
    for file_index, path in enumerate(paths):
        bad = 0
        with open(path, "rb") as f:
            offset = 0
            for line in f:
                start, offset = offset, offset + len(line)
                if not line.endswith(b"\n"):
                    continue  # torn last line
                try:
                    image_id = int(json.loads(line)["image"]["id"])
                except (ValueError, KeyError, TypeError):
                    bad += 1
                    continue
                latest[image_id] = (file_index, start)
        if bad:
            warnings.warn(f"{path}: skipped {bad} unreadable record line(s)", stacklevel=3)
    return sorted((image_id, fi, off) for image_id, (fi, off) in latest.items())


def iter_record_lines(records_paths: Iterable[str | os.PathLike]) -> Iterator[bytes]:
    """The raw JSON lines (newline-terminated) of the record files, one per image id, sorted by image id."""
    paths = [Path(p) for p in records_paths if Path(p).exists()]
    index = _index(paths)
    files = [open(p, "rb") for p in paths]
    try:
        for _, file_index, offset in index:
            f = files[file_index]
            f.seek(offset)
            yield f.readline()
    finally:
        for f in files:
            f.close()


def read_records(records_paths: Iterable[str | os.PathLike]) -> Iterator[dict]:
    """The journal records `{"image": {...}, "instances": [...]}`, one per image id, sorted by image id."""
    return map(json.loads, iter_record_lines(records_paths))


def coco_categories(categories: list[dict]) -> list[dict]:
    """COCO `categories` (id, name, supercategory; a keypoint model's `keypoints` / `skeleton`): the model's
    real classes (no "N/A" placeholders, which the predictor never emits, sorted by id)."""
    out = []
    for c in real_categories(categories):
        cat = {"id": int(c["id"]), "name": str(c["name"]), "supercategory": c.get("supercategory", "")}
        for key in ("keypoints", "skeleton"):
            if key in c:
                cat[key] = c[key]
        out.append(cat)
    return out


def _dump(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def write_coco(
    path: str | os.PathLike, records_paths: list, categories: list[dict], description: str = "mrseg predict"
) -> None:
    """`annotations.json`: a COCO dataset of the predictions, written incrementally (two passes).

    `segmentation`: the polygons when the run asked for them (`--mask-format polygon`), else (and for masks
    with holes) the exact RLE; `area` and `bbox` are pycocotools' `area` / `toBbox` of it (the ground-truth
    convention; an empty mask keeps the detector's box, which results.json keeps). The score is `score` and
    `attributes.score` (CVAT's COCO importer reads `attributes`). A box-only model's annotations have no
    `segmentation`; a keypoint model's also `keypoints` and `num_keypoints`."""
    info = {
        "description": description,
        "version": __version__,
        "date_created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    with atomic_open(path, "w", fsync=True) as f:
        f.write('{"info":' + _dump(info) + ',"licenses":[]')
        f.write(',"categories":' + _dump(coco_categories(categories)))
        f.write(',"images":[')
        for k, record in enumerate(read_records(records_paths)):
            f.write(("," if k else "") + "\n" + _dump(record["image"]))
        f.write('],"annotations":[')
        ann_id = 0
        for record in read_records(records_paths):
            image_id = record["image"]["id"]
            for inst in record["instances"]:
                ann_id += 1
                ann = {"id": ann_id, "image_id": image_id, "category_id": inst["category_id"]}
                ann.update(bbox=inst["bbox"], area=inst["area"])
                if "segmentation" in inst:  # area and bbox as pycocotools reads them off the segmentation
                    ann["segmentation"] = inst.get("polygons", inst["segmentation"])
                    size = (record["image"]["height"], record["image"]["width"])
                    area, bbox = segmentation_area_bbox(ann["segmentation"], *size)
                    ann.update(area=area, bbox=bbox if area else inst["bbox"])
                if "keypoints" in inst:
                    ann.update(keypoints=inst["keypoints"], num_keypoints=inst["num_keypoints"])
                ann["iscrowd"] = int(inst.get("iscrowd", 0))  # set by `mrseg convert` for crowd regions
                if "score" in inst:  # a converted ground truth has none
                    ann.update(score=inst["score"], attributes={"score": inst["score"]})
                if "track_id" in inst:
                    ann["track_id"] = inst["track_id"]
                f.write(("," if ann_id > 1 else "") + "\n" + _dump(ann))
        f.write("]}\n")


def write_results(path: str | os.PathLike, records_paths: list) -> None:
    """`results.json`: the list `COCO.loadRes` takes, segmentations always the exact RLE (older journals'
    polygons rasterised), `keypoints` for a keypoint model (`score` is the box's, what OKS ranks by). Each
    entry also has its image's `file_name` (pycocotools ignores it): `image_id` is predict's own numbering,
    and `mrseg eval` matches results to a ground truth's images by file name."""
    with atomic_open(path, "w", fsync=True) as f:
        f.write("[")
        first = True
        for record in read_records(records_paths):
            image = record["image"]
            for res in coco_results(image["id"], record["instances"], image["height"], image["width"]):
                f.write(("" if first else ",") + "\n" + _dump({**res, "file_name": image["file_name"]}))
                first = False
        f.write("\n]\n")


def write_jsonl(path: str | os.PathLike, records_paths: list) -> None:
    """`predictions.jsonl` from the journals: one line per image, sorted by id, without the polygons."""
    with atomic_open(path, "wb", fsync=True) as f:
        for line in iter_record_lines(records_paths):
            f.write(public_line(line))


def write_yolo_yaml(path: str | os.PathLike, categories: list[dict]) -> None:
    """`yolo/data.yaml` (see `yolo.data_yaml`), and the `images/` folder it points at (made if none came)."""
    path = Path(path)
    (path.parent / "images").mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "w", fsync=True) as f:
        f.write(data_yaml(categories))
