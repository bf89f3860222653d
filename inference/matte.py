"""The matte stage: turn a soft character mask into a clean alpha.

:class:`MatteSettings` and :func:`refine_alpha` (:func:`refine_alpha_with_report`) are the
pipeline the app, the command line and the API drive: the solid character (threshold,
islands, holes, the prior's sub-pixel edge, the colour-guided filter of
:mod:`inference.guided_filter`, which keeps cel-shaded edges crisp) plus the thin structures
the soft prior and the colours support (:mod:`inference.band_matting`); then feathering.
:func:`preview_inputs` gives the same matte at display size. Edge colours are cleaned by
:mod:`inference.foreground` (``estimate_foreground`` is re-exported here). Conventions:
``image`` ``(H, W, 3)`` uint8 RGB, ``mask`` ``(H, W)`` bool, ``alpha`` ``(H, W)`` float32 in
``[0, 1]``. Defaults were chosen with ``bench/quality.py``; ``bench/matte.py`` times them.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, replace
from functools import partial

import cv2
import numpy as np

from inference import band_matting
from inference.band_matting import strand_alpha, strand_alpha_parts
from inference.feather import feather_alpha, feather_blur  # noqa: F401 (feather_alpha re-exported)
from inference.foreground import (  # noqa: F401 (estimate_foreground re-exported)
    FOREGROUND_RADII,
    estimate_foreground,
    estimate_foreground_at_band,
)
from inference.guided_filter import (
    Guide,
    add_guided_filter_of_changes,
    fast_guided_filter_with,
    fast_subsample,
    filter_reach,
    grid_aligned,
    guided_filter_near_edges,
)
from inference.image_io import check_rgb_image
from inference.mask_regions import (  # noqa: F401 (remove_small_regions, fill_small_holes re-exported)
    boxes_at_or_above,
    clean_mask,
    fill_small_holes,
    filled_mask,
    grown_box,
    remove_small_regions,
)
from inference.matte_checks import (
    check_count,
    check_map,
    check_positive_float,
    describe,
)
from inference.side_threads import run_on_both_cores, side_workers
from inference.snapping import snap_crop_into
from inference.work_buffers import reusable_plane

#: Soft prior values within ``PRIOR_RAMP / 2`` of the threshold map linearly onto alpha 0..1
#: before the guided filter: the prior's sub-pixel edge position is kept, not its blur.
PRIOR_RAMP = 0.1

#: A preview's guided filter at or above this (scaled) radius runs on a coarser grid (see _guided_plan).
_PREVIEW_FAST_RADIUS = 4.0


# ---------------------------------------------------------------------------- settings and pipeline
@dataclass(frozen=True)
class MatteSettings:
    """Every slider of the matte stage.

    Lengths and areas are in full-resolution pixels; ``scale`` says how big the
    picture being matted is relative to that (previews, see :func:`preview_inputs`).

    Attributes:
        threshold: soft prior value at or above which a pixel counts as solid character, in ``(0, 1)``
            (an expert control: thin structures below it are kept by ``strands``).
        min_island_area: foreground specks with fewer pixels are dropped; 0 disables.
        max_hole_area: enclosed holes with fewer pixels are filled; 0 disables.
        guided_radius: colour-guided filter window radius in pixels; 0 disables.
        guided_eps: guided filter regularisation in ``[0, 1]``-colour variance units, > 0;
            smaller follows colour edges more closely.
        feather: edge feathering radius in pixels; 0 disables.
        decontaminate: re-estimate edge colours (:func:`estimate_foreground`).
        fast: the guided filter's linear coefficients on a grid :attr:`fast_subsample` times
            coarser (:func:`fast_guided_filter`), applied with the full-resolution picture.
            The default: on ``bench/quality.py`` it does as well as the exact filter or better
            (lower SAD on detector masks, lower halo on both kinds) at a fraction of the
            cost. False runs the exact filter. Ignored when ``scale < 1`` (a preview, already
            small, filters exactly, or from a scaled radius of 4 on a grid 2 to 4 times coarser).
        strands: keep thin structures (hair strands, props) the soft prior and the colours
            support, where the threshold alone would drop them.
        scale: the matted picture's size relative to the full-resolution one, in ``(0, 1]``.
    """

    threshold: float = 0.5
    min_island_area: int = 16
    max_hole_area: int = 256
    guided_radius: int = 4
    guided_eps: float = 1e-4
    feather: float = 0.0
    decontaminate: bool = True
    fast: bool = True
    strands: bool = True
    scale: float = 1.0

    def __post_init__(self) -> None:
        threshold = self.threshold
        if (
            isinstance(threshold, bool)
            or not isinstance(threshold, (int, float, np.integer, np.floating))
            or not 0.0 < float(threshold) < 1.0
        ):
            raise ValueError(f"expected threshold as a number in (0, 1), got {threshold!r}")
        check_count(self.min_island_area, "min_island_area", minimum=0)
        check_count(self.max_hole_area, "max_hole_area", minimum=0)
        check_count(self.guided_radius, "guided_radius", minimum=0)
        check_positive_float(self.guided_eps, "guided_eps", allow_zero=False)
        check_positive_float(self.feather, "feather", allow_zero=True)
        scale = check_positive_float(self.scale, "scale", allow_zero=False)
        if scale > 1.0:
            raise ValueError(f"expected scale in (0, 1], got {self.scale!r}")
        for name in ("decontaminate", "fast", "strands"):
            value = getattr(self, name)
            if not isinstance(value, (bool, np.bool_)):
                raise ValueError(f"expected {name} as a bool, got {value!r}")

    @property
    def fast_subsample(self) -> int:
        """Subsampling :func:`refine_alpha` gives :func:`fast_guided_filter` at this radius."""
        return fast_subsample(self.guided_radius)


@dataclass(frozen=True)
class MatteReport:
    """What the clean-up sliders did, for the user ("3 specks removed, 1 hole filled")."""

    islands_removed: int = 0
    holes_filled: int = 0


def _clean_mask(
    prior: np.ndarray, settings: MatteSettings, strands: np.ndarray | None, filled: Future | None = None
) -> tuple[np.ndarray, np.ndarray | None, MatteReport]:
    """:func:`~inference.mask_regions.clean_mask` with the settings' threshold, areas and scale."""
    mask, changed, islands, holes = clean_mask(
        prior,
        threshold=settings.threshold,
        min_island_area=settings.min_island_area,
        max_hole_area=settings.max_hole_area,
        scale=float(settings.scale),
        strands=strands,
        filled=filled,
    )
    return mask, changed, MatteReport(islands_removed=islands, holes_filled=holes)


