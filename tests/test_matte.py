"""The matte stage: guided filters against independent references, mask clean-up with
known answers, feathering, colour decontamination and the whole refine_alpha pipeline."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

from inference import matte, snapping
from inference.foreground import FOREGROUND_RADII, estimate_foreground
from inference.guided_filter import fast_guided_filter, guided_filter
from inference.matte import (
    MatteSettings,
    feather_alpha,
    fill_small_holes,
    refine_alpha,
    remove_small_regions,
)
from tests.scenes import coarse_mask, make_scene, refine_net_like


# ---------------------------------------------------------------------------- independent references
def slow_guided_filter(I: np.ndarray, p: np.ndarray, r: int, eps: float) -> np.ndarray:
    """He et al.'s colour guided filter written out window by window, in float64.

    The guide and the input are first extended by mirroring (``abc|cba``, OpenCV's
    BORDER_REFLECT) by 2r, so every window that touches the picture is a plain window.
    """
    I = np.asarray(I, np.float64)
    p = np.asarray(p, np.float64)
    height, width = p.shape
    I_pad = np.pad(I, ((2 * r, 2 * r), (2 * r, 2 * r), (0, 0)), mode="symmetric")
    p_pad = np.pad(p, 2 * r, mode="symmetric")
    # Coefficients for every window centre within r of the picture.
    a = np.zeros((height + 2 * r, width + 2 * r, 3))
    b = np.zeros((height + 2 * r, width + 2 * r))
    for y in range(height + 2 * r):
        for x in range(width + 2 * r):
            cy, cx = y + r, x + r
            window_I = I_pad[cy - r : cy + r + 1, cx - r : cx + r + 1].reshape(-1, 3)
            window_p = p_pad[cy - r : cy + r + 1, cx - r : cx + r + 1].reshape(-1)
            mu = window_I.mean(axis=0)
            p_bar = window_p.mean()
            sigma = (window_I - mu).T @ (window_I - mu) / window_p.size
            cov_Ip = (window_I * window_p[:, None]).mean(axis=0) - mu * p_bar
            a_k = np.linalg.solve(sigma + eps * np.eye(3), cov_Ip)
            a[y, x] = a_k
            b[y, x] = p_bar - a_k @ mu
    q = np.zeros((height, width))
    for y in range(height):
        for x in range(width):
            mean_a = a[y : y + 2 * r + 1, x : x + 2 * r + 1].reshape(-1, 3).mean(axis=0)
            mean_b = b[y : y + 2 * r + 1, x : x + 2 * r + 1].mean()
            q[y, x] = mean_a @ I[y, x] + mean_b
    return q


def slow_blur_fusion(image: np.ndarray, alpha: np.ndarray, radii: tuple[int, ...]) -> np.ndarray:
    """Forte & Pitié's blur-fusion written out densely in float64, one step per radius.

    Box sums come from summed-area tables of the mirrored (``abc|cba``) picture. A last step at
    the radius of the step before keeps that step's background mean.
    """
    I = image.astype(np.float64)
    a = alpha.astype(np.float64)[:, :, None]
    F = I.copy()
    B = I.copy()

    def box_sum(x: np.ndarray, r: int) -> np.ndarray:
        height, width = x.shape[:2]
        padded = np.pad(x, ((r + 1, r), (r + 1, r), (0, 0)), mode="symmetric")
        table = padded.cumsum(axis=0).cumsum(axis=1)
        size = 2 * r + 1
        return (
            table[size:, size:] - table[:-size, size:] - table[size:, :-size] + table[:-size, :-size]
        )[:height, :width]

    for step, r in enumerate(radii):
        mean_F = box_sum(a * F, r) / np.maximum(box_sum(a, r), 1e-12)
        if not (step == len(radii) - 1 and step > 0 and radii[step - 1] == r):
            mean_B = box_sum((1 - a) * B, r) / np.maximum(box_sum(1 - a, r), 1e-12)
        residual = I - a * mean_F - (1 - a) * mean_B
        F = mean_F + a * residual
        B = mean_B + (1 - a) * residual
    return F


@pytest.fixture(scope="module")
def small_scene():
    return make_scene(2, "textured", (180, 320), seed=7)


@pytest.fixture(scope="module")
def scene():
    return make_scene(2, "textured", (360, 640), seed=11)


# ---------------------------------------------------------------------------- guided filter
@pytest.mark.parametrize(("r", "eps"), [(1, 1e-2), (2, 1e-3), (3, 1e-4), (2, 1e-5)])
def test_guided_filter_matches_window_by_window_reference(small_scene, r, eps):
    image = small_scene.image[40:64, 60:92]  # a patch with a character edge and texture
    src = refine_net_like(small_scene.alpha, long_side=120)[40:64, 60:92]
    expected = slow_guided_filter(image / 255.0, src, r, eps)
    got = guided_filter(image, src, r, eps)
    assert got.dtype == np.float32 and got.shape == src.shape
    # float32 box sums against float64; small eps amplifies rounding through the solve.
    np.testing.assert_allclose(got, expected, atol=1e-4 if eps >= 1e-4 else 2e-4)
    assert np.abs(expected - src).max() > 0.05  # the filter really changed something


@pytest.mark.parametrize(("r", "eps"), [(2, 1e-2), (4, 1e-3), (8, 1e-4), (12, 1e-3)])
def test_guided_filter_matches_ximgproc_on_a_0_255_guide(small_scene, r, eps):
    # ximgproc clamps tiny covariance determinants when eps < 1e-2, which fires on flat
    # areas of a [0, 1] guide; on a [0, 255] guide with eps * 255^2 it computes the same filter.
    src = coarse_mask(small_scene.alpha, long_side=100)
    expected = cv2.ximgproc.guidedFilter(small_scene.image.astype(np.float32), src, r, eps * 255.0**2)
    got = guided_filter(small_scene.image, src, r, eps)
    np.testing.assert_allclose(got, expected, atol=2e-4)


def test_guided_filter_float_guide_equals_uint8_guide(small_scene):
    src = coarse_mask(small_scene.alpha, long_side=100)
    from_uint8 = guided_filter(small_scene.image, src, 3, 1e-3)
    from_float = guided_filter(small_scene.image.astype(np.float32) / 255.0, src, 3, 1e-3)
    np.testing.assert_allclose(from_uint8, from_float, atol=1e-5)


def _two_discs(shape: tuple[int, int]) -> np.ndarray:
    """A 0/1 map with a soft-edged disc inside and one cut by the top-left border, float32."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    inner = np.hypot(yy - shape[0] * 0.6, xx - shape[1] * 0.7) - 30.0
    corner = np.hypot(yy - 5.0, xx - 3.0) - 22.0
    return np.clip(0.5 - np.minimum(inner, corner) / 3.0, 0.0, 1.0).astype(np.float32)


@pytest.mark.parametrize("radius", [1, 2.5, 4, 8])
def test_guided_filter_near_edges_is_the_guided_filter_where_it_matters(scene, radius):
    from inference.guided_filter import Guide, guided_filter_near_edges, guided_filter_with

    p = _two_discs(scene.image.shape[:2])
    expected = guided_filter_with(Guide(scene.image), p, radius, 1e-4)
    got = guided_filter_near_edges(scene.image, p, radius, 1e-4)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    changed = np.abs(expected - p) > 1e-3
    assert changed.any() and changed.mean() < 0.2  # a real edge, and most tiles could be skipped


@pytest.mark.parametrize("subsample", [1, 2])
def test_add_guided_filter_of_changes_is_the_filter_of_the_changed_map(scene, subsample):
    from inference.guided_filter import Guide, add_guided_filter_of_changes, fast_guided_filter_with

    rng = np.random.default_rng(3)
    p = _two_discs(scene.image.shape[:2])
    for pieces in (3, 40):  # a few boxes, and more than the piece limit (one box around all)
        changed = np.zeros(p.shape, bool)
        for y, x in zip(rng.integers(0, p.shape[0] - 4, pieces), rng.integers(0, p.shape[1] - 4, pieces)):
            changed[y : y + 3, x : x + 4] = True
        changed[-2:, -3:] = True  # one at the corner (mirrored border)
        changed[50:60, 50:60] = True  # a ring with a piece in its hole (one outer contour holds both)
        changed[53:57, 53:57] = False
        changed[54:56, 54:56] = True
        before = changed.copy()
        delta = rng.uniform(-1, 1, p.shape).astype(np.float32)
        out = fast_guided_filter_with(Guide(scene.image), p, 3, 1e-3, subsample)
        add_guided_filter_of_changes(out, scene.image, delta, changed, 3, 1e-3, subsample=subsample)
        changed_map = p + np.where(changed, delta, 0).astype(np.float32)
        expected = fast_guided_filter_with(Guide(scene.image), changed_map, 3, 1e-3, subsample)
        np.testing.assert_allclose(out, expected, atol=1e-5)
        assert np.array_equal(changed, before)


