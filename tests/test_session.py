"""The cutout session: pictures, the detection cache, the click rule replayed from history, exports."""

from __future__ import annotations

import io
import json
import threading
import zipfile

import numpy as np
import pytest
from PIL import Image

from inference import pipeline
from inference.composite import Background
from inference.export import to_rgba
from inference.image_io import ImageLoadError, safe_stem, unique_stems
from inference.instances import Click, Instances
from inference.matte import MatteSettings
from inference.pipeline import NOTHING_CHOSEN, Detection
from inference.segmenter import BackendChoice, DetectionSettings
from inference.session import (
    ClickStep,
    CutoutSession,
    DetectionCache,
    Picture,
    RuleStep,
    SetAllStep,
    StepError,
    ToggleStep,
)
from tests.scenes import make_scene

CLASSIC = DetectionSettings(backend="classic")
MATTE = MatteSettings()
SCENE = make_scene(3, "flat", size=(240, 400), seed=2)


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def _centre(mask: np.ndarray) -> tuple[int, int]:
    """A pixel well inside ``mask`` (the one farthest from its edge)."""
    import cv2

    dist = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(x), int(y)


@pytest.fixture(scope="module")
def detection() -> Detection:
    """The classic segmenter's detection of :data:`SCENE` (computed once for the module)."""
    return pipeline.detect_characters(SCENE.image, CLASSIC)


def _session(detection, prompter=None, image=SCENE.image) -> CutoutSession:
    picture = Picture.from_array(image, name="scene.png")
    return CutoutSession(picture, CLASSIC, detection=detection, prompter=prompter)


class FakePrompter:
    """A point prompter whose answers the test controls; it records every call."""

    name = "fake"

    def __init__(self, answer):
        self.answer = answer  # (image_size, click, box) -> full (H, W) mask or None
        self.calls: list[tuple[Click, tuple | None]] = []

    def segment_points(self, image, digest, points, box=None):
        self.calls.append((points[0], box))
        mask = self.answer(image.shape[:2], points[0], box)
        if mask is None:
            return Instances.empty(image.shape[:2], self.name)
        return Instances.from_full_masks([mask], [0.7], self.name)


def _square_answer(half: int):
    def answer(size, click, box):
        mask = np.zeros(size, np.float32)
        mask[max(0, click.y - half) : click.y + half, max(0, click.x - half) : click.x + half] = 1.0
        return mask

    return answer


def _area_answer(area: int):
    """A region of exactly ``area`` pixels: full rows from the top, then part of one more row."""

    def answer(size, click, box):
        mask = np.zeros(size, np.float32).reshape(-1)
        mask[:area] = 1.0
        return mask.reshape(size)

    return answer


# ---------------------------------------------------------------------------- pictures and names
def test_picture_from_bytes_and_path(tmp_path):
    data = _png(SCENE.image)
    picture = Picture.from_bytes(data, name="dir\\my pic.png")
    assert picture.stem == "my_pic" and picture.size == (240, 400)
    assert picture.digest == Picture.from_bytes(data, name="other.png").digest == pipeline.image_digest(data)
    assert not picture.image.flags.writeable  # shared by caches: nobody may draw on it
    np.testing.assert_array_equal(picture.image, SCENE.image)
    (tmp_path / "a.png").write_bytes(data)
    assert Picture.from_path(tmp_path / "a.png").digest == picture.digest
    with pytest.raises(ImageLoadError, match="No such file"):
        Picture.from_path(tmp_path / "missing.png")
    assert Picture.from_array(SCENE.image).digest != Picture.from_array(SCENE.image[:, ::-1]).digest


def test_one_pixel_limit_from_the_environment(monkeypatch):
    monkeypatch.setenv("NUKKI_MAX_PIXELS", "50000")
    with pytest.raises(ImageLoadError, match="too large"):
        Picture.from_bytes(_png(SCENE.image))  # 96 000 px
    monkeypatch.setenv("NUKKI_MAX_PIXELS", "100_000")
    assert Picture.from_bytes(_png(SCENE.image)).size == (240, 400)


def test_stem_rule_and_collisions():
    assert safe_stem("a/b\\c d.v2.PNG") == "c_d_v2" and safe_stem(".png") == "picture" and safe_stem("") == "picture"
    names = ["plain.webp", "plain.bmp", "x/Plain.png", "y/plain.png", "other.jpg", "dir\\b c.png"]
    assert unique_stems(names) == ["plain.webp", "plain.bmp", "Plain.png", "plain.png-2", "other", "b_c"]


