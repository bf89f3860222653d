"""The weight-free classic segmenter on synthetic scenes with exact per-character alpha."""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np
import pytest

from inference.classic import (
    ANIME_MODEL_INSTALL,
    BUSY_BACKGROUND_NOTE,
    ClassicOptions,
    ClassicSegmenter,
    fit_background,
)
from inference.instances import Click, Instances
from inference.segmenter import PointSegmenter, Segmenter
from tests.scenes import Scene, make_scene

SEGMENTER = ClassicSegmenter()


@lru_cache(maxsize=None)
def scene(n: int, background: str, seed: int, size: tuple[int, int] = (360, 640)) -> Scene:
    """Scenes are deterministic; render each once per test session."""
    return make_scene(n, background, size=size, seed=seed)


@lru_cache(maxsize=None)
def segmented(n: int, background: str, seed: int, size: tuple[int, int] = (360, 640)) -> Instances:
    return SEGMENTER.segment(scene(n, background, seed, size).image)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def matched_ious(instances: Instances, masks: tuple[np.ndarray, ...]) -> list[float]:
    """For each true mask, the IoU of the instance overlapping it best; each instance used at most once."""
    found = [instances.full_mask(i) >= 0.5 for i in range(len(instances))]
    result, used = [], set()
    for mask in masks:
        scores = [(iou(f, mask), i) for i, f in enumerate(found) if i not in used]
        best, index = max(scores, default=(0.0, -1))
        used.add(index)
        result.append(best)
    return result


def strand_pixels(mask: np.ndarray) -> np.ndarray:
    """Pixels of thin structures sticking out of a bool mask: not in its 7x7 opening and > 6 px from it.

    On the synthetic characters these are hair strands and the ribbon (2-3 px wide).
    """
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))
    opened = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, disc)
    far = cv2.distanceTransform((1 - opened).astype(np.uint8), cv2.DIST_L2, 3) > 6
    return mask & ~opened.astype(bool) & far


def assert_well_formed(instances: Instances, image_size: tuple[int, int]) -> None:
    """Boxes inside the picture and tight around their masks; masks float32 in [0, 1]; scores in [0, 1]."""
    height, width = image_size
    assert instances.image_size == (height, width)
    assert instances.backend == "classic"
    assert instances.boxes.shape == (len(instances), 4)
    assert np.all((instances.scores >= 0) & (instances.scores <= 1))
    for box, mask in zip(instances.boxes, instances.masks):
        x0, y0, x1, y1 = (int(v) for v in box)
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        assert mask.dtype == np.float32 and mask.shape == (y1 - y0, x1 - x0)
        assert mask.min() >= 0.0 and mask.max() <= 1.0
        # Tight: every edge row and column of the box holds some of the mask.
        assert mask[0].max() > 0 and mask[-1].max() > 0 and mask[:, 0].max() > 0 and mask[:, -1].max() > 0


# ---------------------------------------------------------------------- quality on clean backgrounds
@pytest.mark.parametrize("background", ["flat", "gradient"])
@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_character_is_its_own_instance(background: str, n: int, seed: int) -> None:
    truth = scene(n, background, seed)
    instances = segmented(n, background, seed)
    assert len(instances) == n
    assert not instances.notes
    assert_well_formed(instances, truth.image.shape[:2])
    assert min(matched_ious(instances, truth.character_masks)) >= 0.9
    # Separated: no instance covers two characters.
    for mask in truth.character_masks:
        ys, xs = np.nonzero(mask)
        owners = {tuple(instances.covering(int(x), int(y))[:1]) for x, y in zip(xs[::7], ys[::7])}
        assert len(owners - {()}) == 1


