"""Decoding: every mode and format people upload, and every way a file can be bad."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from inference.image_io import ImageLoadError, PictureTooLarge, load_image


def _encode(img: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


def _pattern(height: int = 24, width: int = 32) -> np.ndarray:
    ys, xs = np.mgrid[0:height, 0:width]
    return np.stack([xs * 7 % 256, ys * 9 % 256, (xs + ys) * 3 % 256], axis=2).astype(np.uint8)


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF", "WEBP"])
def test_lossless_formats_round_trip_exactly(fmt):
    rgb = _pattern()
    params = {"lossless": True} if fmt == "WEBP" else {}
    loaded = load_image(_encode(Image.fromarray(rgb), fmt, **params))
    assert loaded.image.dtype == np.uint8 and loaded.image.shape == (24, 32, 3)
    np.testing.assert_array_equal(loaded.image, rgb)
    assert loaded.alpha is None
    assert loaded.format == fmt


def test_jpeg_decodes_close_to_source():
    rgb = np.full((16, 16, 3), (200, 40, 90), np.uint8)
    loaded = load_image(_encode(Image.fromarray(rgb), "JPEG", quality=95))
    assert np.abs(loaded.image.astype(int) - rgb).max() <= 4


def test_path_and_bytes_agree(tmp_path):
    data = _encode(Image.fromarray(_pattern()), "PNG")
    path = tmp_path / "x.png"
    path.write_bytes(data)
    np.testing.assert_array_equal(load_image(path).image, load_image(data).image)
    np.testing.assert_array_equal(load_image(str(path)).image, load_image(data).image)


def test_exif_orientation_is_applied():
    # A 2x3 (HxW) picture whose top-left pixel is red; orientation 6 = rotate 90 degrees clockwise to view.
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)
    img = Image.fromarray(rgb)
    exif = Image.Exif()
    exif[0x0112] = 6
    loaded = load_image(_encode(img, "PNG", exif=exif))
    assert loaded.image.shape == (3, 2, 3)
    # After a clockwise turn the old top-left corner sits at the top-right.
    np.testing.assert_array_equal(loaded.image[0, 1], (255, 0, 0))


def test_rgba_keeps_alpha_and_flattens_over_white():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = (10, 20, 30)
    rgba[:, :2, 3] = 255
    rgba[:, 2:, 3] = 0
    rgba[0, 3] = (0, 0, 0, 128)
    loaded = load_image(_encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    np.testing.assert_allclose(loaded.alpha[:, :2], 1.0)
    np.testing.assert_allclose(loaded.alpha[1:, 2:], 0.0)
    np.testing.assert_array_equal(loaded.image[0, 0], (10, 20, 30))
    np.testing.assert_array_equal(loaded.image[2, 3], (255, 255, 255))
    np.testing.assert_array_equal(loaded.image[0, 3], (127, 127, 127))  # black at 128/255 over white


def test_grey_with_alpha_and_palette_with_transparency():
    la = Image.fromarray(np.stack([np.full((3, 3), 90, np.uint8), np.full((3, 3), 255, np.uint8)], 2), "LA")
    loaded = load_image(_encode(la, "PNG"))
    np.testing.assert_array_equal(loaded.image, np.full((3, 3, 3), 90, np.uint8))
    np.testing.assert_allclose(loaded.alpha, 1.0)

    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([0, 0, 255, 255, 0, 0] + [0] * 762)
    pal.putpixel((1, 1), 1)
    loaded = load_image(_encode(pal, "PNG", transparency=0))
    assert loaded.alpha[0, 0] == 0.0 and loaded.alpha[1, 1] == 1.0
    np.testing.assert_array_equal(loaded.image[1, 1], (255, 0, 0))


def test_grey_and_cmyk():
    grey = load_image(_encode(Image.fromarray(np.full((5, 5), 77, np.uint8), "L"), "PNG"))
    np.testing.assert_array_equal(grey.image, np.full((5, 5, 3), 77, np.uint8))
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))  # pure red in CMYK
    loaded = load_image(_encode(cmyk, "TIFF"))
    np.testing.assert_array_equal(loaded.image[0, 0], (255, 0, 0))


def test_sixteen_bit_grey_is_scaled_not_clipped():
    values = np.array([[0, 257 * 128, 65535]], np.uint16)
    img = Image.fromarray(values)
    assert img.mode.startswith("I;16")
    loaded = load_image(_encode(img, "PNG"))
    np.testing.assert_array_equal(loaded.image[0, :, 0], (0, 128, 255))


def test_animated_gif_gives_first_frame():
    frames = [Image.new("RGB", (6, 6), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    loaded = load_image(buf.getvalue())
    assert loaded.image.shape == (6, 6, 3)
    assert loaded.image[0, 0, 0] > 200 and loaded.image[0, 0, 2] < 50


def test_tiny_picture():
    loaded = load_image(_encode(Image.new("RGB", (1, 1), (1, 2, 3)), "PNG"))
    np.testing.assert_array_equal(loaded.image, [[[1, 2, 3]]])


@pytest.mark.parametrize(
    "data, words",
    [
        (b"", "empty"),
        (b"hello, this is not a picture", "not a picture"),
        (b"%PDF-1.4\n...", "not a picture"),
    ],
)
def test_bad_bytes_give_one_clear_error(data, words):
    with pytest.raises(ImageLoadError, match=words):
        load_image(data)


def test_truncated_png_and_jpeg():
    for fmt in ("PNG", "JPEG"):
        data = _encode(Image.fromarray(_pattern(64, 64)), fmt)
        with pytest.raises(ImageLoadError, match="damaged or truncated|not a picture"):
            load_image(data[: len(data) // 2])


def test_pixel_limit_is_enforced_before_decoding():
    data = _encode(Image.new("RGB", (300, 200)), "PNG")
    with pytest.raises(PictureTooLarge, match="too large: 300x200"):  # an ImageLoadError (a ValueError)
        load_image(data, max_pixels=50_000)
    assert load_image(data, max_pixels=60_000).size == (200, 300)


def test_decompression_bomb_header_is_refused_without_decoding():
    # A 57-byte PNG whose header claims 100000 x 100000 pixels.
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    with pytest.raises(PictureTooLarge, match="too large|decompression bomb"):
        load_image(data)
    with pytest.raises(PictureTooLarge, match="decompression bomb"):  # Pillow's own refusal, past our limit
        load_image(data, max_pixels=10**11)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageLoadError, match="No such file"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageLoadError, match="folder"):
        load_image(tmp_path)


def test_errors_are_value_errors():
    assert issubclass(ImageLoadError, ValueError)


def test_image_convention_check():
    from inference.image_io import check_rgb_image

    good = np.zeros((2, 3, 3), np.uint8)
    assert check_rgb_image(good) is good
    for bad, got in [
        (np.zeros((2, 3), np.uint8), "uint8 array of shape (2, 3)"),
        (np.zeros((2, 3, 3), np.float32), "float32"),
        (np.zeros((0, 3, 3), np.uint8), "shape (0, 3, 3)"),
        (None, "NoneType"),
    ]:
        with pytest.raises(ValueError, match=r"expected picture as an \(H, W, 3\) uint8 RGB image, got") as info:
            check_rgb_image(bad, "picture")
        assert got in str(info.value)


def test_default_pixel_limit_is_the_one_limit_and_follows_the_environment(monkeypatch):
    from inference.image_io import MAX_PIXELS, pixel_limit

    data = _encode(Image.fromarray(np.zeros((200, 300, 3), np.uint8)), "PNG")
    monkeypatch.delenv("NUKKI_MAX_PIXELS", raising=False)
    assert MAX_PIXELS == 24_000_000 and pixel_limit() == MAX_PIXELS
    for bad in ("", "abc", "-5", "0"):  # not a positive integer: the default
        monkeypatch.setenv("NUKKI_MAX_PIXELS", bad)
        assert pixel_limit() == MAX_PIXELS
    monkeypatch.setenv("NUKKI_MAX_PIXELS", "59_999")
    assert pixel_limit() == 59_999
    with pytest.raises(ImageLoadError, match="too large"):
        load_image(data)  # the default follows the environment at call time
    monkeypatch.setenv("NUKKI_MAX_PIXELS", "60000")
    assert load_image(data).size == (200, 300)
