"""What the studio shows of a cutout: the matte at display resolution, and before/after views.

The preview is the download's matte as seen at display size: the picture and the
prior are shrunk to :data:`PREVIEW_LONG_SIDE` and the matte parameters scaled to
match (:func:`inference.matte.preview_inputs`), so every slider step that changes
the download changes the preview, at a cost that does not grow with the picture
(:func:`render_preview`). It also reports what the island and hole sliders did
(:func:`describe_report`).

Nothing here imports Streamlit.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from inference.composite import Background, composite_over, render_background
from inference.instances import Instances
from inference.matte import (
    MatteReport,
    MatteSettings,
    preview_inputs,
    refine_alpha_and_foreground,
)
from inference.pipeline import Cutout

#: Long side, in pixels, of the preview picture sent to the browser.
PREVIEW_LONG_SIDE = 960
#: Colour of the divider drawn between "before" and "after".
DIVIDER_RGB = (255, 255, 255)

BACKGROUND_CHOICES = {
    "transparent": "Transparent (checkerboard)",
    "color": "Colour",
    "bundled": "Bundled background",
    "upload": "My own picture",
    "blur": "Blurred original",
}


@dataclass(frozen=True, eq=False)
class Preview:
    """The pictures the preview area shows, all ``(h, w, 3)`` uint8 RGB of one size."""

    before: np.ndarray
    after: np.ndarray


@dataclass(frozen=True, eq=False)
class PreviewInputs:
    """What a display-size preview of one choice of characters starts from (made once per choice).

    Attributes:
        small_image: the picture shrunk to the preview size, ``(h, w, 3)`` uint8.
        small_prior: the chosen characters' soft masks combined and shrunk alike, ``(h, w)`` float32.
        factor: preview size / picture size (the matte parameters are scaled by it).
    """

    small_image: np.ndarray
    small_prior: np.ndarray
    factor: float


def prepare_preview(
    image: np.ndarray, instances: Instances, selected: list[int], *, long_side: int = PREVIEW_LONG_SIDE
) -> PreviewInputs:
    """Shrink the picture and the chosen characters' prior to the preview size
    (:func:`inference.matte.preview_inputs`); slider moves reuse the result."""
    prior = instances.combined_alpha(selected)
    small, small_prior, scaled = preview_inputs(image, prior, MatteSettings(), max_side=long_side)
    return PreviewInputs(small, small_prior, float(scaled.scale) / float(MatteSettings().scale))


def render_preview(inputs: PreviewInputs, matte: MatteSettings) -> tuple[Cutout, MatteReport]:
    """The download's matte at display size: ``refine_alpha_and_foreground(*preview_inputs(...))``
    with the shrink reused.

    Returns:
        The preview cutout (``alpha``/``foreground`` at display size) and what the
        island and hole steps did there.
    """
    scaled = replace(matte, scale=float(matte.scale) * inputs.factor)
    alpha, foreground, report = refine_alpha_and_foreground(inputs.small_image, inputs.small_prior, scaled)
    return Cutout(alpha, foreground), report


def describe_report(report: MatteReport, matte: MatteSettings) -> str:
    """What the island and hole sliders did, in words ("3 specks removed, 1 hole filled")."""
    parts = []
    if matte.min_island_area > 0:
        n = report.islands_removed
        parts.append(f"{n} speck{'s' if n != 1 else ''} removed" if n else "no specks this small here")
    if matte.max_hole_area > 0:
        n = report.holes_filled
        parts.append(f"{n} hole{'s' if n != 1 else ''} filled" if n else "no holes this small here")
    if not parts:
        return "Islands and holes are left as they are."
    return parts[0][0].upper() + ", ".join(parts)[1:] + "."


def composite_preview(small_image: np.ndarray, cutout: Cutout, background: Background, *, scale: float) -> Preview:
    """A display-size cutout (from :func:`render_preview`) over ``background``.

    ``scale`` is display width / picture width: a blurred-original background is
    blurred with its sigma scaled by it, so it looks like the full-size composite.
    """
    if cutout.alpha.shape != small_image.shape[:2]:
        raise ValueError(f"expected a cutout of size {small_image.shape[:2]}, got {cutout.alpha.shape}")
    if background.kind == "blur":
        background = replace(background, blur_sigma=max(0.5, background.blur_sigma * scale))
    backdrop = render_background(background, small_image)
    return Preview(before=small_image, after=composite_over(cutout.foreground, cutout.alpha, backdrop))


def split_view(before: np.ndarray, after: np.ndarray, position: float) -> np.ndarray:
    """``before`` left of ``position`` (a fraction of the width), ``after`` right of it, with a divider."""
    if before.shape != after.shape:
        raise ValueError(f"expected two pictures of one size, got {before.shape} and {after.shape}")
    if not 0.0 <= position <= 1.0:
        raise ValueError(f"expected position in [0, 1], got {position}")
    width = before.shape[1]
    cut = int(round(position * width))
    out = after.copy()
    out[:, :cut] = before[:, :cut]
    line = max(1, width // 400)
    lo, hi = max(0, cut - line), min(width, cut + line)
    if hi > lo and 0 < cut < width:
        out[:, lo:hi] = DIVIDER_RGB
    return out


def side_by_side(before: np.ndarray, after: np.ndarray, *, gap: int = 8) -> np.ndarray:
    """``before`` and ``after`` next to each other with a white gap."""
    if before.shape != after.shape:
        raise ValueError(f"expected two pictures of one size, got {before.shape} and {after.shape}")
    height = before.shape[0]
    spacer = np.full((height, gap, 3), 255, np.uint8)
    return np.concatenate([before, spacer, after], axis=1)


def parse_hex_color(text: str) -> tuple[int, int, int]:
    """``"#rrggbb"`` (what ``st.color_picker`` returns) to an RGB tuple."""
    value = text.strip().lstrip("#")
    if len(value) == 3:
        value = "".join(c * 2 for c in value)
    if len(value) != 6 or any(c not in "0123456789abcdefABCDEF" for c in value):
        raise ValueError(f"expected a colour like #ff8800, got {text!r}")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


def rgb_hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)
