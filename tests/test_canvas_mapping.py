"""Canvas points -> picture pixels, and the click/checkbox selection with undo.

Pure logic (no Streamlit runtime): :mod:`studio.canvas` and :mod:`studio.selection`.
"""

from __future__ import annotations

import numpy as np
import pytest

from inference.instances import Click, Instances
from inference.pipeline import choose_characters
from studio.canvas import (
    EXCLUDE_COLOR,
    INCLUDE_COLOR,
    canvas_points,
    canvas_to_image,
    clicks_from_canvas,
    fit_canvas,
    image_to_canvas,
    is_include_color,
    point_centre,
    point_object,
)
from studio.selection import SelectionHistory
from tests.scenes import make_scene


# ---------------------------------------------------------------------------- point geometry
@pytest.mark.parametrize("radius, stroke", [(3, 20), (6, 2), (1, 0), (5, 3)])
def test_point_centre_undoes_the_canvas_offset(radius, stroke):
    # The canvas stores left = x - (radius + strokeWidth / 2), top = y, origin left/center.
    obj = point_object(123.25, 45.5, radius=radius, stroke_width=stroke)
    assert obj["left"] == pytest.approx(123.25 - (radius + stroke / 2))
    assert point_centre(obj) == pytest.approx((123.25, 45.5))


def test_point_centre_respects_every_origin_and_scale():
    # A circle of radius 4, stroke 2, scaled 2x: bounding box (2*4 + 2) * 2 = 20 px.
    base = {"type": "circle", "radius": 4, "strokeWidth": 2, "scaleX": 2, "scaleY": 2}
    assert point_centre({**base, "left": 100, "top": 50, "originX": "center", "originY": "center"}) == (100, 50)
    assert point_centre({**base, "left": 100, "top": 50, "originX": "left", "originY": "top"}) == (110, 60)
    assert point_centre({**base, "left": 100, "top": 50, "originX": "right", "originY": "bottom"}) == (90, 40)
    # strokeUniform: the stroke does not scale with the object.
    uniform = {**base, "strokeUniform": True, "left": 100, "top": 50, "originX": "left", "originY": "top"}
    assert point_centre(uniform) == (109, 59)


def test_non_points_and_garbage_are_skipped():
    drawing = {
        "objects": [
            {"type": "rect", "left": 1, "top": 2, "width": 3, "height": 4},
            point_object(10, 20),
            {"type": "circle", "left": "x", "top": 5},
            "not an object",
            point_object(30, 40, include=False),
        ]
    }
    points = canvas_points(drawing)
    assert [(p.x, p.y) for p in points] == [pytest.approx((10, 20)), pytest.approx((30, 40))]
    assert canvas_points(None) == [] and canvas_points({"objects": None}) == [] and canvas_points({}) == []


@pytest.mark.parametrize(
    "color, include",
    [
        (INCLUDE_COLOR, True),
        (EXCLUDE_COLOR, False),
        (INCLUDE_COLOR.upper(), True),
        ("rgb(239, 68, 68)", False),
        ("rgba(34,197,94,0.8)", True),
        ("#f00", False),
        ("#0f0", True),
    ],
)
def test_point_colour_says_include_or_exclude(color, include):
    assert is_include_color(color) is include


def test_unreadable_colour_falls_back_to_the_default():
    assert is_include_color("papayawhip") is True
    assert is_include_color(None, default=False) is False


# ---------------------------------------------------------------------------- canvas -> picture
@pytest.mark.parametrize(
    "image_size, canvas_size",
    [
        ((1080, 1920), (405, 720)),  # downscaled 0.375
        ((1080, 1920), (401, 721)),  # awkward non-integer scale
        ((360, 640), (360, 640)),  # 1:1
        ((90, 160), (405, 720)),  # enlarged 4.5x
        ((7, 5), (700, 300)),  # different scale per axis
    ],
)
def test_every_pixel_centre_maps_back_to_its_pixel(image_size, canvas_size):
    height, width = image_size
    rows = np.unique(np.linspace(0, height - 1, 60).round().astype(int))
    cols = np.unique(np.linspace(0, width - 1, 60).round().astype(int))
    for row in rows:
        for col in cols:
            x, y = image_to_canvas(int(col), int(row), canvas_size=canvas_size, image_size=image_size)
            assert canvas_to_image(x, y, canvas_size=canvas_size, image_size=image_size) == (col, row)


