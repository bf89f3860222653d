"""The Instances type and the one-click rule (apply_click); the history rule is in test_session.py."""

from __future__ import annotations

import numpy as np
import pytest

from inference.instances import Click, Instances, apply_click, tight_box


def select_instances(instances, clicks):
    """Clicks applied one by one with :func:`apply_click`, starting from nobody chosen."""
    chosen: set[int] = set()
    for click in clicks:
        apply_click(instances, chosen, click)
    return sorted(chosen)


def _square(size, x0, y0, x1, y1, value=1.0):
    m = np.zeros(size, np.float32)
    m[y0:y1, x0:x1] = value
    return m


@pytest.fixture
def overlapping():
    """Three characters on a 40x60 picture: A (score .6) and B (score .9) overlap, C apart."""
    size = (40, 60)
    a = _square(size, 5, 5, 25, 30)
    b = _square(size, 15, 10, 35, 35)
    c = _square(size, 45, 5, 55, 15, 0.8)
    return Instances.from_full_masks([a, b, c], [0.6, 0.9, 0.7], "test")


def test_masks_are_cropped_to_tight_boxes(overlapping):
    np.testing.assert_array_equal(overlapping.boxes, [[5, 5, 25, 30], [15, 10, 35, 35], [45, 5, 55, 15]])
    assert [m.shape for m in overlapping.masks] == [(25, 20), (25, 20), (10, 10)]
    np.testing.assert_array_equal(overlapping.full_mask(2), _square((40, 60), 45, 5, 55, 15, 0.8))


def test_combined_alpha_is_pixelwise_max(overlapping):
    combined = overlapping.combined_alpha([0, 2])
    assert combined[7, 50] == pytest.approx(0.8)
    assert combined[20, 10] == 1.0
    assert combined[30, 30] == 0.0  # only B covers it, B not chosen


def test_include_click_on_overlap_picks_best_score(overlapping):
    assert select_instances(overlapping, [Click(20, 20)]) == [1]


def test_include_click_outside_overlap_picks_covering_instance(overlapping):
    assert select_instances(overlapping, [Click(7, 7)]) == [0]


def test_several_clicks_combine_and_exclude_removes(overlapping):
    clicks = [Click(7, 7), Click(50, 10), Click(30, 30)]
    assert select_instances(overlapping, clicks) == [0, 1, 2]
    assert select_instances(overlapping, clicks + [Click(50, 10, include=False)]) == [0, 1]


def test_exclude_on_overlap_removes_best_chosen_one(overlapping):
    # Both A and B chosen; an exclude on their overlap removes B (higher score) first, then A.
    clicks = [Click(7, 7), Click(30, 30), Click(20, 20, include=False)]
    assert select_instances(overlapping, clicks) == [0]
    assert select_instances(overlapping, clicks + [Click(20, 20, include=False)]) == []


def test_background_and_outside_clicks_pick_nothing(overlapping):
    assert select_instances(overlapping, [Click(40, 38), Click(-1, 5), Click(60, 0), Click(0, 40)]) == []


def test_soft_mask_below_half_does_not_cover():
    m = _square((10, 10), 0, 0, 10, 10, 0.4)
    inst = Instances.from_full_masks([m], [0.9], "test")
    assert select_instances(inst, [Click(5, 5)]) == []
    assert inst.covering(5, 5) == []


def test_covering_is_best_score_first(overlapping):
    assert overlapping.covering(20, 20) == [1, 0] and overlapping.covering(7, 7) == [0]
    assert overlapping.covering(50, 10) == [2] and overlapping.covering(2, 38) == []


def test_apply_click_reports_what_changed(overlapping):
    chosen = {0}
    assert apply_click(overlapping, chosen, Click(30, 30)) == 1 and chosen == {0, 1}
    assert apply_click(overlapping, chosen, Click(50, 10, include=False)) is None  # C not chosen
    assert apply_click(overlapping, chosen, Click(20, 20, include=False)) == 1 and chosen == {0}


