"""File formats of what people take away: RGBA PNGs, masks, JPEG/WebP composites.

Everything here turns arrays into bytes; nothing renders a cutout (that is
:mod:`inference.pipeline`, which also packs the layers ZIP from these pieces).
"""

from __future__ import annotations

import cv2
import numpy as np

from inference.image_io import check_rgb_image
from inference.instances import tight_box

IMAGE_FORMATS = ("png", "jpeg", "webp")
#: Alpha at or below this rounds to 0 in an 8-bit file, so it is "empty" (trimming, plates).
EMPTY_ALPHA = 0.5 / 255.0


def alpha_to_uint8(alpha: np.ndarray) -> np.ndarray:
    """``(H, W)`` float32 alpha in ``[0, 1]`` to ``(H, W)`` uint8 0-255, rounded."""
    return (np.clip(alpha, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def to_rgba(foreground: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Straight-colour ``(H, W, 3)`` uint8 RGB plus ``(H, W)`` float32 alpha -> ``(H, W, 4)`` uint8 RGBA.

    Fully transparent pixels get colour 0, so files compress well and no hidden
    background colour leaks into tools that ignore alpha.
    """
    if foreground.ndim != 3 or foreground.shape[2] != 3 or alpha.shape != foreground.shape[:2]:
        raise ValueError(f"expected (H, W, 3) foreground and (H, W) alpha, got {foreground.shape} and {alpha.shape}")
    a8 = alpha_to_uint8(alpha)
    rgba = np.empty(foreground.shape[:2] + (4,), np.uint8)
    rgba[:, :, :3] = foreground
    rgba[:, :, :3][a8 == 0] = 0
    rgba[:, :, 3] = a8
    return rgba


def trim_box(alpha: np.ndarray, *, margin: int = 0) -> tuple[int, int, int, int] | None:
    """``xyxy`` box of the pixels that stay visible in an 8-bit file, grown by ``margin`` px
    and clipped to the picture; ``None`` when nothing is visible."""
    return tight_box(alpha > EMPTY_ALPHA, margin=margin)


def trimmed_rgba(
    foreground: np.ndarray, alpha: np.ndarray, *, margin: int = 0
) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
    """The cutout cropped to its visible pixels (grown by ``margin``): ``(h, w, 4)`` uint8 RGBA
    and its ``xyxy`` placement box in the picture; ``None`` when nothing is visible."""
    box = trim_box(alpha, margin=margin)
    if box is None:
        return None
    x0, y0, x1, y1 = box
    return to_rgba(foreground[y0:y1, x0:x1], alpha[y0:y1, x0:x1]), box


def cutout_png(foreground: np.ndarray, alpha: np.ndarray, *, trim: bool = False, margin: int = 0) -> bytes:
    """RGBA PNG of a cutout: full size, or trimmed to its visible pixels grown by ``margin``.

    A cutout with nothing visible stays full size (an empty PNG helps nobody).
    """
    trimmed = trimmed_rgba(foreground, alpha, margin=margin) if trim else None
    return encode_png(trimmed[0] if trimmed else to_rgba(foreground, alpha))


def encode_png(array: np.ndarray, *, compression: int = 3) -> bytes:
    """PNG bytes of an ``(H, W)`` bool/uint8 mask, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA uint8 array.

    ``compression`` is zlib's level 0-9 (3 is about as small as 6 at a third of the time).
    """
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    if array.dtype != np.uint8:
        raise ValueError(f"expected a uint8 or bool array, got {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    elif array.ndim == 3 and array.shape[2] == 4:
        array = cv2.cvtColor(array, cv2.COLOR_RGBA2BGRA)
    elif array.ndim != 2:
        raise ValueError(f"expected (H, W), (H, W, 3) or (H, W, 4), got {array.shape}")
    ok, buf = cv2.imencode(".png", array, [cv2.IMWRITE_PNG_COMPRESSION, int(compression)])
    if not ok:
        raise ValueError(f"expected an encodable array, got shape {array.shape}")
    return buf.tobytes()


def encode_image(rgb: np.ndarray, fmt: str, *, quality: int = 92) -> bytes:
    """Encode ``(H, W, 3)`` uint8 RGB as ``png``, ``jpeg`` or ``webp`` (quality 1-100 for the lossy two)."""
    if fmt not in IMAGE_FORMATS:
        raise ValueError(f"expected format in {IMAGE_FORMATS}, got {fmt!r}")
    if not 1 <= quality <= 100:
        raise ValueError(f"expected quality in [1, 100], got {quality}")
    check_rgb_image(rgb, "rgb")
    if fmt == "png":
        return encode_png(rgb)
    flag = cv2.IMWRITE_JPEG_QUALITY if fmt == "jpeg" else cv2.IMWRITE_WEBP_QUALITY
    ok, buf = cv2.imencode("." + ("jpg" if fmt == "jpeg" else "webp"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [flag, quality])
    if not ok:
        raise ValueError(f"expected an image {fmt} can hold, got shape {rgb.shape}")
    return buf.tobytes()


def mask_png(alpha: np.ndarray) -> bytes:
    """8-bit greyscale PNG of an ``(H, W)`` float32 alpha (white = character)."""
    return encode_png(alpha_to_uint8(alpha))
