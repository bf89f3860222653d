"""The weight-free default segmenter: cut characters out of flat and gradient backgrounds.

:class:`ClassicSegmenter` needs no model. It works in four steps:

1. **Background model.** A smooth colour surface (a quadratic in ``x`` and ``y``
   per RGB channel) is fitted robustly to a band along the picture border, so a
   flat colour or a gradient is described exactly and a character touching the
   border is ignored as an outlier. The fit's residual noise and the share of the
   border it fails to explain decide whether the background is *busy*.
2. **Coarse cut** at a reduced "work" resolution (long side 640 px): pixels whose
   colour is far from the background model (hysteresis between two thresholds),
   enclosed holes filled unless they have the background's colour. On busy
   backgrounds the colour model alone is not trusted: regions enclosed by dark
   line art and pixels far from the model seed :func:`cv2.grabCut`, and only
   GrabCut parts touching a seed are kept.
3. **Instances** are the 8-connected parts of the coarse cut; specks below a
   minimum area are dropped.
4. **Full-resolution edges.** On clean backgrounds each part is cut again at full
   resolution inside its box, from the full-resolution colour distance to the
   background model, so 2-3 px hair strands survive; edge pixels get the
   fractional value ``|I - B| / |F - B|`` (picture, background model, nearby
   foreground colour), and edge pixels under one half are peeled off round by
   round, which strips JPEG ringing. On busy backgrounds the work-resolution cut
   is upsampled.

Busy backgrounds (painted scenery, texture) get a note that the anime model does
better there. :meth:`ClassicSegmenter.segment_at` cuts out whatever lies under
one click.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from inference.image_io import check_rgb_image
from inference.instances import COVER_THRESHOLD, Click, Instances, tight_box
from inference.once_cache import OnceCache

#: How to install the anime model; said to the user on busy backgrounds.
ANIME_MODEL_INSTALL = "python -m inference.weights download rtmdet"

#: Note attached to results on busy backgrounds.
BUSY_BACKGROUND_NOTE = (
    "Busy background: the classic segmenter works best on flat or gradient backgrounds, "
    "so these cutouts may include background pieces or miss parts of a character (thin hair strands "
    f"especially). The anime model does better here; install it with `{ANIME_MODEL_INSTALL}`."
)

#: Pictures with a shorter side than this have no room for a border and a character.
MIN_SIDE_PX = 8
#: Pictures whose analysis a segmenter remembers for point prompts (each is work-resolution sized: small).
ANALYSES_KEPT = 4

# For Gaussian noise of per-channel standard deviation s, the median Euclidean
# length of a 3-channel residual is about 1.54 s.
_CHI3_MEDIAN = 1.538

Box = tuple[int, int, int, int]

# Line art is looked for at no more than this long side (see _outline_regions).
_OUTLINE_LONG_SIDE = 1920


@dataclass(frozen=True)
class ClassicOptions:
    """Tuning of :class:`ClassicSegmenter`. The defaults suit uploads up to 36 MP.

    Attributes:
        work_long_side: long side in pixels of the reduced picture used for the
            background fit, the coarse cut and GrabCut (edges use full resolution).
        border_fraction: width of the border band the background is fitted to, as
            a fraction of the picture's shorter side (at least 2 work pixels).
        min_contrast: RGB distance (0-441) from the background model above which a
            pixel surely belongs to a character; the low hysteresis threshold is half.
        noise_multiplier: thresholds rise to this many times the border noise
            (per-channel standard deviation) on noisy backgrounds.
        min_area_fraction: parts smaller than this fraction of the picture are specks.
        min_area_px: parts smaller than this many full-resolution pixels are specks.
        small_hole_fraction: holes enclosed by a character and smaller than this
            fraction of its area are always filled; larger ones only when their
            colour differs from the background model.
        busy_noise: border noise (per-channel standard deviation, 0-255) above
            which the background counts as busy.
        busy_unexplained_fraction: share of the border farther than the foreground
            threshold from the background model above which the background is busy.
        outline_max_gray: on busy backgrounds, pixels darker than this (0-255 gray)
            count as line art ...
        outline_min_contrast: ... and so do pixels this much darker than their
            surroundings (morphological black-hat, 0-255).
        grabcut_iterations: GrabCut iterations on busy backgrounds.
        click_window_fraction: on busy backgrounds, a click is cut out of a square
            window this fraction of the shorter side, centred on the click.
    """

    work_long_side: int = 640
    border_fraction: float = 0.02
    min_contrast: float = 20.0
    noise_multiplier: float = 4.0
    min_area_fraction: float = 0.001
    min_area_px: int = 64
    small_hole_fraction: float = 0.005
    busy_noise: float = 5.0
    busy_unexplained_fraction: float = 0.5
    outline_max_gray: int = 60
    outline_min_contrast: int = 40
    grabcut_iterations: int = 3
    click_window_fraction: float = 0.4

    def __post_init__(self) -> None:
        if not 64 <= self.work_long_side <= 4096:
            raise ValueError(f"expected work_long_side in [64, 4096], got {self.work_long_side}")
        for name in ("border_fraction", "min_area_fraction", "small_hole_fraction", "busy_unexplained_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"expected {name} in [0, 1], got {value}")
        for name in ("min_contrast", "noise_multiplier", "busy_noise"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"expected {name} > 0, got {value}")
        for name in ("outline_max_gray", "outline_min_contrast"):
            value = getattr(self, name)
            if not 0 <= value <= 255:
                raise ValueError(f"expected {name} in [0, 255], got {value}")
        if self.min_area_px < 1:
            raise ValueError(f"expected min_area_px >= 1, got {self.min_area_px}")
        if not 1 <= self.grabcut_iterations <= 20:
            raise ValueError(f"expected grabcut_iterations in [1, 20], got {self.grabcut_iterations}")
        if not 0.05 <= self.click_window_fraction <= 1.0:
            raise ValueError(f"expected click_window_fraction in [0.05, 1], got {self.click_window_fraction}")


# ---------------------------------------------------------------------- background model
@dataclass(frozen=True, eq=False)
class BackgroundModel:
    """A smooth RGB surface fitted to the picture border.

    The colour at pixel ``(x, y)`` of an ``(H, W)`` picture is
    ``features(u, v) @ coefficients`` with ``u = 2 (x + 0.5) / W - 1`` and
    ``v = 2 (y + 0.5) / H - 1`` in ``[-1, 1]``, so one model serves every
    resolution of the same picture.

    Attributes:
        coefficients: ``(K, 3)`` float64, one column per RGB channel (K = 1, 3 or 6
            for a constant, a plane or a quadratic).
        noise: per-channel standard deviation (0-255) of the border pixels the
            model explains, at the resolution it was fitted on.
        outlier_fraction: share in ``[0, 1]`` of the border pixels the robust fit
            rejected (characters touching the border, or a varied background).
    """

    coefficients: np.ndarray
    noise: float
    outlier_fraction: float

    def predict(self, image_size: tuple[int, int], box: Box | None = None) -> np.ndarray:
        """Background colour over an ``(H, W)`` picture, or over its ``xyxy`` box.

        Returns:
            ``(h, w, 3)`` float32 RGB, about ``[0, 255]`` (not clipped).
        """
        height, width = image_size
        x0, y0, x1, y1 = box if box is not None else (0, 0, width, height)
        u = (2.0 * (np.arange(x0, x1, dtype=np.float32) + 0.5) / width - 1.0)[None, :]
        v = (2.0 * (np.arange(y0, y1, dtype=np.float32) + 0.5) / height - 1.0)[:, None]
        coef = self.coefficients.astype(np.float32)
        out = np.empty((y1 - y0, x1 - x0, 3), np.float32)
        for channel in range(3):
            c = coef[:, channel]
            plane = np.full((y1 - y0, x1 - x0), c[0], np.float32)
            if len(c) >= 3:
                plane += c[1] * u + c[2] * v
            if len(c) >= 6:
                plane += c[3] * u * u + c[4] * (u * v) + c[5] * v * v
            out[:, :, channel] = plane
        return out

    def distance(self, crop: np.ndarray, image_size: tuple[int, int], box: Box | None = None) -> np.ndarray:
        """Euclidean RGB distance of pixels to the model.

        Args:
            crop: ``(h, w, 3)`` uint8 RGB: the picture's ``box`` (the whole picture when ``None``).
            image_size: ``(H, W)`` of the whole picture the crop comes from.
            box: ``xyxy`` of the crop in the picture.

        Returns:
            ``(h, w)`` float32 distances in ``[0, 442]``.
        """
        diff = crop.astype(np.float32) - self.predict(image_size, box)
        return np.sqrt(np.einsum("hwc,hwc->hw", diff, diff))


def _poly_features(u: np.ndarray, v: np.ndarray, terms: int) -> np.ndarray:
    """``(N, terms)`` design matrix of a constant (1), plane (3) or quadratic (6) in ``u, v``."""
    columns = [np.ones_like(u), u, v, u * u, u * v, v * v][:terms]
    return np.stack(columns, axis=1)


def border_band(image_size: tuple[int, int], band_px: int) -> np.ndarray:
    """``(H, W)`` bool: pixels within ``band_px`` (>= 1) of the picture's edge."""
    height, width = image_size
    band = np.zeros((height, width), bool)
    band[:band_px] = band[height - band_px :] = True
    band[:, :band_px] = band[:, width - band_px :] = True
    return band


