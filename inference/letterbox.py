"""Scale-and-pad geometry shared by the detector and the refiners.

A :class:`Letterbox` records how a picture was resized (one uniform scale) and
padded into a fixed square canvas, so that anything predicted on the canvas
(boxes, masks) maps back onto the original picture exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Letterbox:
    """Geometry of one scale-and-pad.

    Attributes:
        source_size: ``(H, W)`` of the original picture.
        scaled_size: ``(h, w)`` of the picture after scaling, before padding.
        canvas_size: side of the square canvas.
        offset: ``(x, y)`` where the scaled picture's top-left corner sits on the canvas.
    """

    source_size: tuple[int, int]
    scaled_size: tuple[int, int]
    canvas_size: int
    offset: tuple[int, int]

    @property
    def scale(self) -> tuple[float, float]:
        """``(sx, sy)``: scaled size over source size, per axis."""
        return (self.scaled_size[1] / self.source_size[1], self.scaled_size[0] / self.source_size[0])

    def boxes_to_source(self, boxes: np.ndarray) -> np.ndarray:
        """Map ``(N, 4)`` float ``xyxy`` boxes on the canvas to source pixels, clipped to the picture."""
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        sx, sy = self.scale
        ox, oy = self.offset
        out = (boxes - np.array([ox, oy, ox, oy], np.float32)) / np.array([sx, sy, sx, sy], np.float32)
        height, width = self.source_size
        out[:, 0::2] = out[:, 0::2].clip(0, width)
        out[:, 1::2] = out[:, 1::2].clip(0, height)
        return out

    def unpad(self, canvas_map: np.ndarray) -> np.ndarray:
        """Cut the picture's region out of a ``(S, S, ...)`` canvas-sized map: ``(h, w, ...)``."""
        if canvas_map.shape[:2] != (self.canvas_size, self.canvas_size):
            raise ValueError(
                f"expected a ({self.canvas_size}, {self.canvas_size}) map, got {canvas_map.shape[:2]}"
            )
        ox, oy = self.offset
        h, w = self.scaled_size
        return canvas_map[oy : oy + h, ox : ox + w]

    def to_source(self, canvas_map: np.ndarray, *, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
        """Map a ``(S, S)`` float map on the canvas back to the ``(H, W)`` source picture."""
        region = self.unpad(canvas_map)
        height, width = self.source_size
        if region.shape[:2] == (height, width):
            return np.ascontiguousarray(region)
        return cv2.resize(region, (width, height), interpolation=interpolation)


def plan_letterbox(
    source_size: tuple[int, int], canvas_size: int, *, allow_upscale: bool = True, centre: bool = False
) -> Letterbox:
    """Geometry for fitting an ``(H, W)`` picture into a ``canvas_size`` square.

    Args:
        source_size: ``(H, W)`` of the picture, both > 0.
        canvas_size: side of the square canvas, > 0.
        allow_upscale: if False, pictures smaller than the canvas keep scale 1.
        centre: pad equally on both sides (else bottom/right only).
    """
    height, width = source_size
    if height <= 0 or width <= 0 or canvas_size <= 0:
        raise ValueError(f"expected positive sizes, got source {source_size} and canvas {canvas_size}")
    scale = canvas_size / max(height, width)
    if not allow_upscale:
        scale = min(scale, 1.0)
    h = min(canvas_size, max(1, int(round(height * scale))))
    w = min(canvas_size, max(1, int(round(width * scale))))
    offset = ((canvas_size - w) // 2, (canvas_size - h) // 2) if centre else (0, 0)
    return Letterbox((height, width), (h, w), canvas_size, offset)


def apply_letterbox(image: np.ndarray, box: Letterbox, *, pad_value: float = 0) -> np.ndarray:
    """Resize ``image`` (``(H, W)`` or ``(H, W, C)``) and pad it onto the canvas ``box`` describes.

    Uses area interpolation when shrinking and bilinear when enlarging; the
    result has the input's dtype and shape ``(S, S)`` or ``(S, S, C)``.
    """
    if image.shape[:2] != box.source_size:
        raise ValueError(f"expected an image of size {box.source_size}, got {image.shape[:2]}")
    h, w = box.scaled_size
    if (h, w) == box.source_size:
        scaled = image
    else:
        shrinking = h < image.shape[0]
        scaled = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
        if image.ndim == 3 and scaled.ndim == 2:
            scaled = scaled[:, :, None]
    canvas = np.full((box.canvas_size, box.canvas_size) + image.shape[2:], pad_value, dtype=image.dtype)
    ox, oy = box.offset
    canvas[oy : oy + h, ox : ox + w] = scaled
    return canvas