@pytest.mark.parametrize("background", ["flat", "gradient"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hair_strands_are_kept(background: str, seed: int) -> None:
    truth = scene(2, background, seed)
    alpha = segmented(2, background, seed).combined_alpha(range(2))
    strands = strand_pixels(truth.alpha >= 0.5)
    assert strands.sum() > 500  # the check below is about real strands
    assert (alpha[strands] >= 0.5).mean() >= 0.95


def test_anti_aliased_edges_get_their_fraction() -> None:
    truth = scene(2, "gradient", 1)
    alpha = segmented(2, "gradient", 1).combined_alpha(range(2))
    edge = (truth.alpha > 0.05) & (truth.alpha < 0.95)
    assert edge.sum() > 1000
    estimated = alpha[edge]
    assert ((estimated > 0.05) & (estimated < 0.95)).mean() > 0.8  # fractional, not 0/1
    assert np.abs(estimated - truth.alpha[edge]).mean() < 0.06


def test_full_hd_scene_keeps_strands_and_separates_characters() -> None:
    size = (1080, 1920)
    truth = scene(2, "gradient", 4, size)
    instances = segmented(2, "gradient", 4, size)
    assert len(instances) == 2
    assert_well_formed(instances, size)
    assert min(matched_ious(instances, truth.character_masks)) >= 0.9
    alpha = instances.combined_alpha(range(2))
    strands = strand_pixels(truth.alpha >= 0.5)
    assert strands.sum() > 500
    assert (alpha[strands] >= 0.5).mean() >= 0.95
    # Full-resolution edges: no halo of work-resolution (3 px) blocks around the characters.
    near = cv2.dilate((truth.alpha > 0).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    assert (alpha[~near] >= 0.5).sum() < 0.002 * (truth.alpha >= 0.5).sum()


def test_character_cut_by_the_picture_border() -> None:
    truth = scene(1, "flat", 5)
    rows = slice(0, 270)  # the body runs off the bottom edge of this crop
    image = np.ascontiguousarray(truth.image[rows])
    mask = truth.character_masks[0][rows]
    assert mask[-1].any()
    instances = SEGMENTER.segment(image)
    assert len(instances) == 1
    assert iou(instances.full_mask(0) >= 0.5, mask) >= 0.9


def test_grayscale_looking_rgb() -> None:
    truth = scene(2, "flat", 3)
    gray = cv2.cvtColor(truth.image, cv2.COLOR_RGB2GRAY)
    instances = SEGMENTER.segment(np.repeat(gray[:, :, None], 3, axis=2))
    assert len(instances) == 2
    assert min(matched_ious(instances, truth.character_masks)) >= 0.9


def test_eight_megapixels() -> None:
    image = np.full((2448, 3264, 3), 235, np.uint8)
    mask = np.zeros(image.shape[:2], np.uint8)
    for target, value in ((image, (30, 60, 200)), (mask, 1)):
        cv2.circle(target, (1600, 1300), 500, value, -1)
        cv2.line(target, (1600, 800), (2300, 200), value, 2)  # a 2 px strand
    instances = SEGMENTER.segment(image)
    assert len(instances) == 1
    assert_well_formed(instances, image.shape[:2])
    found = instances.full_mask(0) >= 0.5
    assert iou(found, mask.astype(bool)) >= 0.99
    assert found[230:260, 2250:2270].any()  # the far end of the strand


def test_jpeg_noise_is_not_a_busy_background() -> None:
    truth = scene(2, "flat", 4)
    encoded = cv2.imencode(".jpg", truth.image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 70])[1]
    image = np.ascontiguousarray(cv2.imdecode(encoded, cv2.IMREAD_COLOR)[:, :, ::-1])
    instances = SEGMENTER.segment(image)
    assert not instances.notes
    assert len(instances) == 2
    assert min(matched_ious(instances, truth.character_masks)) >= 0.9


# ---------------------------------------------------------------------- background model
def test_background_model_recovers_a_gradient_and_its_noise() -> None:
    truth = scene(1, "gradient", 0)
    model = fit_background(truth.image, band_px=8)  # the character does not reach the border
    predicted = model.predict(truth.image.shape[:2])
    assert np.abs(predicted - truth.background.astype(np.float32)).max() < 1.5
    noisy = np.clip(truth.background + np.random.default_rng(0).normal(0, 6, truth.background.shape), 0, 255)
    model = fit_background(noisy.astype(np.uint8), band_px=8)
    assert 5.0 < model.noise < 7.0


def test_background_model_ignores_a_character_on_the_border() -> None:
    image = np.full((200, 300, 3), (200, 220, 240), np.uint8)
    image[120:, 100:180] = (20, 20, 20)  # something dark running off the bottom edge
    model = fit_background(image, band_px=4)
    assert np.allclose(model.predict((200, 300))[0, 0], (200, 220, 240), atol=1.0)
    assert 0.0 < model.outlier_fraction < 0.2


# ---------------------------------------------------------------------- busy backgrounds
@pytest.mark.parametrize("background", ["textured", "busy"])
def test_busy_background_gets_a_note_and_a_sensible_result(background: str) -> None:
    ious = []
    for seed in (0, 1, 2):
        truth = scene(2, background, seed)
        instances = segmented(2, background, seed)
        assert BUSY_BACKGROUND_NOTE in instances.notes
        assert ANIME_MODEL_INSTALL in " ".join(instances.notes)
        assert_well_formed(instances, truth.image.shape[:2])
        assert 1 <= len(instances) <= 6
        ious += matched_ious(instances, truth.character_masks)
    # Not the quality of a clean background, but most characters are found.
    assert np.mean(np.array(ious) >= 0.5) >= 0.8


def test_busy_full_hd_stays_bounded() -> None:
    image = cv2.resize(scene(2, "busy", 1).image, (1920, 1080), interpolation=cv2.INTER_CUBIC)
    instances = SEGMENTER.segment(image)
    assert instances.notes == (BUSY_BACKGROUND_NOTE,)
    assert_well_formed(instances, (1080, 1920))
    assert instances.combined_alpha(range(len(instances))).mean() < 0.5  # not the whole picture


def test_random_noise_is_busy_and_does_not_crash() -> None:
    image = np.random.default_rng(1).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    instances = SEGMENTER.segment(image)
    assert instances.notes == (BUSY_BACKGROUND_NOTE,)
    assert_well_formed(instances, (300, 400))


# ---------------------------------------------------------------------- degenerate input
@pytest.mark.parametrize("shape", [(1, 1, 3), (2, 2, 3), (7, 7, 3), (1, 500, 3), (500, 3, 3)])
def test_tiny_pictures_give_no_instances(shape: tuple[int, int, int]) -> None:
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    assert len(SEGMENTER.segment(image)) == 0
    assert len(SEGMENTER.segment_at(image, Click(0, 0))) == 0


@pytest.mark.parametrize("colour", [(0, 0, 0), (255, 255, 255), (123, 45, 200)])
def test_one_colour_gives_no_instances(colour: tuple[int, int, int]) -> None:
    image = np.full((240, 320, 3), colour, np.uint8)
    instances = SEGMENTER.segment(image)
    assert len(instances) == 0 and not instances.notes
    assert len(SEGMENTER.segment_at(image, Click(160, 120))) == 0


def test_specks_are_not_instances() -> None:
    image = np.full((360, 640, 3), 220, np.uint8)
    rng = np.random.default_rng(2)
    for x, y in rng.integers(20, 340, (30, 2)):
        cv2.circle(image, (int(x), int(y)), 2, (10, 10, 10), -1)
    assert len(SEGMENTER.segment(image)) == 0


@pytest.mark.parametrize(
    "image",
    [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 4), np.uint8), np.zeros((10, 10, 3), np.float32), [[0, 0, 0]]],
)
def test_bad_input_raises_value_error(image: object) -> None:
    with pytest.raises(ValueError, match="expected"):
        SEGMENTER.segment(image)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="expected"):
        SEGMENTER.segment_at(image, Click(0, 0))  # type: ignore[arg-type]


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="expected min_contrast > 0"):
        ClassicOptions(min_contrast=0)
    with pytest.raises(ValueError, match="expected work_long_side"):
        ClassicOptions(work_long_side=10)


