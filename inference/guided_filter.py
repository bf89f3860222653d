"""Colour-guided filters: edge-preserving smoothing of a map along a picture's colour edges.

* :func:`guided_filter`: He, Sun & Tang, "Guided Image Filtering" (TPAMI 2013).
* :func:`fast_guided_filter`: its subsampled variant (He & Sun, "Fast Guided Filter", 2015).

Both take an ``(H, W, 3)`` RGB guide (uint8, or float in ``[0, 1]``) and an
``(H, W)`` float map, and give an ``(H, W)`` float32 map (not clipped).
Borders are mirrored (``cv2.BORDER_REFLECT``) as in ``cv2.ximgproc.guidedFilter``.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from inference.matte_checks import (
    check_count,
    check_map,
    check_positive_float,
    describe,
)

#: Border rule of every box mean here, the same one ``cv2.ximgproc.guidedFilter`` uses.
BORDER = cv2.BORDER_REFLECT

# Memory note: on the 2-core machines bench/matte.py runs on, first touching fresh
# memory (page faults) costs about as much as the arithmetic on it, so the code below
# updates arrays in place and reuses dead buffers instead of letting numpy allocate a
# temporary per operation, and works on crops, coarse grids and band tiles.


#: Fractional windows up to this whole radius run as one separable filter (fewer passes than four box sums).
_SEPARABLE_MAX_WHOLE = 4


def cell_means(plane: np.ndarray, step: int) -> np.ndarray:
    """Mean of each ``step`` x ``step`` cell of ``plane`` ``(h, w[, c])``, whose sides are whole
    multiples of ``step``: ``(h / step, w / step[, c])``, the dtype of ``plane``. Repeated 2x area
    steps while ``step`` is even (OpenCV's 2x path is several times faster than its general one;
    uint8 rounds at each step), then one area resize for what is left."""
    while step % 2 == 0:
        step //= 2
        plane = cv2.resize(plane, (plane.shape[1] // 2, plane.shape[0] // 2), interpolation=cv2.INTER_AREA)
    if step > 1:
        plane = cv2.resize(plane, (plane.shape[1] // step, plane.shape[0] // step), interpolation=cv2.INTER_AREA)
    return plane


def box_mean(x: np.ndarray, radius: float, out: np.ndarray | None = None) -> np.ndarray:
    """Mean over the ``(2r+1) x (2r+1)`` window around each pixel, mirrored borders: float32.

    A fractional ``radius`` (previews scale every length by their shrink factor) is the
    window of ``floor(radius)`` plus one more pixel on each side weighted by the
    fraction, so the mean changes continuously with the radius. ``out`` (same shape,
    float32, not ``x``) receives the result.
    """
    whole = int(radius)
    fraction = float(radius) - whole
    if fraction < 1e-6:
        size = 2 * whole + 1
        return cv2.boxFilter(x, cv2.CV_32F, (size, size), dst=out, normalize=True, borderType=BORDER)
    if whole <= _SEPARABLE_MAX_WHOLE:
        kernel = np.ones(2 * whole + 3, np.float32)
        kernel[0] = kernel[-1] = fraction
        kernel /= kernel.sum()
        return cv2.sepFilter2D(x, cv2.CV_32F, kernel, kernel, dst=out, borderType=BORDER)
    # The 1-D window is (1 - f) * box(whole) + f * box(whole + 1) in window sums, so the
    # 2-D one is four (rectangular) box sums, each O(1) per pixel whatever the radius.
    inner, outer = 2 * whole + 1, 2 * whole + 3
    norm = 1.0 / (inner + 2 * fraction) ** 2
    terms = (
        ((inner, inner), (1 - fraction) ** 2),
        ((inner, outer), fraction * (1 - fraction)),
        ((outer, inner), fraction * (1 - fraction)),
        ((outer, outer), fraction**2),
    )
    result = None
    for size, weight in terms:
        if weight <= 0:
            continue
        part = cv2.boxFilter(x, cv2.CV_32F, size, normalize=False, borderType=BORDER)
        part *= np.float32(weight * norm)
        if result is None:
            result = part
        else:
            result += part
    if out is None:
        return result
    np.copyto(out, result)
    return out


class Guide:
    """An ``(H, W, 3)`` guide (uint8, or float32 in ``[0, 1]``) in the forms the filters need."""

    def __init__(self, image: np.ndarray) -> None:
        self.image = image
        self.is_uint8 = image.dtype == np.uint8
        self._planes: list[np.ndarray] | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.image.shape[:2]

    def planes(self) -> list[np.ndarray]:
        """Three contiguous float32 planes in ``[0, 1]`` (computed once)."""
        if self._planes is None:
            if self.is_uint8:
                self._planes = [np.multiply(c, np.float32(1 / 255), dtype=np.float32) for c in cv2.split(self.image)]
            else:
                self._planes = list(cv2.split(self.image.astype(np.float32, copy=False)))
        return self._planes

    def downsampled_planes(self, size: tuple[int, int]) -> list[np.ndarray]:
        """Area-downsampled to ``size`` = ``(w, h)``: three float32 planes in ``[0, 1]``."""
        if self._planes is None and self.is_uint8:
            # Averaging in uint8 rounds to 1/255, far below any useful eps; it saves a float copy.
            small = cv2.resize(self.image, size, interpolation=cv2.INTER_AREA)
            return [np.multiply(c, np.float32(1 / 255), dtype=np.float32) for c in cv2.split(small)]
        return [cv2.resize(c, size, interpolation=cv2.INTER_AREA) for c in self.planes()]

    def linear_model(self, mean_a: list[np.ndarray], mean_b: np.ndarray) -> np.ndarray:
        """``q = mean_a . I + mean_b`` (He et al., eq. 16), float32; overwrites ``mean_a``."""
        a_r, a_g, a_b = mean_a
        if self._planes is None and self.is_uint8:
            # Multiply by the uint8 channels directly and fold the 1/255 in at the end.
            for a, I_c in zip(mean_a, self.uint8_planes()):
                np.multiply(a, I_c, out=a)
            scale = np.float32(1 / 255)
        else:
            for a, I_c in zip(mean_a, self.planes()):
                np.multiply(a, I_c, out=a)
            scale = None
        a_r += a_g
        a_r += a_b
        if scale is not None:
            a_r *= scale
        a_r += mean_b
        return a_r

    def upsampled_linear_model(self, mean_a: list[np.ndarray], mean_b: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``q = mean_a . I + mean_b`` with coefficients given on a coarser grid, upsampled bilinearly.

        One coefficient plane at a time goes to full size, so only ``out`` and one
        scratch plane are touched at full resolution. Returns ``out``; overwrites ``mean_a``.
        """
        height, width = self.shape
        q = cv2.resize(mean_b, (width, height), dst=out, interpolation=cv2.INTER_LINEAR)
        scratch = np.empty((height, width), np.float32)
        if self.is_uint8:
            planes = self.uint8_planes()
            for a in mean_a:  # the guide's scale, folded in on the small grid
                a *= np.float32(1 / 255)
        else:
            planes = self.planes()
        for a, I_c in zip(mean_a, planes):
            np.multiply(cv2.resize(a, (width, height), dst=scratch, interpolation=cv2.INTER_LINEAR), I_c, out=scratch)
            q += scratch
        return q

    def uint8_planes(self) -> list[np.ndarray]:
        """The uint8 guide's three channels as contiguous planes (one pass: several times faster
        than extracting them one by one)."""
        height, width = self.shape
        return list(cv2.split(self.image, [np.empty((height, width), np.uint8) for _ in range(3)]))


