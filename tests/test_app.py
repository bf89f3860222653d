"""The Streamlit studio driven by ``streamlit.testing.v1.AppTest``: every page, in-process.

Pictures are drawn by :func:`tests.scenes.make_scene` (known alpha per character),
uploaded through the real ``st.file_uploader``, clicked by setting the click
picture's state in ``session_state`` exactly as the browser component sends it
(an append-only list of ``[id, x, y, include]``), and the downloads are decoded from
the bytes the download buttons serve. The previews are ``data:`` URLs and are decoded
from them.

The models folder is pointed at an empty temporary folder, so the backend is
always the weight-free classic segmenter, whatever is installed on the machine.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import re
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import streamlit as st
from PIL import Image
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1 import app_test as app_test_module

from inference import model_cache, pipeline, registry, weights
from inference.composite import Background, checkerboard
from inference.detection_cache import SHARED_DETECTIONS
from inference.instances import Instances
from inference.matte import MatteReport, MatteSettings
from inference.picture import Picture
from inference.segmenter import DetectionSettings
from inference.session import ClickStep, CutoutSession
from studio import batch, model_options, preview
from studio.session import WORKSPACE_KEY
from tests.scenes import make_scene

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
CUTOUT = "pages/1_Cutout.py"
BATCH = "pages/2_Batch.py"
MODELS = "pages/3_Models.py"
TIMEOUT = 120


# ---------------------------------------------------------------------------- fixtures and helpers
class Media:
    """The bytes behind ``st.image`` URLs and download buttons of AppTest runs."""

    def __init__(self) -> None:
        self.managers: list[MediaFileManager] = []

    def file(self, url: str) -> bytes:
        file_id = url.rsplit("/", 1)[-1].split(".", 1)[0]
        for manager in reversed(self.managers):
            found = manager.read_file(file_id)
            if found is not None:
                return found.content
        raise AssertionError(f"no media file behind {url}")

    def download(self, button) -> bytes:
        """What the browser would save when the button is clicked (deferred downloads run their callable)."""
        deferred = button.proto.deferred_file_id
        if deferred:
            for manager in reversed(self.managers):
                if deferred in manager._deferred_callables:
                    return self.file(manager.execute_deferred(deferred))
            raise AssertionError(f"no deferred download {deferred}")
        return self.file(button.proto.url)


@pytest.fixture
def media(monkeypatch) -> Media:
    media = Media()

    class Recording(MediaFileManager):
        def __init__(self, storage) -> None:
            super().__init__(storage)
            media.managers.append(self)

    monkeypatch.setattr(app_test_module, "MediaFileManager", Recording)
    return media


@pytest.fixture(autouse=True)
def no_weights_and_fresh_caches(monkeypatch, tmp_path):
    """Classic backend (empty models folder) and no cached models or detections from other tests."""
    models = tmp_path / "models"
    models.mkdir()
    monkeypatch.setenv(weights.MODELS_DIR_ENV, str(models))
    monkeypatch.delenv("NUKKI_MAX_PIXELS", raising=False)
    st.cache_resource.clear()
    SHARED_DETECTIONS.clear()
    model_cache.clear()
    yield
    st.cache_resource.clear()
    SHARED_DETECTIONS.clear()
    model_cache.clear()


def png_bytes(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def inside(mask: np.ndarray) -> tuple[int, int]:
    """The pixel deepest inside a mask, as (col, row)."""
    dist = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    row, col = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(col), int(row)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def no_problems(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def open_page(page: str) -> AppTest:
    """The app as a person opens it: home page first, then the page from the sidebar."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    no_problems(at)
    at.switch_page(page)
    at.run()
    return at


def workspace(at: AppTest):
    return at.session_state[WORKSPACE_KEY]


def chosen(at: AppTest) -> list[int]:
    """The chosen characters as the page derived them on its last run."""
    return [int(cb.key.rsplit(".", 1)[1]) for cb in character_boxes(at) if cb.value]


_ids = itertools.count(1)


