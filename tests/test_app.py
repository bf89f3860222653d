"""The Streamlit studio driven by ``streamlit.testing.v1.AppTest``: every page, in-process.

Pictures are drawn by :func:`tests.scenes.make_scene` (known alpha per character),
uploaded through the real ``st.file_uploader``, clicked by setting the canvas
component's value in ``session_state`` (what the browser sends), and the
downloads are decoded from the bytes the download buttons serve.

The models folder is pointed at an empty temporary folder, so the backend is
always the weight-free classic segmenter, whatever is installed on the machine.
"""

from __future__ import annotations

import io
import json
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

from inference import pipeline, weights
from inference.composite import Background, checkerboard
from inference.export import alpha_to_uint8
from inference.instances import Click, Instances
from inference.matte import MatteSettings
from inference.segmenter import DetectionSettings
from studio import batch, model_options, preview
from studio.canvas import image_to_canvas, point_object
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
    yield
    st.cache_resource.clear()


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


def click(at: AppTest, col: int, row: int, *, include: bool = True) -> None:
    """Add one point on the canvas where a person aims at picture pixel (col, row), then rerun."""
    ws = workspace(at)
    key = ws.canvas_key
    objects = list(ws.canvas_seed["objects"])
    if key in at.session_state:
        objects = list(at.session_state[key]["drawing"]["raw"]["objects"])
    x, y = image_to_canvas(col, row, canvas_size=ws.canvas_size, image_size=ws.picture.size)
    objects.append(point_object(x, y, include=include))
    at.session_state[key] = {"drawing": {"raw": {"objects": objects}, "data": None}}
    at.run()


def character_boxes(at: AppTest) -> list:
    return [cb for cb in at.checkbox if cb.key and cb.key.startswith("pick.")]


def download(at: AppTest, media: Media, key: str) -> bytes:
    (button,) = [b for b in at.download_button if b.key == key]
    assert not button.disabled
    return media.download(button)


SCENE = make_scene(2, "flat", size=(360, 640), seed=3)


@pytest.fixture
def cutout_page(media) -> AppTest:
    """The Cutout page with the two-character scene uploaded and detected."""
    at = open_page(CUTOUT)
    at.file_uploader(key="upload").set_value(("two.png", png_bytes(SCENE.image), "image/png"))
    at.run()
    no_problems(at)
    return at


# ---------------------------------------------------------------------------- home
def test_home_page_shows_examples_samples_and_the_active_backend(media):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    no_problems(at)
    assert at.title[0].value.endswith("Nukki")
    tries = [b for b in at.button if b.key and b.key.startswith("try.")]
    assert len(tries) >= 3
    # Before/after example plus one thumbnail per sample, all real pictures.
    urls = [url for image in at.image for url in image.value]
    assert len(urls) >= 2 + len(tries)
    for url in urls:
        assert decode(media.file(url)).size[0] > 100
    assert "Active: **Classic segmenter**" in " ".join(m.value for m in at.markdown)
    assert any("The anime model needs its weights" in c.value for c in at.caption)


def test_home_sample_button_opens_it_on_the_cutout_page(media):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    at.button(key="try.duo-flat").click()
    at.run()
    no_problems(at)
    ws = workspace(at)
    assert ws.picture is not None and ws.picture.source == "sample" and ws.picture.name == "duo-flat.png"
    assert ws.detection is not None and len(ws.detection.instances) == 2
    assert len(character_boxes(at)) == 2


# ---------------------------------------------------------------------------- cutout
def test_upload_detects_characters_and_shows_them_numbered(cutout_page):
    at = cutout_page
    ws = workspace(at)
    assert ws.picture.size == (360, 640)
    boxes = character_boxes(at)
    assert [cb.label.split(" ·")[0] for cb in boxes] == ["**#1**", "**#2**"]
    assert all(cb.value for cb in boxes)  # untouched: everyone is kept
    summary = [c.value for c in at.caption if "found 2 characters" in c.value]
    assert summary and "backend **classic**" in summary[0]


