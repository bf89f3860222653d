"""From ``streamlit-drawable-canvas`` points to clicks on the picture.

The canvas shows the picture stretched onto ``canvas_size`` = ``(h, w)`` canvas
pixels and returns what was drawn as fabric.js JSON in those canvas pixels
(scene coordinates: the CSS zoom of the page does not change them). In
``drawing_mode="point"`` every click is a ``circle`` object whose ``left``/``top``
are measured at its origin corner, so the centre has to be recovered from the
origin, radius, stroke width and scale before it is mapped onto the picture.

The canvas has no right click, so whether a point includes or excludes a
character is carried by the colour it was drawn with (:data:`INCLUDE_COLOR`,
:data:`EXCLUDE_COLOR`): the drawing itself is the complete click history.

Nothing here imports Streamlit.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

from inference.instances import Click

#: Fill colour of include points (green) and exclude points (red) on the canvas.
INCLUDE_COLOR = "#22c55e"
EXCLUDE_COLOR = "#ef4444"
#: Outline of every point, so it stays visible on any picture.
POINT_STROKE_COLOR = "#ffffff"
POINT_STROKE_WIDTH = 2
POINT_RADIUS = 6

# Where fabric's origin sits inside the object's bounding box, as a fraction of its size.
_ORIGIN_FRACTION = {"left": 0.0, "top": 0.0, "center": 0.5, "right": 1.0, "bottom": 1.0}


@dataclass(frozen=True)
class CanvasPoint:
    """One point drawn on the canvas: its centre in canvas pixels (floats) and its fill colour."""

    x: float
    y: float
    color: str | None


def fit_canvas(image_size: tuple[int, int], *, max_width: int, max_height: int | None = None) -> tuple[int, int]:
    """Canvas ``(h, w)`` that shows an ``(H, W)`` picture whole, aspect kept, never enlarged.

    Args:
        image_size: ``(H, W)`` of the picture, both > 0.
        max_width: widest canvas allowed, > 0.
        max_height: tallest canvas allowed (``None``: no limit).
    """
    height, width = image_size
    if height <= 0 or width <= 0 or max_width <= 0 or (max_height is not None and max_height <= 0):
        raise ValueError(f"expected positive sizes, got image {image_size}, max {max_width}x{max_height}")
    scale = min(1.0, max_width / width)
    if max_height is not None:
        scale = min(scale, max_height / height)
    return max(1, round(height * scale)), max(1, round(width * scale))


def _number(value: object, default: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return default
    value = float(value)
    return value if math.isfinite(value) else default


def point_centre(obj: dict) -> tuple[float, float] | None:
    """Centre ``(x, y)`` in canvas pixels of a fabric ``circle`` object, ``None`` for anything else.

    Fabric's bounding box of a circle is ``2 * radius + strokeWidth`` wide (the
    stroke scales with the object unless ``strokeUniform``); ``left``/``top`` is
    the point of that box named by ``originX``/``originY``. Rotation is ignored
    (points are never rotated).
    """
    if not isinstance(obj, dict) or obj.get("type") not in ("circle", "Circle"):
        return None
    left = _number(obj.get("left"), math.nan)
    top = _number(obj.get("top"), math.nan)
    if math.isnan(left) or math.isnan(top):
        return None
    radius = max(0.0, _number(obj.get("radius"), 0.0))
    stroke = max(0.0, _number(obj.get("strokeWidth"), 0.0))
    scale_x = _number(obj.get("scaleX"), 1.0)
    scale_y = _number(obj.get("scaleY"), 1.0)
    if obj.get("strokeUniform"):
        box_w, box_h = 2 * radius * scale_x + stroke, 2 * radius * scale_y + stroke
    else:
        box_w, box_h = (2 * radius + stroke) * scale_x, (2 * radius + stroke) * scale_y
    fx = _ORIGIN_FRACTION.get(str(obj.get("originX", "left")), 0.0)
    fy = _ORIGIN_FRACTION.get(str(obj.get("originY", "top")), 0.0)
    return left + (0.5 - fx) * box_w, top + (0.5 - fy) * box_h


def canvas_points(json_data: dict | None) -> list[CanvasPoint]:
    """Every point drawn on the canvas, in drawing order (non-point objects are skipped)."""
    if not isinstance(json_data, dict):
        return []
    objects = json_data.get("objects")
    if not isinstance(objects, list):
        return []
    points = []
    for obj in objects:
        centre = point_centre(obj)
        if centre is not None:
            fill = obj.get("fill")
            points.append(CanvasPoint(centre[0], centre[1], fill if isinstance(fill, str) else None))
    return points


def canvas_to_image(
    x: float, y: float, *, canvas_size: tuple[int, int], image_size: tuple[int, int]
) -> tuple[int, int]:
    """The picture pixel ``(col, row)`` under canvas point ``(x, y)``.

    The picture is stretched over the whole canvas, so canvas pixel ``[0, w)``
    covers picture columns ``[0, W)`` with scale ``W / w`` (rows likewise).
    The result is floored to the pixel containing the point and clipped into the
    picture, so a click on the last canvas pixel's far edge still lands on it.
    """
    canvas_h, canvas_w = canvas_size
    height, width = image_size
    if canvas_h <= 0 or canvas_w <= 0 or height <= 0 or width <= 0:
        raise ValueError(f"expected positive sizes, got canvas {canvas_size} and image {image_size}")
    col = math.floor(x * width / canvas_w)
    row = math.floor(y * height / canvas_h)
    return min(max(col, 0), width - 1), min(max(row, 0), height - 1)


def _parse_color(color: str | None) -> tuple[int, int, int] | None:
    if not color:
        return None
    text = color.strip().lower()
    match = re.fullmatch(r"#([0-9a-f]{3}|[0-9a-f]{6}|[0-9a-f]{8})", text)
    if match:
        digits = match.group(1)
        if len(digits) == 3:
            digits = "".join(c * 2 for c in digits)
        return int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16)
    match = re.fullmatch(r"rgba?\(\s*([\d.]+)\s*,\s*([\d.]+)\s*,\s*([\d.]+)\s*(?:,\s*[\d.]+\s*)?\)", text)
    if match:
        return tuple(min(255, round(float(v))) for v in match.groups())  # type: ignore[return-value]
    return None


def is_include_color(color: str | None, *, default: bool = True) -> bool:
    """Whether a point of this fill colour is an include click (nearest of the two colours).

    Colours that cannot be read give ``default``.
    """
    rgb = _parse_color(color)
    if rgb is None:
        return default
    inc, exc = _parse_color(INCLUDE_COLOR), _parse_color(EXCLUDE_COLOR)
    d_inc = sum((a - b) ** 2 for a, b in zip(rgb, inc))  # type: ignore[arg-type]
    d_exc = sum((a - b) ** 2 for a, b in zip(rgb, exc))  # type: ignore[arg-type]
    return d_inc <= d_exc


def clicks_from_canvas(
    json_data: dict | None,
    *,
    canvas_size: tuple[int, int],
    image_size: tuple[int, int],
) -> list[Click]:
    """The canvas drawing as clicks on the picture, in drawing order.

    Args:
        json_data: ``CanvasResult.json_data`` (``{"objects": [...]}``) or ``None``.
        canvas_size: ``(h, w)`` the canvas was created with.
        image_size: ``(H, W)`` of the picture shown on it.
    """
    clicks = []
    for point in canvas_points(json_data):
        col, row = canvas_to_image(point.x, point.y, canvas_size=canvas_size, image_size=image_size)
        clicks.append(Click(col, row, is_include_color(point.color)))
    return clicks


def point_object(
    x: float,
    y: float,
    *,
    include: bool = True,
    radius: int = POINT_RADIUS,
    stroke_width: int = POINT_STROKE_WIDTH,
) -> dict:
    """A fabric circle exactly as the canvas draws a click at canvas ``(x, y)``.

    Used to rebuild a drawing (undo) and by tests to simulate clicks.
    """
    return {
        "type": "circle",
        "left": x - (radius + stroke_width / 2),
        "top": y,
        "originX": "left",
        "originY": "center",
        "radius": radius,
        "strokeWidth": stroke_width,
        "stroke": POINT_STROKE_COLOR,
        "fill": INCLUDE_COLOR if include else EXCLUDE_COLOR,
        "scaleX": 1,
        "scaleY": 1,
        "angle": 0,
        "selectable": False,
        "evented": False,
    }


def image_to_canvas(
    col: int, row: int, *, canvas_size: tuple[int, int], image_size: tuple[int, int]
) -> tuple[float, float]:
    """Canvas point at the centre of picture pixel ``(col, row)``: the inverse of :func:`canvas_to_image`."""
    canvas_h, canvas_w = canvas_size
    height, width = image_size
    return (col + 0.5) * canvas_w / width, (row + 0.5) * canvas_h / height


def drawing_of(objects: Iterable[dict]) -> dict:
    """A canvas ``initial_drawing`` holding these objects."""
    return {"objects": [dict(o) for o in objects]}