def send_clicks(at: AppTest, clicks: list[list]) -> None:
    """What the browser's click picture sends: its whole append-only click list, then a rerun."""
    ws = workspace(at)
    value = at.session_state[ws.click_key] if ws.click_key in at.session_state else {}  # noqa: SIM401
    mode = value.get("mode", "include") if hasattr(value, "get") else "include"
    at.session_state[ws.click_key] = {"clicks": clicks, "mode": mode}
    at.run()


def click(at: AppTest, col: int, row: int, *, include: bool = True) -> list:
    """One new click where a person aims at picture pixel (col, row); returns the list sent."""
    ws = workspace(at)
    value = at.session_state[ws.click_key] if ws.click_key in at.session_state else {}  # noqa: SIM401
    clicks = list(value.get("clicks", [])) if hasattr(value, "get") else []
    clicks.append([f"test:{next(_ids)}", int(col), int(row), bool(include)])
    send_clicks(at, clicks)
    return clicks


def character_boxes(at: AppTest) -> list:
    return [cb for cb in at.checkbox if cb.key and cb.key.startswith("pick.")]


def button(at: AppTest, key: str):
    (found,) = [b for b in at.button if b.key == key]
    return found


def download(at: AppTest, media: Media, key: str) -> bytes:
    (found,) = [b for b in at.download_button if b.key == key]
    assert not found.disabled
    return media.download(found)


def preview_picture(at: AppTest) -> np.ndarray:
    """The preview the page shows (a ``data:`` URL: no media file to go missing)."""
    (image,) = at.image
    url = image.value[0]
    assert url.startswith("data:image/jpeg;base64,")
    return np.asarray(decode(base64.b64decode(url.split(",", 1)[1])).convert("RGB")).astype(int)


SCENE = make_scene(2, "flat", size=(360, 640), seed=3)


@pytest.fixture
def cutout_page(media) -> AppTest:
    """The Cutout page with the two-character scene uploaded and detected."""
    at = open_page(CUTOUT)
    at.file_uploader(key="upload").set_value(("two.png", png_bytes(SCENE.image), "image/png"))
    at.run()
    no_problems(at)
    return at


def index_of(at: AppTest, character: int) -> int:
    """The number (0-based) the page gave the scene's ``character``."""
    return workspace(at).cut.instances.covering(*inside(SCENE.character_masks[character]))[0]


# ---------------------------------------------------------------------------- home
def test_home_page_shows_examples_samples_and_the_active_backend(media):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    no_problems(at)
    assert at.title[0].value == "Nukki"
    tries = [b for b in at.button if b.key and b.key.startswith("try.")]
    assert len(tries) >= 3
    # Before/after example plus one thumbnail per sample, all real pictures.
    urls = [url for image in at.image for url in image.value]
    assert len(urls) >= 2 + len(tries)
    for url in urls:
        assert decode(media.file(url)).size[0] > 100
    assert "Active: **Classic segmenter**" in " ".join(m.value for m in at.markdown)


def test_home_sample_button_opens_it_on_the_cutout_page(media):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    at.button(key="try.duo-flat").click()
    at.run()
    no_problems(at)
    ws = workspace(at)
    assert ws.picture is not None and ws.source == "sample" and ws.picture.name == "duo-flat.png"
    assert ws.cut is not None and len(ws.cut.instances) == 2
    assert len(character_boxes(at)) == 2


# ---------------------------------------------------------------------------- cutout: clicks
def test_upload_detects_characters_and_shows_them_numbered(cutout_page):
    at = cutout_page
    ws = workspace(at)
    assert ws.picture.size == (360, 640)
    boxes = character_boxes(at)
    # Plain labels (no markdown for screen readers to read out), numbered left to right.
    assert [cb.label.split(" ·")[0] for cb in boxes] == ["Character 1", "Character 2"]
    assert all("*" not in cb.label for cb in boxes)
    lefts = [int(box[0]) for box in ws.cut.instances.boxes]
    assert lefts == sorted(lefts)
    assert all(cb.value for cb in boxes)  # untouched: everyone is kept
    summary = [c.value for c in at.caption if "found 2 characters" in c.value]
    assert summary and "backend **classic**" in summary[0]


