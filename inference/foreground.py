"""Colour decontamination: re-estimate the foreground colour of half-transparent edge pixels.

:func:`estimate_foreground` is blur-fusion (Forte & Pitie, "Approximate Fast
Foreground Colour Estimation", ICIP 2021), run coarse to fine and only along
the edge band.
"""

from __future__ import annotations

import cv2
import numpy as np

from inference.guided_filter import box_mean, cell_means
from inference.image_io import check_rgb_image
from inference.matte_checks import check_count, check_map
from inference.side_threads import side_workers
from inference.work_buffers import reusable_plane

#: Box radii of the blur-fusion steps of :func:`estimate_foreground`, wide to narrow. Chosen
#: with the radii comparison of the earlier ``bench/quality.py`` (git history); the current
#: one reports the halo these give. Without the 8 the halo there hardly changes, but a
#: 10-pixel soft ramp keeps up to 7 levels of its old background (tests/test_matte.py). The
#: narrow end is two steps of radius 1 rather than 2 then 1: the same halo on both quality
#: sets (within 0.2%), on a strip mosaic a third smaller.
FOREGROUND_RADII = (32, 8, 1, 1)


#: Blur-fusion boxes of at least this radius run on one grid ``_GRID_STEP`` times coarser
#: than the picture (the radius 8 one as 3 x 3 cells: as good on the halo measure, and
#: nearer the known answer of a soft ramp, than a grid of its own 4 times coarser).
_GRID_MIN_RADIUS = 8
_GRID_STEP = 8

_ABOVE_ZERO = float(np.nextafter(np.float32(0), np.float32(1)))
_BELOW_ONE = float(np.nextafter(np.float32(1), np.float32(0)))

#: Picture rows per strip of the mosaic that carries the narrow blur-fusion boxes.
_STRIP = 8


def estimate_foreground(
    image: np.ndarray, alpha: np.ndarray, *, radii: tuple[int, ...] = FOREGROUND_RADII
) -> np.ndarray:
    """Clean edge colours: re-estimate the foreground colour where ``0 < alpha < 1``.

    An edge pixel of the picture mixes the character's colour with the old
    background's; used as the foreground colour over a new background it shows a
    halo of the old one. Blur-fusion (Forte & Pitié 2021) estimates the pure
    foreground ``F`` and background ``B`` with ``I = alpha F + (1 - alpha) B``:
    each step takes alpha-weighted local means of ``F`` (and ``1 - alpha``-weighted
    ones of ``B``) over a box and hands each its share of the compositing
    residual. Steps run from wide to narrow boxes, coarse to fine like the
    multi-level method of Germer et al.: the wide ones reach across broad soft
    edges, the narrow ones pick up the local colours of cel-shaded art
    (``bench/quality.py`` compares choices). Boxes of radius 8 and more are
    computed on a grid 8 times coarser (:class:`_CoarseGrid`), narrower ones at
    full resolution on a mosaic of short strips around the edge band
    (:class:`_BandStrips`). Only the band changes: pixels with alpha 1 (and 0) keep
    the picture's colour, so off the band ``alpha F = alpha I`` and ``(1 - alpha) B =
    (1 - alpha) I`` whatever the estimates, and every step is the box mean of those
    two fixed planes with the band's current ``alpha F`` and ``(1 - alpha) B``
    written in. A last step at the radius of the step before it (the default's second
    radius 1) takes new foreground means only and keeps that step's background means:
    on ``bench/quality.py`` the halo is the same to 0.1%, for less than half the step's work.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        alpha: ``(H, W)`` float in ``[0, 1]``.
        radii: box radius in pixels of each step (each >= 1), applied in order.

    Returns:
        ``(H, W, 3)`` uint8 RGB foreground colour (a new array).
    """
    image, alpha, radii = _checked(image, alpha, radii)
    return _estimate_at_band(image, alpha, _band_pixels(alpha), radii)


