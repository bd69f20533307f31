"""Writers for `mrseg predict`'s output formats, all fed the same `Detections` and instance records.

Per-item writers (`write(item, image_rgb, det, instances)` then `close()`): `JsonlWriter`, `LabelmeWriter`,
`YoloWriter`, `OverlayWriter`. `finalize(out_dir, formats, records_paths, categories)` (once, rank 0) builds
the end-of-run files from the journals. `FORMATS` (`mrseg.outputs.formats`) is the one registry of formats.
"""

from mrseg.outputs.detections import Detections, InputItem
from mrseg.outputs.finalize import read_records
from mrseg.outputs.formats import FORMATS, OutputFormat, finalize, parse_formats
from mrseg.outputs.jsonl import JsonlWriter
from mrseg.outputs.labelme import LabelmeWriter
from mrseg.outputs.mask_crop import CroppedMasks, MaskCrop
from mrseg.outputs.overlay import OverlayWriter
from mrseg.outputs.records import image_record, instance_records, record_line
from mrseg.outputs.yolo import YoloWriter

__all__ = [
    "FORMATS",
    "CroppedMasks",
    "Detections",
    "InputItem",
    "JsonlWriter",
    "LabelmeWriter",
    "MaskCrop",
    "OutputFormat",
    "OverlayWriter",
    "YoloWriter",
    "finalize",
    "image_record",
    "instance_records",
    "parse_formats",
    "read_records",
    "record_line",
]