def test_canvas_edges_land_on_the_picture_edges():
    kw = {"canvas_size": (405, 720), "image_size": (1080, 1920)}
    assert canvas_to_image(0, 0, **kw) == (0, 0)
    assert canvas_to_image(719.999, 404.999, **kw) == (1919, 1079)
    assert canvas_to_image(720, 405, **kw) == (1919, 1079)  # the far edge itself
    assert canvas_to_image(-3, -0.5, **kw) == (0, 0)  # a point drawn half off the canvas
    # Canvas pixel 1 covers picture columns [2.666, 5.333): its left edge is in column 2.
    assert canvas_to_image(1.0, 0, **kw) == (2, 0)
    assert canvas_to_image(1.5, 0, **kw) == (4, 0)


def test_clicks_from_canvas_maps_points_and_modes():
    canvas_size, image_size = (180, 320), (1080, 1920)  # 6x
    drawing = {"objects": [point_object(10.2, 20.9), point_object(300.5, 170.1, include=False)]}
    clicks = clicks_from_canvas(drawing, canvas_size=canvas_size, image_size=image_size)
    assert clicks == [Click(61, 125, True), Click(1803, 1020, False)]


def test_fit_canvas_keeps_aspect_and_never_enlarges():
    assert fit_canvas((1080, 1920), max_width=720) == (405, 720)
    assert fit_canvas((360, 640), max_width=720) == (360, 640)
    assert fit_canvas((2000, 1000), max_width=720, max_height=600) == (600, 300)
    with pytest.raises(ValueError):
        fit_canvas((0, 10), max_width=100)


# ---------------------------------------------------------------------------- clicks -> characters
@pytest.fixture(scope="module")
def scene_instances():
    scene = make_scene(3, "flat", size=(360, 640), seed=3)
    instances = Instances.from_full_masks(scene.character_alphas, [0.9, 0.8, 0.7], "test")
    return scene, instances


def _inside(mask: np.ndarray) -> tuple[int, int]:
    """A pixel well inside a mask, as (col, row)."""
    import cv2

    dist = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    row, col = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(col), int(row)