@pytest.mark.parametrize("fast", [False, True])
def test_refine_alpha_with_islands_and_holes_is_the_filter_of_the_cleaned_ramp(scene, fast):
    # The guided filter runs beside the island and hole steps and is corrected afterwards:
    # the result must be the filter of the ramp with the cleaned mask written in (the exact
    # filter, or the fast one on the picture's 2-px grid: 640x360 is a whole number of cells).
    prior = refine_net_like(scene.alpha, long_side=200)
    prior[100:103, 300:304] = 0.0  # a hole in the character (if it is there) ...
    prior[20:23, 20:23] = 1.0  # ... and a speck far from it
    settings = MatteSettings(strands=False, min_island_area=16, max_hole_area=64, fast=fast)
    assert settings.fast_subsample == 2
    mask = prior >= 0.5
    cleaned = fill_small_holes(remove_small_regions(mask, 16), 64)
    assert (cleaned != mask).sum() >= 9
    ramp = np.clip((prior - 0.5) / matte.PRIOR_RAMP + 0.5, 0, 1).astype(np.float32)
    ramp[cleaned != mask] = cleaned[cleaned != mask]
    if fast:
        expected = np.clip(fast_guided_filter(scene.image, ramp, 4, 1e-4, 2), 0, 1)
    else:
        expected = np.clip(guided_filter(scene.image, ramp, 4, 1e-4), 0, 1)
    got, report = matte.refine_alpha_with_report(scene.image, prior, settings)
    assert report.islands_removed >= 1
    np.testing.assert_allclose(got, expected, atol=2e-3)
    assert got[20:23, 20:23].max() == 0.0


def test_guided_filter_known_answers():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    # A constant passes through unchanged (a = 0, b = the constant).
    np.testing.assert_allclose(guided_filter(image, np.full((40, 50), 0.3, np.float32), 3, 1e-3), 0.3, atol=1e-6)
    # An input that is a linear function of the guide is reproduced when eps is tiny.
    src = (0.2 + 0.5 * image[:, :, 1] / 255.0).astype(np.float32)
    np.testing.assert_allclose(guided_filter(image, src, 2, 1e-7), src, atol=1e-3)


def test_fast_guided_filter_at_subsample_1_is_the_guided_filter(small_scene):
    src = refine_net_like(small_scene.alpha, long_side=120)
    for r, eps in [(2, 1e-4), (5, 1e-2)]:
        fast = fast_guided_filter(small_scene.image, src, r, eps, 1)
        assert np.array_equal(fast, guided_filter(small_scene.image, src, r, eps))


def test_fast_guided_filter_is_close_to_the_full_one_on_smooth_inputs():
    height, width = 120, 160
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    guide = np.stack(
        [0.5 + 0.4 * np.sin(x / 23.0), 0.5 + 0.4 * np.cos(y / 31.0), 0.5 + 0.3 * np.sin((x + y) / 41.0)], axis=2
    ).astype(np.float32)
    src = (0.5 + 0.3 * np.sin(x / 17.0 + y / 29.0)).astype(np.float32)
    full = guided_filter(guide, src, 8, 1e-3)
    for subsample in (2, 4):
        fast = fast_guided_filter(guide, src, 8, 1e-3, subsample)
        inner = (slice(8, -8), slice(8, -8))  # the subsampled grid treats borders a little differently
        assert np.abs(fast - full)[inner].max() < 0.02
        assert np.abs(fast - full)[inner].mean() < 0.003


def test_fast_guided_filter_output_shape_for_sizes_not_divisible_by_the_subsample(small_scene):
    image = small_scene.image[:97, :131]
    src = small_scene.alpha[:97, :131]
    out = fast_guided_filter(image, src, 4, 1e-3, 4)
    assert out.shape == (97, 131) and out.dtype == np.float32
    assert np.abs(out - guided_filter(image, src, 4, 1e-3)).mean() < 0.02


# ---------------------------------------------------------------------------- islands and holes
def test_remove_small_regions_known_areas():
    mask = np.zeros((20, 30), bool)
    mask[2:12, 2:12] = True  # 100 px
    mask[15:18, 20:23] = True  # 9 px
    mask[5, 25] = True  # 1 px
    mask[10, 18] = mask[11, 19] = True  # 2 px, joined only diagonally (8-connected: one component)
    kept = remove_small_regions(mask, 10)
    expected = np.zeros_like(mask)
    expected[2:12, 2:12] = True
    assert np.array_equal(kept, expected)
    # Areas are compared strictly: a 9-px piece survives min_area 9, the diagonal pair min_area 2.
    assert remove_small_regions(mask, 9)[15:18, 20:23].all()
    assert remove_small_regions(mask, 2)[10, 18] and remove_small_regions(mask, 2)[11, 19]
    assert not remove_small_regions(mask, 3)[10, 18]
    assert np.array_equal(remove_small_regions(mask, 0), mask)
    assert remove_small_regions(mask, 0) is not mask


def test_fill_small_holes_known_areas_and_border():
    mask = np.zeros((30, 40), bool)
    mask[2:20, 2:30] = True
    mask[5:7, 5:7] = False  # 4-px hole
    mask[10:15, 10:15] = False  # 25-px hole
    mask[0:8, 33:36] = True
    mask[0:8, 37:40] = True
    mask[7, 36] = True  # a 7-px notch open to the top border between two bars: not a hole
    filled = fill_small_holes(mask, 26)
    assert filled[5:7, 5:7].all() and filled[10:15, 10:15].all()
    assert not filled[0:7, 36].any()  # touches the border: never filled
    small_only = fill_small_holes(mask, 25)  # holes with fewer than 25 px
    assert small_only[5:7, 5:7].all() and not small_only[10:15, 10:15].any()
    assert np.array_equal(fill_small_holes(mask, 0), mask)


def test_fill_small_holes_uses_4_connectivity():
    mask = np.ones((7, 7), bool)
    mask[0, :] = False  # the outside, along the top border
    mask[1, 2] = False  # joined to the outside
    mask[2, 3] = False  # touches (1, 2) only diagonally: enclosed under 4-connectivity
    filled = fill_small_holes(mask, 2)
    assert filled[2, 3]
    assert not filled[1, 2] and not filled[0].any()


# ---------------------------------------------------------------------------- feathering
def test_feather_keeps_interior_and_far_background():
    alpha = np.zeros((80, 80), np.float32)
    cv2.circle(alpha, (40, 40), 25, 1.0, -1)
    feathered = feather_alpha(alpha, 3.0)
    distance_in = cv2.distanceTransform((alpha > 0).astype(np.uint8), cv2.DIST_L2, 5)
    distance_out = cv2.distanceTransform((alpha == 0).astype(np.uint8), cv2.DIST_L2, 5)
    interior = distance_in > 4.5  # farther than ceil(3) px in chessboard distance, with margin
    far = distance_out > 4.5
    np.testing.assert_allclose(feathered[interior], 1.0, atol=1e-6)
    assert np.all(feathered[far] == 0.0)
    edge = (distance_in > 0) & (distance_in <= 1.5)
    assert 0.3 < feathered[edge].mean() < 0.9  # the edge really got soft
    assert feathered.min() >= 0.0 and feathered.max() <= 1.0
    assert np.array_equal(feather_alpha(alpha, 0), alpha)


# ---------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "kwargs",
    [
        {"threshold": 0.0},
        {"threshold": 1.0},
        {"threshold": "0.5"},
        {"min_island_area": -1},
        {"min_island_area": 2.5},
        {"max_hole_area": True},
        {"guided_radius": -2},
        {"guided_eps": 0.0},
        {"guided_eps": float("nan")},
        {"feather": -1.0},
        {"decontaminate": "yes"},
        {"fast": 1},
    ],
)
def test_matte_settings_validation(kwargs):
    with pytest.raises(ValueError, match="expected"):
        MatteSettings(**kwargs)


def test_matte_settings_defaults_are_valid_and_frozen():
    settings = MatteSettings()
    assert 0 < settings.threshold < 1 and settings.guided_eps > 0
    with pytest.raises(AttributeError):
        settings.threshold = 0.3  # type: ignore[misc]