def test_clicks_select_and_downloads_hold_the_chosen_character(cutout_page, media):
    at = cutout_page
    ws = workspace(at)
    index_of = [ws.detection.instances.covering(*inside(m))[0] for m in SCENE.character_masks]
    # Include-click the second character: only it stays chosen.
    click(at, *inside(SCENE.character_masks[1]))
    no_problems(at)
    assert ws.selection.selected == [index_of[1]]
    assert [cb.value for cb in character_boxes(at)] == [i == index_of[1] for i in range(2)]

    png = decode(download(at, media, "dl_png"))
    assert png.mode == "RGBA" and png.size == (640, 360)
    alpha = np.asarray(png)[:, :, 3]
    assert iou(alpha >= 128, SCENE.character_masks[1]) > 0.9
    assert alpha[SCENE.character_masks[0]].max() == 0  # the other character is not in the file
    mask = np.asarray(decode(download(at, media, "dl_mask")))
    assert mask.ndim == 2 and np.array_equal(mask, alpha)

    layers = zipfile.ZipFile(io.BytesIO(download(at, media, "dl_layers")))
    manifest = json.loads(layers.read("manifest.json"))
    assert [layer["instance"] for layer in manifest["layers"]] == [index_of[1]]
    assert {"cutout.png", "mask.png", "background_plate.png"} <= set(layers.namelist())
    assert decode(layers.read(manifest["layers"][0]["file"])).mode == "RGBA"


def test_exclude_undo_reset_and_select_all_none(cutout_page):
    at = cutout_page
    ws = workspace(at)
    first, second = (inside(m) for m in SCENE.character_masks)
    a, b = (ws.detection.instances.covering(*p)[0] for p in (first, second))

    at.segmented_control(key="keep.click_mode").set_value("exclude")
    at.run()
    click(at, *first, include=False)  # exclude from everyone: only b left
    assert ws.selection.selected == [b]
    assert ws.selection.clicks == [Click(*first, include=False)]

    at.segmented_control(key="keep.click_mode").set_value("include")
    at.run()
    click(at, *first)
    assert ws.selection.selected == sorted([a, b])
    canvas_before = ws.canvas_key
    at.button[[btn.label for btn in at.button].index("↶ Undo")].click()
    at.run()
    assert ws.selection.selected == [b]
    # The canvas is rebuilt with the remaining point, at the same picture pixel.
    assert ws.canvas_key != canvas_before and len(ws.canvas_seed["objects"]) == 1
    assert ws.selection.clicks == [Click(*first, include=False)]

    at.button[[btn.label for btn in at.button].index("Select none")].click()
    at.run()
    assert ws.selection.selected == [] and not any(cb.value for cb in character_boxes(at))
    assert all(btn.disabled for btn in at.download_button if btn.key.startswith("dl_"))
    character_boxes(at)[a].check()
    at.run()
    assert ws.selection.selected == [a]
    at.button[[btn.label for btn in at.button].index("Select all")].click()
    at.run()
    assert ws.selection.selected == [0, 1]
    at.button[[btn.label for btn in at.button].index("Reset clicks")].click()
    at.run()
    assert ws.selection.untouched and ws.selection.clicks == [] and ws.canvas_seed["objects"] == []
    no_problems(at)


def test_sliders_change_the_cutout_without_detecting_again(cutout_page, media, monkeypatch):
    at = cutout_page
    detections, renders = [], []
    real_detect, real_render = pipeline.detect_characters, pipeline.render_cutout
    monkeypatch.setattr(pipeline, "detect_characters", lambda *a, **k: detections.append(1) or real_detect(*a, **k))
    monkeypatch.setattr(pipeline, "render_cutout", lambda *a, **k: renders.append(a[3]) or real_render(*a, **k))

    partial = lambda a: int(((a > 0) & (a < 255)).sum())  # noqa: E731
    before = np.asarray(decode(download(at, media, "dl_png")))[:, :, 3]
    renders.clear()
    at.slider(key="keep.matte.feather").set_value(4.0)
    at.run()
    no_problems(at)
    feathered = np.asarray(decode(download(at, media, "dl_png")))[:, :, 3]
    # Feathering widens the soft edge: more partly transparent pixels than before.
    assert partial(feathered) > 1.2 * partial(before)
    at.select_slider(key="keep.matte.min_island_area").set_value(1024)
    at.run()
    at.slider(key="keep.matte.threshold").set_value(0.7)
    at.run()
    assert detections == []  # detection is cached per picture and settings
    # One preview render per slider move (the studio previews with the fast filter);
    # the full-quality render happens only for the download the test asked for.
    assert [m.feather for m in renders if m.fast] == [4.0, 4.0, 4.0]
    assert [m.feather for m in renders if not m.fast] == [4.0]
    assert renders[-1].threshold == pytest.approx(0.7) and renders[-1].min_island_area == 1024

    # A background change re-composites only: no new matte either.
    renders.clear()
    at.radio(key="keep.bg.kind").set_value("color")
    at.run()
    at.color_picker(key="keep.bg.color").set_value("#00ff00")
    at.run()
    assert renders == [] and detections == []
    no_problems(at)


