"""Scale-and-pad geometry shared by the detector and the refiners.

A :class:`Letterbox` records how a picture was resized and padded into a fixed
square canvas, so that anything predicted on the canvas maps back onto the
original picture. Each model computes its own sizes the way its reference
pipeline does (mmdet's ``Resize``, CartoonSegmentation's ``resize_pad``,
anime-seg's ``get_mask``: they round differently), see
:func:`inference.rtmdet.mmdet_letterbox`, :meth:`inference.refine.RefineNetISNet.plan`
and :meth:`inference.refine.AnimeSegRefiner.plan`.
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
