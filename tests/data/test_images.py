"""read_image: every input kind decodes to RGB uint8, upright; every bad input raises ImageReadError."""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest

from mrseg.data.images import ImageReadError, exif_orientation, header_size, read_image, sniff_format


def _pattern(h: int = 24, w: int = 40) -> np.ndarray:
    """An RGB image whose every 8x8 block has its own colour, so any rotation or flip is visible."""
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
    return np.repeat(np.repeat(blocks, 8, 0), 8, 1)


def _write_jpeg(path, rgb: np.ndarray, quality: int = 98) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    data = buf.tobytes()
    path.write_bytes(data)
    return data


def _exif_app1(orientation: int) -> bytes:
    """A minimal little-endian EXIF APP1 segment holding only the Orientation tag."""
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1)
    tiff += struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0)
    payload = b"Exif\x00\x00" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


# The upright image for each EXIF orientation of the stored pixels, written independently of the module.
UPRIGHT = {
    1: lambda a: a,
    2: np.fliplr,
    3: lambda a: np.rot90(a, 2),
    4: np.flipud,
    5: lambda a: np.transpose(a, (1, 0, 2)),
    6: lambda a: np.rot90(a, 3),  # stored rotated 90 CCW: turn it 90 CW
    7: lambda a: np.rot90(np.transpose(a, (1, 0, 2)), 2),
    8: lambda a: np.rot90(a, 1),
}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(tmp_path, orientation):
    stored = _pattern()
    data = _write_jpeg(tmp_path / "plain.jpg", stored)
    rotated = data[:2] + _exif_app1(orientation) + data[2:]  # APP1 right after SOI
    path = tmp_path / f"o{orientation}.jpg"
    path.write_bytes(rotated)
    assert exif_orientation(rotated) == orientation
    got = read_image(path)
    want = UPRIGHT[orientation](read_image(tmp_path / "plain.jpg"))
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    # OpenCV's own EXIF handling (IMREAD_COLOR honours it) agrees with ours.
    ref = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(got, ref)


def test_rgb_jpeg_channel_order(tmp_path):
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 0] = 250  # pure red
    _write_jpeg(tmp_path / "red.jpg", rgb)
    got = read_image(tmp_path / "red.jpg")
    assert got.dtype == np.uint8 and got.shape == (16, 16, 3)
    assert got[..., 0].min() > 230 and got[..., 1:].max() < 20


def test_grayscale_png_becomes_rgb(tmp_path):
    gray = np.tile(np.arange(0, 250, 10, dtype=np.uint8), (5, 1))
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    got = read_image(tmp_path / "g.png")
    assert got.shape == (5, 25, 3) and got.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(got[..., c], gray)


