"""Colour decontamination: re-estimate the foreground colour of half-transparent edge pixels.

:func:`estimate_foreground` is blur-fusion (Forte & Pitie, "Approximate Fast
Foreground Colour Estimation", ICIP 2021), run coarse to fine and only along
the edge band.
"""

from __future__ import annotations

import cv2
import numpy as np

from inference.guided_filter import box_mean, side_workers
from inference.image_io import check_rgb_image
from inference.matte_checks import check_count, check_map


def nonzero_box(mask: np.ndarray, margin: int) -> tuple[int, int, int, int] | None:
    """``xyxy`` box of a bool or uint8 mask's nonzero pixels grown by ``margin``, inside the mask."""
    x, y, w, h = cv2.boundingRect(mask.view(np.uint8) if mask.dtype == np.bool_ else mask)
    if w == 0 or h == 0:
        return None
    height, width = mask.shape
    return max(0, x - margin), max(0, y - margin), min(width, x + w + margin), min(height, y + h + margin)


#: Box radii of the blur-fusion steps of :func:`estimate_foreground`, wide to narrow. Chosen
#: with the radii comparison of the earlier ``bench/quality.py`` (git history); the current
#: one reports the halo these give.
FOREGROUND_RADII = (32, 8, 2, 1)


#: Blur-fusion boxes of at least this radius run on a grid ``radius // 2`` (at most 8) times coarser.
_GRID_MIN_RADIUS = 8

_ABOVE_ZERO = float(np.nextafter(np.float32(0), np.float32(1)))
_BELOW_ONE = float(np.nextafter(np.float32(1), np.float32(0)))

