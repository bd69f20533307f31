"""Decoding one image file to RGB uint8, the same way for train, eval and predict.

OpenCV decodes (a declared dependency; Pillow is not). On top of `cv2.imdecode`:
- EXIF orientation is parsed and applied here (JPEG APP1, PNG eXIf, TIFF), independent of OpenCV's version;
- the pixel count is read from every format's header (`mrseg.data.image_headers`) and checked before
  decoding, so a decompression bomb is refused before it allocates (an unreadable header is refused too, and
  the decoded size is checked again);
- a truncated JPEG (no EOI after the scan data), an empty file, a non-image or a format OpenCV cannot read
  raise `ImageReadError` naming the file and the reason, never a `None` or a silently partial image.
Gray, RGBA, palette, 16-bit and CMYK come out as RGB uint8 (alpha dropped, 16-bit / 256, as `IMREAD_COLOR`).
"""

from __future__ import annotations

import os
import re
import struct

import cv2
import numpy as np

from mrseg.data.image_headers import header_size, jpeg_segments

# Pillow's default limit (Image.MAX_IMAGE_PIXELS): 1024 * 1024 * 1024 // 4 // 3.
DEFAULT_MAX_PIXELS = 89_478_485


class ImageReadError(ValueError):
    """An input image that cannot be used; the message names the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def read_image(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode the image at `path` to RGB uint8 `[H, W, 3]` with EXIF orientation applied; `max_pixels`
    (None: no limit) refuses larger images. `ImageReadError` (a ValueError) for a missing, empty, truncated,
    oversized or undecodable file."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except IsADirectoryError:
        raise ImageReadError(path, "is a folder, not an image file") from None
    except OSError as e:
        raise ImageReadError(path, f"cannot read the file ({e.strerror or e})") from None
    return decode_image(data, path, max_pixels)


def decode_image(
    data: bytes, path: str | os.PathLike = "<bytes>", max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Decode encoded image bytes like `read_image`; `path` is only used in error messages."""
    if len(data) == 0:
        raise ImageReadError(path, "the file is empty (0 bytes)")
    kind = sniff_format(data)
    if kind is None:
        raise ImageReadError(path, "not a recognised image format (expected JPEG, PNG, BMP, TIFF, WebP, ...)")
    if kind in ("heif", "gif"):
        raise ImageReadError(path, f"{kind.upper()} is not supported by OpenCV; convert it to JPEG or PNG")
    size = header_size(data, kind)
    if max_pixels is not None:
        # every format is sized from its header before it is decoded (a bomb would allocate first)
        if size is None:
            raise ImageReadError(
                path,
                f"cannot read the image size from the {kind.upper()} header (corrupt or unusual header); "
                "convert the file to PNG or JPEG",
            )
        if size[0] * size[1] > max_pixels:
            raise _too_large(path, size, max_pixels)
    if kind == "jpeg" and not _jpeg_is_complete(data):
        raise ImageReadError(path, "truncated JPEG (no end-of-image marker); the file is incomplete")

    buf = np.frombuffer(data, np.uint8)
    try:
        bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    except cv2.error as e:
        raise ImageReadError(path, f"OpenCV could not decode the {kind.upper()} data ({e.err})") from None
    if bgr is None:
        raise ImageReadError(path, f"OpenCV could not decode the {kind.upper()} data (corrupt or truncated)")
    h, w = bgr.shape[:2]
    if max_pixels is not None and h * w > max_pixels:
        raise _too_large(path, (w, h), max_pixels)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return apply_orientation(rgb, exif_orientation(data, kind))


def _too_large(path, size: tuple[int, int], max_pixels: int) -> ImageReadError:
    w, h = size
    return ImageReadError(
        path,
        f"image is {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,} (a possible decompression "
        f"bomb); raise the limit (max_pixels) if the file is trusted",
    )


# The magic bytes of each format, checked in this order.
_SIGNATURES = (
    ("jpeg", rb"\xff\xd8\xff"),
    ("png", rb"\x89PNG\r\n\x1a\n"),
    ("bmp", rb"BM"),
    ("tiff", rb"II\*\x00|MM\x00\*"),
    ("webp", rb"RIFF....WEBP"),
    ("gif", rb"GIF8[79]a"),
    ("heif", rb"....ftyp(?:heic|heix|mif1|msf1|heim|avif)"),
    ("pnm", rb"P[1-6]"),
    ("jpeg2000", rb"\x00\x00\x00\x0cjP  |\xff\x4f\xff\x51"),
    ("exr", rb"\x76\x2f\x31\x01"),
    ("hdr", rb"#\?(?:RADIANCE|RGBE)"),
)


def sniff_format(data: bytes) -> str | None:
    """The image format named by the file's magic bytes ("jpeg", "png", ...), or None."""
    return next((kind for kind, magic in _SIGNATURES if re.match(magic, data, re.DOTALL)), None)


def _jpeg_is_complete(data: bytes) -> bool:
    # 0xFFD9 cannot occur inside entropy-coded data (0xFF is stuffed), so an EOI after the first scan
    # marks a complete file; trailing bytes after it are allowed (some cameras append data).
    sos = None
    for marker, start, _ in jpeg_segments(data):
        if marker == 0xDA:
            sos = start
    return sos is not None and data.rfind(b"\xff\xd9") > sos


def exif_orientation(data: bytes, kind: str | None = None) -> int:
    """The EXIF orientation tag (1..8) of a JPEG, PNG or TIFF file's bytes; 1 when absent or unreadable."""
    kind = kind or sniff_format(data)
    tiff = None
    try:
        if kind == "jpeg":
            for marker, start, end in jpeg_segments(data):
                if marker == 0xE1 and data[start : start + 6] == b"Exif\x00\x00":
                    tiff = data[start + 6 : end]
                    break
        elif kind == "png":
            tiff = _png_exif(data)
        elif kind == "tiff":
            tiff = data
        return 1 if tiff is None else _tiff_orientation(tiff)
    except (struct.error, IndexError):
        return 1


def _png_exif(data: bytes) -> bytes | None:
    i = 8
    while i + 8 <= len(data):
        length, ctype = struct.unpack(">I4s", data[i : i + 8])
        if ctype == b"eXIf":
            return data[i + 8 : i + 8 + length]
        if ctype in (b"IDAT", b"IEND"):  # eXIf must precede the image data
            return None
        i += 12 + length
    return None


def _tiff_orientation(tiff: bytes) -> int:
    endian = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if endian is None:
        return 1
    (ifd,) = struct.unpack(endian + "I", tiff[4:8])
    (count,) = struct.unpack(endian + "H", tiff[ifd : ifd + 2])
    for k in range(count):
        entry = ifd + 2 + 12 * k
        tag, typ = struct.unpack(endian + "HH", tiff[entry : entry + 4])
        if tag == 0x0112 and typ == 3:  # Orientation, SHORT
            (value,) = struct.unpack(endian + "H", tiff[entry + 8 : entry + 10])
            return value if 1 <= value <= 8 else 1
    return 1


def apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """Turn an `[H, W, C]` image stored with EXIF `orientation` (1..8) upright."""
    ops = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.transpose(1, 0, 2),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
        8: lambda a: np.rot90(a, 1),
    }
    return np.ascontiguousarray(ops.get(orientation, ops[1])(image))
