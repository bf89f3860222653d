"""detect once, render many times: the glue between segmenters, matte and compositing."""

from __future__ import annotations

import numpy as np
import pytest

from inference.composite import Background
from inference.instances import Click, Instances
from inference.matte import MatteSettings
from inference.pipeline import (
    Detection,
    detect_characters,
    image_digest,
    render_composite,
    render_cutout,
)
from inference.session import ClickStep, CutoutSession, Picture
from inference.segmenter import BackendChoice, DetectionSettings, ModelUnavailable, create_refiner, resolve_backend
from tests.scenes import make_scene


class SquareSegmenter:
    """A stand-in segmenter: one fixed square; point prompts return a 5x5 square around the click."""

    name = "square"

    def __init__(self) -> None:
        self.calls = 0

    def segment(self, image):
        self.calls += 1
        mask = np.zeros(image.shape[:2], np.float32)
        mask[10:30, 10:30] = 1.0
        return Instances.from_full_masks([mask], [0.8], self.name)

    def segment_at(self, image, click):
        mask = np.zeros(image.shape[:2], np.float32)
        mask[max(0, click.y - 2) : click.y + 3, max(0, click.x - 2) : click.x + 3] = 1.0
        return Instances.from_full_masks([mask], [0.5], self.name)


class HalvingRefiner:
    name = "halving"

    def refine(self, image, instances):
        return instances.with_masks([m * 0.5 for m in instances.masks], refined_by=self.name)


def test_detect_characters_runs_segmenter_then_refiner():
    image = np.zeros((40, 50, 3), np.uint8)
    seg = SquareSegmenter()
    detection = detect_characters(image, segmenter=seg, refiner=HalvingRefiner())
    assert seg.calls == 1
    assert detection.instances.refined_by == "halving"
    assert detection.instances.masks[0].max() == pytest.approx(0.5)
    assert detection.seconds >= 0 and detection.choice.name == "square"


def test_detect_characters_rejects_non_images():
    with pytest.raises(ValueError, match="expected image as"):
        detect_characters(np.zeros((4, 4), np.uint8), segmenter=SquareSegmenter())


class SquarePrompter:
    """Point prompts return a 5x5 square around the click."""

    name = "square"

    def segment_points(self, image, digest, points, box=None):
        return SquareSegmenter().segment_at(image, points[0])


def _session_on(image, instances, prompter=None):
    detection = Detection(instances, BackendChoice("test", "test"), 0.0)
    return CutoutSession(Picture.from_array(image), detection=detection, prompter=prompter or SquarePrompter())


def test_point_prompt_adds_only_where_nothing_is_covered():
    image = np.zeros((40, 50, 3), np.uint8)
    session = _session_on(image, SquareSegmenter().segment(image))
    session.set_steps([ClickStep(20, 20), ClickStep(40, 35), ClickStep(45, 5, include=False)])
    assert len(session.instances) == 2  # the click on the square reuses it, the exclude click adds nothing
    np.testing.assert_array_equal(session.instances.boxes[1], [38, 33, 43, 38])
    assert session.selected == [0, 1]


def test_choice_starts_with_everyone_until_a_click_changes_something():
    size = (20, 40)
    masks = [np.zeros(size, np.float32) for _ in range(2)]
    masks[0][2:10, 2:10] = 1
    masks[1][2:10, 20:30] = 1
    inst = Instances.from_full_masks(masks, [0.9, 0.8], "test")
    image = np.zeros((20, 40, 3), np.uint8)

    def chosen(clicks):
        nothing_there = _session_on(image, inst, prompter=EmptyPrompter())
        nothing_there.set_steps([ClickStep(c.x, c.y, c.include) for c in clicks])
        return nothing_there.selected

    assert chosen([]) == [0, 1]
    assert chosen([Click(35, 18)]) == [0, 1]  # background: nothing changes
    assert chosen([Click(25, 5)]) == [1]  # first include hit: only that one
    assert chosen([Click(25, 5, include=False)]) == [0]  # exclude from everyone
    assert chosen([Click(25, 5), Click(5, 5), Click(25, 5, include=False)]) == [0]


