"""Matte quality on synthetic scenes with known alpha: which refine_alpha settings help, and how much.

Scenes come from ``tests/scenes.py``: cel-shaded characters with 2-3 px hair
strands on textured (and gradient, flat, busy) backgrounds, rendered at
1920x1080 with exact fractional alpha. Kinds of prior:

* ``coarse``: what a 640-px detector gives (``coarse_mask``): edges off by up to
  3 px, strands broken or lost.
* ``refine``: what an ISNet refiner gives after its 720-px round trip
  (``refine_net_like``): soft, blurred edges.
* ``+specks``: either of them with a segmenter's specks and pin holes added.

Errors follow the alpha-matting benchmark of Rhemann et al. (CVPR 2009), own
implementations below:

* SAD: sum of absolute differences / 1000.
* MSE: mean squared error x 1000 over the evaluation band (pixels within
  ``EVAL_BAND_PX`` of the true outline; elsewhere both are 0 or 1 and agree).
* Grad: sum of squared differences of Gaussian-derivative (sigma 1.4) gradient
  magnitudes / 1000.
* Conn: connectivity error / 1000 (threshold step 0.1, theta 0.15); the source
  region at each level is every connected piece holding a character's solid core.
* IoU: of the masks at 0.5.

Tables: every method on the coarse and the refine priors ("ramp + GF" rows use
the defaults' islands/holes and soft ramp, then the guided filter); an
islands/holes sweep on all four kinds of prior; the defaults per scene (no
scene may get worse); and the colour clean-up (halo) with the true and with the
refined alpha.

Run: ``python bench/quality.py`` (about four minutes on 2 cores). ``--quick``
uses three half-size scenes.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from inference import matte  # noqa: E402
from inference.matte import MatteSettings, estimate_foreground  # noqa: E402
from tests.scenes import Scene, coarse_mask, make_scene, refine_net_like  # noqa: E402

EVAL_BAND_PX = 10


# ---------------------------------------------------------------------------- metrics
def sad(alpha: np.ndarray, truth: np.ndarray) -> float:
    """Sum of absolute differences, in thousands."""
    return float(np.abs(alpha.astype(np.float64) - truth).sum() / 1000.0)


def eval_band(truth: np.ndarray) -> np.ndarray:
    """Pixels within EVAL_BAND_PX of the true outline (a trimap's unknown region)."""
    solid = (truth >= 1.0).astype(np.uint8)
    some = (truth > 0.0).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * EVAL_BAND_PX + 1,) * 2)
    return (cv2.dilate(some, kernel) > 0) & ~(cv2.erode(solid, kernel) > 0)


def mse(alpha: np.ndarray, truth: np.ndarray, band: np.ndarray) -> float:
    """Mean squared error over the evaluation band, x 1000."""
    diff = alpha[band].astype(np.float64) - truth[band]
    return float(np.mean(diff * diff) * 1000.0)


def _gradient_magnitude(alpha: np.ndarray, sigma: float = 1.4) -> np.ndarray:
    radius = int(np.ceil(3 * sigma))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    gauss = np.exp(-(x * x) / (2 * sigma * sigma))
    gauss /= gauss.sum()
    # Derivative of the Gaussian, normalised so a unit ramp has gradient 1.
    deriv = -x * gauss
    deriv /= -np.sum(x * deriv)
    a = alpha.astype(np.float64)
    gx = cv2.sepFilter2D(a, cv2.CV_64F, deriv, gauss, borderType=cv2.BORDER_REPLICATE)
    gy = cv2.sepFilter2D(a, cv2.CV_64F, gauss, deriv, borderType=cv2.BORDER_REPLICATE)
    return np.sqrt(gx * gx + gy * gy)


def gradient_error(alpha: np.ndarray, truth: np.ndarray) -> float:
    """Sum of squared gradient-magnitude differences, in thousands."""
    diff = _gradient_magnitude(alpha) - _gradient_magnitude(truth)
    return float(np.sum(diff * diff) / 1000.0)


def _connected_level(alpha: np.ndarray, truth: np.ndarray, seeds: np.ndarray, step: float) -> np.ndarray:
    """Per pixel, the highest threshold level at which it is still connected to a seed (0 if never)."""
    level = np.zeros(alpha.shape, np.float64)
    still = np.ones(alpha.shape, bool)
    for t in np.arange(step, 1.0 + 1e-9, step):
        both = ((alpha >= t - 1e-6) & (truth >= t - 1e-6)).astype(np.uint8)
        count, labels = cv2.connectedComponents(both, connectivity=4)
        seeded = np.zeros(count, bool)
        seeded[np.unique(labels[seeds & (both > 0)])] = True
        seeded[0] = False
        connected = seeded[labels]
        # A pixel's level is the last threshold before it first drops out.
        dropped = still & ~connected
        level[dropped] = t - step
        still &= connected
    level[still] = 1.0
    return level