def test_clicks_select_and_downloads_hold_the_chosen_character(cutout_page, media):
    at = cutout_page
    second = index_of(at, 1)
    # Include-click the second character: only it stays chosen.
    click(at, *inside(SCENE.character_masks[1]))
    no_problems(at)
    assert chosen(at) == [second]
    assert [cb.value for cb in character_boxes(at)] == [i == second for i in range(2)]

    png = decode(download(at, media, "dl_png"))
    assert png.mode == "RGBA" and png.size == (640, 360)
    alpha = np.asarray(png)[:, :, 3]
    assert iou(alpha >= 128, SCENE.character_masks[1]) > 0.9
    assert alpha[SCENE.character_masks[0]].max() == 0  # the other character is not in the file
    mask = np.asarray(decode(download(at, media, "dl_mask")))
    assert mask.ndim == 2 and np.array_equal(mask, alpha)

    layers = zipfile.ZipFile(io.BytesIO(download(at, media, "dl_layers")))
    manifest = json.loads(layers.read("manifest.json"))
    assert [layer["instance"] for layer in manifest["layers"]] == [second]
    assert {"cutout.png", "mask.png", "background_plate.png"} <= set(layers.namelist())
    assert decode(layers.read(manifest["layers"][0]["file"])).mode == "RGBA"


def test_each_click_keeps_the_mode_it_was_made_with(cutout_page):
    """The mode travels with each click: switching the mode later never changes an earlier click."""
    at = cutout_page
    a, b = index_of(at, 0), index_of(at, 1)
    first = inside(SCENE.character_masks[0])
    click(at, *first, include=False)  # exclude from everyone: only b left
    assert chosen(at) == [b]
    ws = workspace(at)
    at.session_state[ws.click_key] = {"clicks": at.session_state[ws.click_key]["clicks"], "mode": "include"}
    at.run()
    assert chosen(at) == [b]
    assert ws.steps == (ClickStep(*first, False),)
    click(at, *first)
    assert chosen(at) == sorted([a, b])


def test_duplicate_and_late_updates_change_nothing(cutout_page):
    at = cutout_page
    ws = workspace(at)
    first = inside(SCENE.character_masks[0])
    one = click(at, *first)
    two = click(at, *first, include=False)
    assert chosen(at) == [] and len(ws.entries) == 2
    send_clicks(at, two)  # the same update again
    send_clicks(at, one)  # an older update arriving late
    send_clicks(at, [two[1], two[0], two[1]])  # reordered, repeated
    assert chosen(at) == [] and len(ws.entries) == 2
    no_problems(at)


def test_undo_reset_select_all_none_and_checkboxes(cutout_page):
    at = cutout_page
    ws = workspace(at)
    a, b = index_of(at, 0), index_of(at, 1)
    first = inside(SCENE.character_masks[0])
    click(at, *first, include=False)
    click(at, *first)
    assert chosen(at) == sorted([a, b])
    button(at, "undo").click()
    at.run()
    assert chosen(at) == [b] and ws.steps == (ClickStep(*first, False),)
    # The undone click stays undone even though the browser's click list still holds it.
    at.run()
    assert chosen(at) == [b] and len(ws.entries) == 1

    button(at, "select_none").click()
    at.run()
    assert chosen(at) == [] and not any(cb.value for cb in character_boxes(at))
    assert all(btn.disabled for btn in at.download_button if btn.key.startswith("dl_"))
    character_boxes(at)[a].check()
    at.run()
    assert chosen(at) == [a]
    button(at, "select_all").click()
    at.run()
    assert chosen(at) == [0, 1]
    character_boxes(at)[b].uncheck()
    at.run()
    assert chosen(at) == [a]
    button(at, "reset").click()
    at.run()
    assert ws.entries == [] and chosen(at) == [0, 1]
    assert any(c.value.startswith("No clicks yet") for c in at.caption)
    no_problems(at)


def test_a_stale_checkbox_from_an_earlier_run_is_not_a_toggle(cutout_page):
    """A browser update that left before the last run finished carries the checkboxes that run
    replaced, with the values they were drawn with: that must not read as a toggle."""
    at = cutout_page
    ws = workspace(at)
    old_keys = [cb.key for cb in character_boxes(at)]
    click(at, *inside(SCENE.character_masks[1]))
    assert len(ws.entries) == 1
    for key in old_keys:  # the old checkboxes, still checked as drawn
        at.session_state[key] = True
    at.run()
    assert len(ws.entries) == 1 and chosen(at) == [index_of(at, 1)]