def _guided_coefficients(
    I: list[np.ndarray], p: np.ndarray, radius: float, eps: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
    """Per-window linear model ``p ~ a . I + b`` (He et al., eq. 14-15), not yet averaged.

    Returns ``(a_r, a_g, a_b, b, spare)``, each shaped like ``p``; ``spare`` are
    dead float32 buffers of the same shape the caller may reuse.
    """
    I_r, I_g, I_b = I
    mean_r, mean_g, mean_b = (box_mean(c, radius) for c in I)
    mean_p = box_mean(p, radius)
    scratch = np.empty_like(p)

    def windowed_covariance(x: np.ndarray, y: np.ndarray, mean_x: np.ndarray, mean_y: np.ndarray) -> np.ndarray:
        """``mean(x * y) - mean_x * mean_y`` over each window."""
        out = box_mean(np.multiply(x, y, out=scratch), radius)
        out -= np.multiply(mean_x, mean_y, out=scratch)
        return out

    cov_Ip_r = windowed_covariance(I_r, p, mean_r, mean_p)
    cov_Ip_g = windowed_covariance(I_g, p, mean_g, mean_p)
    cov_Ip_b = windowed_covariance(I_b, p, mean_b, mean_p)
    # Sigma + eps * U, the 3x3 covariance of I in each window (symmetric: six entries).
    var_rr = windowed_covariance(I_r, I_r, mean_r, mean_r)
    var_rg = windowed_covariance(I_r, I_g, mean_r, mean_g)
    var_rb = windowed_covariance(I_r, I_b, mean_r, mean_b)
    var_gg = windowed_covariance(I_g, I_g, mean_g, mean_g)
    var_gb = windowed_covariance(I_g, I_b, mean_g, mean_b)
    var_bb = windowed_covariance(I_b, I_b, mean_b, mean_b)
    # Solve (Sigma + eps U) a = cov_Ip per pixel by an LDL^T factorisation, in place.
    # Unlike the cofactor inverse it stays accurate in float32 when a strong two-colour
    # edge makes Sigma nearly singular and eps is small. Each pivot d is a Schur
    # complement of Sigma + eps U, hence >= eps exactly; the floor only undoes rounding.
    floor = np.float32(eps)
    var_rr += floor
    d_1 = np.maximum(var_rr, floor, out=var_rr)
    l_21 = np.divide(var_rg, d_1, out=var_rg)
    l_31 = np.divide(var_rb, d_1, out=var_rb)
    # d_2 = var_gg + eps - l_21^2 d_1
    var_gg += floor
    var_gg -= np.multiply(np.multiply(l_21, l_21, out=scratch), d_1, out=scratch)
    d_2 = np.maximum(var_gg, floor, out=var_gg)
    # l_32 = (var_gb - l_31 l_21 d_1) / d_2
    var_gb -= np.multiply(np.multiply(l_31, l_21, out=scratch), d_1, out=scratch)
    l_32 = np.divide(var_gb, d_2, out=var_gb)
    # d_3 = var_bb + eps - l_31^2 d_1 - l_32^2 d_2
    var_bb += floor
    var_bb -= np.multiply(np.multiply(l_31, l_31, out=scratch), d_1, out=scratch)
    var_bb -= np.multiply(np.multiply(l_32, l_32, out=scratch), d_2, out=scratch)
    d_3 = np.maximum(var_bb, floor, out=var_bb)
    # Forward substitution L y = cov_Ip (y_1 = cov_Ip_r), in place.
    y_2 = cov_Ip_g
    y_2 -= np.multiply(l_21, cov_Ip_r, out=scratch)
    y_3 = cov_Ip_b
    y_3 -= np.multiply(l_31, cov_Ip_r, out=scratch)
    y_3 -= np.multiply(l_32, y_2, out=scratch)
    # D z = y and back substitution L^T a = z.
    a_b = np.divide(y_3, d_3, out=y_3)
    a_g = np.divide(y_2, d_2, out=y_2)
    a_g -= np.multiply(l_32, a_b, out=scratch)
    a_r = np.divide(cov_Ip_r, d_1, out=cov_Ip_r)
    a_r -= np.multiply(l_21, a_g, out=scratch)
    a_r -= np.multiply(l_31, a_b, out=scratch)
    # b = mean_p - a . mean_I
    b = mean_p
    b -= np.multiply(a_r, mean_r, out=scratch)
    b -= np.multiply(a_g, mean_g, out=scratch)
    b -= np.multiply(a_b, mean_b, out=scratch)
    spare = [var_rr, var_rg, var_rb, var_gg, var_gb, var_bb, mean_r, mean_g, mean_b, scratch]
    return a_r, a_g, a_b, b, spare


def guided_filter_with(guide: Guide, p: np.ndarray, radius: float, eps: float) -> np.ndarray:
    a_r, a_g, a_b, b, spare = _guided_coefficients(guide.planes(), p, radius, eps)
    mean_a = [box_mean(a, radius, out=buffer) for a, buffer in zip((a_r, a_g, a_b), spare)]
    mean_b = box_mean(b, radius, out=spare[3])
    return guide.linear_model(mean_a, mean_b)


#: The coarsest grid :func:`fast_subsample` gives the guided filter's coefficients.
_FAST_MAX_SUBSAMPLE = 4


def fast_subsample(radius: float) -> int:
    """The coarse grid :mod:`inference.matte` gives :func:`fast_guided_filter` for a window of
    ``radius`` pixels: half the radius, clamped to ``[2, 4]`` (1 for radius 1 or less), keeping a
    coarse radius of at least 1."""
    return 1 if radius <= 1 else max(2, min(_FAST_MAX_SUBSAMPLE, int(radius // 2)))


def coarse_radius(radius: float, subsample: int) -> float:
    """The window radius :func:`fast_guided_filter_with` uses on its coarse grid: an int
    ``radius`` rounded (at least 1), a fractional one (a preview's) kept fractional."""
    if isinstance(radius, (int, np.integer)):
        return max(1, round(radius / subsample))
    return max(1.0, radius / subsample)


def filter_reach(radius: float, subsample: int) -> int:
    """How far (pixels) the input of :func:`fast_guided_filter_with` (:func:`guided_filter_with`
    for ``subsample`` 1) reaches its output: two windows, and on a coarse grid whole cells plus
    one of interpolation."""
    if subsample > 1:
        return subsample * (2 * math.ceil(coarse_radius(radius, subsample)) + 2)
    return 2 * math.ceil(radius) + 1


def grid_aligned(start: int, stop: int, size: int, multiple: int) -> tuple[int, int]:
    """``[start, stop)`` inside ``[0, size)`` grown to start on a multiple of ``multiple`` and to a
    length that is one, where it fits: a coarse grid over it then lies on the whole map's grid."""
    start -= start % multiple
    length = -(-(stop - start) // multiple) * multiple
    if length > size:
        return start, stop
    stop = start + length
    if stop > size:
        start, stop = size - length, size
    return start, stop


def fast_guided_filter_with(
    guide: Guide, p: np.ndarray, radius: float, eps: float, subsample: int, *, overwrite_src: bool = False
) -> np.ndarray:
    """:func:`fast_guided_filter` without checks. An int ``radius`` is rounded on the coarse
    grid (at least 1); a fractional one (a preview's scaled radius) stays fractional there."""
    if subsample == 1:
        return guided_filter_with(guide, p, radius, eps)
    height, width = p.shape
    small = (max(1, round(width / subsample)), max(1, round(height / subsample)))
    I_sub = guide.downsampled_planes(small)
    p_sub = cv2.resize(p, small, interpolation=cv2.INTER_AREA)
    radius_sub = coarse_radius(radius, subsample)
    a_r, a_g, a_b, b, spare = _guided_coefficients(I_sub, p_sub, radius_sub, eps)
    mean_a = [box_mean(a, radius_sub, out=buffer) for a, buffer in zip((a_r, a_g, a_b), spare)]
    mean_b = box_mean(b, radius_sub, out=spare[3])
    # p is no longer needed: the result goes into its buffer when the caller allows it.
    out = p if overwrite_src else np.empty_like(p)
    return guide.upsampled_linear_model(mean_a, mean_b, out)


#: Side of the tiles :func:`guided_filter_near_edges` filters (its reach, twice the radius, must fit in one).
EDGE_TILE = 32

#: Above this share of tiles in use, :func:`guided_filter_near_edges` filters the whole map instead.
_MAX_TILE_SHARE = 0.6


def guided_filter_near_edges(image: np.ndarray, p: np.ndarray, radius: float, eps: float) -> np.ndarray:
    """``guided_filter_with(Guide(image), p, radius, eps)`` computed only where it can differ from ``p``.

    The filter returns ``p`` itself (up to rounding) wherever ``p`` is constant over the
    two windows around a pixel (twice the radius), so only the :data:`EDGE_TILE` tiles near a
    change of ``p`` are filtered: each with a margin of its reach, mirrored at the map's
    border like every box mean here, laid side by side in one mosaic. Elsewhere the result
    is ``p``. ``image`` is the ``(H, W, 3)`` guide, ``p`` an ``(H, W)`` float32 map.
    """
    height, width = p.shape
    reach = 2 * math.ceil(radius)
    tiles_y, tiles_x = -(-height // EDGE_TILE), -(-width // EDGE_TILE)
    if reach > EDGE_TILE or reach < 1 or min(height, width) < 2 * EDGE_TILE:
        return guided_filter_with(Guide(image), p, radius, eps)
    # Cells of `reach` pixels that hold a value above 0 / below 1, grown by one cell (the reach):
    # a pixel can change where both kinds are within reach.
    cell = 1 << (reach - 1).bit_length()  # a power of two >= reach, so cells tile EDGE_TILE exactly
    cells_y, cells_x = -(-height // cell), -(-width // cell)
    padded = cv2.copyMakeBorder(p, 0, cells_y * cell - height, 0, cells_x * cell - width, cv2.BORDER_REPLICATE)
    kernel = np.ones((3, 3), np.uint8)
    near = None
    for flags in (padded > 0, padded < 1):
        # Float area means: one flagged pixel is enough (uint8 means would round it away).
        per_cell = cv2.resize(flags.astype(np.float32), (cells_x, cells_y), interpolation=cv2.INTER_AREA) > 0
        grown = cv2.dilate(per_cell.view(np.uint8), kernel)
        near = grown if near is None else cv2.bitwise_and(near, grown)
    # Tiles holding any such cell.
    per_tile = EDGE_TILE // cell
    grid = np.zeros((tiles_y * per_tile, tiles_x * per_tile), np.uint8)
    grid[: near.shape[0], : near.shape[1]] = near[: tiles_y * per_tile, : tiles_x * per_tile]
    busy = grid.reshape(tiles_y, per_tile, tiles_x, per_tile).max(axis=(1, 3))
    tile_ids = np.flatnonzero(busy)
    out = np.array(p, dtype=np.float32, copy=True)
    if tile_ids.size == 0:
        return out
    if tile_ids.size > _MAX_TILE_SHARE * busy.size:
        return guided_filter_with(Guide(image), p, radius, eps)
    # The map mirrored past its border by the reach (and out to whole tiles), then each busy
    # tile with its margin copied into the mosaic, `across` tiles per mosaic row.
    pad_y, pad_x = tiles_y * EDGE_TILE - height + reach, tiles_x * EDGE_TILE - width + reach
    padded_image = cv2.copyMakeBorder(image, reach, pad_y, reach, pad_x, BORDER)
    padded_p = cv2.copyMakeBorder(p, reach, pad_y, reach, pad_x, BORDER)
    side = EDGE_TILE + 2 * reach
    across = max(1, int(np.ceil(np.sqrt(tile_ids.size))))
    down = -(-tile_ids.size // across)
    mosaic_image = np.zeros((down * side, across * side, 3), image.dtype)
    mosaic_p = np.zeros((down * side, across * side), np.float32)
    places = []
    for slot, tile in enumerate(tile_ids.tolist()):
        y, x = (tile // tiles_x) * EDGE_TILE, (tile % tiles_x) * EDGE_TILE
        my, mx = (slot // across) * side, (slot % across) * side
        mosaic_image[my : my + side, mx : mx + side] = padded_image[y : y + side, x : x + side]
        mosaic_p[my : my + side, mx : mx + side] = padded_p[y : y + side, x : x + side]
        places.append((y, x, my + reach, mx + reach))
    filtered = guided_filter_with(Guide(mosaic_image), mosaic_p, radius, eps)
    for y, x, my, mx in places:  # each tile's own pixels (inside the map) go back
        h, w = min(EDGE_TILE, height - y), min(EDGE_TILE, width - x)
        out[y : y + h, x : x + w] = filtered[my : my + h, mx : mx + w]
    return out


#: Above this many separate pieces of change, :func:`add_guided_filter_of_changes` filters one box around all.
_MAX_CHANGE_PIECES = 16


def add_guided_filter_of_changes(
    out: np.ndarray,
    image: np.ndarray,
    delta: np.ndarray,
    changed: np.ndarray,
    radius: float,
    eps: float,
    *,
    subsample: int = 1,
) -> None:
    """``out += filter(delta * changed)``, filtering only near ``changed``: the filter is
    ``guided_filter_with(Guide(image), ., radius, eps)``, or with ``subsample > 1``
    ``fast_guided_filter_with(..., subsample)``.

    Both filters are linear in their input, and a window with no change in it gives exactly 0,
    so each 8-connected piece of ``changed`` (bool) is filtered inside its bounding box grown by the
    filter's reach (two windows; on a coarse grid, in whole cells counted from the maps'
    origin, plus one of interpolation); the pieces' results add up. ``out`` (float32) and
    ``delta`` are shaped like ``image[..., 0]``; borders mirror at the whole map's edges as before.
    """
    margin = filter_reach(radius, subsample)
    height, width = changed.shape
    # The pieces' bounding rectangles, from their outer contours (far cheaper than labelling).
    contours, _ = cv2.findContours(changed.view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    rects = [cv2.boundingRect(contour) for contour in contours]
    if len(rects) > _MAX_CHANGE_PIECES:
        rects = [cv2.boundingRect(changed.view(np.uint8))]
    # Each changed pixel is filtered once, in the first rectangle holding it (a piece nested in
    # another's hole lies in that one's rectangle), inside that rectangle grown by the reach.
    remaining = changed.copy()
    for x, y, w, h in rects:
        x0, y0, x1, y1 = max(0, x - margin), max(0, y - margin), min(width, x + w + margin), min(height, y + h + margin)
        if subsample > 1:
            x0, x1 = grid_aligned(x0, x1, width, subsample)
            y0, y1 = grid_aligned(y0, y1, height, subsample)
        part = np.zeros((y1 - y0, x1 - x0), np.float32)
        taken = remaining[y : y + h, x : x + w]
        inner = (slice(y - y0, y - y0 + h), slice(x - x0, x - x0 + w))
        np.copyto(part[inner], delta[y : y + h, x : x + w], where=taken)
        taken[...] = False
        out[y0:y1, x0:x1] += fast_guided_filter_with(Guide(image[y0:y1, x0:x1]), part, radius, eps, subsample)


def _checked_guide(guide: object) -> Guide:
    if not isinstance(guide, np.ndarray) or guide.ndim != 3 or guide.shape[2] != 3:
        raise ValueError(f"expected guide as an (H, W, 3) array, got {describe(guide)}")
    if guide.dtype == np.uint8:
        return Guide(np.ascontiguousarray(guide))
    if guide.dtype.kind != "f":
        raise ValueError(f"expected guide as uint8 or float, got {guide.dtype}")
    scaled = np.ascontiguousarray(guide, dtype=np.float32)
    low, high = float(scaled.min()), float(scaled.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(f"expected a float guide in [0, 1], got values in [{low:.4g}, {high:.4g}]")
    return Guide(scaled)


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """Colour-guided filter of He et al.: edge-preserving smoothing of ``src`` along ``guide``'s edges.

    Each output pixel is ``q = mean_a . I + mean_b``, where ``(a, b)`` is the
    least-squares linear model ``src ~ a . I + b`` of every ``(2r+1)^2`` window
    regularised by ``eps``, averaged over the windows that hold the pixel.
    Borders are mirrored (``cv2.BORDER_REFLECT``), as in ``cv2.ximgproc``.

    Args:
        guide: ``(H, W, 3)`` RGB; uint8 (divided by 255) or float already in ``[0, 1]``.
        src: ``(H, W)`` float map to filter (e.g. a mask in ``[0, 1]``).
        radius: window radius in pixels, >= 1.
        eps: regularisation in units of the ``[0, 1]`` guide's variance, > 0. Edges with
            colour variance well above ``eps`` are kept; flatter ones are smoothed.

    Returns:
        ``(H, W)`` float32, not clipped (it may overshoot ``src``'s range slightly).
    """
    checked = _checked_guide(guide)
    p = check_map(src, checked.shape, "src")
    radius = check_count(radius, "radius", minimum=1)
    eps = check_positive_float(eps, "eps", allow_zero=False)
    return guided_filter_with(checked, np.ascontiguousarray(p), radius, eps)


def fast_guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float, subsample: int) -> np.ndarray:
    """Fast guided filter of He & Sun: the linear coefficients on a subsampled grid.

    ``guide`` and ``src`` are area-downsampled by ``subsample``, the coefficients
    ``(a, b)`` are computed and window-averaged there with radius
    ``round(radius / subsample)`` (at least 1), upsampled bilinearly, and
    ``q = a . I + b`` is formed with the full-resolution guide, so edges stay
    sharp. ``subsample=1`` is exactly :func:`guided_filter`.

    Args:
        guide: ``(H, W, 3)`` RGB; uint8 (divided by 255) or float already in ``[0, 1]``.
        src: ``(H, W)`` float map to filter.
        radius: window radius in full-resolution pixels, >= 1.
        eps: regularisation in units of the ``[0, 1]`` guide's variance, > 0.
        subsample: downsampling factor, >= 1.

    Returns:
        ``(H, W)`` float32, not clipped.
    """
    checked = _checked_guide(guide)
    p = check_map(src, checked.shape, "src")
    radius = check_count(radius, "radius", minimum=1)
    eps = check_positive_float(eps, "eps", allow_zero=False)
    subsample = check_count(subsample, "subsample", minimum=1)
    return fast_guided_filter_with(checked, np.ascontiguousarray(p), radius, eps, subsample)