def _ramp(prior: np.ndarray, threshold: float) -> np.ndarray:
    """Keep the soft prior's sub-pixel edge position: values within +-PRIOR_RAMP/2 of the threshold
    map linearly onto 0..1 (the 0.5 level stays the mask's outline)."""
    alpha = np.subtract(prior, np.float32(threshold), dtype=np.float32)
    alpha *= np.float32(1.0 / PRIOR_RAMP)
    alpha += np.float32(0.5)
    return np.clip(alpha, 0.0, 1.0, out=alpha)


def _guided_plan(settings: MatteSettings) -> tuple[float, int]:
    """``(radius, subsample)`` of the solid part's guided filter: the radius in the matted
    picture's pixels (fractional in a preview) and the coarse grid of its coefficients (1: exact)."""
    scale = float(settings.scale)
    if scale >= 1.0:
        return settings.guided_radius, settings.fast_subsample if settings.fast else 1
    radius = settings.guided_radius * scale
    # Wide windows in a preview: coefficients on a coarser grid by the download's rule for the
    # (fractional) radius.
    return radius, fast_subsample(radius) if radius >= _PREVIEW_FAST_RADIUS else 1


def _solid_alpha(
    image: np.ndarray,
    prior: np.ndarray,
    mask: np.ndarray | None,
    changed: np.ndarray | None,
    settings: MatteSettings,
) -> np.ndarray:
    """The solid character on one crop: the ramp, with the cleaned ``mask`` where ``changed``, then
    the guided filter (float32, not clipped)."""
    alpha = _ramp(prior, settings.threshold)
    if changed is not None:
        np.copyto(alpha, mask, where=changed)
    if settings.guided_radius > 0:
        radius, subsample = _guided_plan(settings)
        if subsample > 1:
            alpha = fast_guided_filter_with(
                Guide(image), alpha, radius, settings.guided_eps, subsample, overwrite_src=True
            )
        else:
            alpha = guided_filter_near_edges(image, alpha, radius, settings.guided_eps)
    return alpha