# ---------------------------------------------------------------------- clicks
def test_is_a_segmenter_and_a_point_segmenter() -> None:
    assert isinstance(SEGMENTER, Segmenter) and isinstance(SEGMENTER, PointSegmenter)
    assert SEGMENTER.name == "classic"


def tiny_character_picture() -> tuple[np.ndarray, np.ndarray]:
    """A 100x60 px scene pasted into a flat Full HD picture: too small for segment() (a speck)."""
    small = scene(1, "flat", 3, (60, 100))
    image = np.ascontiguousarray(np.broadcast_to(small.background[0, 0], (1080, 1920, 3)))
    image[700:760, 1300:1400] = small.image
    mask = np.zeros((1080, 1920), bool)
    mask[700:760, 1300:1400] = small.character_masks[0]
    return image, mask


def test_click_finds_a_character_segment_missed() -> None:
    image, mask = tiny_character_picture()
    assert len(SEGMENTER.segment(image)) == 0
    ys, xs = np.nonzero(mask)
    click = Click(int(np.median(xs)), int(np.median(ys)))
    assert mask[click.y, click.x]
    instances = SEGMENTER.segment_at(image, click)
    assert len(instances) == 1
    assert_well_formed(instances, image.shape[:2])
    assert iou(instances.full_mask(0) >= 0.5, mask) >= 0.9
    assert instances.covering(click.x, click.y) == [0]


