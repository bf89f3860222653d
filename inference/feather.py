"""Edge feathering of an alpha: the matte's last step (:mod:`inference.matte`)."""

from __future__ import annotations

import math

import cv2
import numpy as np

from inference.matte_checks import check_map, check_positive_float, describe


def feather_blur(alpha: np.ndarray, radius_px: float) -> np.ndarray:
    """The blur of :func:`feather_alpha` (``radius_px > 0``) of a checked float32 ``(h, w)``
    alpha, not clipped: the matte clips its result once, at the end."""
    sigma = radius_px / 2.0
    if sigma < 0.5:
        # A sampled Gaussian this narrow is a no-op; [w, 1 - 2w, w] with the same variance is not
        # (a preview's scaled-down feather must still show).
        w = sigma * sigma / 2.0
        kernel = np.array([w, 1.0 - 2.0 * w, w], np.float32)
        return cv2.sepFilter2D(alpha, cv2.CV_32F, kernel, kernel, borderType=cv2.BORDER_REPLICATE)
    half = max(1, math.ceil(radius_px))
    size = (2 * half + 1, 2 * half + 1)
    return cv2.GaussianBlur(alpha, size, sigma, borderType=cv2.BORDER_REPLICATE)


def feather_alpha(alpha: np.ndarray, radius_px: float) -> np.ndarray:
    """Soften an alpha's edge: a Gaussian of sigma ``radius_px / 2`` cut off at ``ceil(radius_px)``
    (solid interior stays 1 up to rounding, far background exactly 0; 0 returns a copy).

    Args:
        alpha: ``(H, W)`` float in ``[0, 1]``.
        radius_px: feather radius in pixels, >= 0.

    Returns:
        ``(H, W)`` float32 in ``[0, 1]``.
    """
    if not isinstance(alpha, np.ndarray) or alpha.ndim != 2:
        raise ValueError(f"expected alpha as an (H, W) float array, got {describe(alpha)}")
    alpha = check_map(alpha, alpha.shape, "alpha")
    radius_px = check_positive_float(radius_px, "radius_px", allow_zero=True)
    out = feather_blur(alpha, radius_px) if radius_px > 0 else alpha.copy()
    return np.clip(out, 0.0, 1.0, out=out)
