"""Timing table for the classic segmenter: ``python -m bench.classic [--runs N]``.

Median wall time of :meth:`ClassicSegmenter.segment` on synthetic scenes
(tests/scenes.py) at 640x360, 1920x1080 and 3840x2160 (8.3 MP, the 1080p scene
upscaled), on a flat, a gradient and a busy background, plus the IoU of each
true character with its best instance (alpha >= 0.5 against mask >= 0.5).
"""

from __future__ import annotations

import argparse
import statistics
import time

import cv2
import numpy as np

from inference.classic import ClassicSegmenter
from tests.scenes import make_scene

SIZES = {"640x360": (360, 640), "1920x1080": (1080, 1920), "3840x2160": (2160, 3840)}


def best_ious(instances, masks: tuple[np.ndarray, ...]) -> list[float]:
    """IoU of each true ``(H, W)`` bool mask with the instance overlapping it best."""
    found = [instances.full_mask(i) >= 0.5 for i in range(len(instances))]
    return [max((float((f & m).sum() / (f | m).sum()) for f in found), default=0.0) for m in masks]


def main() -> None:
    """Print the timing table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per cell (median reported)")
    args = parser.parse_args()
    segmenter = ClassicSegmenter()
    print(f"{'size':>10} {'background':>10} {'median s':>9} {'min s':>7} {'found':>5}  IoU per character")
    for background in ("flat", "gradient", "busy"):
        base = make_scene(3, background, size=SIZES["1920x1080"], seed=7)
        for name, (height, width) in SIZES.items():
            if name == "1920x1080":
                image, masks = base.image, base.character_masks
            elif name == "640x360":
                scene = make_scene(3, background, size=(height, width), seed=7)
                image, masks = scene.image, scene.character_masks
            else:
                image = cv2.resize(base.image, (width, height), interpolation=cv2.INTER_CUBIC)
                masks = tuple(
                    cv2.resize(a, (width, height), interpolation=cv2.INTER_CUBIC) >= 0.5
                    for a in base.character_alphas
                )
            segmenter.segment(image)  # warm-up (allocations, OpenCV thread pool)
            times = []
            for _ in range(args.runs):
                start = time.perf_counter()
                instances = segmenter.segment(image)
                times.append(time.perf_counter() - start)
            ious = " ".join(f"{v:.3f}" for v in best_ious(instances, masks))
            print(
                f"{name:>10} {background:>10} {statistics.median(times):9.3f} {min(times):7.3f} "
                f"{len(instances):5d}  {ious}"
            )


if __name__ == "__main__":
    main()
