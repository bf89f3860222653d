"""Alpha where the prior is unsure: thin structures estimated from the picture's colours.

A soft prior (a refine net's, or a detector's upsampled mask) keeps the *mass* of a
hair strand but smears it: a 0.5-px strand becomes a 0.1-0.3 haze several pixels
wide that any threshold drops. :func:`strand_alpha` hands that mass back to the
pixels whose colour stands out from the local background, which recovers strands
far thinner than a pixel without knowing their colour.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import cv2
import numpy as np

from inference.guided_filter import box_mean, cell_means
from inference.side_threads import side_workers
from inference.work_buffers import reusable_plane

#: Window radius (full-resolution pixels) of the strand estimate: the prior's mass in each
#: window is handed to the pixels whose colour stands out from the local background.
STRAND_RADIUS = 8

#: Window radius (full-resolution pixels) of the local background colour and its noise.
BACKGROUND_RADIUS = 20

#: Strand alpha at or above this joins the solid mask in the island step (see ``inference.matte``).
STRAND_ISLAND_LEVEL = 0.25

#: Grid cells whose background window holds less than this share of background pixels
#: have no background colour to measure against.
_MIN_BACKGROUND_SHARE = 1e-3

#: Prior values below this count as background evidence and carry no mass.
PRIOR_FLOOR = 0.02

#: Colour distances within this many times the local background's own variation are noise.
NOISE_FACTOR = 2.0

#: ... and so are distances below this (in ``[0, 1]`` RGB units: about 3 levels of 255).
MIN_DISTANCE = 3 / 255

#: The window means of the strand estimate (prior mass and colour distance) are taken on a
#: grid of cells ``radius // _RATIO_CELLS_PER_RADIUS`` pixels wide, their window rounded to
#: whole cells (at full resolution: 4-px cells, a 5-cell = 20-px window).
_RATIO_CELLS_PER_RADIUS = 2

#: The largest float32 below :data:`PRIOR_FLOOR`: OpenCV keeps what is above a threshold.
_BELOW_PRIOR_FLOOR = float(np.nextafter(np.float32(PRIOR_FLOOR), np.float32(0)))

#: ``cv2.transform`` matrix giving each pixel the mean of its three channels in all three:
#: OpenCV's 3-in/3-out uint8 path is vectorised (the 3-in/1-out one is not, and is 3x slower).
#: Its fixed-point arithmetic rounds some means down; the 1/8-level offset makes every result
#: ``round(sum / 3)`` exactly, as checked over all 2**24 colours (``tests/test_matte.py``).
_CHANNEL_MEAN = np.hstack([np.full((3, 3), 1 / 3), np.full((3, 1), 0.125)]).astype(np.float32)


class _CellGrid:
    """A crop of ``shape`` ``(h, w)`` seen as whole square cells of ``step`` pixels.

    The last ``h % step`` rows and ``w % step`` columns belong to no cell: :meth:`shrink`
    leaves them out and :meth:`grow` gives them the values of the last cells.
    """

    def __init__(self, shape: tuple[int, int], step: int) -> None:
        self.height, self.width = shape
        self.step = step
        self.rows, self.cols = self.height // step, self.width // step

    def shrink(self, plane: np.ndarray) -> np.ndarray:
        """Mean of each cell: ``(rows, cols[, c])``, the dtype of ``plane`` (uint8 rounds)."""
        return cell_means(plane[: self.rows * self.step, : self.cols * self.step], self.step)

    def grow(self, cells: np.ndarray, out: np.ndarray, top: int = 0, left: int = 0) -> np.ndarray:
        """Bilinear upsampling of ``cells`` into ``out`` (``(h, w[, c])``, same dtype), in place.

        ``cells`` may be a block of the grid whose first cell is ``(top, left)``: then only its
        pixels are written (exactly as the whole grid would give them where the cells around
        the block equal the block's border cells).
        """
        rows, cols = cells.shape[:2]
        y0, x0 = top * self.step, left * self.step
        y1, x1 = y0 + rows * self.step, x0 + cols * self.step
        cv2.resize(cells, (x1 - x0, y1 - y0), dst=out[y0:y1, x0:x1], interpolation=cv2.INTER_LINEAR)
        if top + rows == self.rows and y1 < self.height:
            out[y1:, x0:x1] = out[y1 - 1 : y1, x0:x1]
            y1 = self.height
        if left + cols == self.cols and x1 < self.width:
            out[y0:y1, x1:] = out[y0:y1, x1 - 1 : x1]
        return out


def _channel_mean(colours: np.ndarray, scratch: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``round(mean over R, G, B)`` of uint8 ``colours`` into ``out``; ``scratch`` (same shape) is
    overwritten. It may be ``colours`` itself, but a separate one is faster on big images:
    ``cv2.transform`` copies a source that is also its destination."""
    cv2.transform(colours, _CHANNEL_MEAN, dst=scratch)
    # All three channels now hold the mean, so the gray conversion (fixed-point weights summing
    # to one) returns it exactly, and faster than extracting a channel.
    return cv2.cvtColor(scratch, cv2.COLOR_RGB2GRAY, dst=out)


#: How far (in full-resolution pixels) the inputs of :func:`strand_alpha` reach its output:
#: the background colours, their darker half, the noise and the mass ratio each add a window
#: and a cell of interpolation. Crops split this far apart give the whole crop's values
#: (``tests/test_matte.py`` checks it).
STRAND_REACH = 96

#: Crops with at least this many rows are split in two, one half on a side thread.
_SPLIT_MIN_ROWS = 12 * STRAND_REACH


def splits_crop(rows: int, scale: float) -> bool:
    """Whether :func:`strand_alpha` works a crop of ``rows`` rows at ``scale`` in two halves, one on a side thread."""
    return scale >= 1.0 and rows >= _SPLIT_MIN_ROWS


def strand_alpha(image: np.ndarray, prior: np.ndarray, scale: float, *, out: np.ndarray | None = None) -> np.ndarray:
    """Alpha of thin structures from the picture's colours, keeping the soft prior's mass.

    A soft prior (a refine net's, or a detector's upsampled one) spreads a hair strand
    of alpha ``a`` into a faint smear of the same total mass. The local background is
    modelled by two colours, the box means of the background pixels (prior below
    :data:`PRIOR_FLOOR`) darker and brighter than their overall mean, so stripes and
    textures are near one of them everywhere. With ``d`` the colour distance (mean
    absolute difference over R, G, B) to the nearer one, less ``max(NOISE_FACTOR * noise,
    MIN_DISTANCE)`` where ``noise`` is the background pixels' own mean ``d``, a pixel on a
    strand of colour ``F`` has ``d ~ a |F - B|``.
    Handing each window's prior mass to its pixels in proportion to ``d``
    (``alpha = d * mean(prior) / mean(d)`` over the window of :data:`STRAND_RADIUS`)
    gives back ``a`` without knowing ``F``, for strands far thinner than a pixel too;
    where the colours say nothing (``d = 0``) nothing is kept.

    The background colours and noise are smooth, so they are computed on a grid up to 4x
    coarser, from a quarter of the background pixels (every other row and column: as good
    on ``bench/quality.py`` at a quarter of the work; :class:`_Samples`); so is the ratio
    ``mean(prior) / mean(d)``, on cells of half the strand radius with the window rounded to
    whole cells (bilinearly upsampled), while ``d`` stays per pixel. Previews scale every
    length; below a scaled radius of 4 px the cells are single pixels and the window whole
    pixels (this is no slider, so a preview rounds its radius).

    A tall crop at full resolution is worked in two halves that overlap by twice
    :data:`STRAND_REACH` (split on the cell grid), the top one on a side thread
    (:func:`strand_alpha_parts` gives them to a caller's own schedule).

    Args:
        image: ``(h, w, 3)`` uint8 crop.
        prior: ``(h, w)`` float32 crop of the prior.
        scale: pixel scale of the crop relative to full resolution (previews < 1).
        out: an ``(h, w)`` float32 array to write the result into (default: a new one).

    Returns:
        ``(h, w)`` float32 in ``[0, 1]`` (``out`` when given).
    """
    out, parts = strand_alpha_parts(image, prior, scale, out=out)
    if len(parts) == 1:
        parts[0]()
        return out
    top = side_workers().submit(parts[0])
    parts[1]()
    top.result()
    return out


def strand_alpha_parts(
    image: np.ndarray, prior: np.ndarray, scale: float, *, out: np.ndarray | None = None
) -> tuple[np.ndarray, list[Callable[[], None]]]:
    """:func:`strand_alpha` as ``(out, parts)``: calling every part fills ``out`` (``(h, w)``
    float32, the one given or a new one) with it. A crop :func:`splits_crop` splits has two
    parts, which may run at the same time on any threads (neither waits on a side thread); any
    other has one, which hands some of its work to a side thread."""
    height = prior.shape[0]
    if out is None:
        out = np.empty(prior.shape, np.float32)
    elif out.shape != prior.shape or out.dtype != np.float32:
        raise ValueError(f"expected out as float32 of shape {prior.shape}, got {out.dtype} {out.shape}")
    if not splits_crop(height, scale):
        return out, [partial(_strand_alpha, image, prior, scale, out, side_thread=True)]
    cut = height // 2 - height // 2 % 4  # on the 4-px cells of full resolution
    top = partial(
        _strand_alpha, image[: cut + STRAND_REACH], prior[: cut + STRAND_REACH], scale, out[:cut], side_thread=False
    )
    bottom = partial(
        _strand_alpha, image[cut - STRAND_REACH :], prior[cut - STRAND_REACH :], scale, out[cut:],
        first_row=STRAND_REACH, side_thread=False,
    )
    return out, [top, bottom]


def _strand_alpha(
    image: np.ndarray, prior: np.ndarray, scale: float, out: np.ndarray, *, first_row: int = 0, side_thread: bool
) -> None:
    """:func:`strand_alpha` of one crop, its rows from ``first_row`` on into ``out`` (as many as
    ``out`` has); ``side_thread``: the brighter colour's distance on a side thread (False inside
    a side thread's own work: a side task never waits on another)."""
    height, width = prior.shape
    grid = _CellGrid((height, width), max(1, min(4, math.ceil(BACKGROUND_RADIUS * scale / 4), height, width)))
    radius_grid = max(1, round(BACKGROUND_RADIUS * scale / grid.step))
    radius = max(1, round(STRAND_RADIUS * scale))
    ratio_grid = _CellGrid((height, width), max(1, min(radius // _RATIO_CELLS_PER_RADIUS, height, width)))
    ratio_radius = round(((2 * radius + 1) / ratio_grid.step - 1) / 2)  # in cells
    # Full-resolution planes, each reused for several steps (and kept by the thread for the next
    # crop): the result, a float plane and uint8 planes.
    alpha = reusable_plane("strand alpha", (height, width), np.float32)
    work = reusable_plane("strand work", (height, width), np.float32)
    plane = reusable_plane("strand plane", (height, width), np.uint8)
    distance = reusable_plane("strand distance", (height, width), np.uint8)

    # The prior's mass (in ``alpha`` until the distances need it).
    cv2.threshold(prior, _BELOW_PRIOR_FLOOR, 0.0, cv2.THRESH_TOZERO, dst=alpha)
    mass_mean = box_mean(ratio_grid.shrink(alpha), ratio_radius)
    # The background's statistics (its colours, and below their noise) come from a sample of its
    # pixels: every other row and column when the cells are an even number of pixels wide.
    samples = _Samples(image, alpha, grid)
    background, sample_grid = samples.background, samples.grid
    # Background colour on the grid: box mean of the background pixels' colours...
    colours = cv2.cvtColor(background, cv2.COLOR_GRAY2RGB)  # a 3-channel mask is OpenCV's fast path
    cv2.bitwise_and(samples.image, colours, dst=colours)
    weight_sum = box_mean(sample_grid.shrink(background), radius_grid)
    weight_sum *= np.float32(1 / 255)
    colour_sum = box_mean(sample_grid.shrink(colours), radius_grid)
    weight = np.maximum(weight_sum, np.float32(1e-6))
    mean_colour = cv2.divide(colour_sum, cv2.cvtColor(weight, cv2.COLOR_GRAY2RGB))
    # ...then two of them, of the background pixels darker and brighter than that mean, so a
    # two-tone background (stripes, dots, texture) is near one of its colours everywhere.
    mean_gray = cv2.convertScaleAbs(mean_colour)
    mean_gray = _channel_mean(mean_gray, mean_gray, np.empty(weight.shape, np.uint8))
    dark = _channel_mean(samples.image, colours, np.empty(background.shape, np.uint8))
    cv2.compare(dark, sample_grid.grow(mean_gray, np.empty(background.shape, np.uint8)), cv2.CMP_LT, dst=dark)
    cv2.bitwise_and(dark, background, dst=dark)
    dark_weight_sum = box_mean(sample_grid.shrink(dark), radius_grid)
    dark_weight_sum *= np.float32(1 / 255)
    cv2.cvtColor(dark, cv2.COLOR_GRAY2RGB, dst=colours)
    cv2.bitwise_and(samples.image, colours, dst=colours)
    dark_colour_sum = box_mean(sample_grid.shrink(colours), radius_grid)

    def distance_to(part_colour_sum: np.ndarray, part_weight_sum: np.ndarray, out: np.ndarray) -> np.ndarray:
        part_weight = cv2.cvtColor(np.maximum(part_weight_sum, np.float32(1e-6)), cv2.COLOR_GRAY2RGB)
        part_colour = cv2.divide(part_colour_sum, part_weight)
        cv2.copyTo(mean_colour, (part_weight_sum < np.float32(1e-3)).view(np.uint8), dst=part_colour)
        # (One thread works one colour at a time: its scratch images are free again after each.)
        grown = grid.grow(cv2.convertScaleAbs(part_colour), reusable_plane("strand colours", image.shape, np.uint8))
        # Colour distance in levels (mean over the channels) to the background colour, per pixel,
        # into a second image: cv2.transform copies a source that is also its destination.
        differences = cv2.absdiff(image, grown, dst=reusable_plane("strand differences", image.shape, np.uint8))
        return _channel_mean(differences, grown, out)

    # To the nearer of the two colours (the brighter one on the side; its sums are the total
    # less the darker half's).
    colour_sum -= dark_colour_sum
    weight_sum -= dark_weight_sum
    if side_thread:
        brighter = side_workers().submit(distance_to, colour_sum, weight_sum, plane)
        distance_to(dark_colour_sum, dark_weight_sum, distance)
        cv2.min(distance, brighter.result(), dst=distance)
    else:
        distance_to(dark_colour_sum, dark_weight_sum, distance)
        cv2.min(distance, distance_to(colour_sum, weight_sum, plane), dst=distance)
    # The sampled background pixels' distances, in float so that the cell means are not rounded.
    background_distance = cv2.bitwise_and(samples.sampled(distance), background, dst=dark)
    noise = box_mean(sample_grid.shrink(background_distance.astype(np.float32)), radius_grid)
    noise /= weight
    noise *= np.float32(NOISE_FACTOR)
    np.maximum(noise, np.float32(MIN_DISTANCE * 255), out=noise)
    cv2.subtract(distance, grid.grow(noise, work), dst=alpha, dtype=cv2.CV_32F)
    cv2.threshold(alpha, 0.0, 0.0, cv2.THRESH_TOZERO, dst=alpha)  # d, per pixel
    # With no background pixel in reach the colours say nothing: hand the mass out evenly
    # (the prior stays as it is, box-smoothed) rather than by a made-up background colour.
    blind = weight < np.float32(_MIN_BACKGROUND_SHARE)
    if blind.any():
        # Only the block of blind cells and a margin of one cell (the upsampling's reach).
        rows, cols = np.flatnonzero(blind.any(axis=1)), np.flatnonzero(blind.any(axis=0))
        top, bottom = max(0, rows[0] - 1), min(grid.rows, rows[-1] + 2)
        left, right = max(0, cols[0] - 1), min(grid.cols, cols[-1] + 2)
        grid.grow(blind[top:bottom, left:right].astype(np.float32), work, top, left)
        block = (slice(top * grid.step, height if bottom == grid.rows else bottom * grid.step),
                 slice(left * grid.step, width if right == grid.cols else right * grid.step))
        cv2.threshold(work[block], 0.5, 255.0, cv2.THRESH_BINARY, dst=work[block])
        cv2.max(alpha[block], work[block], dst=alpha[block])
    # alpha = d * mean(mass) / mean(d): the ratio is smooth, so it is taken on the ratio grid.
    ratio = box_mean(ratio_grid.shrink(alpha), ratio_radius)
    np.maximum(ratio, np.float32(1e-3), out=ratio)
    np.divide(mass_mean, ratio, out=ratio)
    if ratio_grid.step > 1:
        ratio = ratio_grid.grow(ratio, work)
    rows = slice(first_row, first_row + out.shape[0])
    cv2.multiply(alpha[rows], ratio[rows], dst=out)
    cv2.threshold(out, 1.0, 1.0, cv2.THRESH_TRUNC, dst=out)


class _Samples:
    """The crop's background pixels the background statistics of :func:`_strand_alpha` are
    taken from: with cells of an even number of pixels, the top-left pixel of every 2 x 2 block
    (a quarter of the work, with as many pixels per window as the statistics need), else all.

    ``image`` ``(h', w', 3)`` uint8 and ``background`` ``(h', w')`` uint8 (255 where the prior
    is below :data:`PRIOR_FLOOR`) are the sampled pixels, ``grid`` their cells: the same cells
    (rows and columns) as the crop's ``grid``.
    """

    def __init__(self, image: np.ndarray, mass: np.ndarray, grid: _CellGrid) -> None:
        self.stride = 2 if grid.step % 2 == 0 else 1
        if self.stride == 2:
            self.size = (grid.cols * grid.step // 2, grid.rows * grid.step // 2)  # (w', h')
            self.image = self.sampled(image)
            mass = self.sampled(mass)
        else:
            self.image = image
        self.grid = _CellGrid(mass.shape, grid.step // self.stride)
        if mass.size > 1:
            self.background = cv2.compare(mass, 0.0, cv2.CMP_EQ)
        else:  # cv2.compare takes a 1x1 array for a scalar
            self.background = np.multiply(mass == 0, np.uint8(255), dtype=np.uint8)

    def sampled(self, plane: np.ndarray) -> np.ndarray:
        """The sampled pixels of a crop-sized ``plane`` (the plane itself when all are used)."""
        if self.stride == 1:
            return plane
        width, height = self.size
        return cv2.resize(plane[: 2 * height, : 2 * width], self.size, interpolation=cv2.INTER_NEAREST)
