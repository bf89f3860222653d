"""The matte's last step: a crop's alpha clipped to ``[0, 1]`` and snapped into the picture-wide
result, its edge band (the pixels the colour clean-up works on) found on the way.

Used by :mod:`inference.matte`; the two halves of a big crop run on this thread and a side thread.
"""

from __future__ import annotations

import cv2
import numpy as np

from inference.foreground import edge_band
from inference.side_threads import side_workers

#: Alpha below this (or above ``1 -`` it) is what an 8-bit export stores as 0 (255).
SNAP = 0.5 / 255

#: Crops of at least this many pixels are finished in two halves, one on a side thread.
_HALVES_MIN_PIXELS = 2**18


def snap_crop_into(
    alpha: np.ndarray,
    target: np.ndarray,
    *,
    origin: tuple[int, int],
    picture_width: int,
    find_band: bool,
    solid: np.ndarray | None = None,
    inside: tuple[slice, slice] | None = None,
) -> np.ndarray | None:
    """Write a crop's alpha into its place in the picture-wide result.

    Args:
        alpha: ``(h, w)`` float32, the crop's alpha, not yet clipped; overwritten.
        target: ``(h, w)`` float32 view of the result where the crop goes.
        origin: ``(x0, y0)``, the crop's top-left pixel in the picture.
        picture_width: the picture's width ``W`` (for flat positions).
        find_band: also return the edge band.
        solid: if given, the solid part of the matte at ``alpha[inside]``: the larger of the two
            is taken first (row by row with the rest of the work).
        inside: where ``solid`` lies in the crop (two slices with steps of 1).

    Returns:
        With ``find_band``, the flat positions in the ``(H, W)`` picture, ascending, of the pixels
        whose alpha is strictly between 0 and 1 after snapping; else None. Values that an 8-bit
        export stores as 0 or 255 (within :data:`SNAP` of them) become exactly 0 or 1, so the band
        (and the colour clean-up after it) is as narrow as the result really is.
    """
    if (solid is None) != (inside is None):
        raise ValueError(f"expected solid and inside both given or both None, got {inside=!r:.60}")
    x0, y0 = origin

    def finish(first: int, end: int) -> np.ndarray | None:
        """Rows ``[first, end)`` of the crop; with ``find_band``, their band's positions in the picture."""
        if solid is not None:
            rows, columns = inside
            top, bottom = max(first, rows.start), min(end, rows.stop)
            if top < bottom:
                at = (slice(top, bottom), columns)
                np.maximum(solid[top - rows.start : bottom - rows.start], alpha[at], out=alpha[at])
        band = _snapped_into(alpha[first:end], target[first:end], find_band)
        if band is None:
            return None
        band_rows, band_columns = np.divmod(band, alpha.shape[1])
        band_rows += y0 + first
        band_rows *= picture_width
        band_rows += band_columns
        band_rows += x0
        return band_rows

    rows = alpha.shape[0]
    half = rows // 2 if alpha.size >= _HALVES_MIN_PIXELS else 0
    top = side_workers().submit(finish, 0, half) if half else None
    bands = [finish(half, rows)]
    if top is not None:
        bands.insert(0, top.result())
    return np.concatenate(bands) if find_band else None


def _snapped_into(alpha: np.ndarray, target: np.ndarray, find_band: bool) -> np.ndarray | None:
    """``alpha`` clipped and snapped into ``target`` (``1 - alpha`` is worked for the top end);
    ``alpha`` is overwritten. With ``find_band``, the edge band's flat positions in ``alpha``."""
    cv2.threshold(alpha, SNAP, 0.0, cv2.THRESH_TOZERO, dst=alpha)
    np.subtract(np.float32(1.0), alpha, out=alpha)
    cv2.threshold(alpha, SNAP, 0.0, cv2.THRESH_TOZERO, dst=alpha)
    np.subtract(np.float32(1.0), alpha, out=target)
    # alpha holds 1 - target, 0, 1 or within [SNAP, 1 - SNAP]: the same band as target's.
    return edge_band(alpha) if find_band else None
