"""Flip TTA merge rules (inference/tta.py) on hand-made instance sets."""

from __future__ import annotations

import numpy as np
import pytest

from inference.instances import Instances
from inference.tta import flip_instances_horizontally, mask_iou_matrix, merge_flip_instances

SIZE = (6, 10)  # (H, W)


def make(
    boxes: list[list[int]], masks: list[np.ndarray], scores: list[float], notes: tuple[str, ...] = ()
) -> Instances:
    box_array = np.array(boxes, np.int32).reshape(-1, 4)
    return Instances(SIZE, box_array, tuple(masks), np.array(scores, np.float32), "rtmdet", None, notes)


def block(height: int, width: int, value: float) -> np.ndarray:
    return np.full((height, width), value, np.float32)


def test_flip_maps_boxes_and_mirrors_masks() -> None:
    mask = np.arange(12, dtype=np.float32).reshape(3, 4) / 12
    flipped = flip_instances_horizontally(make([[1, 2, 5, 5]], [mask], [0.7]))

    assert flipped.boxes.tolist() == [[5, 2, 9, 5]]
    np.testing.assert_array_equal(flipped.masks[0], mask[:, ::-1])
    original = make([[1, 2, 5, 5]], [mask], [0.7])
    np.testing.assert_array_equal(flipped.full_mask(0), original.full_mask(0)[:, ::-1])
    assert flipped.scores.tolist() == pytest.approx([0.7])


def test_flip_is_an_exact_involution() -> None:
    rng = np.random.default_rng(1)
    boxes = [[0, 0, 3, 2], [4, 1, 10, 6], [9, 5, 10, 6]]
    masks = [rng.random((y1 - y0, x1 - x0)).astype(np.float32) for x0, y0, x1, y1 in boxes]
    original = make(boxes, masks, [0.9, 0.5, 0.4], notes=("a note",))

    twice = flip_instances_horizontally(flip_instances_horizontally(original))

    np.testing.assert_array_equal(twice.boxes, original.boxes)
    for a, b in zip(twice.masks, original.masks):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(twice.scores, original.scores)
    assert twice.notes == original.notes and twice.backend == original.backend


def test_mask_iou_counts_covered_pixels_in_picture_coordinates() -> None:
    a = make([[0, 0, 4, 4]], [block(4, 4, 0.8)], [0.9])
    b = make([[1, 0, 5, 4], [6, 0, 8, 2]], [block(4, 4, 0.6), block(2, 2, 0.9)], [0.8, 0.7])

    iou = mask_iou_matrix(a, b)

    assert iou.shape == (1, 2)
    assert iou[0, 0] == pytest.approx(12 / 20)  # 3 shared columns of 4 rows; union 5 columns
    assert iou[0, 1] == 0.0
    faint = make([[1, 0, 5, 4]], [block(4, 4, 0.4)], [0.8])  # below 0.5: covers nothing
    assert mask_iou_matrix(a, faint)[0, 0] == 0.0


def test_matched_pair_is_averaged_on_the_union_box() -> None:
    original = make([[0, 0, 4, 4]], [block(4, 4, 0.8)], [0.9])
    mirrored = make([[1, 0, 5, 4]], [block(4, 4, 0.6)], [0.7])

    merged = merge_flip_instances(original, mirrored, iou_threshold=0.5)

    assert len(merged) == 1
    assert merged.boxes.tolist() == [[0, 0, 5, 4]]
    expected_row = np.array([0.4, 0.7, 0.7, 0.7, 0.3], np.float32)  # (0.8 + 0) / 2, (0.8 + 0.6) / 2, (0 + 0.6) / 2
    np.testing.assert_allclose(merged.masks[0], np.tile(expected_row, (4, 1)), atol=1e-6)
    assert merged.scores.tolist() == pytest.approx([0.8])
    assert merged.backend == "rtmdet"
    assert merged.notes[-1].startswith("Flip TTA: merged 1 instance(s)")


