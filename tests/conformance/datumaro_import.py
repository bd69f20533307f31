"""Run by the datumaro venv (`make test` builds .venv-datumaro): import a COCO instances file as CVAT does.

    python datumaro_import.py ANNOTATIONS.json   ->  one JSON line on stdout:
    {"items": N, "labels": [names], "annotations": N, "polygons": N, "masks": N}

The file is placed as `annotations/instances_default.json` (the layout CVAT exports and datumaro's COCO
importer looks for); an import error exits non-zero with datumaro's message on stderr.
"""

import json
import shutil
import sys
import tempfile
from pathlib import Path

import datumaro as dm


def main(path: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "annotations").mkdir()
        (Path(tmp) / "images").mkdir()  # the importer requires the folder; the pixels are not read
        shutil.copy(path, Path(tmp) / "annotations" / "instances_default.json")
        dataset = dm.Dataset.import_from(tmp, "coco_instances")
        labels = [c.name for c in dataset.categories()[dm.AnnotationType.label]]
        kinds = [a.type for item in dataset for a in item.annotations]
        print(
            json.dumps(
                {
                    "items": len(dataset),
                    "labels": labels,
                    "annotations": len(kinds),
                    "polygons": sum(k == dm.AnnotationType.polygon for k in kinds),
                    "masks": sum(k == dm.AnnotationType.mask for k in kinds),
                }
            )
        )


if __name__ == "__main__":
    main(sys.argv[1])