def test_left_to_right_numbering():
    size = (40, 60)
    right = _square(size, 40, 5, 50, 15)
    left_low = _square(size, 5, 20, 15, 30)
    left_high = _square(size, 5, 2, 12, 10)
    inst = Instances.from_full_masks([right, left_low, left_high], [0.9, 0.8, 0.7], "t").with_notes("n")
    ordered = inst.left_to_right()
    np.testing.assert_array_equal(ordered.boxes[:, :2], [[5, 2], [5, 20], [40, 5]])
    np.testing.assert_array_equal(ordered.scores, np.float32([0.7, 0.8, 0.9]))
    assert ordered.notes == ("n",)
    assert ordered.left_to_right() is ordered  # already in order: the same object


def test_validation_messages():
    with pytest.raises(ValueError, match="expected a mask of shape"):
        Instances((10, 10), np.array([[0, 0, 5, 5]]), (np.zeros((4, 4), np.float32),), np.array([1.0]), "x")
    with pytest.raises(ValueError, match="inside the 10x10 picture"):
        Instances((10, 10), np.array([[0, 0, 11, 5]]), (np.zeros((5, 11), np.float32),), np.array([1.0]), "x")
    with pytest.raises(ValueError, match="as many boxes and scores"):
        Instances((10, 10), np.zeros((0, 4)), (np.zeros((5, 5), np.float32),), np.array([1.0]), "x")


def test_empty_masks_are_dropped_and_empty_set_works():
    inst = Instances.from_full_masks([np.zeros((5, 5))], [0.9], "x")
    assert len(inst) == 0 and inst.image_size == (5, 5)
    assert select_instances(Instances.empty((5, 5), "x"), [Click(1, 1)]) == []
    assert Instances.empty((5, 5), "x").combined_alpha([]).shape == (5, 5)


def test_subset_append_and_notes(overlapping):
    sub = overlapping.subset([2, 0]).with_notes("hello")
    np.testing.assert_array_equal(sub.scores, np.float32([0.7, 0.6]))
    both = sub.appended(overlapping.subset([1]))
    assert len(both) == 3 and both.notes == ("hello",)
    assert both.by_score == (2, 0, 1)


def test_memory_is_bounded_by_boxes():
    # Ten characters on an 8 MP picture: the crops, not ten full frames, are stored.
    height, width = 2448, 3264
    boxes = np.array([[i * 300, 100, i * 300 + 250, 900] for i in range(10)], np.int32)
    masks = tuple(np.ones((800, 250), np.float32) for _ in range(10))
    inst = Instances((height, width), boxes, masks, np.linspace(0.5, 0.9, 10), "x")
    assert inst.nbytes() == 10 * 800 * 250 * 4  # 8 MB, versus 320 MB for full-frame float masks


def test_tight_box():
    m = np.zeros((6, 8), bool)
    assert tight_box(m) is None
    m[2, 3] = m[4, 6] = True
    assert tight_box(m) == (3, 2, 7, 5)
    assert tight_box(m, margin=2) == (1, 0, 8, 6)  # grown, clipped to the mask
    assert tight_box(m.astype(np.float32) * 0.2) == (3, 2, 7, 5)  # any dtype: nonzero counts
    assert tight_box(m[:, ::-1]) == (1, 2, 5, 5)  # non-contiguous views too
    with pytest.raises(ValueError, match="margin"):
        tight_box(m, margin=-1)


def test_tight_box_matches_a_reference_on_random_masks():
    rng = np.random.default_rng(3)
    for _ in range(50):
        m = rng.random((int(rng.integers(1, 40)), int(rng.integers(1, 40)))) > rng.uniform(0.9, 1.0)
        ys, xs = np.nonzero(m)
        expected = None if xs.size == 0 else (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert tight_box(m) == expected


def test_describe_numbers_as_people_see_them(overlapping):
    described = overlapping.describe()
    assert [d["number"] for d in described] == [1, 2, 3] and [d["index"] for d in described] == [0, 1, 2]
    assert described[2] == {"index": 2, "number": 3, "box_xyxy": [45, 5, 55, 15], "score": 0.7, "area_px": 100}