def test_functions_reject_bad_inputs():
    image = np.zeros((10, 12, 3), np.uint8)
    alpha = np.zeros((10, 12), np.float32)
    cases = [
        lambda: guided_filter(image, alpha[:5], 2, 1e-3),
        lambda: guided_filter(image[:, :, 0], alpha, 2, 1e-3),
        lambda: guided_filter(np.full((10, 12, 3), 2.0, np.float32), alpha, 2, 1e-3),  # float guide not in [0, 1]
        lambda: guided_filter(image, alpha, 0, 1e-3),
        lambda: guided_filter(image, alpha, 2, 0.0),
        lambda: fast_guided_filter(image, alpha, 2, 1e-3, 0),
        lambda: remove_small_regions(alpha, 3),
        lambda: fill_small_holes(alpha > 0, -1),
        lambda: feather_alpha(alpha, -0.5),
        lambda: estimate_foreground(image.astype(np.float32), alpha),
        lambda: estimate_foreground(image, alpha[:, :5]),
        lambda: estimate_foreground(image, alpha, radii=(4, 0)),
        lambda: estimate_foreground(image, alpha, radii=()),
        lambda: refine_alpha(image, alpha[:5], MatteSettings()),
        lambda: refine_alpha(image, (alpha * 255).astype(np.uint8), MatteSettings()),  # 0-255 mask, not [0, 1]
        lambda: refine_alpha(image, alpha, {"threshold": 0.5}),  # type: ignore[arg-type]
    ]
    for call in cases:
        with pytest.raises(ValueError, match="expected"):
            call()


# ---------------------------------------------------------------------------- refine_alpha
def sad(alpha: np.ndarray, truth: np.ndarray) -> float:
    return float(np.abs(alpha.astype(np.float64) - truth).sum())


def test_refine_alpha_improves_a_coarse_detector_mask(scene):
    # A 640-px detector on a 1920-px picture sees it 3x smaller: emulate that on 640 px.
    prior = coarse_mask(scene.alpha, long_side=214)
    for settings in (MatteSettings(), MatteSettings(fast=True)):
        alpha = refine_alpha(scene.image, prior, settings)
        assert sad(alpha, scene.alpha) < 0.8 * sad(prior, scene.alpha)


def test_refine_alpha_improves_a_refine_net_mask(scene):
    prior = refine_net_like(scene.alpha, long_side=240)  # a 720-px round trip of a 1920-px picture
    for settings in (MatteSettings(), MatteSettings(fast=True)):
        alpha = refine_alpha(scene.image, prior, settings)
        assert sad(alpha, scene.alpha) < 0.6 * sad(prior, scene.alpha)


def test_refine_alpha_output_contract(scene):
    prior = refine_net_like(scene.alpha, long_side=240)
    alpha = refine_alpha(scene.image, prior, replace(MatteSettings(), feather=1.5))
    assert alpha.dtype == np.float32 and alpha.shape == prior.shape
    assert alpha.min() >= 0.0 and alpha.max() <= 1.0
    # Values an 8-bit export would store as 0 or 255 are exactly 0 or 1.
    soft = alpha[(alpha > 0) & (alpha < 1)]
    assert soft.min() >= 0.5 / 255 and soft.max() <= 1 - 0.5 / 255
    far = cv2.dilate((prior > 0).astype(np.uint8), np.ones((31, 31), np.uint8)) == 0
    assert np.all(alpha[far] == 0.0)
    assert np.all(refine_alpha(scene.image, np.zeros_like(prior), MatteSettings()) == 0.0)


def test_refine_alpha_threshold_only_is_the_binary_mask():
    image = np.full((50, 60, 3), 128, np.uint8)
    prior = np.zeros((50, 60), np.float32)
    prior[10:30, 15:45] = 0.9
    prior[12:14, 20:22] = 0.1  # a 4-px hole: filled with max_hole_area 5
    prior[40:42, 5:7] = 0.8  # a 4-px speck: removed with min_island_area 5
    settings = MatteSettings(min_island_area=5, max_hole_area=5, guided_radius=0, feather=0.0)
    # On a flat picture no colour supports anything beyond the mask: strands add nothing.
    expected = np.zeros((50, 60), np.float32)
    expected[10:30, 15:45] = 1.0
    assert np.array_equal(refine_alpha(image, prior, settings), expected)
    keep_all = replace(settings, min_island_area=0, max_hole_area=0)
    assert refine_alpha(image, prior, keep_all)[40, 5] == 1.0 and refine_alpha(image, prior, keep_all)[12, 20] == 0.0


def test_refine_alpha_refills_holes_a_removed_speck_bordered():
    # Holes are filled on a side thread before the islands go; a speck removed from inside a
    # hole merges with it, so the holes must be filled again (else the speck leaves a hole).
    image = np.full((60, 80, 3), 128, np.uint8)
    prior = np.zeros((60, 80), np.float32)
    prior[5:35, 5:35] = 0.9
    prior[12:24, 12:24] = 0.0  # a 144-px hole ...
    prior[17:19, 17:19] = 0.9  # ... with a 4-px speck in it
    prior[45:47, 60:62] = 0.9  # and a speck in the open
    settings = MatteSettings(min_island_area=5, max_hole_area=200, guided_radius=0, strands=False)
    alpha, report = matte.refine_alpha_with_report(image, prior, settings)
    expected = np.zeros((60, 80), np.float32)
    expected[5:35, 5:35] = 1.0
    assert np.array_equal(alpha, expected)
    assert report == matte.MatteReport(islands_removed=2, holes_filled=1)
    mask = prior >= 0.5
    assert np.array_equal(alpha > 0, fill_small_holes(remove_small_regions(mask, 5), 200))


@pytest.mark.parametrize("fast", [False, True])
def test_refine_alpha_crop_gives_the_full_frame_result(scene, fast):
    # The pipeline only works inside the mask's box; written out on the full frame with
    # the public functions it must give the same alpha (the fast filter's cells lie on the
    # picture's grid wherever the box is).
    prior = refine_net_like(scene.alpha, long_side=240)
    settings = MatteSettings(
        min_island_area=0, max_hole_area=0, guided_radius=3, guided_eps=1e-3, feather=0.0, strands=False, fast=fast
    )
    ramp = np.clip((prior - settings.threshold) / matte.PRIOR_RAMP + 0.5, 0.0, 1.0).astype(np.float32)
    if fast:
        expected = np.clip(fast_guided_filter(scene.image, ramp, 3, 1e-3, settings.fast_subsample), 0.0, 1.0)
    else:
        expected = np.clip(guided_filter(scene.image, ramp, 3, 1e-3), 0.0, 1.0)
    expected[expected < 0.5 / 255] = 0.0
    expected[expected > 1 - 0.5 / 255] = 1.0
    np.testing.assert_allclose(refine_alpha(scene.image, prior, settings), expected, atol=1e-5)


# ---------------------------------------------------------------------------- decontamination
def test_estimate_foreground_known_answer_on_a_linear_blend():
    # Flat foreground over flat background through a 10-px alpha ramp: F is known exactly.
    # What shows over a new background is alpha * F, so that is what must be right.
    height, width = 40, 60
    F_true = np.array([200.0, 40.0, 90.0])
    B_true = np.array([20.0, 220.0, 60.0])
    alpha = np.zeros((height, width), np.float32)
    alpha[:, :20] = 1.0
    alpha[:, 20:30] = np.linspace(0.95, 0.05, 10, dtype=np.float32)
    image = (alpha[:, :, None] * F_true + (1 - alpha[:, :, None]) * B_true + 0.5).astype(np.uint8)
    foreground = estimate_foreground(image, alpha)
    band = (alpha > 0) & (alpha < 1)
    a = alpha[band][:, None]
    assert (a * np.abs(image[band] - F_true)).max() > 30.0  # the raw picture's halo
    assert (a * np.abs(foreground[band] - F_true)).max() <= 3.0
    assert np.abs(foreground[band][a[:, 0] > 0.5] - F_true).max() <= 3.0  # mostly-opaque: F itself
    assert np.array_equal(foreground[~band], image[~band])


def test_estimate_foreground_matches_a_dense_reference(small_scene):
    image = small_scene.image[20:100, 40:140]
    alpha = small_scene.alpha[20:100, 40:140]
    band = (alpha > 0) & (alpha < 1)
    assert band.sum() > 100
    # Radii below 8 run at full resolution: both compute the same thing.
    expected = np.clip(slow_blur_fusion(image, alpha, (6, 2, 1)) + 0.5, 0, 255).astype(np.uint8)
    got = estimate_foreground(image, alpha, radii=(6, 2, 1))
    assert np.abs(got[band].astype(int) - expected[band]).max() <= 1
    assert np.array_equal(got[~band], image[~band])
    # The default radii run their wide steps on coarser grids: close, not identical.
    expected = slow_blur_fusion(image, alpha, FOREGROUND_RADII)
    got = estimate_foreground(image, alpha)
    a = alpha[band][:, None]
    assert (a * np.abs(got[band] - expected[band])).mean() < 1.0


