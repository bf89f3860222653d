"""Files people take away: RGBA PNGs, masks, composites, and the per-character layers ZIP."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING

import cv2
import numpy as np

from inference.image_io import check_rgb_image
from inference.instances import Instances, tight_box

if TYPE_CHECKING:
    from inference.matte import MatteSettings

IMAGE_FORMATS = ("png", "jpeg", "webp")
#: Alpha at or below this rounds to 0 in an 8-bit file, so it is "empty" for trimming.
_EMPTY_ALPHA = 0.5 / 255.0
#: Pictures larger than this (long side) are inpainted at reduced size, then the fill is upsampled.
_INPAINT_LONG_SIDE = 1024


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
    if margin < 0:
        raise ValueError(f"expected margin >= 0, got {margin}")
    box = tight_box(alpha > _EMPTY_ALPHA)
    if box is None:
        return None
    height, width = alpha.shape
    x0, y0, x1, y1 = box
    return max(0, x0 - margin), max(0, y0 - margin), min(width, x1 + margin), min(height, y1 + margin)


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
    hole = (alpha > _EMPTY_ALPHA).astype(np.uint8)
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


def layers_zip(
    image: np.ndarray,
    instances: Instances,
    selected: Sequence[int],
    matte: MatteSettings,
    *,
    source_name: str,
    extra: dict | None = None,
) -> bytes:
    """A ZIP for rigs and desktop pets: one trimmed RGBA layer per chosen character.

    Contents: ``layers/NN.png`` per character (trimmed; its position is in the
    manifest), ``cutout.png`` (all chosen characters, full size), ``mask.png``,
    ``background_plate.png`` (characters removed, hole inpainted) and
    ``manifest.json`` (picture size, backend, matte settings, and per layer its
    file, instance index, score, detection box and placement box ``xyxy``).

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        instances: the detected characters.
        selected: indices of the characters to export (all of them if empty).
        matte: the matte settings applied to each layer.
        source_name: the picture's name, recorded in the manifest.
        extra: more JSON-ready fields for the manifest (e.g. detection settings).
    """
    from inference.pipeline import render_cutout

    chosen = list(selected) if len(selected) else list(range(len(instances)))
    height, width = instances.image_size
    manifest: dict = {
        "source": source_name,
        "image_size_wh": [width, height],
        "backend": instances.backend,
        "refined_by": instances.refined_by,
        "matte_settings": asdict(matte),
        "layers": [],
        "cutout": "cutout.png",
        "mask": "mask.png",
        "background_plate": "background_plate.png",
    }
    if extra:
        manifest.update(extra)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for order, index in enumerate(chosen, start=1):
            layer = render_cutout(image, instances, [index], matte)
            trimmed = trimmed_rgba(layer.foreground, layer.alpha)
            if trimmed is None:
                continue
            rgba, (x0, y0, x1, y1) = trimmed
            name = f"layers/{order:02d}.png"
            archive.writestr(name, encode_png(rgba))
            manifest["layers"].append(
                {
                    "file": name,
                    "instance": int(index),
                    "score": round(float(instances.scores[index]), 4),
                    "detection_box_xyxy": [int(v) for v in instances.boxes[index]],
                    "placement_xyxy": [x0, y0, x1, y1],
                }
            )
        combined = render_cutout(image, instances, chosen, matte)
        archive.writestr("cutout.png", cutout_png(combined.foreground, combined.alpha))
        archive.writestr("mask.png", mask_png(combined.alpha))
        archive.writestr("background_plate.png", encode_png(background_plate(image, combined.alpha)))
        archive.writestr("manifest.json", json.dumps(manifest, indent=2))
    return buffer.getvalue()
