"""Turning the form fields of ``POST /v1/cutout`` into engine values, with messages a person can act on.

Every parser raises ``ValueError("form field 'name': expected ..., got ...")`` for bad input;
the app answers those with 422.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

from inference.composite import Background, parse_color
from inference.composite import parse_background as parse_background_spec
from inference.instances import Click
from inference.matte import MatteSettings

#: ``format`` values: three composites/cutouts, the greyscale mask, the layers ZIP.
OUTPUT_FORMATS = ("png", "jpeg", "webp", "mask", "zip")
#: Content type and file-name suffix of each output format.
MEDIA_TYPES = {
    "png": ("image/png", "cutout.png"),
    "jpeg": ("image/jpeg", "composite.jpg"),
    "webp": ("image/webp", "composite.webp"),
    "mask": ("image/png", "mask.png"),
    "zip": ("application/zip", "layers.zip"),
}
#: Background used by ``jpeg``/``webp`` when none is given (they hold no transparency).
OPAQUE_DEFAULT_BACKGROUND = "white"


@dataclass(frozen=True)
class ModelChoice:
    """Which models a request asks for (each loaded once per process by :mod:`inference.model_cache`).

    Attributes:
        backend: detector: ``auto`` (the anime model when installed, else classic), ``classic``, ``rtmdet``.
        refine: mask refiner: ``none`` or a refiner option (``refinenet_isnet``, ``animeseg``).
        tta: flip test-time augmentation of the detector.
        prompt_model: point prompter for points on no character: ``auto`` (SAM 2 when installed), ``classic``, ...
    """

    backend: str = "auto"
    refine: str = "none"
    tta: bool = False
    prompt_model: str = "auto"


@dataclass(frozen=True)
class CutoutOptions:
    """One ``/v1/cutout`` request, checked.

    Attributes:
        select: ``all``, ``largest`` or 1-based numbers like ``1,3``; ``None`` when not given.
        points: include/exclude clicks in image pixels, in order.
        matte: the matte settings (full quality, as the command line uses).
        background: what goes behind the cutout; ``None`` means transparent (an RGBA PNG).
        trim: crop to the chosen characters (``png``, ``jpeg``, ``webp``, ``mask``).
        format: one of :data:`OUTPUT_FORMATS`.
        models: the models to use.
    """

    select: str | None
    points: tuple[Click, ...]
    matte: MatteSettings
    background: Background | None
    trim: bool
    format: str
    models: ModelChoice = ModelChoice()


def parse_select(text: str | None) -> str | None:
    """``all``, ``largest`` or comma-separated character numbers (>= 1); blank means not given."""
    if text is None or not text.strip():
        return None
    rule = text.strip().lower()
    if rule in ("all", "largest"):
        return rule
    parts = [part.strip() for part in rule.split(",")]
    if not all(part.isdigit() and int(part) >= 1 for part in parts):
        raise ValueError(f"form field 'select': expected all, largest or character numbers like 1,3; got {text!r}")
    return ",".join(str(int(part)) for part in parts)


def parse_points(text: str | None, *, max_points: int) -> tuple[Click, ...]:
    """JSON ``[[x, y, true|false], ...]`` (the third value is optional, true = include) -> clicks.

    Coordinates are image pixels from the top-left corner; fractional ones fall in the
    pixel that contains them. Whether they lie inside the picture is checked later,
    when its size is known (:func:`check_points_inside`).
    """
    if text is None or not text.strip():
        return ()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"form field 'points': expected JSON like [[120, 80, true]], got {text[:80]!r} ({exc.msg})"
        ) from None
    if not isinstance(value, list):
        raise ValueError(
            f"form field 'points': expected a JSON list of [x, y, include] points, got {type(value).__name__}"
        )
    if len(value) > max_points:
        raise ValueError(f"form field 'points': expected at most {max_points} points, got {len(value)}")
    clicks = []
    for number, point in enumerate(value, start=1):
        if not isinstance(point, list) or len(point) not in (2, 3):
            raise ValueError(
                f"form field 'points': expected point {number} as [x, y] or [x, y, true|false], got {point!r}"
            )
        x, y = point[0], point[1]
        include = point[2] if len(point) == 3 else True
        if not all(_is_finite_number(v) for v in (x, y)):
            raise ValueError(f"form field 'points': expected point {number} to have numeric x and y, got {point!r}")
        if not isinstance(include, bool):
            raise ValueError(
                f"form field 'points': expected true (include) or false (exclude) in point {number}, got {include!r}"
            )
        clicks.append(Click(int(math.floor(x)), int(math.floor(y)), include))
    return tuple(clicks)


def check_points_inside(points: tuple[Click, ...], width: int, height: int) -> None:
    """Raise ``ValueError`` for a point outside a ``width`` x ``height`` picture."""
    for number, point in enumerate(points, start=1):
        if not (0 <= point.x < width and 0 <= point.y < height):
            raise ValueError(
                f"form field 'points': point {number} ({point.x}, {point.y}) lies outside the "
                f"{width}x{height} picture (x in 0-{width - 1}, y in 0-{height - 1})"
            )


def parse_background(
    text: str | None, fmt: str, *, picture: np.ndarray | None = None, fit: str = "cover"
) -> Background | None:
    """The ``background`` field (and an uploaded background picture) -> a background; ``None`` = transparent.

    ``text`` is ``transparent``, ``blur`` or a colour (``white``, ``#rrggbb``, ``r,g,b``).
    With ``picture`` (``(h, w, 3)`` uint8 RGB) the background is that picture, fitted by ``fit``
    (``cover`` or ``contain``); ``text`` may then only be a colour, the padding of ``contain``.
    ``jpeg`` and ``webp`` are composites: without a background they go over white, and
    ``transparent`` is refused for them. ``mask`` and ``zip`` ignore the background.
    """
    spec = (text or "").strip()
    if fmt in ("mask", "zip"):
        return None
    if picture is not None:
        if spec.lower() in ("transparent", "blur"):
            raise ValueError(
                f"form field 'background': with a background_image it may only be a colour "
                f"(the padding of fit=contain), got {spec!r}"
            )
        try:
            colour = parse_color(spec) if spec else (255, 255, 255)
            return Background(kind="image", image=picture, fit=fit, color=colour)
        except ValueError as exc:
            raise ValueError(f"form field 'background': {exc}") from None
    if fmt in ("jpeg", "webp"):
        if spec.lower() == "transparent":
            raise ValueError(
                f"form field 'background': format {fmt} holds no transparency; choose a background "
                "(white, blur, #rrggbb) or use format=png"
            )
        spec = spec or OPAQUE_DEFAULT_BACKGROUND
    if not spec or spec.lower() == "transparent":
        return None
    try:
        return parse_background_spec(spec)
    except ValueError as exc:
        raise ValueError(f"form field 'background': {exc}") from None


def matte_error(exc: ValueError) -> ValueError:
    """A :class:`MatteSettings` error in the form's words (the engine names two settings differently)."""
    message = str(exc).replace("min_island_area", "min_island").replace("max_hole_area", "max_hole")
    return ValueError(f"matte settings: {message}")


def _is_finite_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