def test_decontamination_removes_the_old_background_halo(scene):
    new_background = np.zeros_like(scene.image)
    new_background[:] = (20, 200, 60)
    a = scene.alpha[:, :, None]
    truth = scene.foreground * a + new_background * (1 - a)
    band = (scene.alpha > 0) & (scene.alpha < 1)

    def halo(foreground: np.ndarray) -> float:
        return float(np.abs(foreground * a + new_background * (1 - a) - truth)[band].mean())

    raw = halo(scene.image.astype(np.float64))
    cleaned = halo(estimate_foreground(scene.image, scene.alpha).astype(np.float64))
    assert raw > 10.0  # the halo is real: the old textured background shows
    assert cleaned < 0.4 * raw


def test_estimate_foreground_with_a_wide_band_of_many_pixels():
    # Over 32767 band pixels (one OpenCV remap row's limit), the band touching every
    # border, and radii wider than the picture's grid allows.
    rng = np.random.default_rng(3)
    image = cv2.resize(rng.integers(0, 256, (12, 14, 3), dtype=np.uint8), (230, 190), interpolation=cv2.INTER_CUBIC)
    alpha = cv2.resize(rng.random((6, 7)).astype(np.float32), (230, 190), interpolation=cv2.INTER_LINEAR)
    alpha = np.clip(alpha * 1.4 - 0.2, 0.0, 1.0)
    band = (alpha > 0) & (alpha < 1)
    assert band.sum() > 32767
    got = estimate_foreground(image, alpha)
    expected = slow_blur_fusion(image, alpha, FOREGROUND_RADII)
    a = alpha[band][:, None]
    assert (a * np.abs(got[band] - expected[band])).mean() < 1.5
    assert np.array_equal(got[~band], image[~band])
    exact = estimate_foreground(image, alpha, radii=(5, 1))
    expected = np.clip(slow_blur_fusion(image, alpha, (5, 1)) + 0.5, 0, 255).astype(np.uint8)
    assert np.abs(exact[band].astype(int) - expected[band]).max() <= 1


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (9, 17), (40, 3)])
def test_tiny_pictures(shape):
    rng = np.random.default_rng(shape[0] * 100 + shape[1])
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    prior = rng.random(shape).astype(np.float32)
    for settings in (MatteSettings(feather=1.5), MatteSettings(fast=True)):
        alpha = refine_alpha(image, prior, settings)
        assert alpha.shape == shape and alpha.min() >= 0.0 and alpha.max() <= 1.0
        assert estimate_foreground(image, alpha).shape == image.shape
    assert guided_filter(image, prior, 3, 1e-3).shape == shape
    assert fast_guided_filter(image, prior, 4, 1e-3, 4).shape == shape


# ---------------------------------------------------------------------------- fractional windows (previews)
def test_box_mean_fractional_radius_is_the_weighted_window():
    from inference.guided_filter import box_mean

    rng = np.random.default_rng(5)
    x = rng.random((23, 31)).astype(np.float32)
    for radius in (0.4, 1.5, 2.25, 6.7):  # both ways of computing it
        whole, fraction = int(radius), radius - int(radius)
        weights = np.array([fraction] + [1.0] * (2 * whole + 1) + [fraction])
        weights /= weights.sum()
        pad = whole + 1
        padded = np.pad(x.astype(np.float64), pad, mode="symmetric")  # cv2.BORDER_REFLECT
        rows = sum(w * padded[k : k + x.shape[0], :] for k, w in enumerate(weights))
        expected = sum(w * rows[:, k : k + x.shape[1]] for k, w in enumerate(weights))
        np.testing.assert_allclose(box_mean(x, radius), expected, atol=1e-5)
    np.testing.assert_array_equal(box_mean(x, 2.0), box_mean(x, 2))


# ---------------------------------------------------------------------------- report
def test_refine_alpha_with_report_counts_specks_and_holes():
    from inference.matte import MatteReport, refine_alpha_with_report

    image = np.full((60, 80, 3), 128, np.uint8)
    prior = np.zeros((60, 80), np.float32)
    prior[10:40, 15:60] = 0.9
    prior[12:14, 20:22] = 0.1  # 4-px hole
    prior[20:23, 30:33] = 0.1  # 9-px hole
    prior[50:52, 5:7] = 0.8  # 4-px speck
    prior[50:52, 70:72] = 0.8  # 4-px speck
    prior[45:55, 30:31] = 0.8  # 10-px speck
    settings = MatteSettings(min_island_area=5, max_hole_area=5, guided_radius=0)
    alpha, report = refine_alpha_with_report(image, prior, settings)
    assert report == MatteReport(islands_removed=2, holes_filled=1)
    assert np.array_equal(alpha, refine_alpha(image, prior, settings))
    _, report = refine_alpha_with_report(image, prior, replace(settings, min_island_area=11, max_hole_area=10))
    assert report == MatteReport(islands_removed=3, holes_filled=2)
    _, report = refine_alpha_with_report(image, prior, replace(settings, min_island_area=0, max_hole_area=0))
    assert report == MatteReport(islands_removed=0, holes_filled=0)


# ---------------------------------------------------------------------------- thin structures
def test_strand_alpha_recovers_a_subpixel_line_from_a_blurred_prior():
    # A vertical line of alpha 0.4 (a 0.4-px strand) over a flat background; the prior is
    # the true alpha blurred (what a refine net's round trip leaves): peak ~0.1, far
    # below any threshold. Colour distance hands the prior's mass back to the line.
    height, width = 40, 60
    truth = np.zeros((height, width), np.float32)
    truth[5:35, 30] = 0.4
    F, B = np.array([230.0, 60.0, 90.0]), np.array([240.0, 235.0, 220.0])
    image = (truth[:, :, None] * F + (1 - truth[:, :, None]) * B + 0.5).astype(np.uint8)
    prior = cv2.GaussianBlur(truth, (0, 0), 2.0)
    assert prior.max() < 0.1
    alpha = refine_alpha(image, prior, MatteSettings(decontaminate=False))
    # The prior's tails below PRIOR_FLOOR carry no mass: a little of the 0.4 is lost.
    assert np.abs(alpha[8:32, 30] - 0.4).max() < 0.07
    off_line = np.ones_like(truth, bool)
    off_line[:, 29:32] = False
    assert alpha[off_line].max() < 0.03
    assert np.all(refine_alpha(image, prior, MatteSettings(strands=False)) == 0.0)  # the threshold drops it


@pytest.fixture(scope="module")
def strand_scene():
    from tests.scenes import make_strand_scene

    return make_strand_scene("textured", (540, 960), seed=3)


def test_strands_are_kept_on_a_known_alpha_scene(strand_scene):
    scene = strand_scene
    prior = refine_net_like(scene.alpha, long_side=360)  # the 720-px round trip of a 1920-px picture
    truth = scene.alpha
    thin = scene.thin

    def thin_recall(alpha: np.ndarray) -> float:
        return float(np.minimum(alpha, truth)[thin].sum() / truth[thin].sum())

    kept = refine_alpha(scene.image, prior, MatteSettings())
    dropped = refine_alpha(scene.image, prior, MatteSettings(strands=False))
    assert thin_recall(kept) > 0.75 and thin_recall(kept) > 2 * thin_recall(dropped)
    assert sad(kept[thin], truth[thin]) < 0.7 * sad(prior[thin], truth[thin])
    assert sad(kept, truth) < min(0.5 * sad(prior, truth), sad(dropped, truth))


