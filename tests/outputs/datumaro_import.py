"""Run by the datumaro venv (`make test` builds .venv-datumaro): import a COCO file as CVAT does.

    python datumaro_import.py ANNOTATIONS.json [FORMAT]   ->  one JSON line on stdout:
    {"items": N, "labels": [names], "annotations": N, "polygons": N, "masks": N, "bboxes": N,
     "boxes": {item id: [[x, y, w, h], ...]}, "points": {item id: [[[x, y, visibility], ...] per instance]}}

FORMAT is datumaro's importer: `coco_instances` (default; CVAT's "COCO 1.0") or `coco_person_keypoints`
(CVAT's "COCO Keypoints 1.0"). The file is placed where that importer looks for it
(`annotations/instances_default.json` or `annotations/person_keypoints_default.json`, the layout CVAT
exports); an import error exits non-zero with datumaro's message on stderr.
"""

import json
import shutil
import sys
import tempfile
from pathlib import Path

import datumaro as dm

FILE_NAMES = {
    "coco_instances": "instances_default.json",
    "coco_person_keypoints": "person_keypoints_default.json",
}


def main(path: str, format: str = "coco_instances") -> None:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "annotations").mkdir()
        (Path(tmp) / "images").mkdir()  # the importer requires the folder; the pixels are not read
        shutil.copy(path, Path(tmp) / "annotations" / FILE_NAMES[format])
        dataset = dm.Dataset.import_from(tmp, format)
        labels = [c.name for c in dataset.categories()[dm.AnnotationType.label]]
        kinds = [a.type for item in dataset for a in item.annotations]
        boxes, points = {}, {}
        for item in dataset:
            of = [a for a in item.annotations if a.type == dm.AnnotationType.bbox]
            boxes[item.id] = [[float(v) for v in a.get_bbox()] for a in of]
            of = [a for a in item.annotations if a.type == dm.AnnotationType.points]
            points[item.id] = []
            for a in of:
                xyv = zip(a.points[::2], a.points[1::2], a.visibility, strict=True)
                points[item.id].append([[float(x), float(y), int(v)] for x, y, v in xyv])
        print(
            json.dumps(
                {
                    "items": len(dataset),
                    "labels": labels,
                    "annotations": len(kinds),
                    "polygons": sum(k == dm.AnnotationType.polygon for k in kinds),
                    "masks": sum(k == dm.AnnotationType.mask for k in kinds),
                    "bboxes": sum(k == dm.AnnotationType.bbox for k in kinds),
                    "boxes": boxes,
                    "points": points,
                }
            )
        )


if __name__ == "__main__":
    main(*sys.argv[1:])