def test_fast_preview_only_changes_the_preview_not_the_download(cutout_page, media, monkeypatch):
    at = cutout_page
    renders = []
    real_render = pipeline.render_cutout
    monkeypatch.setattr(pipeline, "render_cutout", lambda *a, **k: renders.append(a[3]) or real_render(*a, **k))
    assert at.checkbox(key="keep.matte.fast_preview").value is True  # previews are fast by default
    at.checkbox(key="keep.matte.fast_preview").uncheck()
    at.run()
    assert renders and renders[-1].fast is False
    renders.clear()
    workspace(at)._cutouts.clear()  # forget the cutouts made so far: the next preview must render
    at.checkbox(key="keep.matte.fast_preview").check()
    at.run()
    assert renders and renders[-1].fast is True
    workspace(at)._cutouts.clear()  # forget the full-quality cutout of the first run
    at.run()
    assert renders[-1].fast is True
    renders.clear()
    alpha = np.asarray(decode(download(at, media, "dl_png")))[:, :, 3]
    assert renders and all(m.fast is False for m in renders)
    ws = workspace(at)
    full = real_render(ws.picture.image, ws.selection.instances, ws.selection.selected, MatteSettings())
    assert np.array_equal(alpha, alpha_to_uint8(full.alpha))


def preview_picture(at: AppTest, media: Media) -> np.ndarray:
    (image,) = at.image
    return np.asarray(decode(media.file(image.value[0])).convert("RGB")).astype(int)


def test_background_choices_show_in_the_preview_and_the_composite(cutout_page, media):
    at = cutout_page
    corner = (5, 5)  # background, far from both characters (preview is 960 wide max: 1:1 here)
    shown = preview_picture(at, media)
    assert shown.shape == (360, 640, 3)
    board = checkerboard(360, 640)
    assert np.abs(shown[corner] - board[corner]).max() <= 6  # transparent = checkerboard

    at.radio(key="keep.bg.kind").set_value("color")
    at.run()
    at.color_picker(key="keep.bg.color").set_value("#1040f0")
    at.run()
    assert np.abs(preview_picture(at, media)[corner] - (16, 64, 240)).max() <= 8
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
    blurred = preview_picture(at, media)
    assert np.abs(blurred[corner] - SCENE.image[corner]).max() <= 10  # flat background stays its colour

    at.radio(key="keep.bg.kind").set_value("upload")
    at.run()
    assert any("Upload a picture to put behind" in i.value for i in at.info)
    backdrop = np.zeros((90, 160, 3), np.uint8)
    backdrop[:] = (200, 30, 30)
    at.file_uploader(key="bg_upload").set_value(("red.png", png_bytes(backdrop), "image/png"))
    at.run()
    no_problems(at)
    assert np.abs(preview_picture(at, media)[corner] - (200, 30, 30)).max() <= 8
    # A broken background file is refused; the previous one stays.
    at.file_uploader(key="bg_upload").set_value(("bad.png", b"\x89PNG\r\n\x1a\nnope", "image/png"))
    at.run()
    assert any("That background was not used" in e.value for e in at.error)
    assert np.abs(preview_picture(at, media)[corner] - (200, 30, 30)).max() <= 8


def test_before_after_views(cutout_page, media):
    at = cutout_page
    at.segmented_control(key="keep.view").set_value("side")
    at.run()
    assert preview_picture(at, media).shape == (360, 640 * 2 + 8, 3)
    at.segmented_control(key="keep.view").set_value("split")
    at.run()
    at.slider(key="keep.split").set_value(100)
    at.run()
    # Divider at the right edge: everything is "before", the original picture.
    shown = preview_picture(at, media)
    assert np.abs(shown[:, :600] - SCENE.image[:, :600].astype(int)).mean() < 2