# ---------------------------------------------------------------------------- previews
def _shrunk(alpha: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return cv2.resize(alpha, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)


def test_preview_inputs_shapes_and_scale(strand_scene):
    from inference.matte import preview_inputs, shrink_for_preview

    prior = refine_net_like(strand_scene.alpha, long_side=360)
    small_image, small_prior, settings = preview_inputs(strand_scene.image, prior, MatteSettings(), max_side=320)
    assert small_image.shape == (180, 320, 3) and small_prior.shape == (180, 320)
    assert settings == replace(MatteSettings(), scale=1 / 3)
    cached = shrink_for_preview(strand_scene.image, 320)
    again = preview_inputs(strand_scene.image, prior, MatteSettings(), max_side=320, small_image=cached)
    assert again[0] is cached and np.array_equal(again[1], small_prior) and again[2] == settings
    with pytest.raises(ValueError, match="expected small_image"):
        preview_inputs(strand_scene.image, prior, MatteSettings(), max_side=320, small_image=cached[:-1])
    same = preview_inputs(strand_scene.image, prior, MatteSettings(), max_side=960)
    assert same[0] is strand_scene.image and same[2] == MatteSettings()
    with pytest.raises(ValueError, match="expected"):
        preview_inputs(strand_scene.image, prior, MatteSettings(), max_side=0)


@pytest.mark.parametrize(
    "settings",
    [
        MatteSettings(),
        MatteSettings(guided_radius=12, guided_eps=1e-3),
        MatteSettings(guided_radius=32),  # coefficients on a 4x grid in preview and download
        MatteSettings(feather=3.0, threshold=0.3),
    ],
)
def test_preview_agrees_with_the_download_shrunk_to_its_size(strand_scene, settings):
    from inference.matte import preview_inputs

    prior = refine_net_like(strand_scene.alpha, long_side=360)
    download = refine_alpha(strand_scene.image, prior, settings)
    for max_side in (480, 320):
        preview = refine_alpha(*preview_inputs(strand_scene.image, prior, settings, max_side=max_side))
        assert np.abs(preview - _shrunk(download, preview.shape)).mean() <= 2 / 255


def _studio_steps() -> dict[str, list]:
    """The studio's slider ranges (studio/controls.py)."""
    areas = [0, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384]
    return {
        "threshold": [round(0.05 * k, 2) for k in range(1, 20)],
        "guided_radius": list(range(33)),
        "guided_eps": [1e-6, 3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1],
        "feather": [0.5 * k for k in range(21)],
        "min_island_area": areas,
        "max_hole_area": areas,
    }


@pytest.mark.parametrize("max_side", [480, 320])
def test_every_slider_step_that_changes_the_download_changes_the_preview(strand_scene, max_side):
    from inference.matte import preview_inputs

    scene = strand_scene
    prior = refine_net_like(scene.alpha, long_side=360)
    # Specks and holes of every size the island and hole sliders step through.
    x = 10
    for side in (2, 3, 4, 5, 7, 10, 14, 20, 30, 42, 60, 85):
        prior[5 : 5 + side, x : x + side] = 0.9
        x += side + 6
    body = scene.alpha >= 1
    ys, xs = np.nonzero(cv2.erode(body.view(np.uint8), np.ones((45, 45), np.uint8)))
    cy, cx = int(ys.mean()), int(xs.mean())
    x = cx - 60
    for side in (2, 3, 4, 5, 7, 10, 14):
        prior[cy - 20 : cy - 20 + side, x : x + side] = 0.0
        x += side + 6
    small_image, small_prior, scaled = preview_inputs(scene.image, prior, MatteSettings(), max_side=max_side)
    unchanged = []
    for field, steps in _studio_steps().items():
        previous = None
        for value in steps:
            settings = replace(MatteSettings(decontaminate=False), **{field: value})
            # What the user sees and gets: 8-bit alpha.
            download = np.round(refine_alpha(scene.image, prior, settings) * 255).astype(np.uint8)
            preview = np.round(refine_alpha(small_image, small_prior, replace(settings, scale=scaled.scale)) * 255)
            if previous is not None and not np.array_equal(download, previous[0]):
                if np.array_equal(preview, previous[1]):
                    unchanged.append((field, value))
            previous = (download, preview)
    # Known limit: at a third of the size, a hole under 8 px (under one preview pixel) only dims
    # the shrunk download by a few levels, and the preview's solid parts are 1 there either way.
    known = [("max_hole_area", 8)] if max_side < 480 else []
    assert unchanged == known, unchanged


def test_islands_remove_coloured_specks_but_not_strands_attached_to_the_character():
    height, width = 80, 100
    truth = np.zeros((height, width), np.float32)
    truth[30:70, 20:60] = 1.0  # the character
    truth[10:30, 40] = 0.5  # a half-pixel strand growing out of it
    truth[10:13, 80:83] = 1.0  # a 9-px speck of the same colour, far away
    F, B = np.array([60.0, 40.0, 160.0]), np.array([235.0, 230.0, 215.0])
    image = (truth[:, :, None] * F + (1 - truth[:, :, None]) * B + 0.5).astype(np.uint8)
    prior = cv2.GaussianBlur(truth, (0, 0), 1.5)
    prior[10:13, 80:83] = 0.9  # the segmenter saw the speck
    keep = refine_alpha(image, prior, MatteSettings(min_island_area=0))
    drop = refine_alpha(image, prior, MatteSettings(min_island_area=64))
    assert keep[10:13, 80:83].min() > 0.8  # colours and prior support the speck...
    assert np.all(drop[5:18, 75:88] == 0.0)  # ...yet the island slider removes it, halo and all
    np.testing.assert_array_equal(drop[:, :70], keep[:, :70])  # and leaves the strand alone
    assert drop[14:26, 40].min() > 0.35


# ---------------------------------------------------------------------------- the competitor baseline
def test_nuggy_baseline_gray_guided_filter_matches_ximgproc(small_scene):
    from bench.nuggy import gray_guided_filter

    gray = cv2.cvtColor(small_scene.image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    src = coarse_mask(small_scene.alpha, long_side=100)
    for r, eps in ((4, 1e-4), (2, 1e-2)):
        # ximgproc on a [0, 255] gray guide with eps * 255^2 is the same filter as ours on [0, 1].
        expected = cv2.ximgproc.guidedFilter(gray, src, r, eps * 255.0**2)
        np.testing.assert_allclose(gray_guided_filter(gray / 255.0, src, r, eps), expected, atol=2e-4)


def test_nuggy_baseline_removes_small_islands_and_keeps_the_size():
    from bench.nuggy import nuggy_alpha

    image = np.full((300, 500, 3), 200, np.uint8)
    prior = np.zeros((300, 500), np.float32)
    prior[50:250, 100:300] = 1.0  # 40000 px: kept
    prior[20:30, 400:410] = 1.0  # 100 px, ~700 px at 1024x1024 (< 0.1 %): removed
    image[prior > 0] = (40, 40, 160)
    alpha = nuggy_alpha(image, prior)
    assert alpha.shape == prior.shape and alpha.dtype == np.float32
    assert alpha[100:200, 150:250].min() > 0.99 and alpha[15:35, 395:415].max() == 0.0


def test_strands_keep_a_soft_prior_as_it_is_where_no_background_is_in_reach():
    # A prior of 0.3 over the whole picture: no pixel is background evidence, so there is no
    # background colour to measure against; the texture must not decide the alpha.
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    prior = np.full((60, 80), 0.3, np.float32)
    alpha = refine_alpha(image, prior, MatteSettings(guided_radius=0))
    np.testing.assert_allclose(alpha, 0.3, atol=1e-5)



# ---------------------------------------------------------------------------- islands and holes from contours
def _reference_islands(mask: np.ndarray, min_area: int) -> tuple[np.ndarray, int]:
    """Specks dropped by labelling every pixel (the definition): ``(mask without them, how many)``."""
    count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    small = np.bincount(labels.ravel(), minlength=count) < min_area
    small[0] = False
    return mask & ~small[labels], int(small.sum())


def _reference_holes(mask: np.ndarray, max_area: int) -> tuple[np.ndarray, int, np.ndarray]:
    """Holes filled by labelling every pixel: ``(filled mask, how many, enclosed background)``."""
    count, labels = cv2.connectedComponents((~mask).astype(np.uint8), connectivity=4)
    inner = np.ones(count, bool)
    inner[0] = False
    inner[np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])] = False
    small = (np.bincount(labels.ravel(), minlength=count) < max_area) & inner
    return mask | small[labels], int(small.sum()), inner[labels]


