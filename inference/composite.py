"""Putting a cutout over a new background, and taking the characters out of the old one.

The alpha maths is the ordinary "over" operator on straight (not premultiplied)
colour: ``out = F * a + B * (1 - a)``, rounded to the nearest uint8.
:func:`background_plate` is the reverse: the picture with the characters removed
and the hole inpainted (the layers ZIP's plate).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from inference.export import EMPTY_ALPHA
from inference.image_io import check_rgb_image
from inference.instances import tight_box

BACKGROUND_KINDS = ("transparent", "color", "image", "blur")
FIT_MODES = ("cover", "contain")
#: Pictures larger than this (long side) are inpainted at reduced size, then the fill is upsampled.
_INPAINT_LONG_SIDE = 1024


@dataclass(frozen=True, eq=False)
class Background:
    """What goes behind the cutout.

    Attributes:
        kind: ``transparent`` (shown as a checkerboard), ``color``, ``image`` or
            ``blur`` (the original picture, blurred).
        color: RGB for ``color`` (and the letterbox fill of ``contain``), each 0-255.
        image: ``(h, w, 3)`` uint8 RGB for ``image``; fitted to the picture's size.
        fit: ``cover`` (fill, crop the overflow) or ``contain`` (fit inside, pad with ``color``).
        blur_sigma: Gaussian sigma in pixels for ``blur``, > 0.
    """

    kind: str = "transparent"
    color: tuple[int, int, int] = (255, 255, 255)
    image: np.ndarray | None = None
    fit: str = "cover"
    blur_sigma: float = 16.0

    def __post_init__(self) -> None:
        if self.kind not in BACKGROUND_KINDS:
            raise ValueError(f"expected background kind in {BACKGROUND_KINDS}, got {self.kind!r}")
        if self.fit not in FIT_MODES:
            raise ValueError(f"expected fit in {FIT_MODES}, got {self.fit!r}")
        if len(self.color) != 3 or not all(0 <= int(c) <= 255 for c in self.color):
            raise ValueError(f"expected an RGB colour of three 0-255 values, got {self.color!r}")
        if self.kind == "image":
            check_rgb_image(self.image, "background image")
        if self.blur_sigma <= 0:
            raise ValueError(f"expected blur_sigma > 0, got {self.blur_sigma}")


#: Colour names :func:`parse_color` knows (besides ``#rgb``, ``#rrggbb`` and ``r,g,b``).
NAMED_COLORS = {
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "grey": (128, 128, 128),
    "gray": (128, 128, 128),
    "red": (255, 0, 0),
    "green": (0, 177, 64),  # chroma-key green
    "blue": (0, 71, 187),  # chroma-key blue
}


def parse_color(text: str) -> tuple[int, int, int]:
    """The one colour parser: ``#rrggbb``, ``#rgb``, ``rrggbb``, ``r,g,b`` (0-255 each) or a
    name in :data:`NAMED_COLORS` (case and surrounding spaces ignored) -> ``(r, g, b)``.

    Raises:
        ValueError: ``expected a colour like #ff8800, 255,136,0 or white, got ...``.
    """
    value = str(text).strip().lower()
    if value in NAMED_COLORS:
        return NAMED_COLORS[value]
    if "," in value:
        parts = [p.strip() for p in value.split(",")]
        if len(parts) == 3 and all(p.isdigit() and int(p) <= 255 for p in parts):
            return int(parts[0]), int(parts[1]), int(parts[2])
    else:
        digits = value[1:] if value.startswith("#") else value
        if len(digits) == 3:
            digits = "".join(c * 2 for c in digits)
        if len(digits) == 6 and all(c in "0123456789abcdef" for c in digits):
            return int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16)
    raise ValueError(f"expected a colour like #ff8800, 255,136,0 or white, got {text!r}")


def parse_background(spec: str, *, fit: str = "cover") -> Background:
    """``transparent``, ``blur`` or a colour (:func:`parse_color`) -> a :class:`Background`.

    Pictures as backgrounds are decoded by the caller (the command line reads a path; the
    API never reads server paths) and passed as ``Background(kind="image", image=...)``.

    Raises:
        ValueError: none of those.
    """
    value = str(spec).strip().lower()
    if value in ("transparent", "blur"):
        return Background(kind=value, fit=fit)
    try:
        return Background(kind="color", color=parse_color(spec), fit=fit)
    except ValueError:
        raise ValueError(
            f"expected a background: transparent, blur, or a colour like #ff8800, 255,136,0 or white; got {spec!r}"
        ) from None


def checkerboard(height: int, width: int, *, cell: int = 16) -> np.ndarray:
    """The usual "transparent" pattern: ``(H, W, 3)`` uint8, light and mid grey squares of ``cell`` px."""
    if height <= 0 or width <= 0 or cell <= 0:
        raise ValueError(f"expected positive height, width and cell, got {height}, {width}, {cell}")
    ys = (np.arange(height) // cell)[:, None]
    xs = (np.arange(width) // cell)[None, :]
    light = ((ys + xs) % 2 == 0)
    board = np.where(light, np.uint8(236), np.uint8(200))
    return np.repeat(board[:, :, None], 3, axis=2)


def fit_image(
    image: np.ndarray, size: tuple[int, int], *, mode: str = "cover", fill: tuple[int, int, int] = (0, 0, 0)
) -> np.ndarray:
    """Scale an ``(h, w, 3)`` uint8 picture to ``size`` = ``(H, W)`` keeping its aspect ratio.

    ``cover`` fills the whole frame and crops the centred overflow; ``contain``
    fits it inside and pads with ``fill``.
    """
    check_rgb_image(image, "image")
    if mode not in FIT_MODES:
        raise ValueError(f"expected mode in {FIT_MODES}, got {mode!r}")
    height, width = size
    h, w = image.shape[:2]
    pick = max if mode == "cover" else min
    scale = pick(height / h, width / w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    scaled = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    if mode == "cover":
        x0, y0 = (new_w - width) // 2, (new_h - height) // 2
        return np.ascontiguousarray(scaled[y0 : y0 + height, x0 : x0 + width])
    out = np.empty((height, width, 3), np.uint8)
    out[:] = np.asarray(fill, np.uint8)
    x0, y0 = (width - new_w) // 2, (height - new_h) // 2
    out[y0 : y0 + new_h, x0 : x0 + new_w] = scaled[: height - y0, : width - x0]
    return out


def render_background(background: Background, image: np.ndarray) -> np.ndarray:
    """The ``(H, W, 3)`` uint8 backdrop for ``image``; ``transparent`` gives the checkerboard."""
    check_rgb_image(image, "image")
    height, width = image.shape[:2]
    if background.kind == "transparent":
        return checkerboard(height, width)
    if background.kind == "color":
        out = np.empty((height, width, 3), np.uint8)
        out[:] = np.asarray(background.color, np.uint8)
        return out
    if background.kind == "image":
        return fit_image(background.image, (height, width), mode=background.fit, fill=background.color)
    return cv2.GaussianBlur(image, (0, 0), background.blur_sigma)


def composite_over(foreground: np.ndarray, alpha: np.ndarray, background: np.ndarray) -> np.ndarray:
    """``foreground`` over ``background`` through ``alpha``.

    Args:
        foreground: ``(H, W, 3)`` uint8 RGB (straight colour).
        alpha: ``(H, W)`` float32 in ``[0, 1]``.
        background: ``(H, W, 3)`` uint8 RGB.

    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    check_rgb_image(foreground, "foreground")
    check_rgb_image(background, "background")
    if alpha.shape != foreground.shape[:2] or background.shape != foreground.shape:
        raise ValueError(
            f"expected foreground, alpha and background of one size, got "
            f"{foreground.shape}, {alpha.shape}, {background.shape}"
        )
    # Outside the box of non-zero alpha the answer is the background: blend only inside it.
    out = background.copy()
    box = tight_box(alpha > 0)
    if box is None:
        return out
    x0, y0, x1, y1 = box
    a = np.clip(alpha[y0:y1, x0:x1], 0.0, 1.0).astype(np.float32, copy=False)
    fg = foreground[y0:y1, x0:x1].astype(np.float32)
    bg = background[y0:y1, x0:x1].astype(np.float32)
    # out = bg + a * (fg - bg), in place to keep the memory traffic low.
    np.subtract(fg, bg, out=fg)
    np.multiply(fg, a[:, :, None], out=fg)
    np.add(fg, bg, out=fg)
    np.add(fg, 0.5, out=fg)
    out[y0:y1, x0:x1] = fg.astype(np.uint8)
    return out