def connectivity_error(
    alpha: np.ndarray, truth: np.ndarray, seeds: np.ndarray, *, step: float = 0.1, theta: float = 0.15
) -> float:
    """Rhemann et al.'s connectivity error, in thousands.

    ``phi(a) = 1 - d * [d >= theta]`` with ``d = a - l``, ``l`` the level at which
    the pixel disconnects from the source; error ``sum |phi(alpha) - phi(truth)|``.
    """
    level = _connected_level(alpha.astype(np.float64), truth.astype(np.float64), seeds, step)
    d_alpha = alpha - level
    d_truth = truth - level
    phi_alpha = 1.0 - d_alpha * (d_alpha >= theta)
    phi_truth = 1.0 - d_truth * (d_truth >= theta)
    return float(np.abs(phi_alpha - phi_truth).sum() / 1000.0)


def iou(alpha: np.ndarray, truth: np.ndarray) -> float:
    a, t = alpha >= 0.5, truth >= 0.5
    union = np.logical_or(a, t).sum()
    return float(np.logical_and(a, t).sum() / union) if union else 1.0


def core_seeds(scene: Scene) -> np.ndarray:
    """Each character's largest fully opaque piece: the source of the connectivity error."""
    seeds = np.zeros(scene.alpha.shape, bool)
    for alpha in scene.character_alphas:
        solid = (alpha >= 1.0).astype(np.uint8)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(solid, connectivity=4)
        if count > 1:
            seeds |= labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return seeds


@dataclass
class Case:
    name: str
    scene: Scene
    band: np.ndarray
    seeds: np.ndarray
    priors: dict[str, np.ndarray]


def evaluate(alpha: np.ndarray, case: Case) -> dict[str, float]:
    truth = case.scene.alpha
    return {
        "SAD": sad(alpha, truth),
        "MSE": mse(alpha, truth, case.band),
        "Grad": gradient_error(alpha, truth),
        "Conn": connectivity_error(alpha, truth, case.seeds),
        "IoU": iou(alpha, truth),
    }


# ---------------------------------------------------------------------------- methods
OFF = MatteSettings(min_island_area=0, max_hole_area=0, guided_radius=0, feather=0.0, decontaminate=False)


def methods(full: bool) -> list[tuple[str, MatteSettings | None, float, int | None]]:
    """(label, settings or None for the raw prior, prior_ramp (0: hard threshold), fast subsample or None)."""
    defaults = MatteSettings(decontaminate=False)
    clean = replace(OFF, min_island_area=defaults.min_island_area, max_hole_area=defaults.max_hole_area)
    ramp = matte.PRIOR_RAMP
    cleaned = f"+ islands {clean.min_island_area} / holes {clean.max_hole_area}"
    rows: list[tuple[str, MatteSettings | None, float, int | None]] = [
        ("raw prior", None, 0.0, None),
        ("threshold 0.5", OFF, 0.0, None),
        ("+ islands/holes 64", replace(OFF, min_island_area=64, max_hole_area=64), 0.0, None),
        (cleaned, clean, 0.0, None),
        (f"{cleaned}, soft ramp 0.05", clean, 0.05, None),
        (f"{cleaned}, soft ramp {ramp:g}", clean, ramp, None),
        (f"{cleaned}, soft ramp 0.3", clean, 0.3, None),
        (f"{cleaned}, soft ramp 1 (prior kept)", clean, 1.0, None),
    ]
    radii = (1, 2, 3, 4, 6, 8, 16) if full else (1, 2, 3, 4, 8)
    for radius in radii:
        for eps in (1e-4, 3e-4, 1e-3, 1e-2):
            settings = replace(clean, guided_radius=radius, guided_eps=eps)
            rows.append((f"ramp + GF r={radius} eps={eps:g}", settings, ramp, None))
    for radius in (2, 4, 8):
        for subsample in (2, 4):
            if subsample <= radius:
                settings = replace(clean, guided_radius=radius, guided_eps=1e-4, fast=True)
                rows.append((f"ramp + fast GF r={radius} eps=0.0001 s={subsample}", settings, ramp, subsample))
    rows.append(("defaults, hard threshold", defaults, 0.0, None))
    rows.append(("defaults + feather 1", replace(defaults, feather=1.0), ramp, None))
    rows.append(("defaults + feather 2", replace(defaults, feather=2.0), ramp, None))
    rows.append(("DEFAULTS", defaults, ramp, None))
    rows.append((f"DEFAULTS fast=True (s={defaults.fast_subsample})", replace(defaults, fast=True), ramp, None))
    return rows