class EmptyPrompter:
    name = "empty"

    def segment_points(self, image, digest, points, box=None):
        return Instances.empty(image.shape[:2], self.name)


def test_render_cutout_on_a_scene_and_preview():
    scene = make_scene(2, "flat", size=(180, 320), seed=4)
    inst = Instances.from_full_masks(list(scene.character_alphas), [0.9, 0.8], "truth")
    matte = MatteSettings()
    one = render_cutout(scene.image, inst, [0], matte)
    assert one.alpha.dtype == np.float32 and one.alpha.shape == (180, 320)
    assert one.foreground.shape == (180, 320, 3) and one.foreground.dtype == np.uint8
    truth = scene.character_masks[0]
    got = one.alpha >= 0.5
    assert (got & truth).sum() / (got | truth).sum() > 0.95
    assert not (got & scene.character_masks[1]).any()  # the other character is not in it
    green = render_composite(scene.image, one, Background("color", color=(0, 255, 0)))
    far_corner = green[2, 2]
    np.testing.assert_array_equal(far_corner, (0, 255, 0))
    with pytest.raises(ValueError, match="instance indices"):
        render_cutout(scene.image, inst, [5], matte)


def test_image_digest_is_stable_and_distinct():
    assert image_digest(b"abc") == image_digest(b"abc") != image_digest(b"abd")


def test_auto_backend_without_weights_is_classic_and_says_why(tmp_path, monkeypatch):
    monkeypatch.setenv("NUKKI_MODELS_DIR", str(tmp_path))
    choice = resolve_backend("auto")
    assert choice.name == "classic" and "download" in choice.reason
    with pytest.raises(ModelUnavailable, match="weights"):
        resolve_backend("rtmdet")
    with pytest.raises(ModelUnavailable, match="weights"):
        create_refiner("animeseg")
    with pytest.raises(ValueError, match="expected backend"):
        DetectionSettings(backend="yolo")


def test_choose_by_rule():
    from inference.pipeline import choose_by_rule

    size = (20, 40)
    masks = [np.zeros(size, np.float32) for _ in range(2)]
    masks[0][2:6, 2:6] = 1  # 16 px
    masks[1][2:10, 20:30] = 1  # 80 px
    inst = Instances.from_full_masks(masks, [0.9, 0.8], "test")
    assert choose_by_rule(inst, "all") == [0, 1]
    assert choose_by_rule(inst, "largest") == [1]
    assert choose_by_rule(Instances.empty(size, "test"), "largest") == []
    assert choose_by_rule(inst, " 2,1,2 ") == [0, 1]  # 1-based numbers as shown, deduplicated
    with pytest.raises(ValueError, match="expected rule"):
        choose_by_rule(inst, "biggest")
    for bad in ("0", "1,-2", "1,,2", ""):
        with pytest.raises(ValueError, match="expected rule"):
            choose_by_rule(inst, bad)
    with pytest.raises(ValueError, match="expected character numbers 1-2, got \\[3\\]"):
        choose_by_rule(inst, "1,3")


def test_detection_numbers_characters_left_to_right():
    class RightFirst:
        name = "right-first"

        def segment(self, image):
            masks = [np.zeros(image.shape[:2], np.float32) for _ in range(3)]
            masks[0][5:10, 30:40] = 1  # right
            masks[1][20:30, 2:8] = 1  # left, lower
            masks[2][2:8, 2:8] = 1  # left, higher: ties on x0 go by y0
            return Instances.from_full_masks(masks, [0.9, 0.8, 0.7], self.name)

    detection = detect_characters(np.zeros((40, 50, 3), np.uint8), segmenter=RightFirst())
    np.testing.assert_array_equal(detection.instances.boxes[:, :2], [[2, 2], [2, 20], [30, 5]])
    np.testing.assert_array_equal(detection.instances.scores, np.float32([0.7, 0.8, 0.9]))
