"""Alpha where the prior is unsure: thin structures estimated from the picture's colours.

A soft prior (a refine net's, or a detector's upsampled mask) keeps the *mass* of a
hair strand but smears it: a 0.5-px strand becomes a 0.1-0.3 haze several pixels
wide that any threshold drops. :func:`strand_alpha` hands that mass back to the
pixels whose colour stands out from the local background, which recovers strands
far thinner than a pixel without knowing their colour.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from inference.guided_filter import box_mean, side_workers

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


def strand_alpha(image: np.ndarray, prior: np.ndarray, scale: float) -> np.ndarray:
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
    coarser; the mass is handed out over whole-pixel windows (this is no slider, so a
    preview rounds its scaled radius).

    Args:
        image: ``(h, w, 3)`` uint8 crop.
        prior: ``(h, w)`` float32 crop of the prior.
        scale: pixel scale of the crop relative to full resolution (previews < 1).

    Returns:
        ``(h, w)`` float32 in ``[0, 1]``.
    """
    height, width = prior.shape
    step = max(1, min(4, math.ceil(BACKGROUND_RADIUS * scale / 4), height, width))
    grid = (width // step, height // step)

    def shrink(plane: np.ndarray) -> np.ndarray:
        # Only whole cells (OpenCV's fast exact area resize); the rest reads the last cells.
        return cv2.resize(plane[: grid[1] * step, : grid[0] * step], grid, interpolation=cv2.INTER_AREA)

    def grow(plane: np.ndarray) -> np.ndarray:
        full = cv2.resize(plane, (grid[0] * step, grid[1] * step), interpolation=cv2.INTER_LINEAR)
        bottom, right = height - grid[1] * step, width - grid[0] * step
        if bottom or right:
            full = cv2.copyMakeBorder(full, 0, bottom, 0, right, cv2.BORDER_REPLICATE)
        return full

    mass = cv2.threshold(prior, PRIOR_FLOOR, 0.0, cv2.THRESH_TOZERO)[1]
    radius = max(1, round(STRAND_RADIUS * scale))
    mean_mass = side_workers().submit(box_mean, mass, radius)  # needs nothing else: on the side
    background_mask = np.multiply(prior < np.float32(PRIOR_FLOOR), np.uint8(255), dtype=np.uint8)
    radius_grid = max(1, round(BACKGROUND_RADIUS * scale / step))
    weight_small = shrink(background_mask).astype(np.float32) * np.float32(1 / 255)
    weight = np.maximum(box_mean(weight_small, radius_grid), np.float32(1e-6))
    # Background colour on the grid: box mean of the background pixels' colours...
    sum_all = shrink(cv2.bitwise_and(image, image, mask=background_mask)).astype(np.float32)
    mean_colour = box_mean(sum_all, radius_grid)
    mean_colour /= weight[:, :, None]
    # ...then two of them, of the background pixels darker and brighter than that mean, so a
    # two-tone background (stripes, dots, texture) is near one of its colours everywhere.
    gray = np.full((1, 3), 1 / 3, np.float32)
    mean_gray = cv2.transform(np.clip(mean_colour + 0.5, 0, 255).astype(np.uint8), gray)
    darker = cv2.compare(cv2.transform(image, gray), grow(mean_gray), cv2.CMP_LT)
    dark_mask = cv2.bitwise_and(darker, background_mask)
    dark_weight = shrink(dark_mask).astype(np.float32) * np.float32(1 / 255)
    dark_sum = shrink(cv2.bitwise_and(image, image, mask=dark_mask)).astype(np.float32)

    def distance_to(part_weight: np.ndarray, part_sum: np.ndarray) -> np.ndarray:
        part_total = box_mean(part_weight, radius_grid)
        part_colour = box_mean(part_sum, radius_grid)
        part_colour /= np.maximum(part_total, np.float32(1e-6))[:, :, None]
        np.copyto(part_colour, mean_colour, where=(part_total < np.float32(1e-3))[:, :, None])
        colour_full = grow(np.clip(part_colour + 0.5, 0, 255).astype(np.uint8))
        # Colour distance in levels (mean over the channels) to the background colour.
        return cv2.transform(cv2.absdiff(image, colour_full), gray)

    # To the nearer of the two colours (the brighter one on the side).
    brighter = side_workers().submit(distance_to, weight_small - dark_weight, sum_all - dark_sum)
    distance = cv2.min(distance_to(dark_weight, dark_sum), brighter.result())
    noise = box_mean(shrink(cv2.bitwise_and(distance, background_mask)).astype(np.float32), radius_grid)
    noise /= weight
    noise *= np.float32(NOISE_FACTOR)
    np.maximum(noise, np.float32(MIN_DISTANCE * 255), out=noise)
    distance = cv2.subtract(distance.astype(np.float32), grow(noise))
    np.maximum(distance, np.float32(0.0), out=distance)
    # With no background pixel in reach the colours say nothing: hand the mass out evenly
    # (the prior stays as it is, box-smoothed) rather than by a made-up background colour.
    blind = weight < np.float32(_MIN_BACKGROUND_SHARE)
    if blind.any():
        np.copyto(distance, np.float32(255.0), where=grow(blind.view(np.uint8)).view(np.bool_))
    mean_distance = box_mean(distance, radius)
    mean_mass = mean_mass.result()
    np.maximum(mean_distance, np.float32(1e-3), out=mean_distance)
    distance *= mean_mass
    distance /= mean_distance
    return np.clip(distance, 0.0, 1.0, out=distance)