def add_specks(prior: np.ndarray, truth: np.ndarray, seed: int) -> np.ndarray:
    """A segmenter's typical noise on top of a prior: soft false-positive specks in the
    background and pin holes in solid parts, 3-11 px across (what islands/holes are for)."""
    rng = np.random.default_rng(seed)
    height, width = prior.shape
    kernel = np.ones((21, 21), np.uint8)
    background = np.argwhere(cv2.dilate((truth > 0).astype(np.uint8), kernel) == 0)
    solid = np.argwhere(cv2.erode((truth >= 1).astype(np.uint8), kernel) > 0)
    specks = np.zeros((height, width), np.float32)
    holes = np.zeros((height, width), np.float32)
    for target, points, count in ((specks, background, 60), (holes, solid, 30)):
        for y, x in points[rng.integers(0, len(points), count)]:
            cv2.circle(target, (int(x), int(y)), int(rng.integers(1, 6)), 1.0, -1)
    specks = cv2.GaussianBlur(specks, (0, 0), 0.8)
    holes = cv2.GaussianBlur(holes, (0, 0), 0.8)
    return np.clip(np.maximum(prior, specks) - holes, 0.0, 1.0).astype(np.float32)


def build_cases(quick: bool) -> list[Case]:
    size = (540, 960) if quick else (1080, 1920)
    specs = [
        (2, "textured", 1),
        (1, "textured", 2),
        (3, "textured", 3),
        (2, "gradient", 4),
        (2, "flat", 5),
        (2, "busy", 6),
    ]
    if quick:
        specs = specs[:3]
    cases = []
    for n, background, seed in specs:
        scene = make_scene(n, background, size, seed=seed)
        # On a half-size scene the detector and refiner see it at the same relative scale.
        scale = 0.5 if quick else 1.0
        priors = {
            "coarse": coarse_mask(scene.alpha, long_side=round(640 * scale)),
            "refine": refine_net_like(scene.alpha, long_side=round(720 * scale)),
        }
        priors["coarse+specks"] = add_specks(priors["coarse"], scene.alpha, seed)
        priors["refine+specks"] = add_specks(priors["refine"], scene.alpha, seed)
        cases.append(Case(f"{n}x {background} s{seed}", scene, eval_band(scene.alpha), core_seeds(scene), priors))
    return cases


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths))))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="three half-size scenes, fewer settings")
    parser.add_argument("--full", action="store_true", help="more guided filter radii")
    args = parser.parse_args()
    start = time.perf_counter()
    cases = build_cases(args.quick)
    print(f"{len(cases)} scenes at {cases[0].scene.alpha.shape[1]}x{cases[0].scene.alpha.shape[0]}, "
          f"rendered in {time.perf_counter() - start:.1f} s")
    metric_names = ["SAD", "MSE", "Grad", "Conn", "IoU"]
    rows_spec = methods(args.full)
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    defaults = MatteSettings(decontaminate=False)
    speck_rows = [("raw prior", None, 0.0, None)] + [
        (f"islands {islands} / holes {holes}", replace(defaults, min_island_area=islands, max_hole_area=holes),
         matte.PRIOR_RAMP, None)
        for islands, holes in ((0, 0), (16, 16), (64, 64), (128, 128), (64, 0), (0, 256), (16, 256))
    ]
    all_priors = ("coarse", "refine", "coarse+specks", "refine+specks")
    jobs = [(row, name) for row in rows_spec for name in ("coarse", "refine")]
    jobs += [(row, name) for row in speck_rows for name in all_priors if row[0] != "raw prior" or "specks" in name]
    for (label, settings, ramp, subsample), prior_name in jobs:
        per_case = []
        for case in cases:
            prior = case.priors[prior_name]
            if settings is None:
                alpha = prior
            else:
                alpha = matte._refine_alpha(
                    case.scene.image, prior, settings, prior_ramp=ramp, fast_subsample=subsample
                )
            per_case.append(evaluate(alpha, case))
        results[(label, prior_name)] = per_case

    for prior_name in ("coarse", "refine"):
        raw_sad = sum(r["SAD"] for r in results[("raw prior", prior_name)])
        table = []
        for label, *_ in rows_spec:
            per_case = results[(label, prior_name)]
            total = {m: sum(r[m] for r in per_case) for m in metric_names}
            total["IoU"] /= len(per_case)
            raw_per_case = results[("raw prior", prior_name)]
            worse = sum(r["SAD"] > raw["SAD"] * 1.0001 for r, raw in zip(per_case, raw_per_case))
            table.append(
                [label]
                + [f"{total[m]:.3f}" if m != "IoU" else f"{total[m]:.4f}" for m in metric_names]
                + [f"{100 * (total['SAD'] - raw_sad) / raw_sad:+.1f}%", f"{worse}/{len(per_case)}"]
            )
        print_table(
            f"{prior_name.upper()} priors: totals over {len(cases)} scenes (IoU: mean); "
            "dSAD vs raw prior; scenes with SAD worse than the raw prior",
            ["method"] + metric_names + ["dSAD", "worse"],
            table,
        )

    table = []
    for label, *_ in speck_rows:
        row = [label]
        for prior_name in all_priors:
            total = sum(r["SAD"] for r in results[(label, prior_name)])
            conn = sum(r["Conn"] for r in results[(label, prior_name)])
            row += [f"{total:.3f}", f"{conn:.3f}"]
        table.append(row)
    print_table(
        "Islands/holes sweep (other settings at their defaults): total SAD and Conn per prior kind; "
        "'+specks' priors carry a segmenter's specks and pin holes",
        ["method"] + [f"{name} {m}" for name in all_priors for m in ("SAD", "Conn")],
        table,
    )

    defaults_rows = []
    for prior_name in ("coarse", "refine"):
        for case, raw, best in zip(cases, results[("raw prior", prior_name)], results[("DEFAULTS", prior_name)]):
            defaults_rows.append(
                [f"{prior_name} {case.name}", f"{raw['SAD']:.3f}", f"{best['SAD']:.3f}",
                 f"{100 * (best['SAD'] - raw['SAD']) / raw['SAD']:+.1f}%",
                 f"{raw['Conn']:.3f}", f"{best['Conn']:.3f}", f"{raw['IoU']:.4f}", f"{best['IoU']:.4f}"]
            )
    print_table(
        f"Per scene, DEFAULTS {MatteSettings()} vs raw prior",
        ["scene", "SAD raw", "SAD dflt", "dSAD", "Conn raw", "Conn dflt", "IoU raw", "IoU dflt"],
        defaults_rows,
    )

    # Colour decontamination: composite over a new background with the true alpha.
    new_background = np.zeros_like(cases[0].scene.image)
    new_background[:] = (20, 200, 60)
    radii = [(90, 6), (30, 3), (16, 2), (16, 2, 1), (32, 8, 2), matte.FOREGROUND_RADII]
    deco_rows = []
    for case in cases:
        scene = case.scene
        a = scene.alpha[:, :, None]
        truth = scene.foreground.astype(np.float32) * a + new_background * (1 - a)
        band = (scene.alpha > 0) & (scene.alpha < 1)
        row = [case.name]
        foregrounds = [scene.image] + [
            estimate_foreground(scene.image, scene.alpha, radii=r) for r in radii
        ]
        for foreground in foregrounds:
            comp = foreground.astype(np.float32) * a + new_background * (1 - a)
            row.append(f"{np.abs(comp - truth)[band].mean():.2f}")
        deco_rows.append(row)
    print_table(
        "Halo: mean |composite - true composite| over 0<alpha<1 pixels (0-255 units), true alpha, "
        f"new green background; estimate_foreground(radii=...), default {matte.FOREGROUND_RADII}",
        ["scene", "raw image"] + [str(r) for r in radii],
        deco_rows,
    )

    # The same with the alpha the defaults make from the refine-net-like prior (what the app shows):
    # alpha errors now count too, over every pixel where either alpha is fractional.
    deco_rows = []
    for case in cases:
        scene = case.scene
        alpha = matte.refine_alpha(scene.image, case.priors["refine"], MatteSettings())
        a, a_true = alpha[:, :, None], scene.alpha[:, :, None]
        truth = scene.foreground.astype(np.float32) * a_true + new_background * (1 - a_true)
        band = ((scene.alpha > 0) & (scene.alpha < 1)) | ((alpha > 0) & (alpha < 1))
        row = [case.name]
        for foreground in (scene.image, estimate_foreground(scene.image, alpha)):
            comp = foreground.astype(np.float32) * a + new_background * (1 - a)
            row.append(f"{np.abs(comp - truth)[band].mean():.2f}")
        deco_rows.append(row)
    print_table(
        "Composite error with the DEFAULTS alpha from the refine prior (0-255 units, over pixels where "
        "either alpha is fractional)",
        ["scene", "raw image", "estimate_foreground"],
        deco_rows,
    )
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