#: Side of the tiles that carry the narrow blur-fusion boxes around the edge band.
_TILE = 16


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
    computed on a grid ``radius // 2`` (at most 8) times coarser, narrower ones
    only on small tiles along the edge band. Only the band changes: pixels with alpha 1 (and 0)
    keep the picture's colour.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        alpha: ``(H, W)`` float in ``[0, 1]``.
        radii: box radius in pixels of each step (each >= 1), applied in order.

    Returns:
        ``(H, W, 3)`` uint8 RGB foreground colour (a new array).
    """
    image = check_rgb_image(image)
    alpha = np.ascontiguousarray(check_map(alpha, image.shape[:2], "alpha"))
    if not isinstance(radii, (tuple, list)) or not radii:
        raise ValueError(f"expected radii as a non-empty tuple of ints >= 1, got {radii!r}")
    radii = tuple(check_count(r, "each radius", minimum=1) for r in radii)
    image = np.ascontiguousarray(image)
    out = image.copy()
    # 0 < alpha < 1 in one pass: the smallest float32 above 0 up to the largest below 1.
    band = cv2.inRange(alpha, _ABOVE_ZERO, _BELOW_ONE)
    band = np.bitwise_and(band, 1, out=band).view(np.bool_)
    box = nonzero_box(band, max(radii) + 1)
    if box is None:
        return out
    x0, y0, x1, y1 = box
    ys, xs = np.divmod(np.flatnonzero(band[y0:y1, x0:x1]), x1 - x0)
    ys += y0
    xs += x0
    at_band = ys * image.shape[1] + xs  # flat positions in the picture
    band_alpha = alpha.ravel()[at_band]
    band_one_minus_alpha = np.float32(1.0) - band_alpha
    band_I = image.reshape(-1, 3)[at_band].astype(np.float32)

    # Off the band alpha is 0 or 1, so there alpha F = alpha I and (1 - alpha) B =
    # (1 - alpha) I whatever the estimates: every step is the box mean of those two
    # fixed planes plus corrections at the band pixels only.
    wide = [r for r in radii if r >= _GRID_MIN_RADIUS]
    narrow = [r for r in radii if r < _GRID_MIN_RADIUS]
    # Independent work goes to the side threads (numpy and OpenCV release the GIL).
    grids_job = None
    if wide:
        grids_job = side_workers().submit(_CoarseGrids, image, alpha, band_I, band_alpha, box, ys - y0, xs - x0, wide)
    tiles = _BandTiles(image, alpha, band, ys, xs, max(narrow)) if narrow else None
    grids = grids_job.result() if grids_job is not None else None
    weights: dict[int, np.ndarray] = {}  # box means of alpha at the band, per radius
    if grids is not None:
        weights.update({r: grids.box_mean_at_band(r, grids.alpha[r], None) for r in wide})
    if tiles is not None:
        weights.update({r: tiles.box_mean_at_band(tiles.alpha, r, None) for r in narrow})
    F = np.empty((ys.size, 3), np.float32)

    def clean_channel(c: int) -> None:
        if tiles is not None:
            tile_alpha_I, tile_complement_I = tiles.weighted_planes(c)
        I_c = band_I[:, c]
        F_c, B_c = I_c, I_c  # start from F = B = I
        for r in radii:
            correction_F = band_alpha * (F_c - I_c)
            correction_B = band_one_minus_alpha * (B_c - I_c)
            if r >= _GRID_MIN_RADIUS:
                mean_F = grids.box_mean_at_band(r, grids.alpha_I[r][c], correction_F)
                mean_B = grids.box_mean_at_band(r, grids.complement_I[r][c], correction_B)
            else:
                mean_F = tiles.box_mean_at_band(tile_alpha_I, r, correction_F)
                mean_B = tiles.box_mean_at_band(tile_complement_I, r, correction_B)
            mean_F /= np.maximum(weights[r], np.float32(1e-6))
            mean_B /= np.maximum(np.float32(1.0) - weights[r], np.float32(1e-6))
            # residual = I - alpha F - (1 - alpha) B; F gets the alpha share, B the rest.
            residual = I_c - band_alpha * mean_F - band_one_minus_alpha * mean_B
            F_c = mean_F + band_alpha * residual
            B_c = mean_B + band_one_minus_alpha * residual
        F[:, c] = F_c

    # The channels are independent (alpha is shared): two on the side threads, one here.
    jobs = [side_workers().submit(clean_channel, c) for c in (0, 1)]
    clean_channel(2)
    for job in jobs:
        job.result()

    np.clip(F, 0.0, 255.0, out=F)
    F += np.float32(0.5)
    out.reshape(-1, 3)[at_band] = F.astype(np.uint8)
    return out


def _as_sample_map(positions: np.ndarray) -> np.ndarray:
    """N float positions as a ``(rows, 1024)`` float32 map for ``cv2.remap`` (at most 32767 per side)."""
    rows = -(-positions.size // 1024)
    padded = np.zeros(rows * 1024, np.float32)
    padded[: positions.size] = positions
    return padded.reshape(rows, 1024)


class _CoarseGrids:
    """The wide blur-fusion boxes, each on a grid ``radius // 2`` (at most 8) times coarser than the crop.

    Per radius it holds the grid means of ``alpha``, ``alpha I`` and ``(1 - alpha) I``.
    Off the band ``alpha I`` is the picture where alpha is 1 and 0 elsewhere, so the
    grids come from the uint8 picture with the solid part masked, plus the band's own
    ``alpha I`` added per cell: no full-size float plane is ever made. Coarser grids
    are averaged from the finest one when their steps divide evenly.
    """

    def __init__(
        self,
        image: np.ndarray,
        alpha: np.ndarray,
        band_I: np.ndarray,
        band_alpha: np.ndarray,
        box: tuple[int, int, int, int],
        ys: np.ndarray,
        xs: np.ndarray,
        radii: list[int],
    ) -> None:
        x0, y0, x1, y1 = box
        crop_image = image[y0:y1, x0:x1]
        crop_alpha = alpha[y0:y1, x0:x1]
        height, width = crop_alpha.shape
        solid = (crop_alpha >= 1).view(np.uint8)
        solid_image = np.zeros(crop_image.shape, np.uint8)
        cv2.copyTo(crop_image, solid, solid_image)
        band_alpha_I = band_I * band_alpha[:, None]
        self.count = ys.size
        self.plans: dict[int, tuple[int, int, tuple[int, int], np.ndarray, np.ndarray, np.ndarray]] = {}
        self.alpha: dict[int, np.ndarray] = {}
        self.alpha_I: dict[int, list[np.ndarray]] = {}
        self.complement_I: dict[int, list[np.ndarray]] = {}
        steps = {radius: max(1, min(8, radius // 2, height, width)) for radius in radii}
        finest = min(steps.values())

        def shrink(plane: np.ndarray, step: int) -> np.ndarray:
            # The grid covers the largest multiple of `step` (OpenCV's fast exact area
            # resize); band pixels past it add to no cell and read the grid's last samples.
            size = (plane.shape[1] // step, plane.shape[0] // step)
            covered = plane[: size[1] * step, : size[0] * step]
            return cv2.resize(covered, size, interpolation=cv2.INTER_AREA).astype(np.float32, copy=False)

        fine = [shrink(plane, finest) for plane in (crop_alpha, crop_image, solid_image)]
        for radius, step in steps.items():
            if step == finest:
                alpha_small, image_small, solid_small = fine
            elif step % finest == 0:
                alpha_small, image_small, solid_small = (shrink(grid, step // finest) for grid in fine)
            else:
                alpha_small, image_small, solid_small = (shrink(p, step) for p in (crop_alpha, crop_image, solid_image))
            grid_h, grid_w = alpha_small.shape
            inside = (xs < grid_w * step) & (ys < grid_h * step)
            cells = np.where(inside, (ys // step) * grid_w + xs // step, grid_w * grid_h)
            sample_x = _as_sample_map((xs + 0.5) / step - 0.5)
            sample_y = _as_sample_map((ys + 0.5) / step - 0.5)
            self.plans[radius] = (step, max(1, round(radius / step)), (grid_w, grid_h), cells, sample_x, sample_y)
            self.alpha[radius] = alpha_small
            alpha_I = [np.ascontiguousarray(solid_small[:, :, c]) for c in range(3)]
            for c in range(3):
                np.add.at(alpha_I[c].reshape(-1), cells[inside], band_alpha_I[inside, c] / (step * step))
            self.alpha_I[radius] = alpha_I
            self.complement_I[radius] = [image_small[:, :, c] - alpha_I[c] for c in range(3)]

    def box_mean_at_band(self, radius: int, small: np.ndarray, correction: np.ndarray | None) -> np.ndarray:
        """Box mean at the band pixels of a grid plane plus ``correction`` added at the band pixels."""
        step, grid_radius, (grid_w, grid_h), cells, sample_x, sample_y = self.plans[radius]
        if correction is not None:
            cell_sums = np.bincount(cells, weights=correction / (step * step), minlength=grid_w * grid_h + 1)
            small = small + cell_sums[:-1].reshape(grid_h, grid_w).astype(np.float32)
        means = box_mean(small, grid_radius)
        sampled = cv2.remap(means, sample_x, sample_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return sampled.ravel()[: self.count]


def _mirrored(index: np.ndarray, size: int) -> np.ndarray:
    """Indices past ``[0, size)`` mirrored back (``cv2.BORDER_REFLECT``: ``cba|abc|cba``)."""
    index = np.where(index < 0, -index - 1, index)
    index = np.where(index >= size, 2 * size - index - 1, index)
    return np.clip(index, 0, size - 1)  # only reached by windows wider than the picture


class _BandTiles:
    """The picture's ``_TILE``-pixel tiles that hold band pixels, each with a ``halo``-pixel
    margin, laid side by side in a roughly square mosaic so narrow box filters run on them
    alone (OpenCV filters a wide picture several times faster than a tall narrow one)."""

    def __init__(self, image: np.ndarray, alpha: np.ndarray, band: np.ndarray, ys: np.ndarray, xs: np.ndarray,
                 halo: int) -> None:
        height, width = alpha.shape
        tiles_x = -(-width // _TILE)
        tile_of_pixel = (ys // _TILE) * tiles_x + xs // _TILE
        tile_index = np.zeros(tiles_x * -(-height // _TILE), np.int64)
        tile_index[tile_of_pixel] = 1
        tile_ids = np.flatnonzero(tile_index)
        tile_index[tile_ids] = np.arange(tile_ids.size)
        band_tile = tile_index[tile_of_pixel]
        side = _TILE + 2 * halo
        offsets = np.arange(side) - halo
        # Mosaic of `across` tiles per row; the last row is padded with copies of the last tile.
        across = max(1, int(np.ceil(np.sqrt(tile_ids.size))))
        down = -(-tile_ids.size // across)
        placed = np.concatenate([tile_ids, np.full(down * across - tile_ids.size, tile_ids[-1])])
        # Picture rows and columns of every mosaic pixel; halos past the picture's
        # border mirror it like every other box filter here.
        rows = _mirrored((placed // tiles_x)[:, None] * _TILE + offsets, height)
        cols = _mirrored((placed % tiles_x)[:, None] * _TILE + offsets, width)
        source = (rows[:, :, None] * width + cols[:, None, :]).reshape(down, across, side, side)
        source = source.transpose(0, 2, 1, 3).reshape(-1)
        self.shape = (down * side, across * side)
        # Each band pixel's own place (inside its tile) is where its box mean is read...
        row = (band_tile // across) * side + ys % _TILE + halo
        self.band = row * (across * side) + (band_tile % across) * side + xs % _TILE + halo
        # ...and every copy of it (its own place and the halos of the tiles around)
        # is where its corrected value goes.
        self.copies = np.flatnonzero(band.ravel()[source])
        self.copy_of = np.searchsorted(ys * width + xs, source[self.copies])
        self.alpha = alpha.ravel()[source].reshape(self.shape)
        self.image_channels = [np.take(image.reshape(-1), source * 3 + c) for c in range(3)]

    def weighted_planes(self, channel: int) -> tuple[np.ndarray, np.ndarray]:
        """``alpha I`` and ``(1 - alpha) I`` of one colour channel on the mosaic."""
        I_c = self.image_channels[channel].reshape(self.shape).astype(np.float32)
        alpha_I = I_c * self.alpha
        I_c -= alpha_I
        return alpha_I, I_c

    def box_mean_at_band(self, plane: np.ndarray, radius: int, correction: np.ndarray | None) -> np.ndarray:
        """Box mean at the band pixels of a mosaic plane plus ``correction`` at the band pixels.

        ``plane`` is changed during the call and restored.
        """
        if correction is None:
            return box_mean(plane, radius).ravel()[self.band]
        values = plane.ravel()
        original = values[self.copies]
        values[self.copies] = original + correction[self.copy_of]
        means = box_mean(plane, radius).ravel()[self.band]
        values[self.copies] = original
        return means
