"""Clicks as state: the click picture's mapping and state parsing, and the workspace's step history.

Pure logic (no Streamlit runtime): :mod:`studio.canvas` and :mod:`studio.workspace`,
with the engine's :class:`~inference.session.CutoutSession` replaying the history.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from inference.picture import Picture
from inference.segmenter import DetectionSettings
from inference.session import ClickStep, CutoutSession, SetAllStep, ToggleStep
from studio.canvas import (
    MAX_ID_LENGTH,
    PictureClick,
    click_picture,
    display_to_image,
    jpeg_data_url,
    mode_to_show,
    new_clicks,
    parse_clicks,
)
from studio.workspace import Workspace
from tests.scenes import make_scene


# ---------------------------------------------------------------------------- display -> picture pixels
@pytest.mark.parametrize(
    "image_size, display_size",
    [((360, 640), (360.0, 640.0)), ((360, 640), (225.0, 400.0)), ((540, 960), (219.375, 390.0)),
     ((4000, 6000), (427.33, 641.0)), ((7, 5), (700.0, 500.0))],
)
def test_every_pixel_centre_maps_back_to_its_pixel(image_size, display_size):
    height, width = image_size
    disp_h, disp_w = display_size
    rng = np.random.default_rng(0)
    for col, row in zip(rng.integers(0, width, 200), rng.integers(0, height, 200)):
        x, y = (col + 0.5) * disp_w / width, (row + 0.5) * disp_h / height
        assert display_to_image(x, y, display_size=display_size, image_size=image_size) == (col, row)


def test_display_edges_land_on_the_picture_edges():
    size, shown = (360, 640), (219.375, 390.0)
    assert display_to_image(0, 0, display_size=shown, image_size=size) == (0, 0)
    assert display_to_image(390.0, 219.375, display_size=shown, image_size=size) == (639, 359)
    assert display_to_image(-3, 500, display_size=shown, image_size=size) == (0, 359)
    with pytest.raises(ValueError, match="expected positive sizes"):
        display_to_image(1, 1, display_size=(0, 10), image_size=size)


# ---------------------------------------------------------------------------- the component's state
def test_parse_clicks_reads_the_components_list_in_order():
    value = {"clicks": [["a:1", 10, 20, True], ["a:2", 639, 359, False], ["a:3", 0.0, 5.9, True]], "mode": "include"}
    assert parse_clicks(value, image_size=(360, 640)) == [
        PictureClick("a:1", 10, 20, True),
        PictureClick("a:2", 639, 359, False),
        PictureClick("a:3", 0, 5, True),
    ]


@pytest.mark.parametrize(
    "value",
    [None, 7, "clicks", {}, {"clicks": None}, {"clicks": "a:1"}, {"clicks": [["a:1", 1, 2]]},
     {"clicks": [["a:1", 640, 2, True]]}, {"clicks": [["a:1", -1, 2, True]]}, {"clicks": [["a:1", 1, 2, 1]]},
     {"clicks": [["a:1", True, 2, True]]}, {"clicks": [[7, 1, 2, True]]}, {"clicks": [["", 1, 2, True]]},
     {"clicks": [["x" * (MAX_ID_LENGTH + 1), 1, 2, True]]}, {"clicks": [["a:1", float("nan"), 2, True]]},
     {"clicks": [["a:1", "3", 2, True]]}],
)
def test_parse_clicks_skips_anything_the_javascript_would_not_send(value):
    assert parse_clicks(value, image_size=(360, 640)) == []


def test_new_clicks_are_idempotent_for_repeated_late_and_reordered_updates():
    a, b, c = (PictureClick(f"n:{i}", i, i, True) for i in range(3))
    assert new_clicks([a, b], set()) == [a, b]
    assert new_clicks([a, b, a, b], set()) == [a, b]
    assert new_clicks([a, b, c], {"n:0", "n:1"}) == [c]
    assert new_clicks([a], {"n:0", "n:1", "n:2"}) == []


def test_jpeg_data_url_round_trips():
    rgb = np.zeros((4, 6, 3), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG")
    url = jpeg_data_url(buffer.getvalue())
    assert url.startswith("data:image/jpeg;base64,")
    assert Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).size == (6, 4)


def test_the_switch_mounts_in_the_mode_of_the_last_click():
    assert mode_to_show({"clicks": [["a:1", 1, 2, True], ["a:2", 3, 4, False]]}) == "exclude"
    assert mode_to_show({"clicks": [["a:1", 1, 2, False], ["a:2", 3, 4, True]]}) == "include"
    for nothing_yet in (None, {}, {"clicks": []}, "clicks", {"clicks": [["a:1", 1, 2, "no"]]}):
        assert mode_to_show(nothing_yet) == "include"


def test_click_picture_refuses_an_unknown_mode():
    with pytest.raises(ValueError, match="expected mode in"):
        click_picture(key="k", image_url="data:,", image_size=(2, 2), points=[], seen=[], steps=0,
                      mode="toggle", alt="")


# ---------------------------------------------------------------------------- the step history
SCENE = make_scene(2, "flat", size=(360, 640), seed=3)


@pytest.fixture(scope="module")
def picture() -> Picture:
    return Picture.from_array(SCENE.image, name="two.png")


@pytest.fixture
def ws(picture) -> Workspace:
    ws = Workspace()
    ws.set_picture(picture, "upload")
    ws.set_session(("key",), CutoutSession(picture, DetectionSettings(backend="classic")))
    return ws


def centre(mask: np.ndarray) -> tuple[int, int]:
    rows, cols = np.nonzero(mask)
    return int(np.median(cols)), int(np.median(rows))


def test_clicks_become_steps_once_whatever_the_browser_repeats(ws):
    first, second = centre(SCENE.character_masks[0]), centre(SCENE.character_masks[1])
    a = PictureClick("m:1", *first, True)
    b = PictureClick("m:2", *second, False)
    assert ws.take_clicks([a]) == 1
    assert ws.take_clicks([a, b]) == 1
    assert ws.take_clicks([a, b]) == 0 and ws.take_clicks([a]) == 0 and ws.take_clicks([b, a, b]) == 0
    assert ws.steps == (ClickStep(*first, True), ClickStep(*second, False))
    assert [p.id for p in ws.points] == ["m:1", "m:2"]
    index = ws.sync().instances.covering(*first)[0]
    assert ws.sync().selected == [index]  # the exclude click hit nobody chosen


def test_undo_and_reset_never_bring_an_undone_click_back(ws):
    first = centre(SCENE.character_masks[0])
    click = PictureClick("m:1", *first, True)
    ws.take_clicks([click])
    assert ws.undo() and ws.steps == ()
    assert ws.take_clicks([click]) == 0 and ws.steps == ()
    assert not ws.undo()
    ws.set_all(False)
    ws.toggle(1, True)
    assert ws.sync().selected == [1]
    ws.reset()
    assert ws.sync().selected == [0, 1] and ws.sync().untouched


def test_sync_is_a_pure_function_of_the_steps(ws, picture):
    first, second = centre(SCENE.character_masks[0]), centre(SCENE.character_masks[1])
    ws.take_clicks([PictureClick("m:1", *first, False), PictureClick("m:2", *second, True)])
    ws.toggle(0, True)
    ws.set_all(False)
    ws.toggle(1, True)
    replayed = CutoutSession(picture, DetectionSettings(backend="classic"))
    replayed.set_steps(ws.steps)
    assert ws.sync().selected == replayed.selected == [1]
    assert ws.sync().selected == [1]  # again: nothing changes


def test_a_step_the_engine_refuses_is_dropped_not_fatal(ws):
    ws.toggle(5, True)  # no character 6
    ws.set_all(False)
    assert ws.sync().selected == []
    assert ws.steps == (SetAllStep(False),) and ws.dropped_steps == 1


def test_a_new_picture_or_detection_starts_a_new_history(ws, picture):
    ws.take_clicks([PictureClick("m:1", 5, 5, True)])
    ws.toggle(0, False)
    key = ws.click_key
    ws.set_picture(picture, "sample")
    assert ws.entries == [] and ws.seen_clicks == set() and ws.click_key != key
    with pytest.raises(ValueError, match="expected a detected picture"):
        ws.sync()
    ws.set_session(("other",), CutoutSession(picture, DetectionSettings(backend="classic")))
    assert ws.sync().selected == [0, 1] and ws.steps == ()
    assert ToggleStep(0, False) not in ws.steps