def test_detection_options_are_disabled_with_the_reason_without_weights(cutout_page):
    at = cutout_page
    assert at.toggle(key="keep.det.anime").disabled and at.toggle(key="keep.det.anime").value is False
    assert at.checkbox(key="keep.det.tta").disabled
    assert at.selectbox(key="keep.det.refine").disabled
    captions = " ".join(c.value for c in at.caption)
    assert "The anime model needs its weights" in captions and "python -m inference.weights download" in captions
    assert "Not installed: refinenet_isnet, animeseg" in captions


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
    chosen, good = ws.selection.selected, ws.picture
    at.file_uploader(key="upload").set_value((name, data, "application/octet-stream"))
    at.run()
    assert not at.exception
    (error,) = at.error
    assert name in error.value and needle in error.value and "Still working on two.png" in error.value
    assert ws.picture is good and ws.selection.selected == chosen
    # Still usable: sliders work and the download still holds the chosen character.
    at.slider(key="keep.matte.feather").set_value(1.0)
    at.run()
    assert not at.exception
    alpha = np.asarray(decode(download(at, media, "dl_png")))[:, :, 3]
    assert iou(alpha >= 128, SCENE.character_masks[0]) > 0.9
    # The next good upload clears the error.
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
    real = pipeline.render_cutout

    def broken(image, instances, selected, matte):
        if matte.guided_radius == 16:
            raise RuntimeError("OpenCV(5.0.0) error: (-215:Assertion failed) in function 'remap'")
        return real(image, instances, selected, matte)

    monkeypatch.setattr(pipeline, "render_cutout", broken)
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
    assert workspace(alice).picture.name == "alice.png" and len(workspace(alice).selection.selected) == 1
    assert workspace(bob).picture.name == "bob.png" and workspace(bob).selection.untouched
    assert workspace(alice) is not workspace(bob)


def test_settings_survive_a_trip_to_another_page(cutout_page):
    at = cutout_page
    at.slider(key="keep.matte.feather").set_value(2.5)
    at.run()
    click(at, *inside(SCENE.character_masks[0]))
    chosen = workspace(at).selection.selected
    at.switch_page(BATCH)
    at.run()
    no_problems(at)
    at.switch_page(CUTOUT)
    at.run()
    no_problems(at)
    assert at.slider(key="keep.matte.feather").value == 2.5
    assert workspace(at).selection.selected == chosen


@pytest.mark.parametrize("width", [400, 960])
def test_clicks_survive_a_canvas_resize_and_new_ones_map_at_the_new_scale(cutout_page, width):
    at = cutout_page
    ws = workspace(at)
    first, second = (inside(m) for m in SCENE.character_masks)
    click(at, *first)
    old_key = ws.canvas_key
    at.select_slider(key="keep.canvas_width").set_value(width)
    at.run()
    no_problems(at)
    # The picture is never enlarged: at most its own 640 px.
    assert ws.canvas_size == ((225, 400) if width == 400 else (360, 640))
    assert ws.canvas_key != old_key and len(ws.canvas_seed["objects"]) == 1
    assert ws.selection.clicks == [Click(*first)]
    click(at, *second)
    assert ws.selection.clicks == [Click(*first), Click(*second)]
    assert ws.selection.selected == [0, 1]


def test_a_click_on_the_background_asks_the_point_prompt(cutout_page, monkeypatch):
    at = cutout_page
    asked = []
    real = pipeline.add_characters_at_clicks

    def spy(image, instances, clicks, segmenter):
        asked.extend(clicks)
        return real(image, instances, clicks, segmenter)

    monkeypatch.setattr(pipeline, "add_characters_at_clicks", spy)
    click(at, 3, 3)  # plain background corner
    assert not at.exception
    assert asked == [Click(3, 3, True)]
    click(at, *inside(SCENE.character_masks[0]))
    assert asked == [Click(3, 3, True)]  # a click on a character never asks


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
    assert status == {"two.png": "✅ ok", "broken.jpg": "❌ failed", "blank.png": "❌ failed", "one.png": "✅ ok"}
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
    real = pipeline.render_cutout
    monkeypatch.setattr(batch, "render_cutout", lambda *a, **k: mattes.append(a[3]) or real(*a, **k))
    at.switch_page(BATCH)
    at.run()
    at.file_uploader(key="batch_files").set_value([("two.png", png_bytes(SCENE.image), "image/png")])
    at.run()
    [b for b in at.button if b.label.startswith("Cut out 1 file")][0].click()
    at.run()
    assert at.success and mattes and mattes[0].feather == 3.0 and mattes[0].fast is False