def test_a_new_picture_starts_a_fresh_selection(media):
    at = open_page(CUTOUT)
    trio = (ROOT / "assets/samples/trio-gradient.png").read_bytes()
    duo = (ROOT / "assets/samples/duo-flat.png").read_bytes()
    at.file_uploader(key="upload").set_value(("trio.png", trio, "image/png"))
    at.run()
    ws = workspace(at)
    third = CutoutSession(Picture.from_bytes(trio), DetectionSettings(backend="classic")).instances
    mask = third.full_mask(2) >= 0.5
    stale = click(at, *inside(mask), include=False)
    character_boxes(at)[0].uncheck()
    at.run()
    assert chosen(at) == [1]
    old_key, old_boxes = ws.click_key, [cb.key for cb in character_boxes(at)]
    at.file_uploader(key="upload").set_value(("duo.png", duo, "image/png"))
    at.run()
    no_problems(at)
    assert len(character_boxes(at)) == 2 and chosen(at) == [0, 1] and ws.entries == []
    # Late updates from the old picture's widgets change nothing and break nothing.
    at.session_state[old_key] = {"clicks": stale, "mode": "exclude"}
    for key in old_boxes:
        at.session_state[key] = False
    at.run()
    no_problems(at)
    assert chosen(at) == [0, 1] and ws.entries == []
    at.file_uploader(key="upload").set_value(("trio.png", trio, "image/png"))
    at.run()
    no_problems(at)
    assert chosen(at) == [0, 1, 2] and ws.entries == []


def test_a_click_on_the_background_says_why_nothing_changed(cutout_page):
    at = cutout_page
    click(at, 3, 3)  # plain background corner: the classic point prompt finds nothing separable
    assert not at.exception
    assert chosen(at) == [0, 1] and len(workspace(at).entries) == 1
    notes = " ".join(i.value for i in at.info)
    assert "Nothing separable under the click at (3, 3)" in notes and "SAM 2" in notes


class DiskPrompter:
    """A point prompter that cuts out a disk around the first include point."""

    name = "test-disk"

    def __init__(self) -> None:
        self.calls = []

    def segment_points(self, image, digest, points, box=None):
        self.calls.append(tuple(points))
        height, width = image.shape[:2]
        yy, xx = np.mgrid[:height, :width]
        disk = ((xx - points[0].x) ** 2 + (yy - points[0].y) ** 2 <= 20 ** 2).astype(np.float32)
        return Instances.from_full_masks([disk], np.array([0.9], np.float32), image_size=(height, width),
                                         backend=self.name)


def test_a_click_on_an_object_no_character_covers_adds_a_numbered_character(cutout_page, monkeypatch):
    prompter = DiskPrompter()
    choice = model_cache.PrompterChoice("test-disk", "a test prompter")
    monkeypatch.setattr(model_cache, "get_prompter", lambda *a, **k: (prompter, choice))
    at = cutout_page
    # A fresh picture so the session picks up the test prompter.
    other = make_scene(2, "flat", size=(360, 640), seed=4)
    at.file_uploader(key="upload").set_value(("other.png", png_bytes(other.image), "image/png"))
    at.run()
    click(at, 30, 330)
    no_problems(at)
    boxes = character_boxes(at)
    assert len(boxes) == 3 and boxes[2].label.startswith("Character 3")
    assert chosen(at) == [2] and len(prompter.calls) == 1
    assert any("Added character 3" in s.value for s in at.success)
    # Replaying the history on later runs never prompts again.
    at.run()
    assert len(prompter.calls) == 1 and chosen(at) == [2]