def test_rgba_png_drops_alpha(tmp_path):
    rgba = np.zeros((6, 7, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 10, 20, 30, 0  # fully transparent
    cv2.imwrite(str(tmp_path / "a.png"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    got = read_image(tmp_path / "a.png")
    assert got.shape == (6, 7, 3)
    np.testing.assert_array_equal(got[0, 0], [10, 20, 30])


def test_16bit_png_scaled_to_uint8(tmp_path):
    rgb16 = np.zeros((4, 4, 3), np.uint16)
    rgb16[..., 0], rgb16[..., 1], rgb16[..., 2] = 65535, 32768, 256
    cv2.imwrite(str(tmp_path / "d.png"), cv2.cvtColor(rgb16, cv2.COLOR_RGB2BGR))
    assert cv2.imread(str(tmp_path / "d.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    got = read_image(tmp_path / "d.png")
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got[0, 0], [255, 128, 1])


def test_palette_png(tmp_path):
    pil = pytest.importorskip("PIL.Image", reason="Pillow is needed to write a palette PNG")
    idx = np.array([[0, 1], [2, 3]], np.uint8)
    im = pil.fromarray(idx, mode="P")
    palette = [255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 99, 199]
    im.putpalette(palette)
    im.save(tmp_path / "p.png")
    got = read_image(tmp_path / "p.png")
    np.testing.assert_array_equal(got.reshape(-1, 3), np.array(palette).reshape(-1, 3))


def test_cmyk_jpeg(tmp_path):
    pil = pytest.importorskip("PIL.Image", reason="Pillow is needed to write a CMYK JPEG")
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[:, :8] = (200, 40, 40)
    rgb[:, 8:] = (40, 40, 200)
    pil.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=98)
    assert pil.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    got = read_image(tmp_path / "cmyk.jpg")
    assert got.shape == (16, 16, 3)
    assert np.abs(got[4, 2].astype(int) - (200, 40, 40)).max() < 30
    assert np.abs(got[4, 13].astype(int) - (40, 40, 200)).max() < 30


def test_truncated_jpeg_is_refused(tmp_path):
    data = _write_jpeg(tmp_path / "ok.jpg", _pattern(64, 64))
    for cut in (2, len(data) // 3):
        (tmp_path / "t.jpg").write_bytes(data[:-cut])
        with pytest.raises(ImageReadError, match=r"t\.jpg.*(truncated|decode)"):
            read_image(tmp_path / "t.jpg")
    # Bytes after the end-of-image marker (some cameras append data) are fine.
    (tmp_path / "trailing.jpg").write_bytes(data + b"\x00" * 100)
    assert read_image(tmp_path / "trailing.jpg").shape == (64, 64, 3)


def test_truncated_png_is_refused(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".png", rgb)
    (tmp_path / "t.png").write_bytes(buf.tobytes()[: len(buf) // 2])
    with pytest.raises(ImageReadError, match=r"t\.png"):
        read_image(tmp_path / "t.png")


def test_zero_bytes(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"empty\.jpg.*empty"):
        read_image(tmp_path / "empty.jpg")


def test_text_named_jpg(tmp_path):
    (tmp_path / "notes.jpg").write_text("this is not an image\n")
    with pytest.raises(ImageReadError, match=r"notes\.jpg.*not a recognised image"):
        read_image(tmp_path / "notes.jpg")


def test_unsupported_format_named(tmp_path):
    (tmp_path / "x.gif").write_bytes(b"GIF89a" + b"\x00" * 20)
    with pytest.raises(ImageReadError, match=r"x\.gif.*GIF"):
        read_image(tmp_path / "x.gif")


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageReadError, match="not found"):
        read_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageReadError, match="folder"):
        read_image(tmp_path)
    assert issubclass(ImageReadError, ValueError)


@pytest.mark.parametrize("ext", [".jpg", ".png", ".bmp", ".webp", ".tif"])
def test_pixel_limit(tmp_path, ext):
    rgb = _pattern(40, 48)
    path = tmp_path / f"big{ext}"
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    data = path.read_bytes()
    size = header_size(data, sniff_format(data))
    if ext != ".tif":  # the header is parsed before decoding for these
        assert size == (48, 40)
    with pytest.raises(ImageReadError, match="1,920 pixels, over the limit of 1,000"):
        read_image(path, max_pixels=1000)
    assert read_image(path, max_pixels=1920).shape == (40, 48, 3)
    assert read_image(path, max_pixels=None).shape == (40, 48, 3)


def test_bomb_refused_before_decoding(tmp_path):
    # A PNG header claiming 100000 x 100000 pixels with no image data: refused from the header alone.
    ihdr = struct.pack(">II", 100_000, 100_000) + b"\x08\x02\x00\x00\x00"
    data = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + b"\x00\x00\x00\x00"
    (tmp_path / "bomb.png").write_bytes(data)
    with pytest.raises(ImageReadError, match="bomb"):
        read_image(tmp_path / "bomb.png")


def test_non_ascii_and_spaces_in_path(tmp_path):
    folder = tmp_path / "fotos März"
    folder.mkdir()
    path = folder / "blüte 1 — 写真.png"
    cv2.imwrite(str(tmp_path / "a.png"), cv2.cvtColor(_pattern(), cv2.COLOR_RGB2BGR))
    path.write_bytes((tmp_path / "a.png").read_bytes())
    np.testing.assert_array_equal(read_image(path), _pattern())


def test_real_photo_decodes():
    from pathlib import Path

    photo = Path(__file__).resolve().parents[1] / "assets" / "nuts" / "images" / "0.jpg"
    got = read_image(photo)
    ref = cv2.cvtColor(cv2.imread(str(photo)), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(got, ref)