# ---------------------------------------------------------------------------- detection once
def test_characters_are_numbered_left_to_right(detection):
    instances = _session(detection).instances
    assert len(instances) == 3
    x0s = [int(b[0]) for b in instances.boxes]
    assert x0s == sorted(x0s)
    for index, truth in enumerate(SCENE.character_masks):  # the scene draws them left to right
        assert _iou(instances.full_mask(index) >= 0.5, truth) > 0.9


def test_detection_runs_once_per_picture_and_settings(monkeypatch):
    calls = []
    real = pipeline.detect_characters
    monkeypatch.setattr(pipeline, "detect_characters", lambda *a, **k: calls.append(1) or real(*a, **k))
    cache = DetectionCache(max_entries=4)
    picture = Picture.from_bytes(_png(SCENE.image), name="a.png")
    again = Picture.from_bytes(_png(SCENE.image), name="copy.png")  # same bytes, same digest
    first = CutoutSession(picture, CLASSIC, detections=cache)
    assert len(first.instances) == 3 and len(calls) == 1
    first.apply(ClickStep(*_centre(SCENE.character_masks[0])))
    second = CutoutSession(again, CLASSIC, detections=cache)
    assert second.detection is first.detection and len(calls) == 1
    assert (cache.hits, cache.misses) == (1, 1)
    stricter = CutoutSession(picture, DetectionSettings(backend="classic", score_threshold=0.5), detections=cache)
    stricter.detection
    assert len(calls) == 2 and len(cache) == 2


def test_concurrent_sessions_share_one_detection(monkeypatch):
    calls = []
    gate = threading.Event()
    fake = Detection(Instances.empty((240, 400), "fake"), BackendChoice("fake", "test"), 0.0)

    def slow(*args, **kwargs):
        calls.append(1)
        gate.wait(5)
        return fake

    monkeypatch.setattr(pipeline, "detect_characters", slow)
    cache = DetectionCache()
    picture = Picture.from_array(SCENE.image)
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(CutoutSession(picture, CLASSIC, detections=cache).detection))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    gate.set()
    for thread in threads:
        thread.join(10)
    assert len(calls) == 1 and len(results) == 4 and all(r is fake for r in results)


def test_detection_cache_is_bounded_and_ages_out():
    now = [0.0]
    cache = DetectionCache(max_entries=2, ttl_s=10, clock=lambda: now[0])
    made = []

    def compute(tag):
        def run():
            made.append(tag)
            return Detection(Instances.empty((4, 4), tag), BackendChoice(tag, tag), 0.0)

        return run

    for tag in "abc":
        cache.get((tag,), compute(tag))
    assert len(cache) == 2 and made == ["a", "b", "c"]
    cache.get(("b",), compute("b"))  # still there
    cache.get(("a",), compute("a"))  # evicted: computed again
    assert made == ["a", "b", "c", "a"]
    now[0] = 11.0
    assert len(cache) == 0
    with pytest.raises(ValueError, match="max_entries"):
        DetectionCache(max_entries=0)


# ---------------------------------------------------------------------------- the click rule
def test_click_rule_known_answers(detection):
    session = _session(detection)
    centres = [_centre(m) for m in SCENE.character_masks]
    assert session.selected == [0, 1, 2] and session.untouched
    result = session.apply(ClickStep(5, 5))  # background, classic prompter: nothing there
    assert session.selected == [0, 1, 2] and session.untouched and not result.changed
    result = session.apply(ClickStep(*centres[1]))  # first effective include: only that one
    assert session.selected == [1] and result.hit == 1 and result.changed
    session.apply(ClickStep(*centres[0]))
    assert session.selected == [0, 1]
    result = session.apply(ClickStep(*centres[1], include=False))
    assert session.selected == [0] and result.hit == 1
    result = session.apply(ClickStep(*centres[1], include=False))  # not chosen any more
    assert session.selected == [0] and not result.changed and "No chosen character" in result.message
    session.apply(ToggleStep(2, True))
    assert session.selected == [0, 2]
    session.apply(SetAllStep(False))
    assert session.selected == []
    session.apply(RuleStep("1,3"))
    assert session.selected == [0, 2]
    session.apply(RuleStep("largest"))
    areas = [m.sum() for m in SCENE.character_masks]
    assert session.selected == [int(np.argmax(areas))]
    assert session.undo() and session.selected == [0, 2]
    session.reset()
    assert session.steps == () and session.selected == [0, 1, 2] and session.untouched
    assert not session.undo()