# ---------------------------------------------------------------------------- cutout: matte, preview
def test_every_setting_that_changes_the_download_changes_the_preview(cutout_page, media):
    """The preview is the download's matte at display size: no dead sliders."""
    at = cutout_page
    changes = [
        ("keep.matte.guided_radius", 5, "slider"),
        ("keep.matte.guided_radius", 7, "slider"),
        ("keep.matte.feather", 1.5, "slider"),
        ("keep.matte.threshold", 0.7, "slider"),
        ("keep.matte.guided_eps", 1e-2, "select_slider"),
        ("keep.matte.strands", False, "checkbox"),
    ]
    before_preview = preview_picture(at)
    before_file = np.asarray(decode(download(at, media, "dl_png")))
    for key, value, kind in changes:
        getattr(at, kind)(key=key).set_value(value)
        at.run()
        no_problems(at)
        shown = preview_picture(at)
        file = np.asarray(decode(download(at, media, "dl_png")))
        assert not np.array_equal(file, before_file), f"{key}={value} did not change the download"
        assert np.abs(shown - before_preview).max() > 0, f"{key}={value} changed the download but not the preview"
        before_preview, before_file = shown, file


def test_sliders_never_detect_again(cutout_page, monkeypatch):
    at = cutout_page
    detections = []
    real = pipeline.detect_characters
    monkeypatch.setattr(pipeline, "detect_characters", lambda *a, **k: detections.append(1) or real(*a, **k))
    at.slider(key="keep.matte.feather").set_value(4.0)
    at.run()
    at.select_slider(key="keep.matte.min_island_area").set_value(1024)
    at.run()
    at.radio(key="keep.bg.kind").set_value("color")
    at.run()
    assert detections == []
    no_problems(at)


def test_island_and_hole_sliders_say_what_they_did(cutout_page, monkeypatch):
    at = cutout_page
    said = r"^(No specks this small here|\d+ specks? removed), (no holes this small here|\d+ holes? filled)\.$"
    assert any(re.match(said, c.value) for c in at.caption)
    monkeypatch.setattr(preview, "refine_alpha_and_foreground",
                        lambda *a: (np.zeros(a[1].shape, np.float32), a[0], MatteReport(3, 1)))
    at.slider(key="keep.matte.feather").set_value(0.5)
    at.run()
    assert any(c.value == "3 specks removed, 1 hole filled." for c in at.caption)


def test_describe_report():
    assert preview.describe_report(MatteReport(1, 0), MatteSettings()) == "1 speck removed, no holes this small here."
    assert preview.describe_report(MatteReport(0, 2), MatteSettings()) == "No specks this small here, 2 holes filled."
    off = MatteSettings(min_island_area=0, max_hole_area=0)
    assert preview.describe_report(MatteReport(0, 0), off) == "Islands and holes are left as they are."


def test_background_choices_show_in_the_preview_and_the_composite(cutout_page, media):
    at = cutout_page
    corner = (5, 5)  # background, far from both characters (preview is 960 wide max: 1:1 here)
    shown = preview_picture(at)
    assert shown.shape == (360, 640, 3)
    board = checkerboard(360, 640)
    assert np.abs(shown[corner] - board[corner]).max() <= 8  # transparent = checkerboard

    at.radio(key="keep.bg.kind").set_value("color")
    at.run()
    at.color_picker(key="keep.bg.color").set_value("#1040f0")
    at.run()
    assert np.abs(preview_picture(at)[corner] - (16, 64, 240)).max() <= 10
    composite = np.asarray(decode(download(at, media, "dl_composite")).convert("RGB"))
    assert tuple(composite[corner]) == (16, 64, 240)
    col, row = inside(SCENE.character_masks[0])
    assert np.abs(composite[row, col].astype(int) - SCENE.image[row, col]).max() <= 3

    at.radio(key="keep.bg.kind").set_value("bundled")
    at.run()
    no_problems(at)
    at.radio(key="keep.bg.kind").set_value("blur")
    at.run()
    no_problems(at)
    blurred = preview_picture(at)
    assert np.abs(blurred[corner] - SCENE.image[corner]).max() <= 10  # flat background stays its colour

    at.radio(key="keep.bg.kind").set_value("upload")
    at.run()
    assert any("Upload a picture to put behind" in i.value for i in at.info)
    backdrop = np.zeros((90, 160, 3), np.uint8)
    backdrop[:] = (200, 30, 30)
    at.file_uploader(key="bg_upload").set_value(("red.png", png_bytes(backdrop), "image/png"))
    at.run()
    no_problems(at)
    assert np.abs(preview_picture(at)[corner] - (200, 30, 30)).max() <= 10
    # A broken background file is refused; the previous one stays.
    at.file_uploader(key="bg_upload").set_value(("bad.png", b"\x89PNG\r\n\x1a\nnope", "image/png"))
    at.run()
    assert any("That background was not used" in e.value for e in at.error)
    assert np.abs(preview_picture(at)[corner] - (200, 30, 30)).max() <= 10


