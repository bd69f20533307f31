"""Read a COCO instance-segmentation file (polygons, RLE, uncompressed RLE, crowd) for `mrseg convert`.

Unlike training (`mrseg.data.coco`, which skips and counts bad annotations), conversion stops at the first
bad annotation with a `SourceError` naming the file and annotation id: a converted dataset must not silently
lose objects. Image sizes: each image's `width`/`height`, else its file's header.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from mrseg.data.annotation_source import (
    SourceDataset,
    SourceError,
    SourceImage,
    SourceInstance,
    image_size_from_file,
)
from mrseg.data.coco import as_int, check_segmentation, decode_segmentation, is_number, load_coco_json
from mrseg.data.images import DEFAULT_MAX_PIXELS
from mrseg.outputs.mask_crop import MaskCrop


def _int(value, context: str) -> int:
    if as_int(value) is None:
        raise SourceError(f"{context}: expected an integer, got {value!r}")
    return as_int(value)


def _categories(data: dict, name: str) -> list[dict]:
    cats = data.get("categories")
    if not isinstance(cats, list) or not cats:
        raise SourceError(f"{name}: has no 'categories'; a COCO dataset lists its classes there")
    out = {}
    for c in cats:
        if not isinstance(c, dict) or "id" not in c or "name" not in c:
            raise SourceError(f"{name}: category {c!r} needs an 'id' and a 'name'")
        cid = _int(c["id"], f"{name}: category {c.get('name')!r}")
        out.setdefault(cid, {"id": cid, "name": str(c["name"]), "supercategory": c.get("supercategory", "")})
    return [out[k] for k in sorted(out)]


def read_coco(path: str | Path, images_dir: str | Path | None = None) -> SourceDataset:
    """A `SourceDataset` of the COCO file `path`. Images are looked for in `images_dir`, else `images/` next
    to the file when that folder exists, else the file's folder."""
    path = Path(path)
    name = path.name
    data = load_coco_json(path, SourceError)
    categories = _categories(data, name)
    known = {c["id"] for c in categories}
    if images_dir is None:
        images_dir = path.parent / "images" if (path.parent / "images").is_dir() else path.parent
    images_dir = Path(images_dir)
    images: dict[int, dict] = {}
    for info in data["images"]:
        if not isinstance(info, dict) or "id" not in info or "file_name" not in info:
            raise SourceError(f"{name}: image {info!r} needs an 'id' and a 'file_name'")
        iid = _int(info["id"], f"{name}: image {info.get('file_name')!r}: id")
        if iid in images:
            raise SourceError(f"{name}: image id {iid} occurs twice in 'images'")
        images[iid] = info
    by_image: dict[int, list[dict]] = defaultdict(list)
    annotations = data.get("annotations") or []
    if not isinstance(annotations, list):
        raise SourceError(f"{name}: 'annotations' is {annotations!r}, not a list of annotations")
    ann_ids: set[int] = set()
    for ann in annotations:
        if not isinstance(ann, dict):
            raise SourceError(f"{name}: annotation {ann!r} is not an object")
        context = f"{name}: annotation id {ann.get('id')!r}"
        image_id = as_int(ann.get("image_id"))
        if image_id not in images:
            raise SourceError(f"{context}: image id {ann.get('image_id')!r} is not in 'images'")
        if as_int(ann.get("category_id")) not in known:
            raise SourceError(f"{context}: category id {ann.get('category_id')!r} is not in 'categories'")
        if as_int(ann.get("id")) is not None:
            if as_int(ann["id"]) in ann_ids:
                raise SourceError(f"{context}: the annotation id occurs twice in 'annotations'")
            ann_ids.add(as_int(ann["id"]))
        by_image[image_id].append(ann)

    def _images() -> Iterator[SourceImage]:
        for iid, info in images.items():
            file_path = images_dir / str(info["file_name"])
            context = f"{name}: image id {iid} ({info['file_name']})"
            if "width" in info and "height" in info:
                width = _int(info["width"], context + ": width")
                height = _int(info["height"], context + ": height")
            else:
                width, height = image_size_from_file(file_path, context)
            if width <= 0 or height <= 0 or width * height > DEFAULT_MAX_PIXELS:
                raise SourceError(
                    f"{context}: size {width}x{height} is not a usable image size (positive, at most "
                    f"{DEFAULT_MAX_PIXELS:,} pixels)"
                )
            anns = by_image.get(iid, [])
            instances = [_instance(a, height, width, f"{name}: annotation id {a.get('id')}") for a in anns]
            yield SourceImage(iid, str(info["file_name"]), str(file_path), width, height, instances)

    return SourceDataset(categories, _images())


def _instance(ann: dict, height: int, width: int, context: str) -> SourceInstance:
    seg = ann.get("segmentation")
    if "segmentation" not in ann:
        raise SourceError(
            f"{context} has no segmentation, only a bbox (a box-only file, such as a box-only model's "
            "annotations.json): mrseg convert converts instance masks; `mrseg predict --format labelme,yolo` "
            "writes a box-only model's boxes in those formats"
        )
    if seg is None or seg == [] or seg == {}:
        raise SourceError(f"{context}: segmentation is empty (mrseg convert converts instance masks)")
    seg, reason = check_segmentation(seg, height, width)
    if reason:
        raise SourceError(f"{context}: {reason}")
    try:
        mask = decode_segmentation(seg, height, width).astype(bool)
    except Exception as e:  # noqa: BLE001 - pycocotools' own message, with where it came from
        raise SourceError(f"{context}: segmentation cannot be decoded ({e})") from None
    if not mask.any():
        raise SourceError(
            f"{context}: segmentation is empty (it covers no pixel of the {width}x{height} image)"
        )
    score = ann.get("score")
    return SourceInstance(
        mask=MaskCrop.from_mask(mask),
        category_id=as_int(ann["category_id"]),
        iscrowd=bool(ann.get("iscrowd", 0)),
        score=float(score) if is_number(score) else None,
    )


__all__ = ["read_coco"]