def test_pair_below_the_iou_threshold_is_not_merged() -> None:
    original = make([[0, 0, 4, 4]], [block(4, 4, 0.8)], [0.9])
    mirrored = make([[1, 0, 5, 4]], [block(4, 4, 0.6)], [0.7])  # IoU 0.6

    merged = merge_flip_instances(original, mirrored, iou_threshold=0.7, unmatched_min_score=0.5)

    assert len(merged) == 2  # both unmatched, both score >= 0.5: kept unchanged
    assert merged.boxes.tolist() == [[0, 0, 4, 4], [1, 0, 5, 4]]
    np.testing.assert_array_equal(merged.masks[0], original.masks[0])
    np.testing.assert_array_equal(merged.masks[1], mirrored.masks[0])
    assert merged.scores.tolist() == pytest.approx([0.9, 0.7])


def test_unmatched_instances_kept_only_at_or_above_the_min_score() -> None:
    original = make([[0, 0, 3, 3], [6, 0, 9, 3]], [block(3, 3, 0.9), block(3, 3, 0.9)], [0.8, 0.45])
    mirrored = make([[0, 0, 3, 3], [3, 3, 6, 6]], [block(3, 3, 0.9), block(3, 3, 0.9)], [0.6, 0.5])

    merged = merge_flip_instances(original, mirrored, unmatched_min_score=0.5)

    # (0,0) pair merged at 0.7; original #1 (0.45) dropped; mirrored #1 (exactly 0.5) kept.
    assert merged.boxes.tolist() == [[0, 0, 3, 3], [3, 3, 6, 6]]
    assert merged.scores.tolist() == pytest.approx([0.7, 0.5])
    note = merged.notes[-1]
    assert "merged 1 instance(s)" in note and "of 2 found in only one, kept 1" in note and "dropped 1" in note


def test_greedy_matching_gives_the_contested_partner_to_the_better_original() -> None:
    # Two originals overlap the single mirrored instance equally well; the better-scoring one wins it.
    weak = make([[0, 0, 4, 4]], [block(4, 4, 0.9)], [0.6])
    strong = make([[0, 0, 4, 4]], [block(4, 4, 0.7)], [0.9])
    original = weak.appended(strong)
    mirrored = make([[0, 0, 4, 4]], [block(4, 4, 0.5)], [0.8])

    merged = merge_flip_instances(original, mirrored, unmatched_min_score=0.65)

    assert len(merged) == 1  # the weak original is unmatched and below 0.65: dropped
    assert merged.scores.tolist() == pytest.approx([0.85])
    np.testing.assert_allclose(merged.masks[0], block(4, 4, 0.6))


def test_each_mirrored_instance_pairs_with_its_best_overlap() -> None:
    original = make([[0, 0, 4, 4]], [block(4, 4, 0.9)], [0.9])
    mirrored = make([[1, 0, 5, 4], [0, 0, 4, 4]], [block(4, 4, 0.9), block(4, 4, 0.7)], [0.95, 0.3])

    merged = merge_flip_instances(original, mirrored, unmatched_min_score=0.99)

    # IoU 1.0 with mirrored #1 beats 0.6 with mirrored #0, whatever their scores.
    assert merged.boxes.tolist() == [[0, 0, 4, 4]]
    assert merged.scores.tolist() == pytest.approx([0.6])
    np.testing.assert_allclose(merged.masks[0], block(4, 4, 0.8))


def test_empty_views() -> None:
    empty = Instances.empty(SIZE, "rtmdet")
    assert len(merge_flip_instances(empty, empty)) == 0
    one = make([[0, 0, 3, 3], [5, 0, 8, 3]], [block(3, 3, 0.9), block(3, 3, 0.9)], [0.9, 0.2])

    merged = merge_flip_instances(one, empty, unmatched_min_score=0.5)

    assert merged.boxes.tolist() == [[0, 0, 3, 3]]
    assert "kept 1" in merged.notes[-1] and "dropped 1" in merged.notes[-1]


def test_rejects_other_pictures_and_bad_options() -> None:
    a = make([[0, 0, 3, 3]], [block(3, 3, 0.9)], [0.9])
    other = Instances.empty((7, 10), "rtmdet")
    with pytest.raises(ValueError, match="same picture"):
        merge_flip_instances(a, other)
    with pytest.raises(ValueError, match="iou_threshold"):
        merge_flip_instances(a, a, iou_threshold=0.0)
    with pytest.raises(ValueError, match="unmatched_min_score"):
        merge_flip_instances(a, a, unmatched_min_score=1.5)