def test_downloads_use_the_settings_the_preview_shows_when_pressed(cutout_page, media):
    """The download buttons live in their own fragment (their file ids survive slider moves);
    a press exports with the settings shown at that moment."""
    at = cutout_page
    (png_button,) = [b for b in at.download_button if b.key == "dl_png"]
    at.slider(key="keep.matte.feather").set_value(3.0)
    at.run()
    alpha = np.asarray(decode(media.download(png_button)))[:, :, 3]
    ws = workspace(at)
    expected = np.asarray(decode(ws.cut.export("cutout", MatteSettings(feather=3.0))))[:, :, 3]
    assert np.array_equal(alpha, expected)


def test_before_after_views(cutout_page):
    at = cutout_page
    at.segmented_control(key="keep.view").set_value("side")
    at.run()
    assert preview_picture(at).shape == (360, 640 * 2 + 8, 3)
    at.segmented_control(key="keep.view").set_value("split")
    at.run()
    at.slider(key="keep.split").set_value(100)
    at.run()
    # Divider at the right edge: everything is "before", the original picture.
    shown = preview_picture(at)
    assert np.abs(shown[:, :600] - SCENE.image[:, :600].astype(int)).mean() < 3


def test_detection_options_are_disabled_with_the_reason_without_weights(cutout_page):
    at = cutout_page
    assert at.toggle(key="keep.det.anime").disabled and at.toggle(key="keep.det.anime").value is False
    assert at.checkbox(key="keep.det.tta").disabled
    assert at.selectbox(key="keep.det.refine").disabled
    captions = " ".join(c.value for c in at.caption)
    assert "The anime model needs its weights" in captions
    assert "Unavailable:" not in captions  # never reads as if the classic segmenter were unavailable


@pytest.mark.parametrize(
    "name, data, needle",
    [
        ("broken.png", png_bytes(SCENE.image)[:300], "damaged or truncated"),
        ("notes.txt", b"just some text, not a picture", "not a picture Nukki can read"),
        ("empty.png", b"", "empty"),
    ],
)
def test_bad_uploads_show_an_error_and_keep_the_last_good_picture(cutout_page, media, name, data, needle):
    at = cutout_page
    ws = workspace(at)
    click(at, *inside(SCENE.character_masks[0]))
    before, good = chosen(at), ws.picture
    at.file_uploader(key="upload").set_value((name, data, "application/octet-stream"))
    at.run()
    assert not at.exception
    (error,) = at.error
    assert name in error.value and needle in error.value and "Still working on two.png" in error.value
    assert ws.picture is good and chosen(at) == before
    # Still usable: sliders work and the download still holds the chosen character.
    at.slider(key="keep.matte.feather").set_value(1.0)
    at.run()
    assert not at.exception
    alpha = np.asarray(decode(download(at, media, "dl_png")))[:, :, 3]
    assert iou(alpha >= 128, SCENE.character_masks[0]) > 0.9
    # Taking the file out of the uploader (what a refused, too-large file does) clears the old error.
    at.file_uploader(key="upload").set_value(None)
    at.run()
    no_problems(at)
    # The next good upload works as usual.
    other = make_scene(1, "gradient", size=(360, 640), seed=5)
    at.file_uploader(key="upload").set_value(("one.png", png_bytes(other.image), "image/png"))
    at.run()
    no_problems(at)
    assert ws.picture.name == "one.png"