def _busy_mask(seed: int) -> np.ndarray:
    """Blobs with holes, specks, rings with specks inside, 1-px diagonal and straight lines, and
    pieces at the border: the cases a contour-based count can get wrong."""
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.random((120, 160)).astype(np.float32), (0, 0), 2.0)
    mask = noise > np.quantile(noise, 0.55)
    mask |= rng.random(mask.shape) > 0.985  # single-pixel specks
    for _ in range(6):
        y, x = rng.integers(5, 110), rng.integers(5, 150)
        size = int(rng.integers(3, 9))
        mask[y : y + size, x : x + size] = True
        mask[y + 1 : y + size - 1, x + 1 : x + size - 1] = False  # a ring ...
        if size > 4:
            mask[y + size // 2, x + size // 2] = True  # ... with a speck in its hole
    for k in range(12):  # diagonal strokes, 8-connected only, some closing little pockets
        y, x = rng.integers(0, 100), rng.integers(0, 140)
        mask[y + np.arange(k + 4), x + np.arange(k + 4)] = True
    mask[0, 40:60] = True
    mask[:, 0] = rng.random(120) > 0.5
    return mask


@pytest.mark.parametrize("seed", range(6))
def test_contour_islands_and_holes_match_labelling_every_pixel(seed):
    from inference.mask_regions import fill_small_holes_inplace, remove_small_regions_inplace

    mask = _busy_mask(seed)
    for area in (2, 3, 5, 9, 16, 40, 256):
        expected, count = _reference_islands(mask, area)
        got = mask.copy()
        assert remove_small_regions_inplace(got, area) == count
        assert np.array_equal(got, expected), area
        expected, count, enclosed = _reference_holes(mask, area)
        got, got_enclosed = mask.copy(), np.empty_like(mask)
        assert fill_small_holes_inplace(got, area, enclosed=got_enclosed) == count
        assert np.array_equal(got, expected), area
        assert np.array_equal(got_enclosed, enclosed)
        assert count > 0 or area <= 2


def _reference_covered_areas(labels: np.ndarray, count: int, coverage: np.ndarray, pixel_area: float) -> np.ndarray:
    """A preview's areas by their definition: each component's coverage summed over it and the
    pixels next to it (each counted once, for the neighbour with the highest label), every pixel."""
    neighbourhood = np.pad(labels, 1, constant_values=-1)
    height, width = labels.shape
    grown = np.max(
        [neighbourhood[dy : dy + height, dx : dx + width] for dy in range(3) for dx in range(3)], axis=0
    )
    areas = np.zeros(count)
    np.add.at(areas, grown.ravel(), coverage.ravel().astype(np.float64))
    return areas * pixel_area


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("most_pieces", [10**6, 0])  # pieces sorted by their boxes; all summed at once
def test_preview_islands_and_holes_measured_in_their_boxes_match_measuring_every_pixel(seed, most_pieces, monkeypatch):
    # A preview measures specks and holes by coverage; only the pieces whose boxes leave them in
    # doubt are measured, in their boxes (a speckled mask: all at once). The result must be the
    # whole map's.
    from inference import mask_regions
    from inference.mask_regions import fill_small_holes_inplace, remove_small_regions_inplace

    monkeypatch.setattr(mask_regions, "_PREVIEW_MAX_PIECES", most_pieces)

    rng = np.random.default_rng(seed)
    mask = _busy_mask(seed)
    prior = np.where(mask, 0.5 + 0.5 * rng.random(mask.shape), 0.5 * rng.random(mask.shape)).astype(np.float32)
    islands = holes = 0
    for area, pixel_area in ((3, 1.7), (16, 2.25), (40, 4.0), (256, 9.0)):
        count, labels = cv2.connectedComponents(mask.view(np.uint8), connectivity=8)
        small = _reference_covered_areas(labels, count, prior, pixel_area) < area
        small[0] = False
        got = mask.copy()
        assert remove_small_regions_inplace(got, area, coverage=prior, pixel_area=pixel_area, coverage_floor=0.5) == small.sum()
        assert np.array_equal(got, mask & ~small[labels]), area
        islands += small.sum()
        count, labels = cv2.connectedComponents((~mask).view(np.uint8), connectivity=4)
        small = _reference_covered_areas(labels, count, 1.0 - prior, pixel_area) < area
        small[0] = False
        small[np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])] = False
        got = mask.copy()
        assert fill_small_holes_inplace(got, area, coverage=1.0 - prior, pixel_area=pixel_area) == small.sum()
        assert np.array_equal(got, mask | small[labels]), area
        holes += small.sum()
    assert islands > 0 and holes > 0


# ---------------------------------------------------------------------------- strand alpha internals (band_matting)
# (section added by the strandspeed helper: the fast paths inference/band_matting.py relies on)
def test_channel_mean_is_the_rounded_mean_for_every_colour():
    from inference.band_matting import _channel_mean

    levels = np.arange(256, dtype=np.uint8)
    colours = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(4096, 4096, 3)
    total = colours[:, :, 0].astype(np.int32) + colours[:, :, 1] + colours[:, :, 2]
    expected = (2 * total + 3) // 6  # round(total / 3): its fraction is 0, 1/3 or 2/3, never 1/2
    got = _channel_mean(colours, colours.copy(), np.empty((4096, 4096), np.uint8))
    assert np.array_equal(got, expected)


def test_cell_grid_shrinks_to_cell_means_and_grows_a_block_as_the_whole_grid_does():
    from inference.band_matting import _CellGrid

    rng = np.random.default_rng(5)
    plane = rng.random((43, 30)).astype(np.float32)
    grid = _CellGrid((43, 30), 4)  # 10 x 7 cells; 3 rows and 2 columns belong to none
    np.testing.assert_allclose(grid.shrink(plane), plane[:40, :28].reshape(10, 4, 7, 4).mean(axis=(1, 3)), rtol=1e-5)
    odd = _CellGrid((43, 30), 3)  # 14 x 10 cells, OpenCV's general area resize
    np.testing.assert_allclose(odd.shrink(plane), plane[:42, :30].reshape(14, 3, 10, 3).mean(axis=(1, 3)), rtol=1e-5)
    cells = np.zeros((10, 7), np.float32)
    cells[4:7, 5:7] = rng.random((3, 2)) + 0.5  # reaches the last column of cells
    whole = grid.grow(cells, np.empty((43, 30), np.float32))
    assert whole[17, 22] > 0.1 and np.array_equal(whole[40:], np.repeat(whole[39:40], 3, axis=0))
    # A block with a margin of zero cells around the nonzero ones: its pixels as the whole grid's.
    block = np.full((43, 30), -1.0, np.float32)
    grid.grow(cells[3:8, 4:7], block, 3, 4)
    assert np.array_equal(block[12:32, 16:], whole[12:32, 16:])
    assert np.all(block[:12] == -1) and np.all(block[32:] == -1) and np.all(block[:, :16] == -1)
def test_background_samples_are_every_other_pixel_of_whole_cells_and_all_pixels_of_odd_cells():
    from inference.band_matting import _CellGrid, _Samples

    rng = np.random.default_rng(8)
    image = rng.integers(0, 256, (43, 30, 3), dtype=np.uint8)
    mass = np.where(rng.random((43, 30)) < 0.5, 0.0, rng.random((43, 30))).astype(np.float32)
    grid = _CellGrid((43, 30), 4)  # 10 x 7 cells
    samples = _Samples(image, mass, grid)
    assert np.array_equal(samples.image, image[:40:2, :28:2])
    assert np.array_equal(samples.background, np.where(mass[:40:2, :28:2] == 0, 255, 0))
    assert (samples.grid.rows, samples.grid.cols, samples.grid.step) == (10, 7, 2)
    plane = rng.random((43, 30)).astype(np.float32)
    assert np.array_equal(samples.sampled(plane), plane[:40:2, :28:2])
    odd = _Samples(image, mass, _CellGrid((43, 30), 3))  # cells of 3 pixels: every pixel
    assert odd.image is image and odd.sampled(plane) is plane
    assert np.array_equal(odd.background, np.where(mass == 0, 255, 0)) and odd.grid.rows == 14
# ---------------------------------------------------------------------------- end of the strandspeed section