def test_click_with_a_stricter_speck_limit() -> None:
    strict = ClassicSegmenter(options=ClassicOptions(min_area_fraction=0.5))
    truth = scene(2, "flat", 1)
    assert len(strict.segment(truth.image)) == 0
    for mask in truth.character_masks:
        strand = np.argwhere(strand_pixels(mask))[0]  # click on a hair strand, not the body
        instances = strict.segment_at(truth.image, Click(int(strand[1]), int(strand[0])))
        assert len(instances) == 1
        assert iou(instances.full_mask(0) >= 0.5, mask) >= 0.9


def test_click_on_background_gives_nothing() -> None:
    image, _ = tiny_character_picture()
    for x, y in [(5, 5), (960, 540), (1250, 730), (1919, 1079)]:
        assert len(SEGMENTER.segment_at(image, Click(x, y))) == 0
    assert len(SEGMENTER.segment_at(image, Click(-1, 5))) == 0
    assert len(SEGMENTER.segment_at(image, Click(1920, 5))) == 0


def test_click_on_a_busy_background_character() -> None:
    truth = scene(2, "busy", 2)
    for mask in truth.character_masks:
        ys, xs = np.nonzero(mask)
        click = Click(int(np.median(xs)), int(np.median(ys)), include=False)
        instances = SEGMENTER.segment_at(truth.image, click)
        assert instances.notes == (BUSY_BACKGROUND_NOTE,)
        assert len(instances) == 1
        assert instances.value_at(0, click.x, click.y) >= 0.5
        assert iou(instances.full_mask(0) >= 0.5, mask) >= 0.5


def test_point_prompts_analyse_a_picture_once_per_digest(monkeypatch) -> None:
    from inference.prompt import ClassicPrompter

    segmenter = ClassicSegmenter()
    calls = []
    real = segmenter._analyse
    monkeypatch.setattr(segmenter, "_analyse", lambda image: calls.append(1) or real(image))
    prompter = ClassicPrompter(segmenter)
    image, mask = tiny_character_picture()
    ys, xs = np.nonzero(mask)
    click = Click(int(np.median(xs)), int(np.median(ys)))
    first = prompter.segment_points(image, "pic", [click])
    again = prompter.segment_points(image, "pic", [click, Click(1, 1, include=False)], (0, 0, 5, 5))
    assert len(calls) == 1 and len(first) == len(again) == 1
    np.testing.assert_array_equal(first.masks[0], again.masks[0])
    uncached = segmenter.segment_at(image, click)  # no digest: analysed afresh, same answer
    assert len(calls) == 2
    np.testing.assert_array_equal(uncached.masks[0], first.masks[0])
    assert len(prompter.segment_points(image, "pic", [Click(2, 2, include=False)])) == 0  # no include point