def test_pictures_over_the_pixel_limit_are_refused(cutout_page, monkeypatch):
    at = cutout_page
    monkeypatch.setenv("NUKKI_MAX_PIXELS", "200000")
    big = np.full((500, 500, 3), 200, np.uint8)  # 250 000 pixels, a tiny file
    at.file_uploader(key="upload").set_value(("big.png", png_bytes(big), "image/png"))
    at.run()
    assert not at.exception
    (error,) = at.error
    assert "too large" in error.value and "0.2 MP" in error.value
    assert workspace(at).picture.name == "two.png"


def test_an_engine_bug_in_the_matte_shows_a_message_not_a_traceback(cutout_page, monkeypatch):
    at = cutout_page
    real = preview.refine_alpha_and_foreground

    def broken(image, prior, matte):
        if matte.guided_radius == 16:
            raise RuntimeError("OpenCV(5.0.0) error: (-215:Assertion failed) in function 'remap'")
        return real(image, prior, matte)

    monkeypatch.setattr(preview, "refine_alpha_and_foreground", broken)
    at.slider(key="keep.matte.guided_radius").set_value(16)
    at.run()
    assert not at.exception
    (error,) = at.error
    assert "Something went wrong while making the preview" in error.value and "RuntimeError" in error.value
    at.slider(key="keep.matte.guided_radius").set_value(8)
    at.run()
    no_problems(at)
    assert len(at.image) == 1


def test_two_sessions_never_see_each_others_pictures_or_choices(media):
    alice = open_page(CUTOUT)
    bob = open_page(CUTOUT)
    alice.file_uploader(key="upload").set_value(("alice.png", png_bytes(SCENE.image), "image/png"))
    alice.run()
    click(alice, *inside(SCENE.character_masks[0]))
    bob.run()
    assert workspace(bob).picture is None
    assert any("Upload a picture or choose a sample" in i.value for i in bob.info)
    other = make_scene(1, "flat", size=(360, 640), seed=8)
    bob.file_uploader(key="upload").set_value(("bob.png", png_bytes(other.image), "image/png"))
    bob.run()
    no_problems(bob)
    alice.run()
    assert workspace(alice).picture.name == "alice.png" and len(chosen(alice)) == 1
    assert workspace(bob).picture.name == "bob.png" and workspace(bob).entries == []
    assert workspace(alice) is not workspace(bob)


def test_settings_survive_a_trip_to_another_page(cutout_page):
    at = cutout_page
    at.slider(key="keep.matte.feather").set_value(2.5)
    at.run()
    click(at, *inside(SCENE.character_masks[0]))
    before = chosen(at)
    at.switch_page(BATCH)
    at.run()
    no_problems(at)
    at.switch_page(CUTOUT)
    at.run()
    no_problems(at)
    assert at.slider(key="keep.matte.feather").value == 2.5
    assert chosen(at) == before


# ---------------------------------------------------------------------------- batch
def test_batch_cuts_out_good_files_and_reports_the_bad_ones(media):
    at = open_page(BATCH)
    blank = np.full((360, 640, 3), 180, np.uint8)
    files = [
        ("two.png", png_bytes(SCENE.image), "image/png"),
        ("broken.jpg", b"\xff\xd8\xff\xe0 not really", "image/jpeg"),
        ("blank.png", png_bytes(blank), "image/png"),
        ("one.png", png_bytes(make_scene(1, "gradient", size=(360, 640), seed=2).image), "image/png"),
    ]
    at.file_uploader(key="batch_files").set_value(files)
    at.run()
    at.checkbox(key="keep.batch.layers").check()
    at.run()
    (go,) = [b for b in at.button if b.label.startswith("Cut out 4 files")]
    go.click()
    at.run()
    assert not at.exception
    assert at.warning and "2 file(s) cut out, 2 failed" in at.warning[0].value
    rows = at.dataframe[0].value
    status = dict(zip(rows["file"], rows["status"]))
    assert status == {"two.png": "ok", "broken.jpg": "failed", "blank.png": "failed", "one.png": "ok"}
    reasons = dict(zip(rows["file"], rows["what happened"]))
    assert "damaged" in reasons["broken.jpg"] and "no character found" in reasons["blank.png"]

    archive = zipfile.ZipFile(io.BytesIO(download(at, media, "dl_batch")))
    names = set(archive.namelist())
    assert {"two_cutout.png", "one_cutout.png", "report.csv", "report.json"} <= names
    assert "two_layers/manifest.json" in names and "two_layers/background_plate.png" in names
    cut = np.asarray(decode(archive.read("two_cutout.png")))
    assert cut.shape == (360, 640, 4)
    assert iou(cut[:, :, 3] >= 128, SCENE.alpha >= 0.5) > 0.9
    report = archive.read("report.csv").decode()
    assert "broken.jpg,failed" in report and "blank.png,failed" in report


