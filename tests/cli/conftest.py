"""Reuses the tiny seeded checkpoint and the photo fixtures of tests/engine/conftest.py (one definition)."""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "_mrseg_engine_conftest", Path(__file__).parents[1] / "engine" / "conftest.py"
)
_engine = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_engine)

tiny_weights = _engine.tiny_weights
one_thread = _engine.one_thread
pycocotools_printed = _engine.pycocotools_printed
nuts_images = _engine.nuts_images
tiny_coco_weights = _engine.tiny_coco_weights
skimage_photos = _engine.skimage_photos