def fit_background(image: np.ndarray, *, band_px: int, max_samples: int = 8000) -> BackgroundModel:
    """Fit a smooth background surface to the border band of a picture, ignoring outliers.

    Iteratively re-weighted least squares: fit, drop border pixels farther than
    four noise deviations from the surface (at least 4 RGB units), refit, until
    the inliers settle. A quadratic is fitted when there are enough border
    pixels, else a plane or a constant.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        band_px: width of the border band in pixels, >= 1.
        max_samples: border pixels used at most (an even subsample beyond that).
    """
    height, width = image.shape[:2]
    ys, xs = np.nonzero(border_band((height, width), band_px))
    if len(ys) > max_samples:
        step = int(np.ceil(len(ys) / max_samples))
        ys, xs = ys[::step], xs[::step]
    colours = image[ys, xs].astype(np.float64)
    u = 2.0 * (xs + 0.5) / width - 1.0
    v = 2.0 * (ys + 0.5) / height - 1.0
    terms = 6 if len(ys) >= 60 else (3 if len(ys) >= 12 else 1)
    design = _poly_features(u, v, terms)
    inliers = np.ones(len(ys), bool)
    coef = np.zeros((terms, 3))
    residual = np.zeros(len(ys))
    for _ in range(8):
        coef = np.linalg.lstsq(design[inliers], colours[inliers], rcond=None)[0]
        residual = np.linalg.norm(colours - design @ coef, axis=1)
        sigma = float(np.median(residual[inliers])) / _CHI3_MEDIAN
        new_inliers = residual <= max(4.0 * sigma, 4.0)
        if new_inliers.sum() < max(2 * terms, len(ys) // 5) or np.array_equal(new_inliers, inliers):
            break
        inliers = new_inliers
    noise = float(np.sqrt(np.mean(residual[inliers] ** 2) / 3.0))
    return BackgroundModel(coef, noise, float(np.mean(~inliers)))


def _border_noise(image: np.ndarray, model: BackgroundModel, band_px: int) -> float:
    """Per-channel noise (0-255) of an ``(H, W, 3)`` picture's border around ``model``, outliers left out."""
    height, width = image.shape[:2]
    ys, xs = np.nonzero(border_band((height, width), band_px))
    step = max(1, len(ys) // 20000)
    ys, xs = ys[::step], xs[::step]
    u = 2.0 * (xs + 0.5) / width - 1.0
    v = 2.0 * (ys + 0.5) / height - 1.0
    predicted = _poly_features(u, v, model.coefficients.shape[0]) @ model.coefficients
    residual = np.linalg.norm(image[ys, xs].astype(np.float64) - predicted, axis=1)
    explained = residual <= max(4.0 * float(np.median(residual)) / _CHI3_MEDIAN, 4.0)
    return float(np.sqrt(np.mean(residual[explained] ** 2) / 3.0)) if explained.any() else model.noise


# ---------------------------------------------------------------------- mask helpers
def _components(mask: np.ndarray, connectivity: int = 8) -> tuple[int, np.ndarray, np.ndarray]:
    """Connected parts of a bool mask: ``(count incl. label 0, (H, W) int32 labels, (count, 5) stats)``."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=connectivity)
    return count, labels, stats


def _parts_touching(mask: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """The 8-connected parts of ``mask`` holding at least one ``seeds`` pixel (both ``(H, W)`` bool)."""
    count, labels, _ = _components(mask)
    hit = np.zeros(count, bool)
    hit[np.unique(labels[seeds & mask])] = True
    hit[0] = False
    return hit[labels]


def _enclosed_parts(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 4-connected parts of ``~mask`` for an ``(H, W)`` bool mask.

    Returns:
        ``labels``: ``(H, W)`` int32, 0 on ``mask`` itself; ``stats``: ``(count, 2)``
        int64 per label, the area and 1 when the part does not touch the array's edge.
    """
    count, labels, stats = _components(~mask, connectivity=4)
    height, width = mask.shape
    x, y, w, h, area = (stats[:, i] for i in range(5))
    enclosed = (x > 0) & (y > 0) & (x + w < width) & (y + h < height)
    return labels, np.stack([area, enclosed.astype(np.int64)], axis=1)


def _fill_holes(
    mask: np.ndarray, *, max_small_px: float, distance: np.ndarray | None = None, hole_contrast: float = np.inf
) -> np.ndarray:
    """Fill holes (parts of ``~mask`` not touching the array's edge) of an ``(H, W)`` bool mask.

    A hole is filled when it has fewer than ``max_small_px`` pixels, or when its
    colour is not the background's: the mean ``distance`` to the background
    model of its core (the hole less 2 px along its rim, where ringing and
    anti-aliasing live) exceeds ``hole_contrast`` (e.g. skin a shade off the
    background colour). Large holes of the background's own colour (between an
    arm and the body, between two hair strands) stay open.
    """
    labels, stats = _enclosed_parts(mask)
    area, enclosed = stats[:, 0], stats[:, 1].astype(bool)
    fill = enclosed & (area < max_small_px)
    if distance is not None and np.isfinite(hole_contrast):
        core = ~cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        core_labels = labels[core]
        core_area = np.bincount(core_labels, minlength=len(area))
        core_sum = np.bincount(core_labels, weights=distance[core], minlength=len(area))
        mean = core_sum / np.maximum(core_area, 1)
        fill |= enclosed & (core_area > 0) & (mean > hole_contrast)
    fill[0] = False  # label 0 is the mask itself
    return mask | fill[labels] if fill.any() else mask


def _outline_regions(
    image: np.ndarray, work_size: tuple[int, int], *, max_gray: int, min_contrast: int, min_area: float
) -> np.ndarray:
    """Regions enclosed by dark line art, with the line art around them, at work resolution.

    Anime characters are drawn with closed dark outlines; painted backgrounds
    mostly are not. A pixel is line art when darker than ``max_gray`` or at least
    ``min_contrast`` darker than its surroundings (9x9 black-hat). Line art is
    found at full resolution, or at a long side of 1920 px for larger pictures (a
    3 px outline fades to nothing when averaged down to the work resolution), and
    a work pixel is line art when any of its pixels there is; gaps up to ~5 work
    pixels (where a hair strand crosses an outline) are then closed.

    Args:
        image: ``(H, W, 3)`` uint8 RGB, full resolution.
        work_size: ``(h, w)`` of the result.
        min_area: smallest enclosed region kept, in work pixels; regions over a
            third of the picture are taken to be background framed by lines.

    Returns:
        ``(h, w)`` bool.
    """
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if max(gray.shape) > _OUTLINE_LONG_SIDE:  # larger pictures draw thicker lines; bound the cost
        scale = _OUTLINE_LONG_SIDE / max(gray.shape)
        reduced = (max(1, round(gray.shape[0] * scale)), max(1, round(gray.shape[1] * scale)))
        gray = _resize(gray, reduced, cv2.INTER_AREA)
    blackhat = cv2.morphologyEx(gray, cv2.MORPH_BLACKHAT, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9)))
    line = ((gray < max_gray) | (blackhat > min_contrast)).astype(np.uint8) * 255
    if line.shape != work_size:
        line = _resize(line, work_size, cv2.INTER_AREA)
    line = cv2.morphologyEx((line > 0).astype(np.uint8), cv2.MORPH_CLOSE, np.ones((7, 7), np.uint8)).astype(bool)
    labels, stats = _enclosed_parts(line)
    area, enclosed = stats[:, 0], stats[:, 1].astype(bool)
    keep = enclosed & (area >= min_area) & (area <= line.shape[0] * line.shape[1] / 3)
    keep[0] = False  # label 0 is the line art itself
    regions = keep[labels]
    near = cv2.dilate(regions.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    return regions | (near & line)


def _resize(array: np.ndarray, size_hw: tuple[int, int], interpolation: int) -> np.ndarray:
    """Resize an ``(h, w[, c])`` array to ``(H, W)`` (``size_hw`` is height first)."""
    return cv2.resize(array, (size_hw[1], size_hw[0]), interpolation=interpolation)


def _mix_fractions(diff: np.ndarray, ys: np.ndarray, xs: np.ndarray, radius: int) -> np.ndarray:
    """Foreground fraction of pixels ``(ys, xs)`` that mix a foreground colour with the background.

    A mixed pixel is ``I = a F + (1 - a) B``. ``F - B`` is estimated by the
    neighbour (within ``radius``) reaching farthest from the background along the
    pixel's own colour direction, so ``a = |I - B| / max_n <I_n - B, (I - B) / |I - B|>``.

    Args:
        diff: ``(h, w, 3)`` float32 picture minus background model.
        ys, xs: ``(N,)`` pixel coordinates.

    Returns:
        ``(N,)`` float32 in ``[0, 1]``.
    """
    height, width = diff.shape[:2]
    own = diff[ys, xs]
    length = np.maximum(np.linalg.norm(own, axis=1), 1e-3)
    direction = own / length[:, None]
    reach = length.copy()
    for dy in range(-radius, radius + 1):
        ny = np.clip(ys + dy, 0, height - 1)
        for dx in range(-radius, radius + 1):
            if dy or dx:
                nx = np.clip(xs + dx, 0, width - 1)
                np.maximum(reach, np.einsum("nc,nc->n", diff[ny, nx], direction), out=reach)
    return np.clip(length / reach, 0.0, 1.0).astype(np.float32)


def _soft_edges(
    crop: np.ndarray, background: np.ndarray, mask: np.ndarray, *, min_contrast: float, max_peel: int = 8
) -> np.ndarray:
    """Soft mask from a hard cut: 1 inside, fractional on the outer edge, 0 outside.

    The cut's edge pixels get their foreground fraction (:func:`_mix_fractions`);
    those under one half are peeled off and the new edge is measured again, until
    the edge holds (at most ``max_peel`` rounds). Peeling strips halos a plain
    threshold lets in (JPEG ringing and colour bleed around thin strands) and
    stops at fully covered pixels; peeled pixels keep their small fraction.
    Only the outer edge is measured: a pale interior next to dark line art is
    not a mixed pixel. Edge pixels within ``min_contrast`` of the background are
    peeled too (at most just under one half): isolated ringing specks have no
    strong neighbour to measure them against.

    Args:
        crop: ``(h, w, 3)`` uint8 RGB.
        background: ``(h, w, 3)`` float32 background model colour.
        mask: ``(h, w)`` bool.
        min_contrast: RGB distance to the background below which an edge pixel is peeled.

    Returns:
        ``(h, w)`` float32 in ``[0, 1]``.
    """
    soft = mask.astype(np.float32)
    diff = crop.astype(np.float32) - background
    current = mask.astype(np.uint8)
    kernel = np.ones((3, 3), np.uint8)
    for _ in range(max_peel):
        interior = cv2.erode(current, kernel, borderType=cv2.BORDER_REPLICATE)
        ys, xs = np.nonzero(current > interior)
        if len(ys) == 0:
            break
        fractions = _mix_fractions(diff, ys, xs, radius=3)
        faint = np.linalg.norm(diff[ys, xs], axis=1) <= min_contrast
        fractions[faint] = np.minimum(fractions[faint], np.float32(COVER_THRESHOLD * 0.98))
        soft[ys, xs] = fractions
        peel = fractions < COVER_THRESHOLD
        if not peel.any():
            break
        current[ys[peel], xs[peel]] = 0
    return soft


def _tighten(box: Box, soft: np.ndarray) -> tuple[Box, np.ndarray] | None:
    """Shrink a box and its ``(h, w)`` soft mask to the pixels above zero; ``None`` when there are none."""
    inner = tight_box(soft > 0)
    if inner is None:
        return None
    c0, r0, c1, r1 = inner
    x0, y0 = box[0], box[1]
    return (x0 + c0, y0 + r0, x0 + c1, y0 + r1), np.ascontiguousarray(soft[r0:r1, c0:c1], dtype=np.float32)


def _run_grabcut(image: np.ndarray, init: np.ndarray, iterations: int) -> np.ndarray | None:
    """GrabCut from an ``(h, w)`` label mask (``cv2.GC_*``); ``(h, w)`` bool foreground.

    ``None`` when it cannot run: it needs some (probable) foreground and some
    (probable) background, with colours enough for its mixture models.
    """
    if np.isin(init, (cv2.GC_FGD, cv2.GC_PR_FGD)).sum() < 2 or np.isin(init, (cv2.GC_BGD, cv2.GC_PR_BGD)).sum() < 2:
        return None
    labels = init.copy()
    bgd_model = np.zeros((1, 65), np.float64)
    fgd_model = np.zeros((1, 65), np.float64)
    try:
        cv2.grabCut(np.ascontiguousarray(image), labels, None, bgd_model, fgd_model, iterations, cv2.GC_INIT_WITH_MASK)
    except cv2.error:
        return None
    return np.isin(labels, (cv2.GC_FGD, cv2.GC_PR_FGD))


# ---------------------------------------------------------------------- the segmenter
@dataclass(frozen=True, eq=False)
class _Analysis:
    """What ``segment`` and ``segment_at`` share about one picture."""

    image_size: tuple[int, int]
    small: np.ndarray  # (h, w, 3) uint8 work-resolution picture
    model: BackgroundModel
    busy: bool
    high: float  # work-resolution "surely foreground" distance
    full_low: float  # full-resolution hysteresis thresholds
    full_high: float
    full_hole_contrast: float  # full-resolution: holes farther than this from the model are filled
    distance: np.ndarray  # (h, w) float32 work-resolution distance to the model
    seeds: np.ndarray  # (h, w) bool: pixels that mark characters
    cut: np.ndarray  # (h, w) bool coarse cut, specks included

    @property
    def factor(self) -> tuple[float, float]:
        """``(fx, fy)``: full-resolution pixels per work pixel."""
        return (self.image_size[1] / self.small.shape[1], self.image_size[0] / self.small.shape[0])

    @property
    def notes(self) -> tuple[str, ...]:
        """User-facing notes for results on this picture."""
        return (BUSY_BACKGROUND_NOTE,) if self.busy else ()


class ClassicSegmenter:
    """Weight-free character segmenter for flat and gradient backgrounds.

    Implements the :class:`~inference.segmenter.Segmenter` and
    :class:`~inference.segmenter.PointSegmenter` protocols. Apart from its options
    it only remembers the analyses of the last few pictures named by a digest (for
    repeated point prompts), thread-safely, so one instance may serve many pictures.
    """

    name = "classic"

    def __init__(self, *, options: ClassicOptions | None = None) -> None:
        """Make a segmenter.

        Args:
            options: tuning; ``None`` for the :class:`ClassicOptions` defaults.
        """
        self.options = options if options is not None else ClassicOptions()
        self._analyses: OnceCache[_Analysis] = OnceCache(ANALYSES_KEPT)

    # ------------------------------------------------------------------ public API
    def segment(self, image: np.ndarray) -> Instances:
        """Find every character in a picture.

        Args:
            image: ``(H, W, 3)`` uint8 RGB, any size.

        Returns:
            Instances (backend ``"classic"``): one per connected character, soft
            float32 masks in ``[0, 1]`` cropped to their boxes, scores in ``[0, 1]``:
            contrast with the background (about 0.75-0.9 for line art on a flat
            colour or gradient) x size (lower for parts under 20 speck areas),
            halved on busy backgrounds. None for a picture of one colour, or one
            with a side shorter than :data:`MIN_SIDE_PX`. On busy backgrounds
            ``notes`` holds :data:`BUSY_BACKGROUND_NOTE`.

        Raises:
            ValueError: ``image`` is not ``(H, W, 3)`` uint8.
        """
        image = np.ascontiguousarray(check_rgb_image(image))
        size = image.shape[:2]
        if min(size) < MIN_SIDE_PX:
            return Instances.empty(size, self.name)
        analysis = self._analyse(image)
        count, labels, stats = self._parts(analysis)
        min_area = self._min_work_area(analysis)
        boxes, masks, scores = [], [], []
        for label in range(1, count):
            if stats[label, cv2.CC_STAT_AREA] < min_area:
                continue
            cut = self._cut_part(image, analysis, labels, label, stats[label])
            if cut is None:
                continue
            boxes.append(cut[0])
            masks.append(cut[1])
            scores.append(self._score(analysis, labels == label))
        return Instances(
            size, np.array(boxes, np.int32).reshape(-1, 4), tuple(masks), np.array(scores, np.float32), self.name,
            notes=analysis.notes,
        )

    def segment_at(self, image: np.ndarray, click: Click, *, digest: str | None = None) -> Instances:
        """Cut out whatever lies under one click (include and exclude clicks alike).

        Meant for clicks no instance of :meth:`segment` covers: a character too
        small for it (a speck there), a thin detached part, or a character lost
        in a busy background.

        1. The coarse-cut part under the click (or a work pixel next to it), specks
           allowed, cut at full resolution as in :meth:`segment`.
        2. Else, on a clean background, a full-resolution colour cut grown from the
           clicked pixel when its colour stands out from the background model.
        3. Else, on a busy background, GrabCut in a window around the click, the
           click marked foreground.

        Args:
            image: ``(H, W, 3)`` uint8 RGB.
            click: pixel coordinates; a click outside the picture gives nothing.
            digest: names the picture (a content hash): its analysis (background model,
                coarse cut) is then computed once for the next clicks on it.

        Returns:
            At most one instance, covering the clicked pixel (soft value >= 0.5);
            none when the click lies on background. ``notes`` as for :meth:`segment`.

        Raises:
            ValueError: ``image`` is not ``(H, W, 3)`` uint8.
        """
        image = np.ascontiguousarray(check_rgb_image(image))
        size = image.shape[:2]
        height, width = size
        if min(size) < MIN_SIDE_PX or not (0 <= click.x < width and 0 <= click.y < height):
            return Instances.empty(size, self.name)
        analysis = self._analysis_for(image, digest)
        found = self._part_at(image, analysis, click)
        if found is None:
            grow = self._grabcut_at if analysis.busy else self._grow_from
            found = grow(image, analysis, click)
        if found is None:
            return Instances.empty(size, self.name).with_notes(*analysis.notes)
        (x0, y0, x1, y1), soft, score = found
        if not (x0 <= click.x < x1 and y0 <= click.y < y1) or soft[click.y - y0, click.x - x0] < COVER_THRESHOLD:
            return Instances.empty(size, self.name).with_notes(*analysis.notes)
        return Instances(
            size, np.array([(x0, y0, x1, y1)], np.int32), (soft,), np.array([score], np.float32), self.name,
            notes=analysis.notes,
        )

    # ------------------------------------------------------------------ analysis
    def _analysis_for(self, image: np.ndarray, digest: str | None) -> _Analysis:
        """:meth:`_analyse`, remembered for the last :data:`ANALYSES_KEPT` pictures named by ``digest``."""
        if digest is None:
            return self._analyse(image)
        return self._analyses.get(f"{digest}:{image.shape}", lambda: self._analyse(image))

    def _analyse(self, image: np.ndarray) -> _Analysis:
        """Background model, thresholds, busy decision and coarse cut at work resolution."""
        opts = self.options
        height, width = image.shape[:2]
        scale = min(1.0, opts.work_long_side / max(height, width))
        small_size = (max(MIN_SIDE_PX, round(height * scale)), max(MIN_SIDE_PX, round(width * scale)))
        small = image if small_size == (height, width) else _resize(image, small_size, cv2.INTER_AREA)
        band_px = max(2, round(opts.border_fraction * min(small_size)))
        model = fit_background(small, band_px=band_px)
        high = max(opts.min_contrast, opts.noise_multiplier * model.noise)
        distance = model.distance(small, small_size)
        band = border_band(small_size, band_px)
        unexplained = float(np.mean(distance[band] > high))
        busy = model.noise > opts.busy_noise or unexplained > opts.busy_unexplained_fraction
        full_noise = model.noise
        if small is not image:
            full_noise = _border_noise(image, model, max(2, round(band_px * max(height, width) / max(small_size))))
        full_high = max(opts.min_contrast, opts.noise_multiplier * full_noise)
        min_area = self._min_work_area_for(small_size, (height, width))
        if busy:
            seeds = _outline_regions(
                image, small_size, max_gray=opts.outline_max_gray, min_contrast=opts.outline_min_contrast,
                min_area=min_area,
            )
            if model.noise <= 3.0 * opts.busy_noise:  # textured but one colour: colour difference still tells
                seeds |= distance > high
            cut = self._grabcut_picture(small, seeds, band & (distance <= high))
            cut = _fill_holes(cut, max_small_px=opts.small_hole_fraction * float(cut.sum()))
        else:
            seeds = distance > high
            cut = _parts_touching(distance > high / 2.0, seeds)
            cut = _fill_holes(
                cut,
                max_small_px=opts.small_hole_fraction * float(cut.sum()),
                distance=distance,
                hole_contrast=max(6.0, opts.noise_multiplier * model.noise),
            )
        return _Analysis(
            image_size=(height, width),
            small=small,
            model=model,
            busy=busy,
            high=high,
            full_low=full_high / 2.0,
            full_high=full_high,
            full_hole_contrast=max(6.0, opts.noise_multiplier * full_noise),
            distance=distance,
            seeds=seeds,
            cut=cut,
        )

    def _grabcut_picture(self, small: np.ndarray, seeds: np.ndarray, surely_background: np.ndarray) -> np.ndarray:
        """Busy background: GrabCut from the seeds; the parts of its foreground that hold a seed."""
        init = np.full(seeds.shape, cv2.GC_PR_BGD, np.uint8)
        init[seeds] = cv2.GC_PR_FGD
        init[surely_background & ~seeds] = cv2.GC_BGD
        cut = _run_grabcut(small, init, self.options.grabcut_iterations)
        if cut is None:
            return seeds.copy()
        cut = cv2.morphologyEx(cut.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)).astype(bool)
        return _parts_touching(cut, seeds)

    @staticmethod
    def _parts(analysis: _Analysis) -> tuple[int, np.ndarray, np.ndarray]:
        """Label the coarse cut into character parts: ``(count incl. 0, (h, w) int32 labels, (count, 5) stats)``.

        On clean backgrounds a part is an 8-connected piece of the cut. On busy ones
        GrabCut tends to sever thin joints (neck, strands), so pieces less than
        3 work pixels apart form one part. ``stats`` rows are ``x, y, w, h`` of the
        part grown by one work pixel and the ``area`` of its own pixels.
        """
        if not analysis.busy:
            return _components(analysis.cut)
        grown = cv2.dilate(analysis.cut.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=1).astype(bool)
        count, labels, stats = _components(grown)
        labels = np.where(analysis.cut, labels, 0).astype(np.int32)
        stats = stats.copy()
        stats[:, cv2.CC_STAT_AREA] = np.bincount(labels.ravel(), minlength=count)[:count]
        return count, labels, stats

    def _min_work_area_for(self, small_size: tuple[int, int], image_size: tuple[int, int]) -> float:
        """Speck limit in work pixels for a picture of ``image_size`` worked on at ``small_size``."""
        small_area = small_size[0] * small_size[1]
        per_work_px = image_size[0] * image_size[1] / small_area
        return max(self.options.min_area_fraction * small_area, self.options.min_area_px / per_work_px, 1.0)

    def _min_work_area(self, analysis: _Analysis) -> float:
        """Speck limit in work pixels."""
        return self._min_work_area_for(analysis.small.shape[:2], analysis.image_size)

    def _score(self, analysis: _Analysis, part: np.ndarray) -> float:
        """Confidence in ``[0, 1]`` of one work-resolution part (``(h, w)`` bool).

        ``evidence x size x cleanliness``:

        * evidence, clean background: the part's 90th-percentile distance to the
          background model over itself plus twice the foreground threshold (about
          0.8-0.9 for dark line art on a flat colour, lower for faint parts);
          busy background: the share of the part that was seeded (line art
          enclosure or strong colour difference).
        * size: square root of the area over 20 speck areas, capped at 1.
        * cleanliness: 1, or 0.5 on a busy background.
        """
        area = float(part.sum())
        if area == 0:
            return 0.0
        if analysis.busy:
            evidence = float(analysis.seeds[part].mean())
        else:
            p90 = float(np.percentile(analysis.distance[part], 90))
            evidence = p90 / (p90 + 2.0 * analysis.high)
        size = min(1.0, float(np.sqrt(area / (20.0 * self._min_work_area(analysis)))))
        clean = 0.5 if analysis.busy else 1.0
        return float(np.clip(evidence * size * clean, 0.0, 1.0))

    # ------------------------------------------------------------------ full resolution
    def _full_box(self, analysis: _Analysis, stat: np.ndarray, margin_work: int) -> Box:
        """Full-resolution ``xyxy`` box of a work-resolution part's stats row, grown by ``margin_work`` work pixels."""
        fx, fy = analysis.factor
        height, width = analysis.image_size
        x, y, w, h = (int(v) for v in stat[:4])
        x0 = max(0, int(np.floor((x - margin_work) * fx)))
        y0 = max(0, int(np.floor((y - margin_work) * fy)))
        x1 = min(width, int(np.ceil((x + w + margin_work) * fx)))
        y1 = min(height, int(np.ceil((y + h + margin_work) * fy)))
        return x0, y0, x1, y1

    def _cut_part(
        self, image: np.ndarray, analysis: _Analysis, labels: np.ndarray, label: int, stat: np.ndarray
    ) -> tuple[Box, np.ndarray] | None:
        """Cut one work-resolution part (``labels == label``) out at full resolution.

        Returns:
            ``(box xyxy, soft mask cropped to box)``, or ``None`` if nothing is left.
        """
        fx, fy = analysis.factor
        box = self._full_box(analysis, stat, margin_work=4)
        x0, y0, x1, y1 = box
        if analysis.busy:
            part = (labels[stat[1] : stat[1] + stat[3], stat[0] : stat[0] + stat[2]] == label).astype(np.float32)
            # Inverse map: full pixel centre x + 0.5 lies at work coordinate (x + 0.5) / fx - 0.5.
            affine = np.array(
                [[1.0 / fx, 0.0, (x0 + 0.5) / fx - 0.5 - stat[0]], [0.0, 1.0 / fy, (y0 + 0.5) / fy - 0.5 - stat[1]]],
                np.float64,
            )
            soft = cv2.warpAffine(
                part, affine, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                borderMode=cv2.BORDER_CONSTANT, borderValue=0,
            )
            return _tighten(box, np.clip(soft, 0.0, 1.0))
        # The work-resolution label under each full-resolution pixel of the box.
        cols = np.minimum(((np.arange(x0, x1) + 0.5) / fx).astype(np.int64), labels.shape[1] - 1)
        rows = np.minimum(((np.arange(y0, y1) + 0.5) / fy).astype(np.int64), labels.shape[0] - 1)
        under = labels[rows[:, None], cols[None, :]]
        own = under == label
        reach = int(np.ceil(2.0 * max(fx, fy))) + 2
        region = cv2.dilate(own.astype(np.uint8), np.ones((2 * reach + 1, 2 * reach + 1), np.uint8)).astype(bool)
        region &= (under == 0) | own  # never take pixels of a neighbouring part
        crop = image[y0:y1, x0:x1]
        mask = self._colour_cut(crop, analysis, box, region, own)
        if mask is None:
            return None
        background = analysis.model.predict(analysis.image_size, box)
        return _tighten(box, _soft_edges(crop, background, mask, min_contrast=analysis.full_high))

    def _colour_cut(
        self, crop: np.ndarray, analysis: _Analysis, box: Box, region: np.ndarray, seeds: np.ndarray
    ) -> np.ndarray | None:
        """Full-resolution colour cut in a box: hysteresis inside ``region`` from ``seeds``, holes filled.

        Args:
            crop: ``(h, w, 3)`` uint8 RGB, the picture's ``box``.
            region: ``(h, w)`` bool: where the character may be.
            seeds: ``(h, w)`` bool: pixels of the character; parts of the cut are
                kept when they hold a seed far from the background model.

        Returns:
            ``(h, w)`` bool, or ``None`` when nothing is cut.
        """
        distance = analysis.model.distance(crop, analysis.image_size, box)
        weak = (distance > analysis.full_low) & region
        strong = weak & seeds & (distance > analysis.full_high)
        if not strong.any():
            strong = weak & seeds
        if not strong.any():
            return None
        mask = _parts_touching(weak, strong)
        return _fill_holes(
            mask,
            max_small_px=self.options.small_hole_fraction * float(mask.sum()),
            distance=distance,
            hole_contrast=analysis.full_hole_contrast,
        )

    # ------------------------------------------------------------------ clicks
    def _part_at(
        self, image: np.ndarray, analysis: _Analysis, click: Click
    ) -> tuple[Box, np.ndarray, float] | None:
        """The coarse-cut part under the click, or under a work pixel next to it, cut at full resolution."""
        fx, fy = analysis.factor
        count, labels, stats = self._parts(analysis)
        sx = min(int(click.x / fx), labels.shape[1] - 1)
        sy = min(int(click.y / fy), labels.shape[0] - 1)
        label = int(labels[sy, sx])
        if label == 0:
            near = labels[max(0, sy - 1) : sy + 2, max(0, sx - 1) : sx + 2]
            near = near[near > 0]
            if near.size == 0:
                return None
            label = int(np.bincount(near).argmax())
        cut = self._cut_part(image, analysis, labels, label, stats[label])
        if cut is None:
            return None
        return cut[0], cut[1], self._score(analysis, labels == label)

    def _grow_from(self, image: np.ndarray, analysis: _Analysis, click: Click) -> tuple[Box, np.ndarray, float] | None:
        """Clean background: a full-resolution colour cut grown from the clicked pixel.

        For parts the work resolution lost (too thin or too small). Nothing when
        the clicked pixel has the background's colour. The window around the click
        doubles until the cut no longer touches its edge.
        """
        height, width = analysis.image_size
        one = (click.x, click.y, click.x + 1, click.y + 1)
        pixel = image[click.y : click.y + 1, click.x : click.x + 1]
        if analysis.model.distance(pixel, analysis.image_size, one)[0, 0] <= analysis.full_high:
            return None
        half = 32
        while True:
            box = (
                max(0, click.x - half),
                max(0, click.y - half),
                min(width, click.x + half + 1),
                min(height, click.y + half + 1),
            )
            x0, y0, x1, y1 = box
            crop = image[y0:y1, x0:x1]
            seeds = np.zeros((y1 - y0, x1 - x0), bool)
            seeds[click.y - y0, click.x - x0] = True
            mask = self._colour_cut(crop, analysis, box, np.ones_like(seeds), seeds)
            if mask is None:
                return None
            inner_edges = (
                (y0 > 0 and mask[0].any())
                or (y1 < height and mask[-1].any())
                or (x0 > 0 and mask[:, 0].any())
                or (x1 < width and mask[:, -1].any())
            )
            if not inner_edges or box == (0, 0, width, height):
                break
            half *= 2
        background = analysis.model.predict(analysis.image_size, box)
        tight = _tighten(box, _soft_edges(crop, background, mask, min_contrast=analysis.full_high))
        if tight is None:
            return None
        distance = analysis.model.distance(crop, analysis.image_size, box)[mask]
        p90 = float(np.percentile(distance, 90))
        fx, fy = analysis.factor
        size = min(1.0, float(np.sqrt(mask.sum() / (fx * fy) / (20.0 * self._min_work_area(analysis)))))
        return tight[0], tight[1], p90 / (p90 + 2.0 * analysis.full_high) * size

    def _grabcut_at(self, image: np.ndarray, analysis: _Analysis, click: Click) -> tuple[Box, np.ndarray, float] | None:
        """Busy background: GrabCut in a square window around the click, a disc at the click marked foreground.

        Nothing when GrabCut keeps (nearly) the whole window (nothing stands out
        from its surroundings there) or no more than a speck around the click.
        Score: half for the click itself plus half the :meth:`_score` of the part.
        """
        fx, fy = analysis.factor
        small = analysis.small
        sh, sw = small.shape[:2]
        sx, sy = min(int(click.x / fx), sw - 1), min(int(click.y / fy), sh - 1)
        half = max(4, int(self.options.click_window_fraction * min(sh, sw) / 2))
        x0, y0, x1, y1 = max(0, sx - half), max(0, sy - half), min(sw, sx + half + 1), min(sh, sy + half + 1)
        # The window plus a frame of definite background around it (where the picture allows).
        gx0, gy0, gx1, gy1 = max(0, x0 - 4), max(0, y0 - 4), min(sw, x1 + 4), min(sh, y1 + 4)
        init = np.full((gy1 - gy0, gx1 - gx0), cv2.GC_BGD, np.uint8)
        window = init[y0 - gy0 : y1 - gy0, x0 - gx0 : x1 - gx0]
        window[:] = cv2.GC_PR_BGD
        window[analysis.seeds[y0:y1, x0:x1]] = cv2.GC_PR_FGD
        if (gx0, gy0, gx1, gy1) == (x0, y0, x1, y1):  # the window is the whole picture: its border is background
            init[:2] = init[-2:] = cv2.GC_BGD
            init[:, :2] = init[:, -2:] = cv2.GC_BGD
        cv2.circle(init, (sx - gx0, sy - gy0), 2, int(cv2.GC_FGD), -1)
        cut = _run_grabcut(small[gy0:gy1, gx0:gx1], init, self.options.grabcut_iterations)
        if cut is None:
            return None
        count, labels, stats = _components(cut)
        label = int(labels[sy - gy0, sx - gx0])
        area = stats[label, cv2.CC_STAT_AREA]
        if label == 0 or area < self._min_work_area(analysis) or area > 0.9 * (x1 - x0) * (y1 - y0):
            return None  # GrabCut kept only the marked disc, or the whole window
        part = np.zeros((sh, sw), bool)
        part[gy0:gy1, gx0:gx1] = labels == label
        part = _fill_holes(part, max_small_px=self.options.small_hole_fraction * float(part.sum()))
        count, labels, stats = _components(part)
        cut_part = self._cut_part(image, analysis, labels, 1, stats[1])
        if cut_part is None:
            return None
        # The click itself is evidence: half the score, the other half as for segment().
        return cut_part[0], cut_part[1], 0.5 * (0.5 + self._score(analysis, part))