#: A tall crop's guided filter runs in this many bands of rows (beside the island and hole steps).
_SOLID_PARTS = 3


def _solid_alpha_parts(
    image: np.ndarray, prior: np.ndarray, settings: MatteSettings, out: np.ndarray
) -> list[Callable[[], None]]:
    """:data:`_SOLID_PARTS` parts that fill ``out`` with ``_solid_alpha(image, prior, None, None,
    settings)`` (a guided filter, ``settings.guided_radius > 0``), up to float rounding: each band
    of rows filtered with a margin of the filter's reach (whole cells of its coarse grid)."""
    radius, subsample = _guided_plan(settings)
    margin = filter_reach(radius, subsample)
    height = prior.shape[0]
    cuts = [height * k // _SOLID_PARTS for k in range(_SOLID_PARTS)]
    cuts = [cut - cut % subsample for cut in cuts] + [height]

    def rows(first: int, end: int) -> None:
        start, stop = max(0, first - margin), min(height, end + margin)
        filtered = _solid_alpha(image[start:stop], prior[start:stop], None, None, settings)
        out[first:end] = filtered[first - start : end - start]

    return [partial(rows, first, end) for first, end in zip(cuts[:-1], cuts[1:])]


def _tall_crop(
    crop_image: np.ndarray,
    crop_prior: np.ndarray,
    inside: tuple[slice, slice] | None,
    settings: MatteSettings,
    fill_holes: bool,
    strands_out: np.ndarray,
) -> tuple[np.ndarray, np.ndarray | None, tuple[np.ndarray, np.ndarray | None, MatteReport]]:
    """``(strands, filtered solid ramp or None, (mask, changed, report))`` of a crop that
    :func:`~inference.band_matting.splits_crop` splits, on this thread and one side thread: the
    strands' halves, then the island and hole steps (they need the strands) beside the guided
    filter's bands of rows (``inside``: the solid box in the crop; None: no filter). Three jobs
    on two cores (the strands, the filter, the holes) left one of them running alone at the end.
    The strands are written into ``strands_out``."""
    strands, strand_parts = strand_alpha_parts(crop_image, crop_prior, float(settings.scale), out=strands_out)
    finished = [threading.Event() for _ in strand_parts]
    cleaned: list[tuple[np.ndarray, np.ndarray | None, MatteReport]] = []

    def strand_part(part: Callable[[], None], done: threading.Event) -> None:
        try:
            part()
        finally:
            done.set()  # a failed part still lets the step after go on: run_on_both_cores raises its error

    def clean_after_strands() -> None:
        for done in finished:  # parts before this one in the list: already taken by one thread or the other
            done.wait()
        filled: Future | None = None
        if fill_holes:
            filled = Future()
            filled.set_result(filled_mask(crop_prior, settings.threshold, settings.max_hole_area))
        cleaned.append(_clean_mask(crop_prior, settings, strands, filled))

    parts = [partial(strand_part, part, done) for part, done in zip(strand_parts, finished)]
    parts.append(clean_after_strands)
    solid = None
    if inside is not None:
        solid = np.empty(crop_prior[inside].shape, np.float32)
        parts += _solid_alpha_parts(crop_image[inside], crop_prior[inside], settings, solid)
    run_on_both_cores(parts)
    return strands, solid, cleaned[0]


def _refine_alpha(
    image: np.ndarray,
    prior: np.ndarray,
    settings: MatteSettings,
    *,
    find_band: bool = False,
) -> tuple[np.ndarray, MatteReport, np.ndarray | None]:
    """:func:`refine_alpha_with_report`; with ``find_band`` it also returns the alpha's edge band
    (:func:`~inference.foreground.edge_band` of it), else None."""
    if not isinstance(settings, MatteSettings):
        raise ValueError(f"expected settings as MatteSettings, got {describe(settings)}")
    image = check_rgb_image(image)
    prior = check_map(prior, image.shape[:2], "prior")
    height, width = prior.shape
    out = np.zeros((height, width), np.float32)
    scale = float(settings.scale)
    radius, subsample = _guided_plan(settings) if settings.guided_radius > 0 else (0.0, 1)
    # Each step works inside the box of the pixels it can turn on, grown by its reach (the
    # filter's two windows, and on a coarse grid one cell of interpolation and one of alignment);
    # outside the union of those boxes (grown by the feather) the result is 0.
    reach = 2 * math.ceil(radius) + 2 + (2 * subsample if subsample > 1 else 0)
    lowest_on = settings.threshold - PRIOR_RAMP / 2
    if settings.strands:
        strand_at, solid_at = boxes_at_or_above(prior, (band_matting.PRIOR_FLOOR, lowest_on))
        strand_box = grown_box(strand_at, math.ceil(band_matting.STRAND_RADIUS * scale) + 1, prior.shape)
    else:
        (solid_at,), strand_box = boxes_at_or_above(prior, (lowest_on,)), None
    solid_box = grown_box(solid_at, reach, prior.shape)
    if solid_box is not None and subsample > 1:
        # Whole cells on the picture's grid: OpenCV's fast exact resize, and the same cells
        # wherever the character stands.
        x0, x1 = grid_aligned(solid_box[0], solid_box[2], width, subsample)
        y0, y1 = grid_aligned(solid_box[1], solid_box[3], height, subsample)
        solid_box = (x0, y0, x1, y1)
    boxes = [b for b in (solid_box, strand_box) if b is not None]
    box = tuple(int(v) for v in (*np.min(boxes, axis=0)[:2], *np.max(boxes, axis=0)[2:])) if boxes else None
    if box is None:
        return out, MatteReport(), np.zeros(0, np.int64) if find_band else None
    feather_reach = math.ceil(settings.feather * scale) + 1 if settings.feather > 0 else 0
    x0, y0, x1, y1 = box
    x0, y0 = max(0, x0 - feather_reach), max(0, y0 - feather_reach)
    x1, y1 = min(width, x1 + feather_reach), min(height, y1 + feather_reach)
    # The crop of the prior, read by every step, in a buffer of its own (reading a narrow crop of
    # a wide picture row by row is up to twice as slow); the picture's crop is read in place.
    # It and the crop's strands are planes this thread keeps (work_buffers: no page faults).
    crop_prior = reusable_plane("matte prior", (y1 - y0, x1 - x0), np.float32)
    np.copyto(crop_prior, prior[y0:y1, x0:x1], casting="same_kind")
    strands_out = reusable_plane("matte strands", crop_prior.shape, np.float32) if settings.strands else None
    crop_image = image[y0:y1, x0:x1]
    solid_job = solid = None
    split = settings.strands and band_matting.splits_crop(y1 - y0, scale)
    if solid_box is not None:
        sx0, sy0, sx1, sy1 = solid_box
        inside = (slice(sy0 - y0, sy1 - y0), slice(sx0 - x0, sx1 - x0))
        solid_image, solid_prior = crop_image[inside], crop_prior[inside]
        if radius > 0 and not split:
            # The guided filter is linear: filter the ramp on the other core while the strands
            # and the island/hole steps run here, then add the filtered changes those steps made.
            solid_job = side_workers().submit(_solid_alpha, solid_image, solid_prior, None, None, settings)
    fill_holes = scale >= 1.0 and settings.max_hole_area > 1
    if split:  # its steps share this thread and one side thread (see _tall_crop)
        filtered = inside if solid_box is not None and radius > 0 else None
        strands, solid, (mask, changed, report) = _tall_crop(
            crop_image, crop_prior, filtered, settings, fill_holes, strands_out
        )
    else:
        # Holes need only the mask: they are filled on a side thread while the strands are worked here.
        filled = None
        if fill_holes:
            filled = side_workers().submit(filled_mask, crop_prior, settings.threshold, settings.max_hole_area)
        strands = strand_alpha(crop_image, crop_prior, scale, out=strands_out) if settings.strands else None
        mask, changed, report = _clean_mask(crop_prior, settings, strands, filled)
    if solid_job is not None:
        solid = solid_job.result()
    if solid is not None:
        if changed is not None and changed[inside].any():
            delta = np.subtract(mask[inside], _ramp(solid_prior, settings.threshold), dtype=np.float32)
            add_guided_filter_of_changes(
                solid, solid_image, delta, changed[inside], radius, settings.guided_eps, subsample=subsample
            )
    elif solid_box is not None:
        solid = _solid_alpha(
            solid_image, solid_prior, mask[inside],
            None if changed is None else changed[inside], settings,
        )
    # The crop's alpha is worked in a buffer of its own (contiguous: faster than in the
    # picture-wide one), then clipped and snapped into it. Without feathering the snapping step
    # also takes the larger of the solid part and the strands, on both cores.
    combine = None
    if strands is not None:
        alpha = strands
        if solid_box is not None:
            if settings.feather > 0:
                np.maximum(solid, strands[inside], out=alpha[inside])
            else:
                combine = solid
    else:
        alpha = np.zeros((y1 - y0, x1 - x0), np.float32)
        if solid_box is not None:
            alpha[inside] = solid
    if settings.feather > 0:
        alpha = feather_blur(alpha, settings.feather * scale)
    band = snap_crop_into(
        alpha, out[y0:y1, x0:x1], origin=(x0, y0), picture_width=width, find_band=find_band,
        solid=combine, inside=inside if combine is not None else None,
    )
    return out, report, band


def refine_alpha_with_report(
    image: np.ndarray, prior: np.ndarray, settings: MatteSettings
) -> tuple[np.ndarray, MatteReport]:
    """:func:`refine_alpha` plus what the island and hole sliders did (:class:`MatteReport`)."""
    return _refine_alpha(image, prior, settings)[:2]


def refine_alpha_and_foreground(
    image: np.ndarray, prior: np.ndarray, settings: MatteSettings
) -> tuple[np.ndarray, np.ndarray, MatteReport]:
    """The whole matte stage, what downloads and previews show: ``(alpha, foreground, report)``.

    ``alpha`` (``(H, W)`` float32 in ``[0, 1]``) and ``report`` are :func:`refine_alpha_with_report`'s
    for ``image`` (``(H, W, 3)`` uint8 RGB) and ``prior`` (``(H, W)`` float in ``[0, 1]``);
    ``foreground`` (``(H, W, 3)`` uint8 RGB) is :func:`estimate_foreground` of that alpha (its edge
    band found while the alpha is written) with ``settings.decontaminate``, else ``image`` itself.
    """
    alpha, report, band = _refine_alpha(image, prior, settings, find_band=settings.decontaminate)
    foreground = estimate_foreground_at_band(image, alpha, band) if settings.decontaminate else image
    return alpha, foreground, report


def refine_alpha(image: np.ndarray, prior: np.ndarray, settings: MatteSettings) -> np.ndarray:
    """The matte pipeline: soft prior in, clean alpha out.

    Steps, each switched by ``settings``: threshold the prior into the solid character;
    drop specks (``min_island_area``) and fill pin holes (``max_hole_area``); keep the
    prior's sub-pixel edge (values within :data:`PRIOR_RAMP` ``/ 2`` of the threshold map
    onto 0..1); snap to the picture's colour edges with the guided filter, which keeps
    cel-shaded edges crisp; with ``strands``, add the thin structures below the threshold
    that the prior's mass and the colours support
    (:func:`~inference.band_matting.strand_alpha`); feather; clip to ``[0, 1]``, snapping
    what an 8-bit export stores as 0 or 255. Work stays in the box around the prior.

    Args:
        image: ``(H, W, 3)`` uint8 RGB (the guide).
        prior: ``(H, W)`` float soft mask in ``[0, 1]`` (e.g. a segmenter's or refiner's output).
        settings: the matte settings (``settings.scale < 1`` for a shrunk preview).

    Returns:
        ``(H, W)`` float32 alpha in ``[0, 1]``.
    """
    return _refine_alpha(image, prior, settings)[0]


# ---------------------------------------------------------------------------- previews
def preview_size(shape: tuple[int, int], max_side: int) -> tuple[int, int]:
    """``(h, w)`` of a picture of ``shape`` ``(H, W)`` shrunk so its long side is at most ``max_side``."""
    height, width = shape
    factor = min(1.0, max_side / max(height, width))
    return (max(1, round(height * factor)), max(1, round(width * factor))) if factor < 1 else (height, width)


def shrink_for_preview(values: np.ndarray, max_side: int) -> np.ndarray:
    """An image ``(H, W, 3)`` or map ``(H, W)`` area-averaged to :func:`preview_size` (itself when small enough).

    A pure function of its inputs: callers may cache the picture's shrink per ``max_side``.
    """
    max_side = check_count(max_side, "max_side", minimum=1)
    height, width = preview_size(values.shape[:2], max_side)
    if (height, width) == values.shape[:2]:
        return values
    return cv2.resize(values, (width, height), interpolation=cv2.INTER_AREA)


def preview_inputs(
    image: np.ndarray,
    prior: np.ndarray,
    settings: MatteSettings,
    *,
    max_side: int,
    small_image: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, MatteSettings]:
    """The picture, prior and settings of a preview at display resolution: ``refine_alpha`` on
    them is the download's alpha at the preview's size (picture and prior area-averaged, the
    shrink carried as ``scale``: radii, feather and areas scale by it, fractionally).

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        prior: ``(H, W)`` float in ``[0, 1]``.
        settings: the full-resolution settings (``scale`` 1).
        max_side: long side of the preview in pixels, >= 1.
        small_image: the caller's cached ``shrink_for_preview(image, max_side)``, if any.

    Returns:
        ``(small_image, small_prior, scaled_settings)``; the inputs themselves when
        the picture is already small enough.
    """
    image = check_rgb_image(image)
    prior = check_map(prior, image.shape[:2], "prior")
    if not isinstance(settings, MatteSettings):
        raise ValueError(f"expected settings as MatteSettings, got {describe(settings)}")
    max_side = check_count(max_side, "max_side", minimum=1)
    height, width = preview_size(image.shape[:2], max_side)
    if (height, width) == image.shape[:2]:
        return image, prior, settings
    if small_image is None:
        small_image = shrink_for_preview(image, max_side)
    elif check_rgb_image(small_image, "small_image").shape[:2] != (height, width):
        raise ValueError(f"expected small_image of size {(height, width)}, got {small_image.shape[:2]}")
    small_prior = shrink_for_preview(np.ascontiguousarray(prior), max_side)
    factor = max(height, width) / max(image.shape[:2])
    return small_image, small_prior, replace(settings, scale=float(settings.scale) * factor)