def _edge_pixel(mask: np.ndarray) -> tuple[int, int]:
    """A pixel of the mask whose right neighbour is background (col, row)."""
    rows, cols = np.nonzero(mask[:, :-1] & ~mask[:, 1:])
    return int(cols[len(cols) // 2]), int(rows[len(rows) // 2])


@pytest.mark.parametrize("canvas_width", [160, 333, 640, 1280])
def test_a_click_on_a_characters_edge_pixel_picks_it_at_any_display_scale(scene_instances, canvas_width):
    scene, instances = scene_instances
    image_size = scene.image.shape[:2]
    canvas_size = (round(canvas_width * image_size[0] / image_size[1]), canvas_width)
    for index, mask in enumerate(scene.character_masks):
        col, row = _edge_pixel(mask)
        # Where a person clicks when they aim at that picture pixel on this canvas.
        x, y = image_to_canvas(col, row, canvas_size=canvas_size, image_size=image_size)
        drawing = {"objects": [point_object(x, y)]}
        clicks = clicks_from_canvas(drawing, canvas_size=canvas_size, image_size=image_size)
        assert clicks == [Click(col, row, True)]
        history = SelectionHistory(instances)
        history.sync_clicks(clicks)
        assert history.selected == [index]


def test_selection_starts_with_everyone_and_clicks_choose(scene_instances):
    scene, instances = scene_instances
    a, b, c = (_inside(m) for m in scene.character_masks)
    history = SelectionHistory(instances)
    assert history.selected == [0, 1, 2] and history.untouched

    assert history.click(Click(*b)) == 1
    assert history.selected == [1] and not history.untouched
    history.click(Click(*c))
    assert history.selected == [1, 2]
    assert history.click(Click(*b, include=False)) == 1
    assert history.selected == [2]
    # An exclude click on a character that is not chosen changes nothing.
    assert history.click(Click(*a, include=False)) is None
    assert history.selected == [2]

    assert history.undo().kind == "click"
    assert history.undo().kind == "click"
    assert history.selected == [1, 2]
    history.reset()
    assert history.selected == [0, 1, 2] and history.untouched and not history.can_undo


def test_stray_clicks_never_empty_an_untouched_selection(scene_instances):
    _, instances = scene_instances
    history = SelectionHistory(instances)
    history.click(Click(2, 2))  # background, nothing added
    assert history.selected == [0, 1, 2] and history.untouched
    history.click(Click(10_000, 5))  # outside the picture
    assert history.selected == [0, 1, 2]
    assert len(history.clicks) == 2  # still recorded, to stay aligned with the canvas points


def test_exclude_first_drops_one_from_everyone(scene_instances):
    scene, instances = scene_instances
    history = SelectionHistory(instances)
    history.click(Click(*_inside(scene.character_masks[0]), include=False))
    assert history.selected == [1, 2]


def test_checkboxes_and_select_all_none_are_undoable(scene_instances):
    _, instances = scene_instances
    history = SelectionHistory(instances)
    history.set_chosen(1, False)
    assert history.selected == [0, 2]
    history.select_none()
    assert history.selected == []
    history.set_chosen(2, True)
    assert history.selected == [2]
    history.select_all()
    assert history.selected == [0, 1, 2]
    assert [history.undo().kind for _ in range(4)] == ["all", "toggle", "none", "toggle"]
    assert history.selected == [0, 1, 2] and history.untouched
    assert history.undo() is None
    with pytest.raises(ValueError):
        history.set_chosen(3, True)


def test_only_clicks_agree_with_the_engine(scene_instances):
    """Starting with an include click on a character, the studio chooses what the CLI would."""
    scene, instances = scene_instances
    rng = np.random.default_rng(0)
    inside = [_inside(m) for m in scene.character_masks]
    for _ in range(40):
        clicks = [Click(*inside[int(rng.integers(3))], include=True)]
        for _ in range(int(rng.integers(0, 6))):
            if rng.random() < 0.7:
                clicks.append(Click(*inside[int(rng.integers(3))], include=bool(rng.random() < 0.5)))
            else:
                clicks.append(Click(int(rng.integers(0, 640)), int(rng.integers(0, 360)), bool(rng.random() < 0.5)))
        history = SelectionHistory(instances)
        history.sync_clicks(clicks)
        assert history.selected == choose_characters(instances, clicks), clicks


def test_an_include_click_on_background_can_add_a_character_and_undo_removes_it(scene_instances):
    _, instances = scene_instances
    calls = []

    def add_at(current: Instances, click: Click) -> Instances:
        calls.append(click)
        square = np.zeros(current.image_size, np.float32)
        square[click.y - 5 : click.y + 5, click.x - 5 : click.x + 5] = 1.0
        return current.appended(Instances.from_full_masks([square], [0.5], "point"))

    history = SelectionHistory(instances)
    history.click(Click(20, 20), add_at)
    assert calls == [Click(20, 20)]
    assert len(history.instances) == 4 and history.selected == [3]
    history.undo()
    assert len(history.instances) == 3 and history.selected == [0, 1, 2]
    # A click on a character never asks for a new one.
    history.click(Click(*_inside(make_scene(3, "flat", size=(360, 640), seed=3).character_masks[0])), add_at)
    assert len(calls) == 1


def test_sync_follows_the_canvas_forward_and_back(scene_instances):
    scene, instances = scene_instances
    a, b, c = (Click(*_inside(m)) for m in scene.character_masks)
    history = SelectionHistory(instances)
    assert history.sync_clicks([a, b]) is True
    assert history.selected == [0, 1]
    history.set_chosen(2, True)
    assert history.sync_clicks([a, b]) is False  # nothing new on the canvas
    assert history.selected == [0, 1, 2]
    # The canvas' own undo removed b: the steps after a are taken back.
    assert history.sync_clicks([a]) is True
    assert history.selected == [0] and history.clicks == [a]
    # A different second click replaces the old one.
    history.sync_clicks([a, c])
    assert history.selected == [0, 2]
    history.sync_clicks([])
    assert history.selected == [0, 1, 2] and history.untouched
