"""Showing detected characters: a distinct colour and a number for each."""

from __future__ import annotations

import colorsys
from collections.abc import Collection

import cv2
import numpy as np

from inference.instances import COVER_THRESHOLD, Instances


def instance_colors(n: int) -> list[tuple[int, int, int]]:
    """``n`` well-separated saturated RGB colours (golden-ratio hue steps), stable for each index."""
    colours = []
    for i in range(n):
        hue = (0.07 + i * 0.618034) % 1.0
        r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
        colours.append((round(r * 255), round(g * 255), round(b * 255)))
    return colours


def draw_instance_overlay(
    image: np.ndarray,
    instances: Instances,
    selected: Collection[int],
    *,
    opacity: float = 0.45,
    labels: bool = True,
) -> np.ndarray:
    """Tint each character with its colour and number it.

    Selected characters get the full ``opacity`` and a solid outline; the others
    a lighter tint and a thin outline, so the choice is visible at a glance.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        instances: the characters on ``image``.
        selected: indices of chosen characters.
        opacity: tint strength of selected characters, in ``[0, 1]``.
        labels: draw each character's number (1-based) at its box's top-left.

    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    if image.shape[:2] != instances.image_size:
        raise ValueError(f"expected an image of size {instances.image_size}, got {image.shape[:2]}")
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"expected opacity in [0, 1], got {opacity}")
    out = image.copy()
    colours = instance_colors(len(instances))
    height, width = instances.image_size
    thickness = max(1, round(max(height, width) / 500))
    for index in reversed(instances.by_score):  # best on top
        x0, y0, x1, y1 = (int(v) for v in instances.boxes[index])
        covered = instances.masks[index] >= COVER_THRESHOLD
        colour = np.array(colours[index], np.float32)
        chosen = index in selected
        strength = opacity if chosen else opacity * 0.4
        region = out[y0:y1, x0:x1]
        tinted = region[covered].astype(np.float32) * (1 - strength) + colour * strength
        region[covered] = (tinted + 0.5).astype(np.uint8)
        contours, _ = cv2.findContours(covered.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(region, contours, -1, colours[index], thickness * (2 if chosen else 1), cv2.LINE_AA)
        if labels:
            _draw_label(out, str(index + 1), (x0, y0), colours[index], thickness)
    return out


def _draw_label(out: np.ndarray, text: str, corner: tuple[int, int], colour: tuple[int, int, int], scale: int) -> None:
    font, font_scale = cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale
    (tw, th), baseline = cv2.getTextSize(text, font, font_scale, scale)
    x, y = corner
    pad = 3 * scale
    x1 = min(out.shape[1], x + tw + 2 * pad)
    y1 = min(out.shape[0], y + th + baseline + 2 * pad)
    cv2.rectangle(out, (x, y), (x1, y1), colour, -1)
    cv2.putText(out, text, (x + pad, y + pad + th), font, font_scale, (255, 255, 255), scale, cv2.LINE_AA)