# ---------------------------------------------------------------------------- decontamination (fgspeed section)
def _blobs(shape: tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A textured picture and a soft alpha of random blobs that reach every border."""
    rng = np.random.default_rng(seed)
    height, width = shape
    image = cv2.resize(rng.integers(0, 256, (9, 11, 3), dtype=np.uint8), (width, height), interpolation=cv2.INTER_CUBIC)
    alpha = cv2.resize(rng.random((5, 6)).astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    return image, np.clip((alpha - 0.5) * 6 + 0.5, 0.0, 1.0)


@pytest.mark.parametrize(("shape", "radii"), [((123, 157), (2, 1)), ((61, 300), (4, 2, 1)), ((200, 37), (3,))])
def test_estimate_foreground_narrow_radii_are_the_dense_blur_fusion(shape, radii):
    # Radii below 8 run at full resolution on the strip mosaic: band pixels in every row of a
    # strip, next to the picture's borders (mirrored) and in several folded lines.
    image, alpha = _blobs(shape, seed=sum(shape))
    band = (alpha > 0) & (alpha < 1)
    assert band[0].any() and band[-1].any() and band[:, 0].any() and band[:, -1].any()
    expected = np.clip(slow_blur_fusion(image, alpha, radii) + 0.5, 0, 255).astype(np.uint8)
    got = estimate_foreground(image, alpha, radii=radii)
    assert np.abs(got[band].astype(int) - expected[band]).max() <= 1
    assert np.array_equal(got[~band], image[~band])


def test_estimate_foreground_repeated_last_radius_is_the_dense_blur_fusion():
    # The default's narrow end: a last step at the radius before it keeps that step's
    # background means. On a noisy picture the background means still move between the two
    # steps (by 2 levels of F here), so recomputing them would show.
    image, alpha = _blobs((123, 157), seed=280)
    noise = np.random.default_rng(0).integers(-60, 61, image.shape)
    image = np.clip(image.astype(int) + noise, 0, 255).astype(np.uint8)
    band = (alpha > 0) & (alpha < 1)
    expected = np.clip(slow_blur_fusion(image, alpha, (2, 1, 1)) + 0.5, 0, 255).astype(np.uint8)
    got = estimate_foreground(image, alpha, radii=(2, 1, 1))
    assert np.abs(got[band].astype(int) - expected[band]).max() <= 1
    assert np.array_equal(got[~band], image[~band])


@pytest.mark.parametrize("radius", [1, 16])
def test_a_repeated_last_step_keeps_the_background_means_before_it(radius):
    # Both levels (the strip mosaic below radius 8, the coarse grid above): with the means of
    # the step before at the same radius, only the alpha F rows are new (and the same as a
    # full step's); alpha and (1 - alpha) B are the kept ones.
    from inference import foreground

    image, alpha = _blobs((150, 170), seed=5)
    at_band = foreground.edge_band(alpha)
    ys, xs = np.divmod(at_band, alpha.shape[1])
    band = foreground._Band(image, alpha, at_band, ys, xs)
    if radius < foreground._GRID_MIN_RADIUS:
        level = foreground._BandStrips(image, alpha, ys, xs, radius)
    else:
        level = foreground._CoarseGrid(image, alpha, (0, 0, alpha.shape[1], alpha.shape[0]))
        level.fill()
        level.add_band(band)
    before, full = np.empty((2, 7, at_band.size), np.float32)
    level.box_means_at_band(radius, None, before)
    values = band.step(before.copy(), last=False).copy()
    level.box_means_at_band(radius, values, full)
    got = before.copy()
    level.box_means_at_band(radius, values, got, keep_background=True)
    assert np.array_equal(got[:3], full[:3])
    assert np.array_equal(got[3:], before[3:])
    assert not np.allclose(full[4:], before[4:])  # a full step's background means do change


def test_estimate_foreground_radius_8_reaches_across_a_soft_ramp():
    # The radius 8 step is what recovers F on a 10-px ramp: without it the mostly-opaque
    # half keeps several levels of the old background.
    F_true = np.array([200.0, 40.0, 90.0])
    alpha = np.zeros((40, 60), np.float32)
    alpha[:, :20] = 1.0
    alpha[:, 20:30] = np.linspace(0.95, 0.05, 10, dtype=np.float32)
    B_true = np.array([20.0, 220.0, 60.0])
    image = (alpha[:, :, None] * F_true + (1 - alpha[:, :, None]) * B_true + 0.5).astype(np.uint8)
    opaque = (alpha > 0.5) & (alpha < 1)

    def error(radii: tuple[int, ...]) -> float:
        return float(np.abs(estimate_foreground(image, alpha, radii=radii)[opaque] - F_true).max())

    assert FOREGROUND_RADII == (32, 8, 1, 1)
    assert error((32, 1, 1)) > 5.0
    assert error(FOREGROUND_RADII) <= 2.0


def test_estimate_foreground_from_several_threads_at_once(small_scene):
    # The side threads are shared: calls at the same time must not see each other's work.
    from concurrent.futures import ThreadPoolExecutor

    # (300 x 260 is big enough for the band search to split over two threads too.)
    pictures = [(small_scene.image, small_scene.alpha), _blobs((300, 260), seed=1), _blobs((150, 70), seed=2)]
    expected = [estimate_foreground(image, alpha) for image, alpha in pictures]
    with ThreadPoolExecutor(max_workers=3) as pool:
        for _ in range(3):
            got = list(pool.map(lambda pair: estimate_foreground(*pair), pictures))
            assert all(np.array_equal(a, b) for a, b in zip(got, expected))


def test_estimate_foreground_without_a_band_returns_a_copy():
    image = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    alpha = np.zeros((30, 40), np.float32)
    alpha[5:20, 10:30] = 1.0  # a hard edge: nothing half-transparent to clean
    got = estimate_foreground(image, alpha)
    assert got is not image and np.array_equal(got, image)
    alpha[7, 12] = 0.5  # one band pixel: only it may change
    got = estimate_foreground(image, alpha)
    others = np.ones((30, 40), bool)
    others[7, 12] = False
    assert np.array_equal(got[others], image[others])


def test_estimate_foreground_at_a_given_band_is_the_same():
    from inference.foreground import edge_band, estimate_foreground_at_band

    for image, alpha in (_blobs((300, 260), seed=4), _blobs((40, 30), seed=5)):  # band search on two threads, and one
        band = edge_band(alpha)
        assert np.array_equal(band, np.flatnonzero((alpha > 0) & (alpha < 1)))
        expected = estimate_foreground(image, alpha)
        assert np.array_equal(estimate_foreground_at_band(image, alpha, band), expected)
        assert np.array_equal(estimate_foreground_at_band(image, alpha, band[:0]), image)  # the band is what changes
        for bad in [band.astype(np.float32), band[None], np.array([-1, 3]), np.array([0, alpha.size]), [1, 2]]:
            with pytest.raises(ValueError, match="expected at_band"):
                estimate_foreground_at_band(image, alpha, bad)


@pytest.mark.parametrize(
    ("picture", "decontaminate", "feather"),
    [("scene", True, 0.0), ("scene", True, 3.0), ("scene", False, 0.0), ("strand_scene", True, 0.0)],
)
def test_refine_alpha_and_foreground_is_the_matte_then_its_colours(
    request, monkeypatch, picture, decontaminate, feather
):
    scene = request.getfixturevalue(picture)
    if picture == "strand_scene":  # the alpha, and its band, finished in two halves
        monkeypatch.setattr(snapping, "_HALVES_MIN_PIXELS", 2**10)
    prior = refine_net_like(scene.alpha, long_side=240)
    settings = MatteSettings(decontaminate=decontaminate, feather=feather)
    alpha, foreground, report = matte.refine_alpha_and_foreground(scene.image, prior, settings)
    expected_alpha, expected_report = matte.refine_alpha_with_report(scene.image, prior, settings)
    assert np.array_equal(alpha, expected_alpha) and report == expected_report
    expected = estimate_foreground(scene.image, expected_alpha) if decontaminate else scene.image
    assert np.array_equal(foreground, expected)
    assert (foreground != scene.image).any() == decontaminate
    alpha, foreground, _ = matte.refine_alpha_and_foreground(scene.image, np.zeros_like(prior), settings)
    assert not alpha.any() and np.array_equal(foreground, scene.image)


@pytest.mark.parametrize("halves_from", [2**40, 2**8])  # one part, and two halves on two threads
def test_snap_crop_into_writes_the_snapped_crop_and_finds_its_band(monkeypatch, halves_from):
    monkeypatch.setattr(snapping, "_HALVES_MIN_PIXELS", halves_from)
    rng = np.random.default_rng(5)
    alpha = rng.uniform(-0.2, 1.2, (30, 20)).astype(np.float32)
    alpha[0, :4] = [snapping.SNAP / 2, 1 - snapping.SNAP / 2, 2 * snapping.SNAP, 1 - 2 * snapping.SNAP]
    solid = rng.uniform(0, 1, (10, 8)).astype(np.float32)
    inside = (slice(12, 22), slice(5, 13))
    expected_crop = alpha.copy()
    expected_crop[inside] = np.maximum(solid, expected_crop[inside])
    expected_crop = np.clip(expected_crop, 0, 1)
    expected_crop[expected_crop < snapping.SNAP] = 0
    expected_crop[expected_crop > 1 - snapping.SNAP] = 1
    out = np.zeros((50, 45), np.float32)
    band = snapping.snap_crop_into(
        alpha, out[11:41, 7:27], origin=(7, 11), picture_width=45, find_band=True, solid=solid, inside=inside
    )
    expected = np.zeros((50, 45), np.float32)
    expected[11:41, 7:27] = expected_crop
    np.testing.assert_allclose(out, expected, atol=1e-6)
    np.testing.assert_array_equal(band, np.flatnonzero((out > 0) & (out < 1)))
    assert out[11, 7:11].tolist() == pytest.approx([0, 1, 2 * snapping.SNAP, 1 - 2 * snapping.SNAP])
    with pytest.raises(ValueError, match="expected solid and inside both given"):
        snapping.snap_crop_into(alpha, out[11:41, 7:27], origin=(7, 11), picture_width=45, find_band=False, solid=solid)


@pytest.mark.parametrize("feather", [0.0, 2.0])  # the halves take the solid part's maximum / are given it
def test_snapping_in_two_halves_is_snapping_in_one(strand_scene, monkeypatch, feather):
    prior = refine_net_like(strand_scene.alpha, long_side=400)
    settings = MatteSettings(feather=feather)
    monkeypatch.setattr(snapping, "_HALVES_MIN_PIXELS", 2**40)
    alpha, foreground, _ = matte.refine_alpha_and_foreground(strand_scene.image, prior, settings)
    soft = (alpha > 0) & (alpha < 1)
    assert soft.any() and alpha[soft].min() >= snapping.SNAP and alpha[soft].max() <= 1 - snapping.SNAP
    monkeypatch.setattr(snapping, "_HALVES_MIN_PIXELS", 2**10)
    halves, halves_foreground, _ = matte.refine_alpha_and_foreground(strand_scene.image, prior, settings)
    np.testing.assert_array_equal(halves, alpha)
    np.testing.assert_array_equal(halves_foreground, foreground)


@pytest.mark.parametrize("shape", [(7, 9), (600, 500)])  # one pass here, and halves on two threads
def test_boxes_at_or_above_are_each_levels_bounding_box(shape):
    from inference.mask_regions import boxes_at_or_above

    rng = np.random.default_rng(sum(shape))
    prior = np.zeros(shape, np.float32)
    for _ in range(4):
        y, x = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        prior[y : y + 3, x : x + 2] = rng.random()
    prior[shape[0] // 2, 0] = np.nan  # counts as below every level
    prior[-1, -1] = 0.3
    for levels in [(0.02, 0.45), (0.45,), (0.3, 0.999), (0.0,)]:
        for level, box in zip(levels, boxes_at_or_above(prior, levels)):
            ys, xs = np.nonzero(prior >= np.float32(level))
            assert box == ((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) if ys.size else None), level
    assert boxes_at_or_above(np.zeros(shape, np.float32), (0.02, 0.5)) == [None, None]
# ---------------------------------------------------------------------------- end of the fgspeed section


def test_refine_alpha_with_split_strands_fills_holes_as_without(strand_scene, monkeypatch):
    # With the strands split over both side threads, the holes are filled after them: the
    # matte and its report are the unsplit ones.
    from inference import band_matting

    prior = refine_net_like(strand_scene.alpha, long_side=400)
    solid = np.argwhere(prior > 0.9)
    for y, x in solid[:: max(1, len(solid) // 5)][:5]:
        prior[y : y + 3, x : x + 3] = 0.0  # pin holes
    prior[5:8, 5:8] = 0.8  # a speck
    settings = MatteSettings()
    whole, whole_report = matte.refine_alpha_with_report(strand_scene.image, prior, settings)
    assert whole_report.holes_filled >= 3 and whole_report.islands_removed >= 1
    monkeypatch.setattr(band_matting, "_SPLIT_MIN_ROWS", 4 * band_matting.STRAND_REACH)
    assert band_matting.splits_crop(strand_scene.image.shape[0] - 100, 1.0)
    split, split_report = matte.refine_alpha_with_report(strand_scene.image, prior, settings)
    np.testing.assert_allclose(split, whole, atol=1e-5)
    assert split_report == whole_report


def test_strand_alpha_in_two_halves_is_the_whole_crops(strand_scene, monkeypatch):
    # A tall crop is worked in two halves STRAND_REACH apart (one on a side thread): the
    # inputs reach no further, so the halves give the whole crop's values.
    from inference import band_matting

    prior = refine_net_like(strand_scene.alpha, long_side=400)
    whole = band_matting.strand_alpha(strand_scene.image, prior, 1.0)  # one part: 540 rows
    assert whole.max() > 0.5
    monkeypatch.setattr(band_matting, "_SPLIT_MIN_ROWS", 4 * band_matting.STRAND_REACH)
    assert strand_scene.image.shape[0] >= 4 * band_matting.STRAND_REACH
    np.testing.assert_allclose(band_matting.strand_alpha(strand_scene.image, prior, 1.0), whole, atol=1e-5)
    # ...and halves any closer do not (the reach is not overstated by much).
    monkeypatch.setattr(band_matting, "STRAND_REACH", band_matting.STRAND_REACH // 2)
    assert np.abs(band_matting.strand_alpha(strand_scene.image, prior, 1.0) - whole).max() > 1e-4


def test_strand_alpha_writes_into_a_given_array_whatever_it_held(strand_scene):
    from inference import band_matting

    prior = refine_net_like(strand_scene.alpha, long_side=400)
    fresh = band_matting.strand_alpha(strand_scene.image, prior, 1.0)
    out = np.full(prior.shape, np.nan, np.float32)
    assert band_matting.strand_alpha(strand_scene.image, prior, 1.0, out=out) is out
    np.testing.assert_array_equal(out, fresh)
    with pytest.raises(ValueError, match="expected out as float32 of shape"):
        band_matting.strand_alpha(strand_scene.image, prior, 1.0, out=np.empty((4, 4), np.float32))


def test_a_matte_after_another_on_the_same_thread_is_its_own(strand_scene):
    # The matte keeps its crop's prior and strands in planes the thread gets back next time
    # (inference.work_buffers): nothing of a bigger or different matte before may show.
    prior = refine_net_like(strand_scene.alpha, long_side=400)
    first = matte.refine_alpha_and_foreground(strand_scene.image, prior, MatteSettings())
    flipped = np.ascontiguousarray(strand_scene.image[::-1, ::-1])
    full = np.clip(np.ascontiguousarray(prior[::-1, ::-1]) * 1.5, 0, 1)
    other = refine_alpha(flipped, full, MatteSettings())
    assert not np.array_equal(other, first[0])
    again = matte.refine_alpha_and_foreground(strand_scene.image, prior, MatteSettings())
    np.testing.assert_array_equal(again[0], first[0])
    np.testing.assert_array_equal(again[1], first[1])


def test_run_on_both_cores_calls_every_part_once_on_two_threads_and_raises_a_parts_error():
    import threading
    import time

    from inference.side_threads import run_on_both_cores

    calls: list[tuple[int, str]] = []

    def part(index: int, seconds: float) -> None:
        time.sleep(seconds)
        calls.append((index, threading.current_thread().name))

    # One long part and three short ones: the other thread takes all the short ones.
    run_on_both_cores([lambda: part(0, 0.2)] + [lambda i=i: part(i, 0.01) for i in (1, 2, 3)])
    assert sorted(index for index, _ in calls) == [0, 1, 2, 3]
    long_thread = dict(calls)[0]
    assert {name for index, name in calls if index > 0} == {dict(calls)[1]} != {long_thread}

    def broken() -> None:
        raise ValueError("expected a part to fail, got this")

    with pytest.raises(ValueError, match="part to fail"):
        run_on_both_cores([lambda: None, broken, lambda: None])


def test_a_failing_strand_half_of_a_tall_crop_raises_instead_of_hanging(strand_scene, monkeypatch):
    # The island step waits for both strand halves: a half that fails must still release it.
    import threading

    from inference import band_matting

    monkeypatch.setattr(band_matting, "_SPLIT_MIN_ROWS", 4 * band_matting.STRAND_REACH)
    real = band_matting._strand_alpha

    def failing(image, prior, scale, out, *, first_row=0, side_thread):
        if first_row:
            raise MemoryError("expected the bottom half to fail, got this")
        real(image, prior, scale, out, first_row=first_row, side_thread=side_thread)

    monkeypatch.setattr(band_matting, "_strand_alpha", failing)
    prior = refine_net_like(strand_scene.alpha, long_side=400)
    raised: list[BaseException] = []

    def run() -> None:
        try:
            refine_alpha(strand_scene.image, prior, MatteSettings())
        except MemoryError as error:
            raised.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive() and len(raised) == 1