# ---------------------------------------------------------------------------- models
def test_models_page_lists_missing_weights_device_and_backend(media):
    at = open_page(MODELS)
    no_problems(at)
    rows = at.dataframe[0].value
    assert list(rows["weights"]) == ["rtmdet", "refine", "animeseg"]
    assert set(rows["status"]) == {"— missing"}
    text = " ".join(m.value for m in at.markdown)
    assert "**CPU**" in text or "**GPU**" in text
    assert at.toggle(key="keep.det.anime").disabled
    assert any("The anime model needs its weights" in c.value for c in at.caption)


def test_models_page_download_offline_gives_a_clear_message(media, monkeypatch):
    def offline(spec):
        raise weights.DownloadError(f"could not reach huggingface.co/{spec.repo_id} (ConnectError: no network)")

    monkeypatch.setattr(weights, "fetch_remote_file", offline)
    at = open_page(MODELS)
    at.multiselect(key="models.download_pick").set_value(["refine"])
    at.run()
    at.button[[b.label for b in at.button].index("Download selected weights")].click()
    at.run()
    assert not at.exception
    (error,) = at.error
    assert "Could not download refine" in error.value and "offline" in error.value
    assert "classic segmenter" in error.value
    # The page is still usable afterwards.
    at.run()
    no_problems(at)


def test_models_page_download_reports_progress_and_installs(media, monkeypatch):
    calls = []

    def fake_remote(spec):
        return weights.RemoteFile(size=4096, sha256=None, blob_id=None)

    def fake_download(key, *, out=None):
        calls.append(key)
        path = weights.weight_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\x00" * 4096)
        return {}

    monkeypatch.setattr(weights, "fetch_remote_file", fake_remote)
    monkeypatch.setattr(weights, "download_weight", fake_download)
    at = open_page(MODELS)
    at.multiselect(key="models.download_pick").set_value(["animeseg"])
    at.run()
    at.button[[b.label for b in at.button].index("Download selected weights")].click()
    at.run()
    no_problems(at)
    assert calls == ["animeseg"]
    assert any("animeseg installed and verified" in s.value for s in at.success)
    rows = at.dataframe[0].value
    assert dict(zip(rows["weights"], rows["status"]))["animeseg"] == "✅ installed"
    # Now the refiner can be chosen (it is no longer disabled).
    refine = at.selectbox(key="keep.det.refine")
    assert not refine.disabled and "anime-seg IS-Net (isnetis.ckpt)" in refine.options


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


def test_preview_is_shrunk_but_keeps_the_full_size_alpha_result():
    scene = make_scene(1, "flat", size=(1080, 1920), seed=1)
    cutout = pipeline.Cutout(scene.alpha, scene.image)
    shown = preview.make_preview(scene.image, cutout, Background(kind="color", color=(0, 255, 0)))
    assert shown.after.shape == (540, 960, 3) and shown.before.shape == (540, 960, 3)
    assert tuple(shown.after[2, 2]) == (0, 255, 0)


def test_batch_names_never_collide():
    taken: set[str] = set()
    assert [batch._unique_stem(n, taken) for n in ["a.png", "a.jpg", "A.webp", "dir/b c.png", ".png"]] == [
        "a",
        "a-2",
        "A-3",
        "b_c",
        "picture",
    ]


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


def test_instances_fixture_sanity():
    # The scene the tests upload really has two separate characters the classic segmenter finds.
    detection = pipeline.detect_characters(SCENE.image, DetectionSettings(backend="classic"))
    assert isinstance(detection.instances, Instances) and len(detection.instances) == 2
