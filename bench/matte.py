"""Speed of the matte stage: what one slider change costs the app.

For each picture size, a synthetic scene (two characters on a textured
background, ``tests/scenes.py``) with a refine-net-like prior is matted with
cumulative settings, so each row adds one slider-driven stage:

* ``threshold``: threshold + crop + soft ramp (no islands/holes, no filter);
* ``+ islands/holes``: the defaults' island and hole sizes;
* ``+ guided filter``: the default guided filter (``fast=False``);
* ``... fast``: the same with ``fast=True`` (the fast guided filter);
* ``+ feather 2``: feathering added to the fast settings;
* ``decontaminate``: :func:`estimate_foreground` on the default alpha;
* ``composite``: ``composite_over`` onto a plain background;
* ``RE-RENDER``: ``refine_alpha`` + ``estimate_foreground`` (when the settings
  ask for it) + ``composite_over``, which is what the app does per slider change.

Full-frame filters without the crop (``guided_filter``, ``fast_guided_filter``,
and ``cv2.ximgproc.guidedFilter``) are listed for scale. Times are wall-clock
milliseconds, median and minimum of ``--repeat`` runs; other processes on the
machine inflate the median, the minimum is the machine's best case.

Run: ``python bench/matte.py`` (about a minute).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from inference.composite import composite_over  # noqa: E402
from inference.matte import (  # noqa: E402
    MatteSettings,
    estimate_foreground,
    fast_guided_filter,
    guided_filter,
    refine_alpha,
)
from tests.scenes import make_scene, refine_net_like  # noqa: E402

SIZES = {
    "1 MP (1024x1024)": (1024, 1024),
    "1920x1080": (1080, 1920),
    "8 MP (3840x2160)": (2160, 3840),
}


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Median and minimum wall time of ``fn`` in milliseconds (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return float(np.median(times)), float(np.min(times))


def scene_at(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Image and refine-net-like prior; 8 MP is the 1920x1080 scene upscaled 2x (rendering it natively takes GBs)."""
    height, width = size
    if height * width > 4_000_000:
        scene = make_scene(2, "textured", (height // 2, width // 2), seed=1)
        image = cv2.resize(scene.image, (width, height), interpolation=cv2.INTER_LINEAR)
        alpha = cv2.resize(scene.alpha, (width, height), interpolation=cv2.INTER_LINEAR)
    else:
        scene = make_scene(2, "textured", size, seed=1)
        image, alpha = scene.image, scene.alpha
    return image, refine_net_like(alpha)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--sizes", nargs="*", default=list(SIZES), help="subset of: " + ", ".join(SIZES))
    args = parser.parse_args()
    defaults = MatteSettings()
    fast = replace(defaults, fast=True)
    print(f"cv2 threads: {cv2.getNumThreads()}, CPUs: {os.cpu_count()}, load average: "
          f"{', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"defaults: {defaults}")
    print(f"preview:  fast=True (fast guided filter, subsample {fast.fast_subsample})")
    stages = [
        ("threshold", replace(defaults, min_island_area=0, max_hole_area=0, guided_radius=0, decontaminate=False)),
        ("+ islands/holes", replace(defaults, guided_radius=0, decontaminate=False)),
        ("+ guided filter", replace(defaults, decontaminate=False)),
        ("+ guided filter, fast", replace(fast, decontaminate=False)),
        ("+ feather 2, fast", replace(fast, feather=2.0, decontaminate=False)),
    ]
    columns = [name for name in SIZES if name in args.sizes]
    rows: dict[str, dict[str, str]] = {}

    def record(label: str, column: str, result: tuple[float, float]) -> None:
        rows.setdefault(label, {})[column] = f"{result[0]:7.1f} / {result[1]:6.1f}"

    for column in columns:
        image, prior = scene_at(SIZES[column])
        background = np.zeros_like(image)
        background[:] = (20, 200, 60)
        for label, settings in stages:
            record(f"refine_alpha: {label}", column, timed(lambda: refine_alpha(image, prior, settings), args.repeat))
        alpha = refine_alpha(image, prior, defaults)
        band = int(((alpha > 0) & (alpha < 1)).sum())
        record("decontaminate", column, timed(lambda: estimate_foreground(image, alpha), args.repeat))
        foreground = estimate_foreground(image, alpha)
        record("composite", column, timed(lambda: composite_over(foreground, alpha, background), args.repeat))

        def rerender(settings: MatteSettings) -> np.ndarray:
            a = refine_alpha(image, prior, settings)
            f = estimate_foreground(image, a) if settings.decontaminate else image
            return composite_over(f, a, background)

        record("RE-RENDER defaults (fast=False)", column, timed(lambda: rerender(defaults), args.repeat))
        record("RE-RENDER preview (fast=True)", column, timed(lambda: rerender(fast), args.repeat))
        record("RE-RENDER preview, no decontaminate", column,
               timed(lambda: rerender(replace(fast, decontaminate=False)), args.repeat))
        full = max(3, args.repeat // 3)
        radius, eps = defaults.guided_radius, defaults.guided_eps
        record(f"full frame guided_filter r={radius}", column,
               timed(lambda: guided_filter(image, prior, radius, eps), full))
        record(f"full frame fast_guided_filter r={radius} s={fast.fast_subsample}", column,
               timed(lambda: fast_guided_filter(image, prior, radius, eps, fast.fast_subsample), full))
        record(f"full frame cv2.ximgproc.guidedFilter r={radius}", column,
               timed(lambda: cv2.ximgproc.guidedFilter(image, prior, radius, eps * 255.0**2), full))
        rows.setdefault("(edge band pixels, 0<alpha<1)", {})[column] = f"{band:d}"

    width = max(len(label) for label in rows)
    print("\nmilliseconds, median / min")
    print(" " * width + "".join(f"  {c:>18s}" for c in columns))
    for label, cells in rows.items():
        print(label.ljust(width) + "".join(f"  {cells.get(c, ''):>18s}" for c in columns))


if __name__ == "__main__":
    main()
