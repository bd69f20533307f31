"""`mrseg convert`: an annotation dataset (COCO, labelme, YOLO-seg) -> the dataset formats of `mrseg predict`.

Every instance becomes a row of a `Detections` (its mask as a crop, its box the mask's bounds) and an instance
record (`mrseg.outputs.records.instance_records`), which go through the same writers and finalizer as
predict's: `LabelmeWriter`, `YoloWriter`, and `finalize` for annotations.json and yolo/data.yaml. What a
target cannot express is left out or approximated and counted per reason in the `ConvertReport`
(`convert_report.json`):
- crowd regions: kept in COCO (`iscrowd: 1`, RLE), left out of labelme and YOLO (as ultralytics' COCO
  converter does; they are not objects to learn);
- scores: kept in COCO (`score`) and labelme (`description`), lost in YOLO;
- holes smaller than `DEFAULT_MIN_AREA` px: filled in COCO polygons (`--mask-format polygon`) and labelme;
  larger holes are kept (RLE, a labelme `mask` shape); YOLO keeps every hole (bridges);
- YOLO: mask parts whose bridges would draw more wrong pixels than they bring are left out;
- images whose file is missing: YOLO gets their label file without the image.
Output is written into a temporary folder next to `out` and renamed at the end: an error leaves nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mrseg.data.annotation_source import SourceDataset, SourceError, SourceImage
from mrseg.outputs import Detections, InputItem, LabelmeWriter, YoloWriter, finalize, instance_records
from mrseg.outputs.mask_crop import CroppedMasks
from mrseg.outputs.masks import DEFAULT_MIN_AREA, DEFAULT_SIMPLIFY, hole_areas
from mrseg.outputs.paths import STATE_DIR
from mrseg.outputs.records import record_line

TARGETS = ("coco", "labelme", "yolo")
REPORT_NAME = "convert_report.json"


@dataclass
class ConvertReport:
    """What was converted: `source` format, `images`, `instances` read, `written` {format: instances},
    `losses` {format: {reason: count}} (format "source" for what the reader could not take)."""

    source: str
    images: int = 0
    instances: int = 0
    written: Counter = field(default_factory=Counter)
    losses: dict = field(default_factory=dict)

    def lose(self, target: str, reason: str, n: int = 1) -> None:
        if n:
            self.losses.setdefault(target, Counter())[reason] += n

    def to_json(self) -> dict:
        losses = {k: dict(v) for k, v in self.losses.items()}
        return {**vars(self), "written": dict(self.written), "losses": losses}

    def lines(self) -> list[str]:
        """Human-readable summary lines."""
        out = [f"{self.images} images, {self.instances} instances read ({self.source})"]
        out += [f"{fmt}: {n} instances written" for fmt, n in self.written.items()]
        for fmt, reasons in self.losses.items():
            out += [f"{fmt}: {n} x {reason}" for reason, n in reasons.most_common()]
        if not self.losses:
            out.append("nothing lost")
        return out


def detect_source(src: Path) -> str:
    """ "coco" (a .json file), "yolo" (a .yaml file or a folder with data.yaml) or "labelme" (a folder)."""
    if src.is_file() or src.suffix.lower() in (".json", ".yaml", ".yml"):
        if src.suffix.lower() in (".yaml", ".yml"):
            return "yolo"
        if src.suffix.lower() == ".json":
            return "coco"
        raise SourceError(f"{src}: give a COCO .json file, a YOLO data.yaml or a labelme folder")
    if not src.exists():
        raise SourceError(f"{src}: no such file or folder")
    return "yolo" if (src / "data.yaml").is_file() else "labelme"


def open_source(src: Path, kind: str, images: Path | None) -> SourceDataset:
    if kind == "coco":
        from mrseg.data.coco_reader import read_coco

        return read_coco(src, images)
    if kind == "labelme":
        from mrseg.data.labelme_reader import read_labelme

        return read_labelme(src, images)
    from mrseg.data.yolo_reader import read_yolo

    return read_yolo(src, images)


def _detections(image: SourceImage, keep: list[int]) -> Detections:
    """`Detections` of the instances `keep` of `image`: boxes the masks' bounds, scores the source's (1.0 when
    none), labels 1..K by position in the category list (set by the caller in `labels`)."""
    insts = [image.instances[i] for i in keep]
    boxes = np.array([inst.mask.tightened().bounds for inst in insts], np.float32).reshape(-1, 4)
    scores = np.array([1.0 if inst.score is None else inst.score for inst in insts], np.float32)
    return Detections(
        width=image.width,
        height=image.height,
        boxes=boxes,
        scores=scores,
        masks=CroppedMasks([inst.mask for inst in insts], image.height, image.width),
    )


def _convert_image(
    image: SourceImage,
    label_of: dict[int, int],
    classes,
    targets,
    mask_format,
    simplify,
    writers: dict,
    journal,
    report: ConvertReport,
) -> None:
    item = InputItem(id=image.id, path=image.path, rel_path=image.file_name)
    det = _detections(image, list(range(len(image.instances))))
    det.labels = np.array([label_of[inst.category_id] for inst in image.instances], np.int64)
    records = instance_records(det, classes, mask_format=mask_format, simplify=simplify)
    for inst, rec in zip(image.instances, records, strict=True):
        if inst.score is None:
            del rec["score"]
        if inst.iscrowd:
            rec["iscrowd"] = 1
            rec.pop("polygons", None)  # crowd regions are RLE in COCO
    keep = [i for i, inst in enumerate(image.instances) if not inst.iscrowd]
    crowd = len(image.instances) - len(keep)
    holes = [hole_areas(image.instances[i].mask) for i in keep]  # crowd regions stay RLE
    small = sum(1 for h in holes if h and max(h) < DEFAULT_MIN_AREA)
    filled = f"holes under {DEFAULT_MIN_AREA:g} px filled by the polygon"
    if "coco" in targets:
        journal.write(record_line(item, det, records))
        report.written["coco"] += len(records)
        if mask_format == "polygon":
            report.lose("coco", filled, small)
    sub = _detections(image, keep)
    sub.labels = det.labels[keep]
    sub_records = [records[i] for i in keep]
    for target, writer in writers.items():
        writer.write(item, None, sub, sub_records)
        report.written[target] += len(sub_records)
        report.lose(target, "crowd region left out", crowd)
        if target == "labelme":
            report.lose(target, filled, small)
        if target == "yolo":
            scored = sum(1 for i in keep if image.instances[i].score is not None)
            report.lose(target, "score dropped (YOLO has no score)", scored)
            if not os.path.isfile(image.path):
                report.lose(target, "image file not found: label written without its image")


def _prepare_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SourceError(f"{out}: already exists and is not empty; choose another --out or remove it")


def convert(
    src: str | os.PathLike,
    targets: list[str],
    out: str | os.PathLike,
    images: str | os.PathLike | None = None,
    mask_format: str = "polygon",
    simplify: float = DEFAULT_SIMPLIFY,
) -> ConvertReport:
    """Convert the dataset at `src` into `targets` (of `TARGETS`) under `out` (which must not exist or be
    empty); returns the report (also written to `out/convert_report.json`). Raises `SourceError` for bad
    input; `out` is then left as it was."""
    src, out = Path(src), Path(out)
    bad = [t for t in targets if t not in TARGETS]
    if bad or not targets:
        raise SourceError(f"--to {','.join(targets)}: choose among {', '.join(TARGETS)}")
    if mask_format not in ("polygon", "rle"):
        raise SourceError(f"--mask-format {mask_format}: choose polygon or rle")
    _prepare_out(out)
    kind = detect_source(src)
    dataset = open_source(src, kind, Path(images) if images is not None else None)
    classes = [
        {"id": c["id"], "name": c["name"], "supercategory": c.get("supercategory", "")}
        for c in dataset.categories
    ]
    label_of = {c["id"]: i + 1 for i, c in enumerate(classes)}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    report = ConvertReport(source=kind)
    try:
        writers = {}
        if "labelme" in targets:
            writers["labelme"] = LabelmeWriter(tmp, simplify=simplify)
        if "yolo" in targets:
            writers["yolo"] = YoloWriter(tmp, simplify=simplify, classes=classes)
        journal_path = tmp / STATE_DIR / "records-0.jsonl"
        journal_path.parent.mkdir()
        coco_mask = mask_format if "coco" in targets else "rle"
        with open(journal_path, "w", encoding="utf-8") as journal:
            for image in dataset.images:
                report.images += 1
                report.instances += len(image.instances)
                _convert_image(
                    image, label_of, classes, targets, coco_mask, simplify, writers, journal, report
                )
        for target, n in dataset.losses.items():
            report.lose("source", target, n)
        if "yolo" in writers:
            left_out = writers["yolo"].stats.get("parts_left_out", 0)
            report.lose("yolo", "mask parts left out of the polygon (bridges would cost more)", left_out)
        coco_yolo = [t for t in targets if t in ("coco", "yolo")]
        finalize(tmp, coco_yolo, [journal_path], classes, description=f"mrseg convert from {kind}")
        shutil.rmtree(tmp / STATE_DIR)
        (tmp / REPORT_NAME).write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
        _prepare_out(out)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report
