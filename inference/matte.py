"""The matte stage: turn a soft character mask into a clean alpha and clean edge colours.

Everything here runs at full resolution on numpy and OpenCV and is cheap enough
to re-run on every slider change of the app:

* :func:`guided_filter` / :func:`fast_guided_filter`: the colour-guided filter of
  He, Sun & Tang ("Guided Image Filtering", TPAMI 2013) and its subsampled
  variant (He & Sun, "Fast Guided Filter", 2015). They snap a mask to the
  picture's own colour edges.
* :func:`remove_small_regions` / :func:`fill_small_holes`: drop specks and plug
  pin holes of a binary mask.
* :func:`feather_alpha`: soften the edge of an alpha by a few pixels.
* :func:`estimate_foreground`: re-estimate the colour of half-transparent edge
  pixels so the old background does not show as a halo over a new one
  (blur-fusion, Forte & Pitié, "Approximate Fast Foreground Colour Estimation",
  ICIP 2021).
* :class:`MatteSettings` and :func:`refine_alpha`: the whole pipeline as the app
  and the command line drive it.

Conventions: ``image`` ``(H, W, 3)`` uint8 RGB, ``mask`` ``(H, W)`` bool,
``alpha`` ``(H, W)`` float32 in ``[0, 1]``.

The defaults of :class:`MatteSettings` were chosen with ``bench/quality.py``
(synthetic 1920x1080 scenes with known alpha). In short: a hard threshold of a
refine net's blurred prior already beats the prior itself; keeping the prior's
soft values costs accuracy, keeping only its sub-pixel edge position
(:data:`PRIOR_RAMP`) helps a little; a colour-guided filter of radius 4 and a
small eps (1e-4, colour steps of a few levels count as edges) snaps the mask to
the line art, while larger radii or eps blur it; removing islands costs thin
hair fragments, so islands stay small (16 px) while holes up to 256 px are
filled. ``bench/matte.py`` times every stage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from inference.image_io import check_rgb_image

#: Border rule of every box mean here, the same one ``cv2.ximgproc.guidedFilter`` uses.
_BORDER = cv2.BORDER_REFLECT

#: In :func:`refine_alpha`, soft prior values within ``PRIOR_RAMP / 2`` of the
#: threshold map linearly onto alpha 0..1 before the guided filter: this keeps the
#: prior's sub-pixel edge position but not its blur. Chosen by ``bench/quality.py``.
PRIOR_RAMP = 0.1

#: Alpha below this (or above ``1 -`` it) is what an 8-bit export stores as 0 (255).
_SNAP = 0.5 / 255

#: Subsampling of :func:`fast_guided_filter` inside :func:`refine_alpha`: ``guided_radius // 2``
#: clamped to ``[2, _FAST_MAX_SUBSAMPLE]`` (1 for radius 1), so the grid is at most 4x coarser and
#: the subsampled window keeps a radius of at least 1.
_FAST_MAX_SUBSAMPLE = 4


# ---------------------------------------------------------------------------- input checks
def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {value.shape}"
    return type(value).__name__


def _check_map(values: object, shape: tuple[int, int], what: str) -> np.ndarray:
    """A float (or bool) ``(H, W)`` map of the given shape, as float32."""
    if not isinstance(values, np.ndarray) or values.ndim != 2 or values.dtype.kind not in "fb":
        raise ValueError(f"expected {what} as an (H, W) float array, got {_describe(values)}")
    if values.shape != shape:
        raise ValueError(f"expected {what} of shape {shape}, got {values.shape}")
    return values.astype(np.float32, copy=False)


def _check_mask(mask: object) -> np.ndarray:
    if not isinstance(mask, np.ndarray) or mask.ndim != 2 or mask.dtype != np.bool_:
        raise ValueError(f"expected mask as an (H, W) bool array, got {_describe(mask)}")
    return mask


def _check_count(value: object, what: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"expected {what} as an int >= {minimum}, got {value!r}")
    return int(value)


def _check_positive_float(value: object, what: str, *, allow_zero: bool) -> float:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    ok = ok and math.isfinite(float(value)) and (float(value) >= 0 if allow_zero else float(value) > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"expected {what} as a finite number {bound}, got {value!r}")
    return float(value)


# ---------------------------------------------------------------------------- guided filter
# Memory note: on the 2-core machines bench/matte.py runs on, first touching fresh
# memory (page faults) costs about as much as the arithmetic on it, so the code below
# updates arrays in place and reuses dead buffers instead of letting numpy allocate a
# temporary per operation, and works on crops, coarse grids and band tiles.


def _box_mean(x: np.ndarray, radius: int, out: np.ndarray | None = None) -> np.ndarray:
    """Mean over the ``(2r+1) x (2r+1)`` window around each pixel, mirrored borders: float32.

    ``out`` (same shape, float32, not ``x``) receives the result.
    """
    size = 2 * radius + 1
    return cv2.boxFilter(x, cv2.CV_32F, (size, size), dst=out, normalize=True, borderType=_BORDER)


class _Guide:
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
            channel = np.empty(self.shape, np.uint8)
            for a, c in zip(mean_a, range(3)):
                np.multiply(a, cv2.extractChannel(self.image, c, dst=channel), out=a)
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
        scratch plane are touched at full resolution. Returns ``out``.
        """
        height, width = self.shape
        q = cv2.resize(mean_b, (width, height), dst=out, interpolation=cv2.INTER_LINEAR)
        scratch = np.empty((height, width), np.float32)
        channel = np.empty((height, width), np.uint8) if self.is_uint8 else None
        for c, a in enumerate(mean_a):
            if channel is not None:
                a = a * np.float32(1 / 255)  # fold the guide's scale in on the small grid
                I_c = cv2.extractChannel(self.image, c, dst=channel)
            else:
                I_c = self.planes()[c]
            np.multiply(cv2.resize(a, (width, height), dst=scratch, interpolation=cv2.INTER_LINEAR), I_c, out=scratch)
            q += scratch
        return q