def estimate_foreground_at_band(
    image: np.ndarray, alpha: np.ndarray, at_band: np.ndarray, *, radii: tuple[int, ...] = FOREGROUND_RADII
) -> np.ndarray:
    """:func:`estimate_foreground` with its edge band given: ``at_band`` holds the flat positions,
    ascending, of every pixel with ``0 < alpha < 1`` (as :func:`edge_band` finds them; the matte
    finds them while it writes its alpha, see :func:`inference.matte.refine_alpha_and_foreground`).
    """
    image, alpha, radii = _checked(image, alpha, radii)
    if not isinstance(at_band, np.ndarray) or at_band.ndim != 1 or at_band.dtype.kind not in "iu":
        raise ValueError(f"expected at_band as a 1-D array of flat positions, got {at_band!r:.80}")
    if at_band.size and (at_band[0] < 0 or at_band[-1] >= alpha.size):
        raise ValueError(f"expected at_band inside the {alpha.size} pixels, got {at_band[0]}..{at_band[-1]}")
    return _estimate_at_band(image, alpha, at_band, radii)


def edge_band(alpha: np.ndarray) -> np.ndarray:
    """Flat positions, ascending, of the pixels with ``0 < alpha < 1`` of an ``(h, w)`` float32 map."""
    # One pass: the smallest float32 above 0 up to the largest below 1.
    band = cv2.inRange(alpha, _ABOVE_ZERO, _BELOW_ONE)
    return np.flatnonzero(np.bitwise_and(band, 1, out=band).view(np.bool_))


