"""Compositing maths, background fitting, and files that decode back to what was written."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from inference.composite import Background, background_plate, checkerboard, composite_over, fit_image, render_background
from inference.export import encode_image, encode_png, mask_png, to_rgba, trim_box


def _decode(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def test_over_operator_known_values():
    fg = np.full((2, 3, 3), (200, 0, 0), np.uint8)
    bg = np.full((2, 3, 3), (0, 0, 200), np.uint8)
    alpha = np.array([[0.0, 0.5, 1.0], [0.25, 0.75, 1.0]], np.float32)
    out = composite_over(fg, alpha, bg)
    np.testing.assert_array_equal(out[0, 0], (0, 0, 200))
    np.testing.assert_array_equal(out[0, 1], (100, 0, 100))
    np.testing.assert_array_equal(out[0, 2], (200, 0, 0))
    np.testing.assert_array_equal(out[1, 0], (50, 0, 150))
    np.testing.assert_array_equal(out[1, 1], (150, 0, 50))


def test_over_operator_matches_float_reference_on_random_data():
    rng = np.random.default_rng(3)
    fg, bg = (rng.integers(0, 256, (17, 23, 3), dtype=np.uint8) for _ in range(2))
    alpha = rng.random((17, 23), dtype=np.float32)
    ref = np.floor(fg * alpha[..., None] + bg * (1 - alpha[..., None]).astype(np.float64) + 0.5)
    assert np.abs(composite_over(fg, alpha, bg).astype(int) - ref).max() <= 1


def test_composite_rejects_mismatched_shapes():
    fg = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="one size"):
        composite_over(fg, np.zeros((4, 5), np.float32), fg)
    with pytest.raises(ValueError, match="uint8 RGB"):
        composite_over(fg.astype(np.float32), np.zeros((4, 4), np.float32), fg)


def test_checkerboard_cells():
    board = checkerboard(4, 6, cell=2)
    assert board.shape == (4, 6, 3)
    assert board[0, 0, 0] == board[1, 1, 0] == board[2, 2, 0] != board[0, 2, 0]


def test_cover_fills_and_contain_pads():
    tall = np.zeros((40, 10, 3), np.uint8)
    tall[:, :, 1] = 255
    covered = fit_image(tall, (10, 20), mode="cover")
    assert covered.shape == (10, 20, 3) and (covered[:, :, 1] == 255).all()
    contained = fit_image(tall, (10, 20), mode="contain", fill=(9, 9, 9))
    assert contained.shape == (10, 20, 3)
    assert (contained[:, 0] == 9).all() and (contained[:, -1] == 9).all()
    assert contained[5, 10, 1] == 255  # the picture sits in the middle


def test_render_background_kinds():
    image = np.zeros((8, 8, 3), np.uint8)
    image[:, 4:] = 255
    assert (render_background(Background("color", color=(1, 2, 3)), image) == (1, 2, 3)).all()
    np.testing.assert_array_equal(render_background(Background(), image), checkerboard(8, 8))
    blurred = render_background(Background("blur", blur_sigma=2.0), image)
    assert 0 < blurred[4, 3, 0] < 255 and 0 < blurred[4, 4, 0] < 255
    picture = np.full((3, 5, 3), 77, np.uint8)
    assert (render_background(Background("image", image=picture), image) == 77).all()


def test_background_validation():
    with pytest.raises(ValueError, match="background kind"):
        Background("plaid")
    with pytest.raises(ValueError, match="background image as"):
        Background("image")
    with pytest.raises(ValueError, match="RGB colour"):
        Background("color", color=(0, 0, 300))


def test_rgba_png_round_trip_keeps_colour_and_alpha():
    rng = np.random.default_rng(0)
    fg = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    alpha = rng.random((9, 11), dtype=np.float32)
    alpha[0, 0] = 0.0
    rgba = to_rgba(fg, alpha)
    decoded = np.asarray(_decode(encode_png(rgba)))
    assert decoded.shape == (9, 11, 4)
    np.testing.assert_array_equal(decoded, rgba)
    np.testing.assert_array_equal(decoded[..., 3], np.floor(alpha * 255 + 0.5).astype(np.uint8))
    np.testing.assert_array_equal(decoded[0, 0], (0, 0, 0, 0))  # no hidden colour under transparency


def test_mask_png_and_rgb_png_round_trip():
    alpha = np.array([[0.0, 1.0], [0.5, 0.2]], np.float32)
    mask = _decode(mask_png(alpha))
    assert mask.mode == "L"
    np.testing.assert_array_equal(np.asarray(mask), [[0, 255], [128, 51]])
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    np.testing.assert_array_equal(np.asarray(_decode(encode_png(rgb))), rgb)
    np.testing.assert_array_equal(np.asarray(_decode(encode_png(alpha > 0.4))), [[0, 255], [255, 0]])


@pytest.mark.parametrize("fmt, pil_name", [("jpeg", "JPEG"), ("webp", "WEBP"), ("png", "PNG")])
def test_composite_formats_decode_at_size(fmt, pil_name):
    rgb = np.full((12, 20, 3), (30, 160, 90), np.uint8)
    img = _decode(encode_image(rgb, fmt, quality=90))
    assert img.format == pil_name and img.size == (20, 12)
    assert np.abs(np.asarray(img.convert("RGB")).astype(int) - rgb).max() <= 6


def test_trim_box():
    alpha = np.zeros((10, 10), np.float32)
    assert trim_box(alpha) is None
    alpha[3:5, 6] = 1.0
    alpha[8, 8] = 0.001  # rounds to 0 in 8 bits: not content
    assert trim_box(alpha) == (6, 3, 7, 5)
    assert trim_box(alpha, margin=4) == (2, 0, 10, 9)


def test_background_plate_fills_hole_and_keeps_the_rest():
    image = np.zeros((60, 80, 3), np.uint8)
    image[:] = (40, 120, 200)
    image[20:40, 30:50] = (250, 20, 20)  # the "character"
    alpha = np.zeros((60, 80), np.float32)
    alpha[20:40, 30:50] = 1.0
    plate = background_plate(image, alpha, grow_px=2)
    np.testing.assert_array_equal(plate[:15], image[:15])
    assert np.abs(plate[30, 40].astype(int) - (40, 120, 200)).max() <= 3


def test_cutout_png_full_trimmed_and_empty():
    from inference.export import cutout_png, trimmed_rgba

    fg = np.full((10, 12, 3), 200, np.uint8)
    alpha = np.zeros((10, 12), np.float32)
    alpha[2:5, 3:9] = 1.0
    assert _decode(cutout_png(fg, alpha)).size == (12, 10)
    trimmed = _decode(cutout_png(fg, alpha, trim=True))
    assert trimmed.size == (6, 3) and np.asarray(trimmed)[..., 3].min() == 255
    assert _decode(cutout_png(fg, alpha, trim=True, margin=1)).size == (8, 5)
    rgba, box = trimmed_rgba(fg, alpha)
    assert box == (3, 2, 9, 5) and rgba.shape == (3, 6, 4)
    empty = np.zeros_like(alpha)
    assert trimmed_rgba(fg, empty) is None
    assert _decode(cutout_png(fg, empty, trim=True)).size == (12, 10)  # nothing visible: stays full size


@pytest.mark.parametrize(
    "text, rgb",
    [
        ("#ff8800", (255, 136, 0)),
        ("#F80", (255, 136, 0)),
        ("ff8800", (255, 136, 0)),
        (" 255, 136 ,0 ", (255, 136, 0)),
        ("White", (255, 255, 255)),
        ("black", (0, 0, 0)),
    ],
)
def test_one_colour_parser(text, rgb):
    from inference.composite import parse_color

    assert parse_color(text) == rgb


@pytest.mark.parametrize("text", ["#ff88", "#gg8800", "256,0,0", "1,2", "", "sky", "#ff8800ff"])
def test_colour_parser_rejects_with_one_message(text):
    from inference.composite import parse_color

    with pytest.raises(ValueError, match="expected a colour like #ff8800"):
        parse_color(text)


def test_parse_background():
    from inference.composite import parse_background

    assert parse_background("transparent").kind == "transparent"
    assert parse_background("blur", fit="contain").kind == "blur"
    solid = parse_background("#00ff00")
    assert solid.kind == "color" and solid.color == (0, 255, 0)
    with pytest.raises(ValueError, match="expected a background"):
        parse_background("/etc/passwd")  # paths are the caller's business (the API never reads them)