def _guided_coefficients(
    I: list[np.ndarray], p: np.ndarray, radius: int, eps: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
    """Per-window linear model ``p ~ a . I + b`` (He et al., eq. 14-15), not yet averaged.

    Returns ``(a_r, a_g, a_b, b, spare)``, each shaped like ``p``; ``spare`` are
    dead float32 buffers of the same shape the caller may reuse.
    """
    I_r, I_g, I_b = I
    mean_r, mean_g, mean_b = (_box_mean(c, radius) for c in I)
    mean_p = _box_mean(p, radius)
    scratch = np.empty_like(p)

    def windowed_covariance(x: np.ndarray, y: np.ndarray, mean_x: np.ndarray, mean_y: np.ndarray) -> np.ndarray:
        """``mean(x * y) - mean_x * mean_y`` over each window."""
        out = _box_mean(np.multiply(x, y, out=scratch), radius)
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


def _guided_filter_with(guide: _Guide, p: np.ndarray, radius: int, eps: float) -> np.ndarray:
    a_r, a_g, a_b, b, spare = _guided_coefficients(guide.planes(), p, radius, eps)
    mean_a = [_box_mean(a, radius, out=buffer) for a, buffer in zip((a_r, a_g, a_b), spare)]
    mean_b = _box_mean(b, radius, out=spare[3])
    return guide.linear_model(mean_a, mean_b)


def _fast_guided_filter_with(
    guide: _Guide, p: np.ndarray, radius: int, eps: float, subsample: int, *, overwrite_src: bool = False
) -> np.ndarray:
    if subsample == 1:
        return _guided_filter_with(guide, p, radius, eps)
    height, width = p.shape
    small = (max(1, round(width / subsample)), max(1, round(height / subsample)))
    I_sub = guide.downsampled_planes(small)
    p_sub = cv2.resize(p, small, interpolation=cv2.INTER_AREA)
    radius_sub = max(1, round(radius / subsample))
    a_r, a_g, a_b, b, spare = _guided_coefficients(I_sub, p_sub, radius_sub, eps)
    mean_a = [_box_mean(a, radius_sub, out=buffer) for a, buffer in zip((a_r, a_g, a_b), spare)]
    mean_b = _box_mean(b, radius_sub, out=spare[3])
    # p is no longer needed: the result goes into its buffer when the caller allows it.
    out = p if overwrite_src else np.empty_like(p)
    return guide.upsampled_linear_model(mean_a, mean_b, out)


def _checked_guide(guide: object) -> _Guide:
    if not isinstance(guide, np.ndarray) or guide.ndim != 3 or guide.shape[2] != 3:
        raise ValueError(f"expected guide as an (H, W, 3) array, got {_describe(guide)}")
    if guide.dtype == np.uint8:
        return _Guide(np.ascontiguousarray(guide))
    if guide.dtype.kind != "f":
        raise ValueError(f"expected guide as uint8 or float, got {guide.dtype}")
    scaled = np.ascontiguousarray(guide, dtype=np.float32)
    low, high = float(scaled.min()), float(scaled.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(f"expected a float guide in [0, 1], got values in [{low:.4g}, {high:.4g}]")
    return _Guide(scaled)


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
    p = _check_map(src, checked.shape, "src")
    radius = _check_count(radius, "radius", minimum=1)
    eps = _check_positive_float(eps, "eps", allow_zero=False)
    return _guided_filter_with(checked, np.ascontiguousarray(p), radius, eps)


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
    p = _check_map(src, checked.shape, "src")
    radius = _check_count(radius, "radius", minimum=1)
    eps = _check_positive_float(eps, "eps", allow_zero=False)
    subsample = _check_count(subsample, "subsample", minimum=1)
    return _fast_guided_filter_with(checked, np.ascontiguousarray(p), radius, eps, subsample)


# ---------------------------------------------------------------------------- islands and holes
def _remove_small_regions_inplace(mask: np.ndarray, min_area: int) -> bool:
    """:func:`remove_small_regions` on a contiguous mask, in place; True when anything changed."""
    if min_area <= 1:
        return False
    # Labels without stats plus a bincount is several times faster than OpenCV's stats pass.
    count, labels = cv2.connectedComponents(mask.view(np.uint8), connectivity=8, ltype=cv2.CV_32S)
    areas = np.bincount(labels.ravel(), minlength=count)
    small = areas < min_area
    small[0] = False  # label 0 is the background
    if not small.any():
        return False
    mask[small[labels]] = False
    return True


def _fill_small_holes_inplace(mask: np.ndarray, max_area: int) -> bool:
    """:func:`fill_small_holes` on a contiguous mask, in place; True when anything changed."""
    if max_area <= 1:
        return False
    background = np.logical_not(mask)
    count, labels = cv2.connectedComponents(background.view(np.uint8), connectivity=4, ltype=cv2.CV_32S)
    areas = np.bincount(labels.ravel(), minlength=count)
    small = areas < max_area
    small[0] = False  # label 0 is the foreground
    for edge in (labels[0], labels[-1], labels[:, 0], labels[:, -1]):
        small[edge] = False  # background touching the border is never a hole
    if not small.any():
        return False
    mask[small[labels]] = True
    return True


def remove_small_regions(mask: np.ndarray, min_area: int) -> np.ndarray:
    """Drop foreground specks: 8-connected True components of fewer than ``min_area`` pixels.

    Args:
        mask: ``(H, W)`` bool.
        min_area: smallest component kept, in pixels, >= 0 (0 and 1 keep everything).

    Returns:
        A new ``(H, W)`` bool mask.
    """
    mask = _check_mask(mask)
    min_area = _check_count(min_area, "min_area", minimum=0)
    out = np.array(mask, dtype=np.bool_, order="C", copy=True)
    _remove_small_regions_inplace(out, min_area)
    return out


def fill_small_holes(mask: np.ndarray, max_area: int) -> np.ndarray:
    """Plug pin holes: 4-connected False components off the border, of fewer than ``max_area`` pixels.

    Holes use 4-connectivity, the counterpart of the 8-connected foreground of
    :func:`remove_small_regions`, so a hole never leaks through a diagonal gap.
    Background touching the picture's border is never filled, whatever its size.

    Args:
        mask: ``(H, W)`` bool.
        max_area: holes with fewer pixels than this are filled, >= 0 (0 and 1 fill nothing).

    Returns:
        A new ``(H, W)`` bool mask.
    """
    mask = _check_mask(mask)
    max_area = _check_count(max_area, "max_area", minimum=0)
    out = np.array(mask, dtype=np.bool_, order="C", copy=True)
    _fill_small_holes_inplace(out, max_area)
    return out


# ---------------------------------------------------------------------------- feathering
def _feathered(alpha: np.ndarray, radius_px: float) -> np.ndarray:
    half = max(1, math.ceil(radius_px))
    size = (2 * half + 1, 2 * half + 1)
    return cv2.GaussianBlur(alpha, size, radius_px / 2.0, borderType=cv2.BORDER_REPLICATE)


def feather_alpha(alpha: np.ndarray, radius_px: float) -> np.ndarray:
    """Soften an alpha's edge: a Gaussian of sigma ``radius_px / 2`` cut off at ``ceil(radius_px)``.

    Pixels farther than ``ceil(radius_px)`` from any pixel of another value keep
    their value (solid interior stays 1 up to float rounding, far background
    stays exactly 0). ``radius_px = 0`` returns a copy.

    Args:
        alpha: ``(H, W)`` float in ``[0, 1]``.
        radius_px: feather radius in pixels, >= 0.

    Returns:
        ``(H, W)`` float32 in ``[0, 1]``.
    """
    if not isinstance(alpha, np.ndarray) or alpha.ndim != 2:
        raise ValueError(f"expected alpha as an (H, W) float array, got {_describe(alpha)}")
    alpha = _check_map(alpha, alpha.shape, "alpha")
    radius_px = _check_positive_float(radius_px, "radius_px", allow_zero=True)
    out = _feathered(alpha, radius_px) if radius_px > 0 else alpha.copy()
    return np.clip(out, 0.0, 1.0, out=out)


# ---------------------------------------------------------------------------- colour decontamination
def _nonzero_box(mask: np.ndarray, margin: int) -> tuple[int, int, int, int] | None:
    """``xyxy`` box of a bool or uint8 mask's nonzero pixels grown by ``margin``, inside the mask."""
    x, y, w, h = cv2.boundingRect(mask.view(np.uint8) if mask.dtype == np.bool_ else mask)
    if w == 0 or h == 0:
        return None
    height, width = mask.shape
    return max(0, x - margin), max(0, y - margin), min(width, x + w + margin), min(height, y + h + margin)


#: Box radii of the blur-fusion steps of :func:`estimate_foreground`, wide to narrow.
#: Chosen by ``bench/quality.py``.
FOREGROUND_RADII = (32, 8, 2, 1)

#: Blur-fusion boxes of at least this radius run on a grid ``radius // 2`` (at most 8) times coarser.
_GRID_MIN_RADIUS = 8

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
    alpha = np.ascontiguousarray(_check_map(alpha, image.shape[:2], "alpha"))
    if not isinstance(radii, (tuple, list)) or not radii:
        raise ValueError(f"expected radii as a non-empty tuple of ints >= 1, got {radii!r}")
    radii = tuple(_check_count(r, "each radius", minimum=1) for r in radii)
    image = np.ascontiguousarray(image)
    out = image.copy()
    band = alpha > 0
    band &= alpha < 1
    box = _nonzero_box(band, max(radii) + 1)
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
    grids = _CoarseGrids(image, alpha, band_I, band_alpha, box, ys - y0, xs - x0, wide) if wide else None
    tiles = _BandTiles(image, alpha, band, ys, xs, max(narrow)) if narrow else None
    weights: dict[int, np.ndarray] = {}  # box means of alpha at the band, per radius
    if grids is not None:
        weights.update({r: grids.box_mean_at_band(r, grids.alpha[r], None) for r in wide})
    if tiles is not None:
        weights.update({r: tiles.box_mean_at_band(tiles.alpha, r, None) for r in narrow})
    F = np.empty((ys.size, 3), np.float32)
    for c in range(3):  # the channels are independent; alpha is shared
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
        means = _box_mean(small, grid_radius)
        sampled = cv2.remap(means, sample_x, sample_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return sampled.ravel()[: self.count]


def _mirrored(index: np.ndarray, size: int) -> np.ndarray:
    """Indices past ``[0, size)`` mirrored back (``cv2.BORDER_REFLECT``: ``cba|abc|cba``)."""
    index = np.where(index < 0, -index - 1, index)
    index = np.where(index >= size, 2 * size - index - 1, index)
    return np.clip(index, 0, size - 1)  # only reached by windows wider than the picture


class _BandTiles:
    """The picture's ``_TILE``-pixel tiles that hold band pixels, each with a ``halo``-pixel
    margin, stacked into one tall mosaic so narrow box filters run on them alone."""

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
        # Picture rows and columns of every mosaic pixel; halos past the picture's
        # border mirror it like every other box filter here.
        rows = _mirrored((tile_ids // tiles_x)[:, None] * _TILE + offsets, height)
        cols = _mirrored((tile_ids % tiles_x)[:, None] * _TILE + offsets, width)
        source = (rows[:, :, None] * width + cols[:, None, :]).reshape(-1)
        self.shape = (tile_ids.size * side, side)
        # Each band pixel's own place (inside its tile) is where its box mean is read...
        self.band = (band_tile * side + ys % _TILE + halo) * side + xs % _TILE + halo
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
            return _box_mean(plane, radius).ravel()[self.band]
        values = plane.ravel()
        original = values[self.copies]
        values[self.copies] = original + correction[self.copy_of]
        means = _box_mean(plane, radius).ravel()[self.band]
        values[self.copies] = original
        return means


# ---------------------------------------------------------------------------- settings and pipeline
@dataclass(frozen=True)
class MatteSettings:
    """Every slider of the matte stage.

    Attributes:
        threshold: soft prior value at or above which a pixel counts as character, in ``(0, 1)``.
        min_island_area: foreground specks with fewer pixels are dropped; 0 disables.
        max_hole_area: enclosed holes with fewer pixels are filled; 0 disables.
        guided_radius: colour-guided filter window radius in pixels; 0 disables.
        guided_eps: guided filter regularisation in ``[0, 1]``-colour variance units, > 0;
            smaller follows colour edges more closely.
        feather: edge feathering radius in pixels; 0 disables.
        decontaminate: re-estimate edge colours (:func:`estimate_foreground`).
        fast: use :func:`fast_guided_filter` (for previews).
    """

    threshold: float = 0.5
    min_island_area: int = 16
    max_hole_area: int = 256
    guided_radius: int = 4
    guided_eps: float = 1e-4
    feather: float = 0.0
    decontaminate: bool = True
    fast: bool = False

    def __post_init__(self) -> None:
        threshold = self.threshold
        if (
            isinstance(threshold, bool)
            or not isinstance(threshold, (int, float, np.integer, np.floating))
            or not 0.0 < float(threshold) < 1.0
        ):
            raise ValueError(f"expected threshold as a number in (0, 1), got {threshold!r}")
        _check_count(self.min_island_area, "min_island_area", minimum=0)
        _check_count(self.max_hole_area, "max_hole_area", minimum=0)
        _check_count(self.guided_radius, "guided_radius", minimum=0)
        _check_positive_float(self.guided_eps, "guided_eps", allow_zero=False)
        _check_positive_float(self.feather, "feather", allow_zero=True)
        for name in ("decontaminate", "fast"):
            value = getattr(self, name)
            if not isinstance(value, (bool, np.bool_)):
                raise ValueError(f"expected {name} as a bool, got {value!r}")

    @property
    def fast_subsample(self) -> int:
        """Subsampling :func:`refine_alpha` gives :func:`fast_guided_filter` at this radius."""
        if self.guided_radius <= 1:
            return 1
        return max(2, min(_FAST_MAX_SUBSAMPLE, self.guided_radius // 2))


def _refine_crop(
    image: np.ndarray, prior: np.ndarray, settings: MatteSettings, prior_ramp: float, fast_subsample: int
) -> np.ndarray:
    """The pipeline of :func:`refine_alpha` on one crop (views are fine); float32 alpha in ``[0, 1]``."""
    threshold = np.float32(settings.threshold)
    mask = prior >= threshold
    changed_mask = None
    if settings.min_island_area > 1 or settings.max_hole_area > 1:
        cleaned = mask.copy()
        removed = _remove_small_regions_inplace(cleaned, settings.min_island_area)
        filled = _fill_small_holes_inplace(cleaned, settings.max_hole_area)
        if removed or filled:
            changed_mask = cleaned != mask
            mask = cleaned
    if prior_ramp > 0:
        # Keep the soft prior's sub-pixel edge position: values within +-ramp/2 of the
        # threshold map linearly onto 0..1 (the 0.5 level stays the mask's outline).
        alpha = np.subtract(prior, threshold, dtype=np.float32)
        alpha *= np.float32(1.0 / prior_ramp)
        alpha += np.float32(0.5)
        np.clip(alpha, 0.0, 1.0, out=alpha)
        if changed_mask is not None:
            np.copyto(alpha, mask, where=changed_mask)
    else:
        alpha = mask.astype(np.float32)
    if settings.guided_radius > 0:
        guide = _Guide(image)
        if settings.fast:
            alpha = _fast_guided_filter_with(
                guide, alpha, settings.guided_radius, settings.guided_eps, fast_subsample, overwrite_src=True
            )
        else:
            alpha = _guided_filter_with(guide, alpha, settings.guided_radius, settings.guided_eps)
    if settings.feather > 0:
        alpha = _feathered(alpha, settings.feather)
    # Clip to [0, 1], snapping values an 8-bit export stores as 0 or 255 there, so the
    # edge band (and the colour clean-up after it) is as narrow as the result really is.
    # (Thresholding 1 - alpha reuses OpenCV's in-place "to zero" for the top end.)
    cv2.threshold(alpha, _SNAP, 0.0, cv2.THRESH_TOZERO, dst=alpha)
    np.subtract(np.float32(1.0), alpha, out=alpha)
    cv2.threshold(alpha, _SNAP, 0.0, cv2.THRESH_TOZERO, dst=alpha)
    np.subtract(np.float32(1.0), alpha, out=alpha)
    return alpha


def _grow_to_multiple(start: int, stop: int, size: int, multiple: int) -> tuple[int, int]:
    """Grow ``[start, stop)`` inside ``[0, size)`` to a length that is a multiple of ``multiple``, if it fits."""
    length = -(-(stop - start) // multiple) * multiple
    if length > size:
        return start, stop
    stop = start + length
    if stop > size:
        start, stop = size - length, size
    return start, stop


def _refine_alpha(
    image: np.ndarray,
    prior: np.ndarray,
    settings: MatteSettings,
    *,
    prior_ramp: float = PRIOR_RAMP,
    fast_subsample: int | None = None,
) -> np.ndarray:
    """:func:`refine_alpha` with two internal choices exposed for ``bench/quality.py``.

    ``prior_ramp``: width of the soft-prior ramp (0: hard threshold);
    ``fast_subsample``: subsampling of the fast guided filter (default: the settings').
    """
    if not isinstance(settings, MatteSettings):
        raise ValueError(f"expected settings as MatteSettings, got {_describe(settings)}")
    if fast_subsample is None:
        fast_subsample = settings.fast_subsample
    image = check_rgb_image(image)
    prior = _check_map(prior, image.shape[:2], "prior")
    height, width = prior.shape
    out = np.zeros((height, width), np.float32)
    # Everything happens inside the box of the pixels the prior can turn on, grown
    # by the reach of each step; outside it the result is 0 whatever the settings.
    reach = 2 * settings.guided_radius + math.ceil(settings.feather) + 2
    if settings.fast and settings.guided_radius > 0:
        reach += 2 * fast_subsample
    lowest_on = settings.threshold - prior_ramp / 2 if prior_ramp > 0 else settings.threshold
    box = _nonzero_box(prior >= np.float32(lowest_on), reach)
    if box is None:
        return out
    x0, y0, x1, y1 = box
    if settings.fast and settings.guided_radius > 0 and fast_subsample > 1:
        # A crop that is a whole number of subsampling cells takes OpenCV's fast exact resize.
        x0, x1 = _grow_to_multiple(x0, x1, width, fast_subsample)
        y0, y1 = _grow_to_multiple(y0, y1, height, fast_subsample)
    # Views, not copies: OpenCV and numpy read row-strided crops directly.
    out[y0:y1, x0:x1] = _refine_crop(image[y0:y1, x0:x1], prior[y0:y1, x0:x1], settings, prior_ramp, fast_subsample)
    return out


def refine_alpha(image: np.ndarray, prior: np.ndarray, settings: MatteSettings) -> np.ndarray:
    """The matte pipeline: soft prior in, clean alpha out.

    Steps, each switched by ``settings``: threshold the prior; drop specks
    (``min_island_area``) and fill pin holes (``max_hole_area``); keep the prior's
    sub-pixel edge position by mapping values within :data:`PRIOR_RAMP` ``/ 2`` of the
    threshold linearly onto 0..1 (the soft prior's blur itself is not kept:
    ``bench/quality.py`` shows it costs accuracy); snap to the picture's colour
    edges with the guided filter (``guided_radius``, ``guided_eps``; ``fast`` for
    previews); feather; clip to ``[0, 1]``, with values an 8-bit export would store
    as 0 or 255 snapped there. Work is confined to the box around the mask, so
    small characters on big pictures stay cheap.

    Args:
        image: ``(H, W, 3)`` uint8 RGB (the guide).
        prior: ``(H, W)`` float soft mask in ``[0, 1]`` (e.g. a segmenter's or refiner's output).
        settings: the matte settings.

    Returns:
        ``(H, W)`` float32 alpha in ``[0, 1]``.
    """
    return _refine_alpha(image, prior, settings)