def background_plate(image: np.ndarray, alpha: np.ndarray, *, grow_px: int = 3) -> np.ndarray:
    """The picture with the characters removed and the hole inpainted.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        alpha: ``(H, W)`` float32 in ``[0, 1]``; every pixel above 1/255 is removed,
            grown by ``grow_px`` so no outline of the characters stays behind.

    Returns:
        ``(H, W, 3)`` uint8 RGB; unchanged outside the (grown) hole.
    """
    if alpha.shape != image.shape[:2]:
        raise ValueError(f"expected alpha of size {image.shape[:2]}, got {alpha.shape}")
    hole = (alpha > EMPTY_ALPHA).astype(np.uint8)
    if grow_px > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow_px + 1, 2 * grow_px + 1))
        hole = cv2.dilate(hole, kernel)
    if not hole.any():
        return image.copy()
    height, width = hole.shape
    scale = min(1.0, _INPAINT_LONG_SIDE / max(height, width))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small_image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        small_hole = (cv2.resize(hole, size, interpolation=cv2.INTER_AREA) > 0).astype(np.uint8)
        small_hole = cv2.dilate(small_hole, np.ones((3, 3), np.uint8))
        filled = cv2.inpaint(small_image, small_hole, 5, cv2.INPAINT_TELEA)
        fill = cv2.resize(filled, (width, height), interpolation=cv2.INTER_LINEAR)
    else:
        fill = cv2.inpaint(image, hole, 5, cv2.INPAINT_TELEA)
    out = image.copy()
    out[hole > 0] = fill[hole > 0]
    return out
