"""Header sizes for every decodable format, checked against what OpenCV writes and decodes; bombs refused
before decoding."""

import os
import struct

import cv2
import numpy as np
import pytest

from mrseg.data import images
from mrseg.data.image_headers import header_size
from mrseg.data.images import ImageReadError, decode_image, sniff_format

W, H = 70, 45  # JPEG 2000 needs both sides >= 32 for its default resolution levels


def _encoded(ext: str, **params) -> bytes:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    if ext == ".hdr":
        image = image.astype(np.float32) / 255
    if ext in (".pgm", ".pbm"):
        image = image[..., 0]
    flags = [v for kv in params.items() for v in kv]
    ok, buf = cv2.imencode(ext, image, flags)
    assert ok, ext
    return buf.tobytes()


@pytest.mark.parametrize(
    "ext", [".jpg", ".png", ".bmp", ".webp", ".tiff", ".ppm", ".pgm", ".pbm", ".jp2", ".hdr"]
)
def test_header_size_is_the_decoded_size(ext):
    data = _encoded(ext)
    kind = sniff_format(data)
    assert kind is not None
    assert header_size(data, kind) == (W, H)
    assert decode_image(data, f"x{ext}").shape[:2] == (H, W)


def test_pnm_header_with_comments_and_ascii():
    data = b"P3\n# made by hand\n3 # width\n2\n255\n" + b"0 0 0 " * 6
    assert header_size(data, "pnm") == (3, 2)
    assert decode_image(data, "x.ppm").shape == (2, 3, 3)


def test_tiff_big_endian_long_fields():
    # a minimal big-endian IFD whose width/length are LONG (type 4)
    entries = struct.pack(">HHII", 256, 4, 1, 70000) + struct.pack(">HHII", 257, 4, 1, 5)
    data = b"MM\x00*" + struct.pack(">I", 8) + struct.pack(">H", 2) + entries + b"\x00" * 4
    assert header_size(data, "tiff") == (70000, 5)


def _exr_header(x_max: int, y_max: int) -> bytes:
    attr = b"dataWindow\x00box2i\x00" + struct.pack("<i", 16) + struct.pack("<iiii", 0, 0, x_max, y_max)
    other = b"compression\x00compression\x00" + struct.pack("<i", 1) + b"\x00"
    return b"\x76\x2f\x31\x01" + struct.pack("<I", 2) + other + attr + b"\x00"


def test_exr_data_window():
    assert header_size(_exr_header(639, 479), "exr") == (640, 480)


def _bombs() -> dict[str, bytes]:
    big = 100_000
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 2)
    tiff += struct.pack("<HHII", 256, 4, 1, big) + struct.pack("<HHII", 257, 4, 1, big) + b"\x00" * 64
    jp2_box = b"\x00\x00\x00\x0cjP  \r\n\x87\n" + b"\x00\x00\x00\x2djp2h\x00\x00\x00\x16ihdr"
    return {
        "tiff": tiff,
        "pnm": b"P6\n%d %d\n255\n" % (big, big) + b"\x00" * 64,
        "jpeg2000": jp2_box + struct.pack(">II", big, big) + b"\x00" * 64,
        "jpeg2000-codestream": b"\xff\x4f\xff\x51\x00\x29\x00\x00" + struct.pack(">IIII", big, big, 0, 0),
        "exr": _exr_header(big - 1, big - 1),
        "hdr": b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y %d +X %d\n" % (big, big) + b"\x00" * 64,
    }


@pytest.mark.parametrize("name", list(_bombs()))
def test_bombs_are_refused_before_decoding(name, monkeypatch):
    def no_decode(*args, **kwargs):
        raise AssertionError("decoded a bomb")

    monkeypatch.setattr(images.cv2, "imdecode", no_decode)
    with pytest.raises(ImageReadError, match="over the limit"):
        decode_image(_bombs()[name], f"bomb.{name}")


@pytest.mark.parametrize("data", [b"P6\nnot a size\n", b"II*\x00" + struct.pack("<I", 8) + b"\x00\x00"])
def test_unreadable_size_is_refused_with_a_clear_message(data, monkeypatch):
    monkeypatch.setattr(images.cv2, "imdecode", lambda *a, **k: pytest.fail("decoded"))
    with pytest.raises(ImageReadError, match="cannot read the image size"):
        decode_image(data, "odd.img")


def test_no_limit_still_decodes_without_a_header_size(tmp_path):
    data = _encoded(".ppm")
    path = tmp_path / "x.ppm"
    path.write_bytes(data)
    assert images.read_image(path, max_pixels=None).shape == (H, W, 3)
    assert os.path.getsize(path) == len(data)