def test_batch_uses_the_cutout_pages_matte_settings(cutout_page, media, monkeypatch):
    at = cutout_page
    at.slider(key="keep.matte.feather").set_value(3.0)
    at.run()
    mattes = []
    real = batch.cut_out_picture
    monkeypatch.setattr(batch, "cut_out_picture", lambda *a, **k: mattes.append(k["matte"]) or real(*a, **k))
    at.switch_page(BATCH)
    at.run()
    at.file_uploader(key="batch_files").set_value([("two.png", png_bytes(SCENE.image), "image/png")])
    at.run()
    [b for b in at.button if b.label.startswith("Cut out 1 file")][0].click()
    at.run()
    assert at.success and mattes and mattes[0].feather == 3.0


# ---------------------------------------------------------------------------- models
def test_models_page_lists_every_model_device_and_backend(media):
    at = open_page(MODELS)
    no_problems(at)
    rows = at.dataframe[0].value
    assert list(rows["weights"]) == [spec.key for spec in registry.MODELS]
    assert set(rows["status"]) == {"Not installed"}
    text = " ".join(m.value for m in at.markdown)
    assert "**CPU**" in text or "**GPU**" in text
    assert at.toggle(key="keep.det.anime").disabled


# ---------------------------------------------------------------------------- pure helpers
def test_split_and_side_by_side_views():
    before = np.zeros((10, 40, 3), np.uint8)
    after = np.full((10, 40, 3), 100, np.uint8)
    split = preview.split_view(before, after, 0.5)
    assert (split[:, :18] == 0).all() and (split[:, 22:] == 100).all() and (split[:, 20] == 255).all()
    assert (preview.split_view(before, after, 0.0) == after).all()
    assert preview.side_by_side(before, after, gap=4).shape == (10, 84, 3)
    with pytest.raises(ValueError):
        preview.split_view(before, after[:, :30], 0.5)


def test_the_preview_is_the_download_at_display_size():
    scene = make_scene(1, "flat", size=(1080, 1920), seed=1)
    instances = pipeline.detect_characters(scene.image, DetectionSettings(backend="classic")).instances
    inputs = preview.prepare_preview(scene.image, instances, [0])
    small = inputs.small_image
    assert small.shape == (540, 960, 3) and inputs.factor == pytest.approx(0.5)
    matte = MatteSettings(feather=2.0)
    cut, _ = preview.render_preview(inputs, matte)
    assert cut.alpha.shape == (540, 960)
    # The same as the engine's own display-size render.
    engine = pipeline.render_cutout(scene.image, instances, [0], matte, max_side=preview.PREVIEW_LONG_SIDE)
    assert np.abs(cut.alpha - engine.alpha).max() < 1e-6
    shown = preview.composite_preview(small, cut, Background(kind="color", color=(0, 255, 0)), scale=0.5)
    assert shown.after.shape == (540, 960, 3) and tuple(shown.after[2, 2]) == (0, 255, 0)


def test_model_options_follow_the_installed_files(tmp_path, monkeypatch):
    options = model_options.model_options()
    assert not options.anime_available and options.refiners == ("none",)
    path = weights.weight_path("refine")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x01" * 10)
    assert model_options.model_options().refiners == ("none", "refinenet_isnet")


def test_matte_defaults_are_the_engines():
    # Untouched sliders give exactly the engine's measured defaults.
    at = AppTest.from_string(
        "import streamlit as st\nfrom studio import controls\nst.write(repr(controls.matte_settings()))\n",
        default_timeout=TIMEOUT,
    )
    at.run()
    assert at.markdown[0].value == repr(MatteSettings())