def _checked(
    image: np.ndarray, alpha: np.ndarray, radii: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """The inputs of :func:`estimate_foreground`, checked, as contiguous arrays (alpha float32)."""
    image = check_rgb_image(image)
    alpha = np.ascontiguousarray(check_map(alpha, image.shape[:2], "alpha"))
    if not isinstance(radii, (tuple, list)) or not radii:
        raise ValueError(f"expected radii as a non-empty tuple of ints >= 1, got {radii!r}")
    radii = tuple(check_count(r, "each radius", minimum=1) for r in radii)
    return np.ascontiguousarray(image), alpha, radii


def _estimate_at_band(
    image: np.ndarray, alpha: np.ndarray, at_band: np.ndarray, radii: tuple[int, ...]
) -> np.ndarray:
    """:func:`estimate_foreground` of checked contiguous inputs and the band's flat positions."""
    if at_band.size == 0:
        return image.copy()
    height, width = alpha.shape
    ys, xs = np.divmod(at_band, width)
    # Independent work goes to the side threads (numpy and OpenCV release the GIL): the
    # strip mosaic (while this thread gathers the band and fills the coarse grid), the copy
    # for the result. (A third thread filling half the grid gained nothing: it waited for
    # the GIL that the other two kept busy.)
    margin = max(radii) + 1
    box = (
        max(0, int(xs.min()) - margin),
        max(0, int(ys[0]) - margin),
        min(width, int(xs.max()) + 1 + margin),
        min(height, int(ys[-1]) + 1 + margin),
    )
    narrow = [r for r in radii if r < _GRID_MIN_RADIUS]
    strips_job = side_workers().submit(_BandStrips, image, alpha, ys, xs, max(narrow)) if narrow else None
    grid = _CoarseGrid(image, alpha, box) if max(radii) >= _GRID_MIN_RADIUS else None
    out_job = side_workers().submit(image.copy)
    band = _Band(image, alpha, at_band, ys, xs)
    if grid is not None:
        grid.fill()
        grid.add_band(band)
    # The steps' box means go to two buffers in turn (kept by this thread: no page faults).
    buffers = reusable_plane("foreground box means", (2, 7, at_band.size), np.float32)
    # alpha F and (1 - alpha) B at the band, (6, N) (None while F = B = I); F after the last step.
    # The wide steps run while the strip mosaic is still being built.
    values = strips = None
    for step, r in enumerate(radii):
        if r < _GRID_MIN_RADIUS and strips is None:
            strips = strips_job.result()
        level = grid if r >= _GRID_MIN_RADIUS else strips
        last = step == len(radii) - 1
        # A last step at the radius of the one before keeps that step's background means.
        keep = last and step > 0 and radii[step - 1] == r
        sums = buffers[(step - 1) % 2 if keep else step % 2]
        level.box_means_at_band(r, values, sums, keep_background=keep)
        values = band.step(sums, last=last)

    F = np.clip(values, 0.0, 255.0, out=values)
    F += np.float32(0.5)
    out = out_job.result()
    out.reshape(-1)[(at_band * 3 + np.arange(3)[:, None]).reshape(-1)] = F.astype(np.uint8).reshape(-1)
    return out


def _band_pixels(alpha: np.ndarray) -> np.ndarray:
    """:func:`edge_band` of the whole picture, its two halves on two threads."""
    half = alpha.shape[0] // 2
    if alpha.size < 2**16:
        return edge_band(alpha)
    top_job = side_workers().submit(edge_band, alpha[:half])
    bottom = edge_band(alpha[half:])
    bottom += half * alpha.shape[1]
    return np.concatenate([top_job.result(), bottom])


class _Band:
    """The band's pixels (``N``, row by row) and their values, channel-planar: ``(3, N)``
    float32 colours, ``(N,)`` alpha; :meth:`step` reuses its buffers from step to step."""

    def __init__(
        self, image: np.ndarray, alpha: np.ndarray, at_band: np.ndarray, ys: np.ndarray, xs: np.ndarray
    ) -> None:
        self.ys, self.xs = ys, xs
        self.a = np.take(alpha.reshape(-1), at_band)
        self.one_minus_a = np.float32(1.0) - self.a
        self.a_squared = self.a * self.a
        self.one_minus_a_squared = self.one_minus_a * self.one_minus_a
        self.I = np.empty((3, at_band.size), np.float32)
        for c, channel in enumerate(cv2.split(np.take(image.reshape(-1, 3), at_band, axis=0).reshape(-1, 1, 3))):
            self.I[c] = channel.reshape(-1)
        self.values = np.empty((6, at_band.size), np.float32)
        self.residual = np.empty((3, at_band.size), np.float32)
        self.share = np.empty((3, at_band.size), np.float32)

    def step(self, sums: np.ndarray, *, last: bool) -> np.ndarray:
        """One blur-fusion step from the box means ``sums`` ``(7, N)`` (``alpha F`` (3), ``alpha``,
        ``(1 - alpha) B`` (3)), used up: the new ``alpha F`` and ``(1 - alpha) B`` ``(6, N)``
        (overwritten by the next step), or ``F`` ``(3, N)`` when ``last``."""
        sum_F, weight, sum_B = sums[:3], sums[3], sums[4:]
        # mean F = sum_F / weight, mean B = sum_B / (1 - weight); their alpha- and
        # (1 - alpha)-weighted versions straight from the sums.
        inverse_weight = np.float32(1.0) / np.maximum(weight, np.float32(1e-6))
        inverse_complement = np.float32(1.0) / np.maximum(np.float32(1.0) - weight, np.float32(1e-6))
        alpha_F, complement_B = self.values[:3], self.values[3:]
        np.multiply(sum_F, self.a * inverse_weight, out=alpha_F)
        np.multiply(sum_B, self.one_minus_a * inverse_complement, out=complement_B)
        # residual = I - alpha F - (1 - alpha) B; F gets the alpha share, B the rest.
        residual = np.subtract(self.I, alpha_F, out=self.residual)
        residual -= complement_B
        if last:  # F = mean F + alpha residual
            residual *= self.a
            sum_F *= inverse_weight
            sum_F += residual
            return sum_F
        # alpha F = alpha (mean F + alpha residual), likewise (1 - alpha) B.
        share = np.multiply(residual, self.a_squared, out=self.share)
        alpha_F += share
        np.multiply(residual, self.one_minus_a_squared, out=share)
        complement_B += share
        return self.values


def _as_sample_map(positions: np.ndarray, step: int) -> np.ndarray:
    """Grid coordinates of N picture positions on a grid ``step`` times coarser, as a
    ``(rows, 1024)`` float32 map for ``cv2.remap`` (at most 32767 per side)."""
    rows = -(-positions.size // 1024)
    padded = np.zeros(rows * 1024, np.float32)
    grid_positions = padded[: positions.size]
    np.multiply(positions, np.float32(1.0 / step), out=grid_positions, casting="unsafe")
    grid_positions += np.float32(0.5 / step - 0.5)  # pixel centres: (x + 0.5) / step - 0.5
    return padded.reshape(rows, 1024)


class _CoarseGrid:
    """The wide blur-fusion boxes, on a grid ``_GRID_STEP`` times coarser than the crop
    (``step``: less for a crop smaller than that).

    It holds the cell means of ``alpha I`` (3 channels), ``alpha`` and ``(1 - alpha) I``
    (3), one ``(7, h, w)`` float32 stack in the order of the box means. Off the band
    ``alpha I`` is the picture where alpha is 1 and 0 elsewhere, so the grid comes from
    the uint8 picture with the solid part masked (:meth:`fill`, which
    needs only the crop), plus the band's own values added per cell (:meth:`add_band`):
    no full-size float plane is ever made. A box of radius ``r`` reaches
    ``round(r / step)`` cells (at least 1) to each side; band pixels read the box means
    by bilinear interpolation at their own position.
    """

    def __init__(self, image: np.ndarray, alpha: np.ndarray, box: tuple[int, int, int, int]) -> None:
        x0, y0, x1, y1 = box
        self.origin = (x0, y0)
        self.step = step = max(1, min(_GRID_STEP, y1 - y0, x1 - x0))
        # The grid covers the largest multiple of `step` (whole cells, see cell_means); band
        # pixels past it add to no cell and read the grid's last samples.
        self.grid_shape = grid_h, grid_w = (y1 - y0) // step, (x1 - x0) // step
        self.crop_image = image[y0 : y0 + grid_h * step, x0 : x0 + grid_w * step]
        self.crop_alpha = alpha[y0 : y0 + grid_h * step, x0 : x0 + grid_w * step]
        self.planes = np.empty((7, grid_h, grid_w), np.float32)

    def fill(self) -> None:
        """Fill the grid from the crop: ``alpha I`` without the band's share, ``alpha``, and ``I`` for now."""
        step, crop_image, crop_alpha = self.step, self.crop_image, self.crop_alpha
        solid_image = np.zeros(crop_image.shape, np.uint8)
        cv2.copyTo(crop_image, (crop_alpha >= 1).view(np.uint8), solid_image)
        self.planes[3] = cell_means(crop_alpha, step)
        for c, channel in enumerate(cv2.split(cell_means(solid_image, step))):
            self.planes[c] = channel
        for c, channel in enumerate(cv2.split(cell_means(crop_image, step))):
            self.planes[4 + c] = channel

    def add_band(self, band: _Band) -> None:
        """Add the band's ``alpha I`` to the filled grid, and make ``(1 - alpha) I`` of ``I``."""
        x0, y0 = self.origin
        ys, xs = band.ys - y0, band.xs - x0
        step = self.step
        grid_h, grid_w = self.grid_shape
        self.cells = (ys // step) * grid_w
        self.cells += xs // step
        if ys[-1] >= grid_h * step or xs.max() >= grid_w * step:  # past the grid: no cell
            self.cells[(xs >= grid_w * step) | (ys >= grid_h * step)] = grid_w * grid_h
        self.sample_x = _as_sample_map(xs, step)
        self.sample_y = _as_sample_map(ys, step)
        self.count = ys.size
        # The band's alpha I and (1 - alpha) I, (6, N): what the grid holds for it.
        self.initial = np.empty((6, self.count), np.float32)
        np.multiply(band.I, band.a, out=self.initial[:3])
        np.subtract(band.I, self.initial[:3], out=self.initial[3:])
        self.planes[:3] += self._cell_sums(self.initial[:3])
        self.planes[4:] -= self.planes[:3]

    def _cell_sums(self, values: np.ndarray) -> np.ndarray:
        """``(3, h, w)`` sums per grid cell of ``(3, N)`` band values over the cell's pixel count."""
        grid_h, grid_w = self.grid_shape
        sums = np.empty((3, grid_h * grid_w), np.float32)
        for c in range(3):
            sums[c] = np.bincount(self.cells, weights=values[c], minlength=grid_h * grid_w + 1)[:-1]
        sums *= np.float32(1.0 / (self.step * self.step))
        return sums.reshape(3, grid_h, grid_w)

    def box_means_at_band(
        self, radius: int, weighted: np.ndarray | None, sums: np.ndarray, *, keep_background: bool = False
    ) -> None:
        """Box means at the band pixels of ``alpha F`` (3), ``alpha`` and ``(1 - alpha) B`` (3) into
        ``sums`` ``(7, N)``, with the band's ``alpha F`` and ``(1 - alpha) B`` from ``weighted``
        ``(6, N)`` (``None``: ``F = B = I``). ``keep_background``: ``sums`` holds the means of the
        step before at this radius; its ``alpha`` and ``(1 - alpha) B`` rows are kept."""
        planes = self.planes
        if weighted is not None:
            change = weighted - self.initial
            planes = planes.copy()
            planes[:3] += self._cell_sums(change[:3])
            if not keep_background:
                planes[4:] += self._cell_sums(change[3:])
        grid_radius = max(1, round(radius / self.step))
        # OpenCV filters and samples four channels at a time best: alpha F and alpha, then
        # (1 - alpha) B and alpha again.
        def sample(first: int, order: tuple[int, ...]) -> None:
            means = box_mean(cv2.merge([planes[k] for k in order]), grid_radius)
            at_band = cv2.remap(means, self.sample_x, self.sample_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            for row, channel in zip(range(first, 7), cv2.split(at_band)):
                sums[row] = channel.reshape(-1)[: self.count]

        side = None if keep_background else side_workers().submit(sample, 4, (4, 5, 6, 3))
        sample(0, (0, 1, 2, 3))
        if side is not None:
            side.result()


def _mirrored(index: np.ndarray, size: int) -> np.ndarray:
    """Indices past ``[0, size)`` mirrored back (``cv2.BORDER_REFLECT``: ``cba|abc|cba``)."""
    index = np.where(index < 0, -index - 1, index)
    index = np.where(index >= size, 2 * size - index - 1, index)
    return np.clip(index, 0, size - 1)  # only reached by windows wider than the picture


class _BandStrips:
    """The narrow blur-fusion boxes at full resolution on a mosaic of the band's surroundings.

    The picture is cut into strips of ``_STRIP`` rows. Each strip keeps only its
    columns within ``halo`` of a band pixel in its rows, and each kept column carries
    the strip's rows plus ``halo`` rows above and below: all of a band pixel's box up
    to radius ``halo``. The kept columns of all strips, one after another, form a tape
    ``_STRIP + 2 halo`` rows high in which a band pixel's ``halo`` neighbours on
    either side are its picture neighbours; the tape is folded into lines that
    overlap by ``2 halo`` columns, stacked into a roughly square mosaic (OpenCV
    filters a wide picture several times faster than a long thin one). Rows and
    columns past the picture's border mirror it like every other box filter here.

    Seven such mosaics, stacked, hold ``alpha I`` (3 channels), ``alpha`` and
    ``(1 - alpha) I`` (3); a step writes the band's current ``alpha F`` and
    ``(1 - alpha) B`` into every copy of each band pixel and box-filters the stack at
    once (no box reaches across a line, so none mixes two mosaics).
    """

    def __init__(
        self,
        image: np.ndarray,
        alpha: np.ndarray,
        ys: np.ndarray,
        xs: np.ndarray,
        halo: int,
    ) -> None:
        height, width = alpha.shape
        strip = ys // _STRIP
        row_in_strip = ys - strip * _STRIP
        first_strip = int(strip[0])  # ys ascends
        x_low = int(xs.min()) - halo
        kept_width = int(xs.max()) + halo + 1 - x_low
        # kept: (strips, columns) of the band's box, the columns each strip keeps.
        kept = np.zeros((int(strip[-1]) - first_strip + 1, kept_width), np.uint8)
        kept_at_band = (strip - first_strip) * kept_width + (xs - x_low)  # (N,) places in `kept`
        kept.reshape(-1)[kept_at_band] = 1
        kept = cv2.dilate(kept, np.ones((1, 2 * halo + 1), np.uint8))
        tape = np.flatnonzero(kept.view(np.bool_))  # kept is 0 or 1
        tape_of_kept = np.empty(kept.size, np.int32)  # read at kept places only
        tape_of_kept[tape] = np.arange(tape.size, dtype=np.int32)
        band_tape = tape_of_kept[kept_at_band]  # each band pixel's tape column
        band_of_tape = np.empty(tape.size * _STRIP, np.int32)  # read at band places only
        band_of_tape[band_tape * _STRIP + row_in_strip] = np.arange(ys.size, dtype=np.int32)
        # Fold the tape into lines of `line_width` columns, each line starting `wrap`
        # columns after the last; a band pixel is read in the line whose middle
        # `wrap` columns hold it.
        rows = _STRIP + 2 * halo
        line_width = max(4 * halo + 1, int(np.sqrt(tape.size * rows)) + 2 * halo)
        wrap = line_width - 2 * halo
        lines = max(1, -(-(tape.size - 2 * halo) // wrap))
        line_tape = np.minimum(np.arange(lines)[:, None] * wrap + np.arange(line_width), tape.size - 1)
        index_type = np.int32 if height * width < 2**31 else np.int64
        line_kept = tape[line_tape].astype(index_type)  # (lines, line_width) places in `kept`
        top = (line_kept // kept_width + first_strip) * _STRIP - halo
        source_rows = top[:, None, :] + np.arange(rows, dtype=index_type)[:, None]  # (lines, rows, line_width)
        if top.min() < 0 or top.max() + rows > height:
            source_rows = _mirrored(source_rows, height)
        source_cols = line_kept % kept_width + x_low
        if x_low < 0 or x_low + kept_width > width:
            source_cols = _mirrored(source_cols, width)
        source_rows *= width
        source_rows += source_cols[:, None, :]
        source = source_rows.reshape(-1)  # the picture pixel (flat position) of each mosaic pixel
        self.shape = (lines * rows, line_width)
        size = source.size
        line = (band_tape - halo) // wrap
        self.band_place = (line * rows + row_in_strip + halo) * line_width + band_tape - line * wrap
        self.planes = np.empty((7, size), np.float32)
        mosaic_alpha = np.take(alpha.reshape(-1), source, out=self.planes[3])
        for c, channel in enumerate(cv2.split(np.take(image.reshape(-1, 3), source, axis=0).reshape(-1, 1, 3))):
            channel = channel.reshape(-1)
            np.multiply(channel, mosaic_alpha, out=self.planes[c])
            np.subtract(channel, self.planes[c], out=self.planes[4 + c])
        # Besides its own place a band pixel shows in the margins of the neighbouring
        # strips, in the overlaps of the lines and in mirrors: its copies.
        own = np.zeros(size, np.bool_)
        own[self.band_place] = True
        own |= mosaic_alpha <= 0
        own |= mosaic_alpha >= 1
        self.copies = np.flatnonzero(~own)
        copy_y, copy_x = np.divmod(source[self.copies], width)
        copy_strip = copy_y // _STRIP
        copy_tape = tape_of_kept[(copy_strip - first_strip) * kept_width + copy_x - x_low]
        self.copy_of = band_of_tape[copy_tape * _STRIP + copy_y - copy_strip * _STRIP]

    def box_means_at_band(
        self, radius: int, weighted: np.ndarray | None, sums: np.ndarray, *, keep_background: bool = False
    ) -> None:
        """:meth:`_CoarseGrid.box_means_at_band` (``weighted`` ``None``: ``F = B = I``, or the last
        call's values)."""
        # alpha F and alpha here, (1 - alpha) B on a side thread (each plane's box stays in its
        # plane); alpha F alone in two parts.
        here, there = ((0, 1), (2,)) if keep_background else ((0, 1, 2, 3), (4, 5, 6))
        side = side_workers().submit(self._box_means_of, there, radius, weighted, sums)
        self._box_means_of(here, radius, weighted, sums)
        side.result()

    def _box_means_of(
        self, planes: tuple[int, ...], radius: int, weighted: np.ndarray | None, sums: np.ndarray
    ) -> None:
        """:meth:`box_means_at_band` of the consecutive ``planes`` into their rows of ``sums``."""
        if weighted is not None:
            for plane in planes:
                if plane == 3:
                    continue  # alpha
                values = weighted[plane if plane < 3 else plane - 1]
                self.planes[plane][self.band_place] = values
                self.planes[plane][self.copies] = np.take(values, self.copy_of)
        first, end = planes[0], planes[-1] + 1
        stack = self.planes[first:end].reshape((end - first) * self.shape[0], self.shape[1])
        means = box_mean(stack, radius).reshape(end - first, -1)
        np.take(means, self.band_place, axis=1, out=sums[first:end])