def test_first_exclude_drops_from_everyone(detection):
    session = _session(detection)
    session.apply(ClickStep(*_centre(SCENE.character_masks[2]), include=False))
    assert session.selected == [0, 1] and not session.untouched


def test_selection_is_a_pure_function_of_the_history(detection):
    centres = [_centre(m) for m in SCENE.character_masks]
    rng = np.random.default_rng(7)
    steps = []
    for _ in range(40):
        kind = rng.integers(0, 5)
        if kind <= 1:
            x, y = centres[int(rng.integers(0, 3))]
            steps.append(ClickStep(x, y, bool(kind == 0)))
        elif kind == 2:
            steps.append(ToggleStep(int(rng.integers(0, 3)), bool(rng.integers(0, 2))))
        elif kind == 3:
            steps.append(SetAllStep(bool(rng.integers(0, 2))))
        else:
            steps.append(ClickStep(int(rng.integers(0, 400)), int(rng.integers(0, 240)), bool(rng.integers(0, 2))))
    one_by_one = _session(detection)
    seen = []
    for step in steps:
        one_by_one.apply(step)
        seen.append(one_by_one.selected)
    replayed = _session(detection)
    assert replayed.set_steps(steps) and replayed.selected == one_by_one.selected
    assert not replayed.set_steps(steps) and replayed.selected == one_by_one.selected  # idempotent
    # A late update (an older history) then the current one again: same answer as before.
    assert replayed.set_steps(steps[:17]) and replayed.selected == seen[16]
    assert replayed.set_steps(steps) and replayed.selected == one_by_one.selected
    assert replayed.steps == tuple(steps)


def test_a_bad_step_leaves_the_history_alone(detection):
    session = _session(detection)
    session.apply(ToggleStep(0, False))
    with pytest.raises(StepError, match=r"expected a character index in \[0, 3\), got 3") as refused:
        session.set_steps([ToggleStep(1, False), ToggleStep(3, True)])
    assert refused.value.index == 1 and isinstance(refused.value, ValueError)
    assert session.steps == (ToggleStep(0, False),) and session.selected == [1, 2]
    with pytest.raises(ValueError, match="expected a character index"):
        session.apply(ToggleStep(-1, True))
    with pytest.raises(ValueError, match="character numbers 1-3"):
        session.apply(RuleStep("4"))
    with pytest.raises(ValueError, match="expected a ClickStep"):
        session.apply("click")
    assert session.steps == (ToggleStep(0, False),)


# ---------------------------------------------------------------------------- point prompts
def test_click_on_nothing_adds_a_prompted_character_once(detection):
    prompter = FakePrompter(_square_answer(8))
    session = _session(detection, prompter)
    result = session.apply(ClickStep(200, 225))  # below the characters: no one covers it
    assert result.added == 3 and result.hit == 3 and len(session.instances) == 4
    assert session.selected == [3]  # the first effective include keeps only what it chose
    np.testing.assert_array_equal(session.instances.boxes[3], [192, 217, 208, 233])
    session.apply(ClickStep(*_centre(SCENE.character_masks[0])))
    assert session.selected == [0, 3]
    # Replaying the same history asks the prompter nothing new (memoised), and undo removes the region.
    session.set_steps([])
    session.set_steps([ClickStep(200, 225), ClickStep(*_centre(SCENE.character_masks[0]))])
    assert len(prompter.calls) == 1 and session.selected == [0, 3]
    session.undo()
    session.undo()
    assert len(session.instances) == 3 and session.selected == [0, 1, 2]


