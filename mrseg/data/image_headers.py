"""Image sizes read from file headers, without decoding: the decompression-bomb check runs on these.

`header_size(data, kind)` -> (width, height), or None when the header cannot be parsed; `kind` is what
`mrseg.data.images.sniff_format` named. Every format `sniff_format` accepts for decoding has a parser here.
"""

from __future__ import annotations

import re
import struct

_JPEG_SOF = (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF)


def jpeg_segments(data: bytes):
    """Yield (marker, payload_start, payload_end) for the JPEG header segments up to and including SOS."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        yield marker, i + 4, i + 2 + length
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            return
        i += 2 + length


def _jpeg(data: bytes) -> tuple[int, int] | None:
    for marker, start, _ in jpeg_segments(data):
        if marker in _JPEG_SOF:
            h, w = struct.unpack(">HH", data[start + 1 : start + 5])
            return w, h
    return None


def _png(data: bytes) -> tuple[int, int] | None:
    return struct.unpack(">II", data[16:24]) if data[12:16] == b"IHDR" else None


def _bmp(data: bytes) -> tuple[int, int] | None:
    w, h = struct.unpack("<ii", data[18:26])
    return abs(w), abs(h)


def _webp(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X":
        w = int.from_bytes(data[24:27], "little") + 1
        h = int.from_bytes(data[27:30], "little") + 1
        return w, h
    if chunk == b"VP8 ":
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L":
        b = int.from_bytes(data[21:25], "little")
        return (b & 0x3FFF) + 1, ((b >> 14) & 0x3FFF) + 1
    return None


def _tiff(data: bytes) -> tuple[int, int] | None:
    """ImageWidth (tag 256) and ImageLength (257) of the first IFD, the page OpenCV decodes."""
    order = "<" if data[:2] == b"II" else ">"
    (ifd,) = struct.unpack(order + "I", data[4:8])
    (count,) = struct.unpack(order + "H", data[ifd : ifd + 2])
    found = {}
    for k in range(count):
        entry = data[ifd + 2 + 12 * k : ifd + 14 + 12 * k]
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if tag in (256, 257):
            # SHORT values sit in the first 2 bytes of the value field, LONG in all 4
            short = kind == 3
            found[tag] = struct.unpack(order + ("H" if short else "I"), entry[8 : 10 if short else 12])[0]
    return (found[256], found[257]) if len(found) == 2 else None


def _pnm(data: bytes) -> tuple[int, int] | None:
    """Netpbm: magic, width, height as whitespace-separated ASCII tokens, '#' comments to end of line."""
    head = re.sub(rb"#[^\n\r]*", b" ", data[:4096])
    tokens = head.split()
    if len(tokens) < 3 or not (tokens[1].isdigit() and tokens[2].isdigit()):
        return None
    return int(tokens[1]), int(tokens[2])


def _jpeg2000(data: bytes) -> tuple[int, int] | None:
    """JP2 container: the 'ihdr' box (height, width); bare codestream: the SIZ marker segment."""
    if data[:4] == b"\xff\x4f\xff\x51":
        xsiz, ysiz, xosiz, yosiz = struct.unpack(">IIII", data[8:24])
        return xsiz - xosiz, ysiz - yosiz
    i = data.find(b"ihdr", 0, 4096)
    if i < 0:
        return None
    h, w = struct.unpack(">II", data[i + 4 : i + 12])
    return w, h


def _exr(data: bytes) -> tuple[int, int] | None:
    """OpenEXR: attributes (name NUL type NUL size value) after the 8-byte magic + version; `dataWindow`
    is a box2i (xMin, yMin, xMax, yMax)."""
    i = 8
    while i < min(len(data), 1 << 16):
        end = data.index(b"\x00", i)
        name = data[i:end]
        if not name:
            return None
        type_end = data.index(b"\x00", end + 1)
        (size,) = struct.unpack("<i", data[type_end + 1 : type_end + 5])
        value = type_end + 5
        if name == b"dataWindow":
            x0, y0, x1, y1 = struct.unpack("<iiii", data[value : value + 16])
            return x1 - x0 + 1, y1 - y0 + 1
        i = value + size
    return None


def _hdr(data: bytes) -> tuple[int, int] | None:
    """Radiance HDR: header lines, a blank line, then the resolution line, e.g. `-Y 480 +X 640`."""
    head = data[:65536]
    blank = head.find(b"\n\n")
    if blank < 0:
        return None
    line = head[blank + 2 :].split(b"\n", 1)[0].split()
    if len(line) != 4 or not (line[1].isdigit() and line[3].isdigit()):
        return None
    first, second = int(line[1]), int(line[3])
    # `-Y H +X W` (the usual order) or `+X W -Y H` (rotated): Y names the height
    return (second, first) if line[0].endswith(b"Y") else (first, second)


_PARSERS = {
    "jpeg": _jpeg,
    "png": _png,
    "bmp": _bmp,
    "webp": _webp,
    "tiff": _tiff,
    "pnm": _pnm,
    "jpeg2000": _jpeg2000,
    "exr": _exr,
    "hdr": _hdr,
}


def header_size(data: bytes, kind: str) -> tuple[int, int] | None:
    """(width, height) from the header of `data`, a `kind` image; None if the header cannot be parsed."""
    parser = _PARSERS.get(kind)
    if parser is None:
        return None
    try:
        size = parser(data)
    except (struct.error, ValueError, IndexError):
        return None
    if size is None or size[0] < 0 or size[1] < 0:
        return None
    return int(size[0]), int(size[1])
