"""The competitor baseline: Nuggy's post-processing of a soft mask, written by this project.

Nuggy (the closest open anime cutout tool) cleans a segmentation mask as
described in issue 9; this is an independent implementation of that
description for side-by-side scoring (``bench/quality.py``) and timing
(``bench/matte.py``):

1. the picture and the mask are resized to 1024 x 1024 (bilinear; aspect not kept);
2. a guided filter with the *gray* picture as guide, radius 4, eps 1e-4 (on a
   ``[0, 1]`` guide);
3. cutoff: the result is clipped to ``[0, 1]`` and values below
   :data:`CUTOFF` become 0;
4. contour island removal: outer contours of what the cutoff left (alpha > 0) enclosing
   at most 0.1 % of the 1024 x 1024 picture are erased (filled with 0);
5. bilinear upsampling back to the picture's size.

Where the description leaves a choice open (the cutoff level, contours of alpha > 0,
bilinear downsizing) the choice is stated here.
"""

from __future__ import annotations

import cv2
import numpy as np

#: Side of the square working resolution.
SIDE = 1024
RADIUS = 4
EPS = 1e-4
#: Filtered alpha below this is set to 0.
CUTOFF = 0.05
#: Contours enclosing at most this fraction of the working picture are removed.
MIN_AREA_FRACTION = 0.001


def gray_guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al.'s guided filter with a single-channel float32 guide in ``[0, 1]`` (box means, mirrored borders)."""
    size = (2 * radius + 1, 2 * radius + 1)

    def mean(x: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(x, cv2.CV_32F, size, borderType=cv2.BORDER_REFLECT)

    mean_I = mean(guide)
    mean_p = mean(src)
    cov_Ip = mean(guide * src) - mean_I * mean_p
    var_I = mean(guide * guide) - mean_I * mean_I
    a = cov_Ip / (var_I + np.float32(eps))
    b = mean_p - a * mean_I
    return mean(a) * guide + mean(b)


def nuggy_alpha(image: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Nuggy's post-processing of ``prior`` ``(H, W)`` float in ``[0, 1]`` guided by ``image`` ``(H, W, 3)`` uint8 RGB.

    Returns ``(H, W)`` float32 alpha in ``[0, 1]``.
    """
    height, width = prior.shape
    small_image = cv2.resize(image, (SIDE, SIDE), interpolation=cv2.INTER_LINEAR)
    gray = cv2.cvtColor(small_image, cv2.COLOR_RGB2GRAY).astype(np.float32) * np.float32(1 / 255)
    small_prior = cv2.resize(prior.astype(np.float32, copy=False), (SIDE, SIDE), interpolation=cv2.INTER_LINEAR)
    alpha = gray_guided_filter(gray, small_prior, RADIUS, EPS)
    np.clip(alpha, 0.0, 1.0, out=alpha)
    alpha[alpha < CUTOFF] = 0.0
    binary = (alpha > 0).astype(np.uint8)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    small = [c for c in contours if cv2.contourArea(c) <= MIN_AREA_FRACTION * SIDE * SIDE]
    if small:
        cv2.drawContours(alpha, small, -1, 0.0, thickness=cv2.FILLED)
    return np.clip(cv2.resize(alpha, (width, height), interpolation=cv2.INTER_LINEAR), 0.0, 1.0)
