"""The weight-free default segmenter: cut characters out of flat and gradient backgrounds.

:class:`ClassicSegmenter` needs no model. It works in four steps:

1. **Background model.** A smooth colour surface (a quadratic in ``x`` and ``y``
   per RGB channel) is fitted robustly to a band along the picture border, so a
   flat colour or a gradient is described exactly and a character touching the
   border is ignored as an outlier. The fit's residual noise and the share of the
   border it fails to explain decide whether the background is *busy*.
2. **Coarse cut** at a reduced "work" resolution (long side 640 px): pixels whose
   colour is far from the background model (hysteresis between two thresholds),
   small enclosed holes filled. On busy backgrounds the colour model is not
   trusted alone: :func:`cv2.grabCut` re-labels the picture, starting from it.
3. **Instances** are the connected parts of the coarse cut; specks below a
   minimum area are dropped.
4. **Full-resolution edges.** Each instance is cut again at full resolution in
   its box, from the full-resolution colour distance to the background model, so
   2-3 px hair strands survive; anti-aliased edge pixels get a fractional value
   ``|I - B| / |F - B|`` (picture, background, nearby foreground colour).

Busy backgrounds (painted scenery, texture) get a note that the anime model does
better there. :meth:`ClassicSegmenter.segment_at` cuts out whatever lies under
one click.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from inference.instances import COVER_THRESHOLD, Click, Instances

#: How to install the anime model; said to the user on busy backgrounds.
ANIME_MODEL_INSTALL = "python -m inference.weights download rtmdet"

#: Note attached to results on busy backgrounds.
BUSY_BACKGROUND_NOTE = (
    "Busy background: the classic segmenter works best on flat or gradient backgrounds, "
    "so these cutouts may include background pieces or miss parts of a character. "
    f"The anime model does better here; install it with `{ANIME_MODEL_INSTALL}`."
)

#: Pictures with a shorter side than this have no room for a border and a character.
MIN_SIDE_PX = 8

# Per-channel noise -> Euclidean RGB distance: for Gaussian noise of per-channel
# standard deviation s, the median of |residual| over 3 channels is about 1.54 s.
_CHI3_MEDIAN = 1.538


@dataclass(frozen=True)
class ClassicOptions:
    """Tuning of :class:`ClassicSegmenter`. The defaults suit uploads up to 36 MP.

    Attributes:
        work_long_side: long side in pixels of the reduced picture used for the
            background fit, the coarse cut and GrabCut (full resolution is used for edges).
        border_fraction: width of the border band the background is fitted to, as
            a fraction of the picture's shorter side (at least 2 work pixels).
        min_contrast: RGB distance (0-441) from the background model above which a
            pixel surely belongs to a character; the low hysteresis threshold is half.
        noise_multiplier: the thresholds rise to this many times the border noise
            (per-channel standard deviation) on noisy backgrounds.
        min_area_fraction: parts smaller than this fraction of the picture are specks.
        min_area_px: parts smaller than this many (full-resolution) pixels are specks.
        small_hole_fraction: background-coloured holes enclosed by a character are
            filled when smaller than this fraction of the character's area.
        busy_noise: border noise (per-channel standard deviation, 0-255) above which
            the background counts as busy.
        busy_unexplained_fraction: share of the border the background model fails
            to explain above which the background counts as busy.
        grabcut_iterations: GrabCut iterations on busy backgrounds and for clicks.
        click_window_fraction: on busy backgrounds, a click is cut out of a square
            window this fraction of the shorter side, centred on the click.
    """

    work_long_side: int = 640
    border_fraction: float = 0.02
    min_contrast: float = 20.0
    noise_multiplier: float = 4.0
    min_area_fraction: float = 0.001
    min_area_px: int = 64
    small_hole_fraction: float = 0.02
    busy_noise: float = 5.0
    busy_unexplained_fraction: float = 0.5
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
    ``v = 2 (y + 0.5) / H - 1`` in ``[-1, 1]``, so one model serves every resolution
    of the same picture.

    Attributes:
        coefficients: ``(K, 3)`` float64, one column per RGB channel (K = 1, 3 or 6
            for a constant, plane or quadratic).
        noise: per-channel standard deviation (0-255) of the border pixels the
            model explains, measured at the resolution it was fitted on.
        unexplained_fraction: share of the border band, in ``[0, 1]``, farther than
            the foreground threshold from the model (characters touching the
            border, or a background too varied for a smooth surface).
    """

    coefficients: np.ndarray
    noise: float
    unexplained_fraction: float

    def predict(self, image_size: tuple[int, int], box: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """Background colour of an ``(H, W)`` picture, or of the ``xyxy`` box of it.

        Returns:
            ``(h, w, 3)`` float32 RGB in about ``[0, 255]`` (not clipped).
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

    def distance(self, crop: np.ndarray, image_size: tuple[int, int], box: tuple[int, int, int, int] | None = None):
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
    """``(H, W)`` bool: pixels within ``band_px`` of the picture's edge."""
    height, width = image_size
    band = np.zeros((height, width), bool)
    band[:band_px] = band[height - band_px :] = True
    band[:, :band_px] = band[:, width - band_px :] = True
    return band


def fit_background(image: np.ndarray, *, band_px: int, max_samples: int = 8000) -> BackgroundModel:
    """Fit a smooth background surface to the border band of a picture, ignoring outliers.

    Iteratively re-weighted least squares: fit, drop border pixels farther than
    about four noise deviations from the surface, refit. ``unexplained_fraction``
    is the share of border pixels dropped as outliers at the end.

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
    for _ in range(6):
        coef = np.linalg.lstsq(design[inliers], colours[inliers], rcond=None)[0]
        residual = np.linalg.norm(colours - design @ coef, axis=1)
        sigma = float(np.median(residual[inliers])) / _CHI3_MEDIAN
        cutoff = max(4.0 * sigma, 4.0)
        new_inliers = residual <= cutoff
        if new_inliers.sum() < max(2 * terms, len(ys) // 5) or np.array_equal(new_inliers, inliers):
            break
        inliers = new_inliers
    noise = float(np.sqrt(np.mean(residual[inliers] ** 2) / 3.0)) if inliers.any() else 0.0
    return BackgroundModel(coef, noise, float(np.mean(~inliers)))


# ---------------------------------------------------------------------- mask helpers
def _components(mask: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """8-connected parts of a bool mask: ``(count incl. label 0, (H, W) int32 labels, stats)``."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return count, labels, stats


def _hysteresis(weak: np.ndarray, strong: np.ndarray) -> np.ndarray:
    """``weak`` pixels 8-connected to at least one ``strong`` pixel (both ``(H, W)`` bool)."""
    count, labels, _ = _components(weak)
    hit = np.zeros(count, bool)
    hit[np.unique(labels[strong & weak])] = True
    hit[0] = False
    return hit[labels]


def _fill_small_holes(mask: np.ndarray, max_hole_px: float) -> np.ndarray:
    """Fill holes: parts of ``~mask`` (8-connected) that do not touch the array's edge
    and have fewer than ``max_hole_px`` pixels. Larger enclosed holes are taken to
    be background showing through (e.g. between an arm and the body)."""
    count, labels, stats = _components(~mask)
    if count <= 1:
        return mask
    height, width = mask.shape
    x, y, w, h, area = (stats[:, i] for i in range(5))
    enclosed = (x > 0) & (y > 0) & (x + w < width) & (y + h < height) & (area < max_hole_px)
    enclosed[0] = False  # label 0 is the mask itself
    if not enclosed.any():
        return mask
    return mask | enclosed[labels]


def _resize(array: np.ndarray, size_hw: tuple[int, int], interpolation: int) -> np.ndarray:
    """Resize an ``(h, w[, c])`` array to ``(H, W)`` with OpenCV (``size_hw`` is height first)."""
    return cv2.resize(array, (size_hw[1], size_hw[0]), interpolation=interpolation)


def _soft_edges(crop: np.ndarray, background: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Soft mask: 1 inside ``mask``, fractional on its edge, 0 outside.

    An edge pixel mixes foreground ``F`` and background ``B``: ``I = a F + (1 - a) B``.
    ``F - B`` is estimated as the neighbour (5x5) reaching farthest from the
    background in the pixel's own colour direction, so
    ``a = |I - B| / max_n <I_n - B, (I - B) / |I - B|>``.

    Args:
        crop: ``(h, w, 3)`` uint8 RGB.
        background: ``(h, w, 3)`` float32 background model colour.
        mask: ``(h, w)`` bool.

    Returns:
        ``(h, w)`` float32 in ``[0, 1]``.
    """
    soft = mask.astype(np.float32)
    kernel = np.ones((3, 3), np.uint8)
    interior = cv2.erode(mask.astype(np.uint8), kernel, borderType=cv2.BORDER_REPLICATE).astype(bool)
    ys, xs = np.nonzero(mask & ~interior)
    if len(ys) == 0:
        return soft
    diff = crop.astype(np.float32) - background
    own = diff[ys, xs]
    length = np.maximum(np.linalg.norm(own, axis=1), 1e-3)
    direction = own / length[:, None]
    height, width = mask.shape
    reach = length.copy()
    for dy in range(-2, 3):
        ny = np.clip(ys + dy, 0, height - 1)
        for dx in range(-2, 3):
            if dy == 0 and dx == 0:
                continue
            nx = np.clip(xs + dx, 0, width - 1)
            np.maximum(reach, np.einsum("nc,nc->n", diff[ny, nx], direction), out=reach)
    soft[ys, xs] = np.clip(length / reach, 0.0, 1.0)
    return soft


# ---------------------------------------------------------------------- analysis
@dataclass(frozen=True, eq=False)
class _Analysis:
    """Everything ``segment`` and ``segment_at`` share about one picture."""

    image_size: tuple[int, int]
    small: np.ndarray  # (h, w, 3) uint8 work-resolution picture
    model: BackgroundModel
    busy: bool
    low: float  # work-resolution hysteresis thresholds (RGB distance)
    high: float
    full_low: float  # full-resolution thresholds
    full_high: float
    distance: np.ndarray  # (h, w) float32 work-resolution distance to the model
    cut: np.ndarray  # (h, w) bool coarse cut before speck removal

    @property
    def factor(self) -> tuple[float, float]:
        """``(fx, fy)``: full-resolution pixels per work pixel."""
        return (self.image_size[1] / self.small.shape[1], self.image_size[0] / self.small.shape[0])


class ClassicSegmenter:
    """Weight-free character segmenter for flat and gradient backgrounds.

    Implements the :class:`~inference.segmenter.Segmenter` and
    :class:`~inference.segmenter.PointSegmenter` protocols.
    """

    name = "classic"

    def __init__(self, *, options: ClassicOptions | None = None) -> None:
        """Args: options: tuning (defaults when ``None``)."""
        self.options = options if options is not None else ClassicOptions()

    # ------------------------------------------------------------------ public API
    def segment(self, image: np.ndarray) -> Instances:
        """Find every character in a picture.

        Args:
            image: ``(H, W, 3)`` uint8 RGB, any size.

        Returns:
            Instances (backend ``"classic"``): one per connected character, soft
            float32 masks in ``[0, 1]`` cropped to their boxes, scores in ``[0, 1]``
            (contrast with the background x size x 0.5 on busy backgrounds). No
            instances for a picture of one colour or one shorter than
            :data:`MIN_SIDE_PX`. On busy backgrounds ``notes`` holds
            :data:`BUSY_BACKGROUND_NOTE`.
        """
        image = _check_image(image)
        size = image.shape[:2]
        if min(size) < MIN_SIDE_PX:
            return Instances.empty(size, self.name)
        analysis = self._analyse(image)
        count, labels, stats = _components(analysis.cut)
        min_area = self._min_work_area(analysis)
        boxes, masks, scores = [], [], []
        for label in range(1, count):
            if stats[label, cv2.CC_STAT_AREA] < min_area:
                continue
            cut = self._cut_at_full_resolution(image, analysis, labels, label, stats[label])
            if cut is None:
                continue
            box, soft = cut
            boxes.append(box)
            masks.append(soft)
            scores.append(self._score(analysis, labels == label, min_area))
        notes = (BUSY_BACKGROUND_NOTE,) if analysis.busy else ()
        return Instances(
            size,
            np.array(boxes, np.int32).reshape(-1, 4),
            tuple(masks),
            np.array(scores, np.float32),
            self.name,
            notes=notes,
        )

    def segment_at(self, image: np.ndarray, click: Click) -> Instances:
        """Cut out whatever lies under one click (include and exclude clicks alike).

        Meant for clicks no instance of :meth:`segment` covers: a character too
        small or too faint for it, or one lost in a busy background.

        * Clean background: the connected part of the colour cut under the click
          (specks allowed), cut again at full resolution.
        * Busy background: GrabCut in a window around the click, seeded with it.

        Args:
            image: ``(H, W, 3)`` uint8 RGB.
            click: pixel coordinates; outside the picture gives no instance.

        Returns:
            At most one instance, covering the clicked pixel (soft value >= 0.5);
            empty when the click lies on background. ``notes`` as for :meth:`segment`.
        """
        image = _check_image(image)
        size = image.shape[:2]
        height, width = size
        if min(size) < MIN_SIDE_PX or not (0 <= click.x < width and 0 <= click.y < height):
            return Instances.empty(size, self.name)
        analysis = self._analyse(image)
        notes = (BUSY_BACKGROUND_NOTE,) if analysis.busy else ()
        cut = None
        if analysis.busy:
            cut = self._grabcut_at(image, analysis, click)
        else:
            cut = self._colour_cut_at(image, analysis, click)
        if cut is None:
            return Instances.empty(size, self.name).with_notes(*notes)
        box, soft, score = cut
        x0, y0, _, _ = box
        if soft[click.y - y0, click.x - x0] < COVER_THRESHOLD:
            return Instances.empty(size, self.name).with_notes(*notes)
        return Instances(size, np.array([box], np.int32), (soft,), np.array([score], np.float32), self.name, notes=notes)

    # ------------------------------------------------------------------ steps
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
        low = high / 2.0
        distance = model.distance(small, (height, width))
        band = border_band(small_size, band_px)
        unexplained = float(np.mean(distance[band] > high))
        model = BackgroundModel(model.coefficients, model.noise, unexplained)
        busy = model.noise > opts.busy_noise or unexplained > opts.busy_unexplained_fraction
        full_noise = self._full_resolution_noise(image, model, band_px, scale) if scale < 1.0 else model.noise
        full_high = max(opts.min_contrast, opts.noise_multiplier * full_noise)
        if busy:
            cut = self._grabcut_picture(small, distance, band, high)
        else:
            cut = _hysteresis(distance > low, distance > high)
        max_hole = opts.small_hole_fraction * float(cut.sum())
        cut = _fill_small_holes(cut, max_hole)
        return _Analysis(
            (height, width), small, model, busy, low, high, full_high / 2.0, full_high, distance, cut
        )

    @staticmethod
    def _full_resolution_noise(image: np.ndarray, model: BackgroundModel, band_px: int, scale: float) -> float:
        """Per-channel noise of the full-resolution border around ``model`` (explained pixels only)."""
        height, width = image.shape[:2]
        full_band = max(2, round(band_px / scale))
        ys, xs = np.nonzero(border_band((height, width), full_band))
        step = max(1, len(ys) // 20000)
        ys, xs = ys[::step], xs[::step]
        colours = image[ys, xs].astype(np.float32)
        u = 2.0 * (xs + 0.5) / width - 1.0
        v = 2.0 * (ys + 0.5) / height - 1.0
        terms = model.coefficients.shape[0]
        predicted = _poly_features(u, v, terms) @ model.coefficients
        residual = np.linalg.norm(colours - predicted, axis=1)
        sigma = float(np.median(residual)) / _CHI3_MEDIAN
        explained = residual <= max(4.0 * sigma, 4.0)
        if not explained.any():
            return model.noise
        return float(np.sqrt(np.mean(residual[explained] ** 2) / 3.0))

    def _grabcut_picture(self, small: np.ndarray, distance: np.ndarray, band: np.ndarray, high: float) -> np.ndarray:
        """Busy background: GrabCut seeded by the colour cut; border band explained by the model is background."""
        init = np.full(distance.shape, cv2.GC_PR_BGD, np.uint8)
        init[distance > high] = cv2.GC_PR_FGD
        init[band & (distance <= high)] = cv2.GC_BGD
        cut = _run_grabcut(small, init, self.options.grabcut_iterations)
        if cut is None:
            return _hysteresis(distance > high / 2.0, distance > high)
        opened = cv2.morphologyEx(cut.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
        return opened.astype(bool)

    def _min_work_area(self, analysis: _Analysis) -> float:
        """Speck limit in work pixels."""
        fx, fy = analysis.factor
        small_area = analysis.small.shape[0] * analysis.small.shape[1]
        return max(self.options.min_area_fraction * small_area, self.options.min_area_px / (fx * fy), 1.0)

    def _score(self, analysis: _Analysis, part: np.ndarray, min_area: float) -> float:
        """Confidence in ``[0, 1]`` of one work-resolution part.

        ``contrast x size x cleanliness``: contrast is the part's 90th-percentile
        distance to the background over itself plus twice the high threshold (about
        0.85 for dark line art on a flat colour); size rises as the square root of
        the area up to 1 at 20 speck areas; busy backgrounds halve the score.
        """
        p90 = float(np.percentile(analysis.distance[part], 90)) if part.any() else 0.0
        contrast = p90 / (p90 + 2.0 * analysis.high)
        size = min(1.0, float(np.sqrt(part.sum() / (20.0 * min_area))))
        clean = 0.5 if analysis.busy else 1.0
        return float(np.clip(contrast * size * clean, 0.0, 1.0))

    def _full_box(
        self, analysis: _Analysis, stat: np.ndarray, margin_work: int
    ) -> tuple[int, int, int, int]:
        """Full-resolution ``xyxy`` box of a work-resolution part's stats, grown by ``margin_work`` work pixels."""
        fx, fy = analysis.factor
        height, width = analysis.image_size
        x, y, w, h = (int(v) for v in stat[:4])
        x0 = max(0, int(np.floor((x - margin_work) * fx)))
        y0 = max(0, int(np.floor((y - margin_work) * fy)))
        x1 = min(width, int(np.ceil((x + w + margin_work) * fx)))
        y1 = min(height, int(np.ceil((y + h + margin_work) * fy)))
        return x0, y0, x1, y1

    def _cut_at_full_resolution(
        self, image: np.ndarray, analysis: _Analysis, labels: np.ndarray, label: int, stat: np.ndarray
    ) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
        """Cut one work-resolution part out again at full resolution.

        Returns:
            ``(box xyxy, soft mask cropped to box)`` or ``None`` if nothing is left.
        """
        fx, fy = analysis.factor
        margin = 3
        box = self._full_box(analysis, stat, margin)
        x0, y0, x1, y1 = box
        # The part's labels over its full-resolution box (work pixel under each full pixel).
        cols = np.minimum(((np.arange(x0, x1) + 0.5) / fx).astype(np.int64), labels.shape[1] - 1)
        rows = np.minimum(((np.arange(y0, y1) + 0.5) / fy).astype(np.int64), labels.shape[0] - 1)
        part_labels = labels[rows[:, None], cols[None, :]]
        own = part_labels == label
        crop = image[y0:y1, x0:x1]
        if analysis.busy:
            small_part = (labels == label).astype(np.float32)
            soft_full = _resize(small_part, analysis.image_size, cv2.INTER_LINEAR)[y0:y1, x0:x1]
            return _tighten(box, np.clip(soft_full, 0.0, 1.0))
        reach = int(np.ceil(2.0 * max(fx, fy))) + 2
        region = cv2.dilate(own.astype(np.uint8), np.ones((2 * reach + 1, 2 * reach + 1), np.uint8)).astype(bool)
        region &= (part_labels == 0) | own
        mask = self._colour_cut(crop, analysis, box, region, own)
        if mask is None:
            return None
        background = analysis.model.predict(analysis.image_size, box)
        return _tighten(box, _soft_edges(crop, background, mask))

    def _colour_cut(
        self,
        crop: np.ndarray,
        analysis: _Analysis,
        box: tuple[int, int, int, int],
        region: np.ndarray,
        seeds: np.ndarray,
    ) -> np.ndarray | None:
        """Full-resolution colour cut in a box: hysteresis inside ``region`` from ``seeds``, small holes filled.

        Args:
            crop: ``(h, w, 3)`` uint8 RGB, the picture's ``box``.
            region: ``(h, w)`` bool: where the character may be.
            seeds: ``(h, w)`` bool: pixels that mark the character (kept parts must touch one
                that is also far from the background).

        Returns:
            ``(h, w)`` bool or ``None`` when nothing is cut.
        """
        distance = analysis.model.distance(crop, analysis.image_size, box)
        weak = (distance > analysis.full_low) & region
        strong = weak & seeds & (distance > analysis.full_high)
        if not strong.any():
            strong = weak & seeds
        if not strong.any():
            return None
        mask = _hysteresis(weak, strong)
        return _fill_small_holes(mask, self.options.small_hole_fraction * float(mask.sum()))

    # ------------------------------------------------------------------ clicks
    def _colour_cut_at(
        self, image: np.ndarray, analysis: _Analysis, click: Click
    ) -> tuple[tuple[int, int, int, int], np.ndarray, float] | None:
        """Clean background: the colour-cut part under the click (or a work pixel next to it)."""
        fx, fy = analysis.factor
        count, labels, stats = _components(analysis.cut)
        sx = min(int(click.x / fx), labels.shape[1] - 1)
        sy = min(int(click.y / fy), labels.shape[0] - 1)
        window = labels[max(0, sy - 1) : sy + 2, max(0, sx - 1) : sx + 2]
        found = window[window > 0]
        if found.size:
            label = int(found[0]) if labels[sy, sx] == 0 else int(labels[sy, sx])
            cut = self._cut_at_full_resolution(image, analysis, labels, label, stats[label])
            if cut is not None:
                return (*cut, self._score(analysis, labels == label, self._min_work_area(analysis)))
        return self._colour_cut_in_window(image, analysis, click)

    def _colour_cut_in_window(
        self, image: np.ndarray, analysis: _Analysis, click: Click
    ) -> tuple[tuple[int, int, int, int], np.ndarray, float] | None:
        """Full-resolution colour cut from the clicked pixel, for parts too thin for the work resolution.

        The window around the click doubles until the part no longer touches its edge.
        """
        height, width = analysis.image_size
        crop = image[click.y : click.y + 1, click.x : click.x + 1]
        one = (click.x, click.y, click.x + 1, click.y + 1)
        if analysis.model.distance(crop, analysis.image_size, one)[0, 0] <= analysis.full_high:
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
            whole = box == (0, 0, width, height)
            touches = (
                (mask[0].any() and y0 > 0)
                or (mask[-1].any() and y1 < height)
                or (mask[:, 0].any() and x0 > 0)
                or (mask[:, -1].any() and x1 < width)
            )
            if whole or not touches:
                break
            half *= 2
        background = analysis.model.predict(analysis.image_size, box)
        tight = _tighten(box, _soft_edges(crop, background, mask))
        if tight is None:
            return None
        area_work = mask.sum() / (analysis.factor[0] * analysis.factor[1])
        part_distance = analysis.model.distance(crop, analysis.image_size, box)[mask]
        p90 = float(np.percentile(part_distance, 90))
        size = min(1.0, float(np.sqrt(area_work / (20.0 * self._min_work_area(analysis)))))
        return (*tight, p90 / (p90 + 2.0 * analysis.full_high) * size)

    def _grabcut_at(
        self, image: np.ndarray, analysis: _Analysis, click: Click
    ) -> tuple[tuple[int, int, int, int], np.ndarray, float] | None:
        """Busy background: GrabCut in a square window around the click, the click's neighbourhood marked foreground."""
        fx, fy = analysis.factor
        small = analysis.small
        sh, sw = small.shape[:2]
        sx = min(int(click.x / fx), sw - 1)
        sy = min(int(click.y / fy), sh - 1)
        half = max(4, int(self.options.click_window_fraction * min(sh, sw) / 2))
        x0, y0 = max(0, sx - half), max(0, sy - half)
        x1, y1 = min(sw, sx + half + 1), min(sh, sy + half + 1)
        # GrabCut works on the window plus a frame of definite background around it.
        fx0, fy0 = max(0, x0 - 4), max(0, y0 - 4)
        fx1, fy1 = min(sw, x1 + 4), min(sh, y1 + 4)
        init = np.full((fy1 - fy0, fx1 - fx0), cv2.GC_BGD, np.uint8)
        inner = init[y0 - fy0 : y1 - fy0, x0 - fx0 : x1 - fx0]
        inner[:] = cv2.GC_PR_BGD
        inner[analysis.distance[y0:y1, x0:x1] > analysis.high] = cv2.GC_PR_FGD
        cv2.circle(init, (sx - fx0, sy - fy0), 2, int(cv2.GC_FGD), -1)
        cut = _run_grabcut(np.ascontiguousarray(small[fy0:fy1, fx0:fx1]), init, self.options.grabcut_iterations)
        if cut is None:
            return None
        count, labels, stats = _components(cut)
        label = int(labels[sy - fy0, sx - fx0])
        if label == 0:
            return None
        area = float(stats[label, cv2.CC_STAT_AREA])
        if area > 0.9 * (x1 - x0) * (y1 - y0):
            return None  # the whole window: nothing stands out from its surroundings
        part = np.zeros((sh, sw), np.float32)
        part[fy0:fy1, fx0:fx1] = labels == label
        part = _fill_small_holes(part > 0, self.options.small_hole_fraction * area).astype(np.float32)
        full = np.clip(_resize(part, analysis.image_size, cv2.INTER_LINEAR), 0.0, 1.0)
        tight = _tighten((0, 0, analysis.image_size[1], analysis.image_size[0]), full)
        if tight is None:
            return None
        return (*tight, self._score(analysis, part > 0, self._min_work_area(analysis)))


def _run_grabcut(image: np.ndarray, init: np.ndarray, iterations: int) -> np.ndarray | None:
    """GrabCut from a label mask; ``(h, w)`` bool foreground, or ``None`` when it cannot run.

    GrabCut needs both some (probable) foreground and some definite or probable background.
    """
    has_fg = np.isin(init, (cv2.GC_FGD, cv2.GC_PR_FGD))
    has_bg = np.isin(init, (cv2.GC_BGD, cv2.GC_PR_BGD))
    if has_fg.sum() < 2 or has_bg.sum() < 2:
        return None
    labels = init.copy()
    bgd_model = np.zeros((1, 65), np.float64)
    fgd_model = np.zeros((1, 65), np.float64)
    try:
        cv2.grabCut(np.ascontiguousarray(image), labels, None, bgd_model, fgd_model, iterations, cv2.GC_INIT_WITH_MASK)
    except cv2.error:
        return None  # degenerate colour statistics (e.g. too few distinct colours for the GMMs)
    return np.isin(labels, (cv2.GC_FGD, cv2.GC_PR_FGD))


def _tighten(
    box: tuple[int, int, int, int], soft: np.ndarray
) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
    """Shrink a box and its ``(h, w)`` soft mask to the pixels above zero; ``None`` when there are none."""
    rows = np.flatnonzero(soft.max(axis=1) > 0)
    if rows.size == 0:
        return None
    cols = np.flatnonzero(soft.max(axis=0) > 0)
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    x0, y0 = box[0], box[1]
    return (x0 + c0, y0 + r0, x0 + c1, y0 + r1), np.ascontiguousarray(soft[r0:r1, c0:c1], dtype=np.float32)


def _check_image(image: np.ndarray) -> np.ndarray:
    """Raise ValueError unless ``image`` is ``(H, W, 3)`` uint8 with H, W >= 1."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"expected an (H, W, 3) uint8 numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got dtype {image.dtype}")
    return np.ascontiguousarray(image)