def test_click_inside_a_box_passes_the_box(detection):
    prompter = FakePrompter(lambda size, click, box: None)
    session = _session(detection, prompter)
    x0, y0, x1, y1 = (int(v) for v in detection.instances.boxes[0])
    mask = detection.instances.full_mask(0) >= 0.5
    inside = [(x, y) for y in range(y0, y1) for x in range(x0, x1) if not mask[y, x]]
    x, y = inside[len(inside) // 2]
    result = session.apply(ClickStep(x, y))
    assert prompter.calls == [(Click(x, y), (x0, y0, x1, y1))]
    assert not result.changed and result.message.startswith(f"Nothing separable under the click at ({x}, {y}).")
    session.apply(ClickStep(3, 3))
    assert prompter.calls[-1] == (Click(3, 3), None)


def test_regions_far_larger_than_any_character_are_refused(detection):
    largest = max(int((m >= 0.5).sum()) for m in detection.instances.masks)
    prompter = FakePrompter(_area_answer(2 * largest + 1))
    session = _session(detection, prompter)
    result = session.apply(ClickStep(200, 225))
    assert not result.changed and result.added is None and len(session.instances) == 3
    assert "mostly background" in result.message and result.message in session.notes
    assert session.selected == [0, 1, 2] and session.untouched
    fine = _session(detection, FakePrompter(_area_answer(2 * largest)))
    assert fine.apply(ClickStep(200, 225)).added == 3


def test_with_no_characters_more_than_40_percent_is_refused():
    blank = np.full((100, 100, 3), 200, np.uint8)
    empty = Detection(Instances.empty((100, 100), "classic"), BackendChoice("classic", "test"), 0.0)
    big = _session(empty, FakePrompter(_square_answer(35)), image=blank)  # 70x70 = 49 %
    assert "mostly background" in big.apply(ClickStep(50, 50)).message and len(big.instances) == 0
    ok = _session(empty, FakePrompter(_square_answer(30)), image=blank)  # 60x60 = 36 %
    assert ok.apply(ClickStep(50, 50)).added == 0 and ok.selected == [0]


def test_classic_prompter_says_when_nothing_is_there_and_how_to_get_sam2(detection):
    session = _session(detection)  # prompt model auto, no SAM 2 weights: the classic prompter
    result = session.apply(ClickStep(5, 5))
    assert result.message.startswith("Nothing separable under the click at (5, 5).")
    assert "SAM 2 does better" in result.message and "weights download sam2" in result.message
    assert "anime model" in result.message and "weights download rtmdet" in result.message


def test_classic_prompter_finds_a_character_the_detection_missed():
    # Detection that missed character 2: a click on it cuts it out with the classic point prompt.
    full = pipeline.detect_characters(SCENE.image, CLASSIC)
    partial = Detection(full.instances.subset([0, 1]), full.choice, 0.0)
    session = _session(partial)
    result = session.apply(ClickStep(*_centre(SCENE.character_masks[2])))
    assert result.added == 2 and session.selected == [2]
    assert _iou(session.instances.full_mask(2) >= 0.5, SCENE.character_masks[2]) > 0.9


# ---------------------------------------------------------------------------- rendering and exports
def test_exports_round_trip(detection):
    session = _session(detection)
    session.apply(RuleStep("2"))
    cut = session.cutout(MATTE)
    assert _iou(cut.alpha >= 0.5, SCENE.character_masks[1]) > 0.9
    png = np.asarray(Image.open(io.BytesIO(session.export("cutout", MATTE))))
    np.testing.assert_array_equal(png, to_rgba(cut.foreground, cut.alpha))
    trimmed = np.asarray(Image.open(io.BytesIO(session.export("cutout", MATTE, trim=True))))
    ys, xs = np.nonzero(png[:, :, 3])
    np.testing.assert_array_equal(trimmed, png[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1])
    mask = np.asarray(Image.open(io.BytesIO(session.export("mask", MATTE))))
    assert mask.shape == (240, 400) and _iou(mask >= 128, SCENE.character_masks[1]) > 0.9
    green = Background(kind="color", color=(0, 255, 0))
    for fmt, pil_name in (("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WEBP")):
        image = Image.open(io.BytesIO(session.export("composite", MATTE, background=green, fmt=fmt)))
        assert image.format == pil_name and image.size == (400, 240)
        assert np.abs(np.asarray(image.convert("RGB"))[3, 3].astype(int) - (0, 255, 0)).max() <= 3
    with zipfile.ZipFile(io.BytesIO(session.export("layers", MATTE))) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        assert [layer["number"] for layer in manifest["layers"]] == [2]
        assert manifest["source"] == "scene.png" and manifest["detection"]["backend"] == "classic"
    with pytest.raises(ValueError, match="expected kind"):
        session.export("gif", MATTE)
    with pytest.raises(ValueError, match="expected format"):
        session.export("cutout", MATTE, fmt="jpeg")


def test_nothing_chosen_renders_nothing_and_exports_nothing(detection):
    session = _session(detection)
    session.apply(SetAllStep(False))
    assert session.cutout(MATTE).alpha.max() == 0.0
    for kind in ("cutout", "mask", "composite", "layers"):
        with pytest.raises(ValueError, match=NOTHING_CHOSEN):
            session.export(kind, MATTE)
    with pytest.raises(ValueError, match=NOTHING_CHOSEN):
        pipeline.layers_zip(SCENE.image, detection.instances, [], MATTE, source_name="x")
    empty = pipeline.render_cutout(SCENE.image, detection.instances, [], MATTE)
    assert empty.alpha.max() == 0.0


def test_preview_at_display_size_matches_the_download(detection):
    session = _session(detection)
    preview = session.cutout(MATTE, max_side=200)
    assert preview.alpha.shape == (120, 200) and preview.foreground.shape == (120, 200, 3)
    full = session.cutout(MATTE)
    small_truth = np.asarray(Image.fromarray((full.alpha * 255).astype(np.uint8)).resize((200, 120))) >= 128
    assert _iou(preview.alpha >= 0.5, small_truth) > 0.9
    assert session.cutout(MATTE, max_side=200) is preview  # remembered
    shown = session.composite(MATTE, Background(kind="color", color=(0, 0, 255)), max_side=200)
    assert shown.shape == (120, 200, 3) and tuple(shown[1, 1]) == (0, 0, 255)


def test_a_prompted_region_that_is_a_known_character_chooses_it(detection):
    # E.g. SAM 2 given the character's box returns that character: no duplicate is added.
    character = detection.instances.full_mask(0)
    prompter = FakePrompter(lambda size, click, box: character)
    session = _session(detection, prompter)
    x0, y0, x1, y1 = (int(v) for v in detection.instances.boxes[0])
    mask = character >= 0.5
    x, y = next((x, y) for y in range(y0, y1) for x in range(x0, x1) if not mask[y, x])
    result = session.apply(ClickStep(x, y))
    assert result.hit == 0 and result.added is None and len(session.instances) == 3
    assert session.selected == [0]


def test_a_region_swallowing_a_character_with_background_is_refused(detection):
    grown = (detection.instances.full_mask(1) >= 0.5).astype(np.uint8)
    import cv2

    grown = cv2.dilate(grown, np.ones((15, 15), np.uint8)).astype(np.float32)  # character 2 plus a band around it
    session = _session(detection, FakePrompter(lambda size, click, box: grown))
    ys, xs = np.nonzero((grown > 0) & ~(detection.instances.full_mask(1) >= 0.5))
    result = session.apply(ClickStep(int(xs[0]), int(ys[0])))
    assert not result.changed and "it is character #2 with the background around it" in result.message
    assert len(session.instances) == 3


def test_a_failed_detection_is_not_cached():
    cache = DetectionCache()
    attempts = []

    def broken():
        attempts.append(1)
        raise RuntimeError("model crashed")

    for _ in range(2):
        with pytest.raises(RuntimeError):
            cache.get(("k",), broken)
    assert len(attempts) == 2 and len(cache) == 0
    ok = Detection(Instances.empty((4, 4), "x"), BackendChoice("x", "x"), 0.0)
    assert cache.get(("k",), lambda: ok) is ok and cache.get(("k",), broken) is ok


def test_picture_never_freezes_the_callers_array():
    mine = SCENE.image.copy()
    picture = Picture(mine, "digest", "x.png")
    assert mine.flags.writeable and not picture.image.flags.writeable
    np.testing.assert_array_equal(picture.image, mine)
    with pytest.raises(ValueError, match="expected image as"):
        Picture(np.zeros((4, 4), np.uint8), "d")


def test_concurrent_updates_of_one_session_agree(detection):
    # Duplicate, late updates from several threads (a browser resending the same history) end in one answer.
    centres = [_centre(m) for m in SCENE.character_masks]
    history = [ClickStep(*centres[0]), ClickStep(*centres[2]), ToggleStep(1, True), ClickStep(*centres[0], False)]
    session = _session(detection)
    errors = []

    def worker(seed):
        try:
            order = np.random.default_rng(seed)
            for _ in range(30):
                session.set_steps(history[: int(order.integers(0, len(history) + 1))])
                session.cutout(MATTE, max_side=100)
            session.set_steps(history)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors and session.steps == tuple(history) and session.selected == [1, 2]


def test_preview_shrinks_the_picture_once(detection, monkeypatch):
    shrinks = []
    real = pipeline.shrink_image
    monkeypatch.setattr(pipeline, "shrink_image", lambda *a, **k: shrinks.append(1) or real(*a, **k))
    session = _session(detection)
    first = session.cutout(MATTE, max_side=160)
    second = session.cutout(MatteSettings(feather=2.0), max_side=160)  # another slider value: same shrink
    assert len(shrinks) == 1
    direct = pipeline.render_cutout(SCENE.image, detection.instances, [0, 1, 2], MATTE, max_side=160)
    np.testing.assert_array_equal(first.alpha, direct.alpha)  # the cached shrink changes nothing
    assert second.alpha.shape == first.alpha.shape
