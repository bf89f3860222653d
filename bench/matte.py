"""Timing of the matte: full quality against the Nuggy baseline, and the display-size preview.

* **Full quality** (what downloads use): ``refine_alpha_and_foreground`` (the matte and its
  edge colours) with the defaults, against ``bench/nuggy.py``'s ``nuggy_alpha``, interleaved
  in one process (one of each per round, same picture, same prior, same ``cv2`` threads) at
  1920x1080 and 3840x2160, with the matte's share of Nukki's time listed.
* **Preview** (what a slider change costs): ``refine_alpha`` (and ``refine_alpha_and_foreground``)
  on ``preview_inputs(..., max_side=1280)``'s picture and prior, at 1, 8 and 24 MP. The
  picture's shrink is cached by the caller (once per picture), the prior's once per
  selection: both are listed separately, not in the slider path.

Pictures above 2 MP are the 1920x1080 scene upscaled (rendering them natively takes GBs).
Times are wall-clock milliseconds, median (and minimum) of ``--repeat`` rounds; the full-quality
table also gives the process CPU time per call (all threads: Nukki hands independent steps to two
side threads), which other programs on a shared machine disturb less than wall-clock time.
Page faults per call (first touches of fresh memory) are listed too: on the 2-core VMs a
fault costs about as much as the arithmetic on that memory, and how many each method takes
depends on what glibc did with the memory freed before it (``--keep-heap`` has glibc keep
it for the whole process, for both methods: the arithmetic alone).
``--single-thread`` adds the same full-quality call on one thread (the side threads' jobs run
in line, ``cv2`` threads 1): the work the cores share. ``--separate N`` adds each method timed in
fresh processes of its own (N of each, alternating): interleaved in one process, each runs on
the memory the other's calls left to glibc, and at 3840x2160 that spares the baseline most of
its page faults.
Run: ``python bench/matte.py --threads 2`` (about ten seconds).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import cv2
import numpy as np
from nuggy import nuggy_alpha

from inference import side_threads
from inference.matte import (
    MatteSettings,
    preview_inputs,
    refine_alpha,
    refine_alpha_and_foreground,
    shrink_for_preview,
)
from tests.scenes import make_strand_scene, refine_net_like

PREVIEW_SIDE = 1280

#: The full-quality table's pictures, (H, W).
SIZES = ((1080, 1920), (2160, 3840))


def picture(size: tuple[int, int], base: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Image and refine-net-like prior of ``size`` ``(H, W)``."""
    height, width = size
    if base is None or (height, width) == base[0].shape[:2]:
        if base is not None:
            return base
        scene = make_strand_scene("textured", size, seed=2)
        return scene.image, refine_net_like(scene.alpha, long_side=720 * max(size) // 1920)
    image = cv2.resize(base[0], (width, height), interpolation=cv2.INTER_LINEAR)
    prior = cv2.resize(base[1], (width, height), interpolation=cv2.INTER_LINEAR)
    return image, prior


def once(fn: Callable[[], object], cpu: list[float] | None = None, faults: list[int] | None = None) -> float:
    """Wall-clock ms of one call; appends the process CPU ms (all threads) to ``cpu`` and the
    page faults (minor: first touches of fresh memory) to ``faults`` if given."""
    start_faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start, start_cpu = time.perf_counter(), time.process_time()
    fn()
    if cpu is not None:
        cpu.append((time.process_time() - start_cpu) * 1000.0)
    if faults is not None:
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start_faults)
    return (time.perf_counter() - start) * 1000.0


def keep_heap() -> None:
    """glibc: never give freed heap memory back to the system and serve blocks up to 32 MB from
    the heap, for the whole process (both methods), so that neither pays page faults for memory
    the other (or itself) just freed: the times of the arithmetic alone."""
    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_threshold = -1, -3
    if not (libc.mallopt(m_trim_threshold, 2**30) and libc.mallopt(m_mmap_threshold, 32 * 2**20)):
        raise SystemExit("mallopt failed: --keep-heap needs glibc")


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    fn()
    times = [once(fn) for _ in range(repeat)]
    return float(np.median(times)), float(np.min(times))


class _InLine:
    """Stands in for the matte's side threads: runs each job at once on the calling thread."""

    def submit(self, fn: Callable[..., object], *args: object, **kwargs: object) -> Future:
        done: Future = Future()
        done.set_result(fn(*args, **kwargs))
        return done


def single_thread_work(base: tuple[np.ndarray, np.ndarray], defaults: MatteSettings, repeat: int, threads: int) -> None:
    """Full quality with the side threads' jobs run in line and ``cv2.setNumThreads(1)``: how much
    work the two cores share (the wall-clock time above divided into it is what they gain)."""
    print("\nFULL QUALITY ON ONE THREAD (side jobs in line, cv2 threads 1), ms (median / min)")
    saved = side_threads._side_workers
    side_threads._side_workers = (os.getpid(), _InLine())
    cv2.setNumThreads(1)
    try:
        for size in SIZES:
            image, prior = picture(size, base)
            median, least = timed(lambda: refine_alpha_and_foreground(image, prior, defaults), repeat)
            print(f"{size[1]}x{size[0]:<7} {median:8.1f} / {least:5.1f}")
    finally:
        side_threads._side_workers = saved
        cv2.setNumThreads(threads)


def time_alone(method: str, repeat: int, threads: int) -> None:
    """Child of ``--separate``: time one method alone in this process, print its medians as JSON."""
    cv2.setNumThreads(threads)
    base = picture((1080, 1920))
    result = {}
    for size in SIZES:
        image, prior = picture(size, base)
        if method == "nukki":
            def call() -> None:
                refine_alpha_and_foreground(image, prior, MatteSettings())
        else:
            def call() -> None:
                nuggy_alpha(image, prior)
        call()
        faults: list[int] = []
        times = [once(call, faults=faults) for _ in range(repeat)]
        result[f"{size[1]}x{size[0]}"] = (float(np.median(times)), float(np.median(faults)))
    print(json.dumps(result))


def separate_processes(rounds: int, repeat: int, threads: int, keep_heap: bool) -> None:
    """Each method in fresh processes of its own, alternating, ``rounds`` of each (with
    ``--keep-heap`` in them too when ``keep_heap``)."""
    print(f"\nFULL QUALITY vs NUGGY, each in processes of its own ({rounds} of each, alternating), "
          "ms (median of the processes' medians) and page faults per call")
    results: dict[str, list[dict]] = {"nukki": [], "nuggy": []}
    for round_ in range(rounds):
        for method in ("nukki", "nuggy") if round_ % 2 == 0 else ("nuggy", "nukki"):
            command = [sys.executable, __file__, "--child", method, "--repeat", str(repeat), "--threads", str(threads)]
            done = subprocess.run(command + (["--keep-heap"] if keep_heap else []), capture_output=True, text=True, check=True)
            results[method].append(json.loads(done.stdout.strip().splitlines()[-1]))
    for size in SIZES:
        key = f"{size[1]}x{size[0]}"
        ours = [r[key] for r in results["nukki"]]
        theirs = [r[key] for r in results["nuggy"]]
        ours_ms, theirs_ms = np.median([t for t, _ in ours]), np.median([t for t, _ in theirs])
        ratios = [a / b for (a, _), (b, _) in zip(ours, theirs)]
        print(f"{key:<12} nukki {ours_ms:6.1f}   nuggy {theirs_ms:6.1f}   ratio {ours_ms / theirs_ms:.2f} "
              f"({min(ratios):.2f}-{max(ratios):.2f})   faults {np.median([f for _, f in ours]):.0f} / "
              f"{np.median([f for _, f in theirs]):.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2, help="cv2.setNumThreads for both methods (default 2)")
    parser.add_argument("--single-thread", action="store_true",
                        help="also time full quality on one thread: the work the cores share")
    parser.add_argument("--separate", type=int, default=0, metavar="N",
                        help="also time each method in N fresh processes of its own, alternating")
    parser.add_argument("--child", choices=("nukki", "nuggy"), help=argparse.SUPPRESS)
    parser.add_argument("--keep-heap", action="store_true",
                        help="glibc keeps freed memory for the process (both methods): no page faults for reused memory")
    args = parser.parse_args()
    if args.keep_heap:
        keep_heap()
    if args.child:
        time_alone(args.child, args.repeat, args.threads)
        return
    cv2.setNumThreads(args.threads)
    defaults = MatteSettings()
    print(f"cv2 threads: {cv2.getNumThreads()}, CPUs: {os.cpu_count()}, load average: "
          f"{', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"defaults: {defaults}")
    base = picture((1080, 1920))

    print("\nFULL QUALITY vs NUGGY, interleaved, ms (median / min)")
    header = (f"{'picture':<12} {'nukki':>16} {'nuggy':>16} {'ratio':>6}   nukki stages (median): refine_alpha / "
              "colours (the rest)   process CPU ms (median, all threads) and page faults per call: nukki / nuggy")
    print(header)
    for size in SIZES:
        image, prior = picture(size, base)

        def nukki() -> None:
            refine_alpha_and_foreground(image, prior, defaults)

        nukki()
        nuggy_alpha(image, prior)
        ours, theirs, ours_cpu, theirs_cpu, ours_faults, theirs_faults = [], [], [], [], [], []
        for _ in range(args.repeat):
            ours.append(once(nukki, ours_cpu, ours_faults))
            theirs.append(once(lambda: nuggy_alpha(image, prior), theirs_cpu, theirs_faults))
        stage_alpha = timed(lambda: refine_alpha(image, prior, defaults), max(3, args.repeat // 3))[0]
        stage_fg = float(np.median(ours)) - stage_alpha
        ratio = np.median(ours) / np.median(theirs)
        print(f"{size[1]}x{size[0]:<7} {np.median(ours):8.1f} / {np.min(ours):5.1f} "
              f"{np.median(theirs):8.1f} / {np.min(theirs):5.1f} {ratio:6.2f}   {stage_alpha:.1f} / {stage_fg:.1f}"
              f"   CPU {np.median(ours_cpu):.1f} / {np.median(theirs_cpu):.1f}"
              f"   faults {np.median(ours_faults):.0f} / {np.median(theirs_faults):.0f}")

    print(f"load average after: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if args.single_thread:
        single_thread_work(base, defaults, args.repeat, args.threads)
    if args.separate:
        separate_processes(args.separate, args.repeat, args.threads, args.keep_heap)

    print(f"\nPREVIEW at max_side {PREVIEW_SIDE}, per slider change, ms (median / min)")
    print(f"{'picture':<18} {'refine_alpha':>15} {'+ decontaminate':>16} {'worst slider':>13}   "
          f"once per picture / per selection: image shrink, prior shrink")
    for label, size in (("1 MP 1334x750", (750, 1334)), ("8 MP 3840x2160", (2160, 3840)),
                        ("24 MP 6000x4000", (4000, 6000))):
        image, prior = picture(size, base)
        small_image, small_prior, scaled = preview_inputs(image, prior, defaults, max_side=PREVIEW_SIDE)
        alpha_only = timed(lambda: refine_alpha(small_image, small_prior, scaled), args.repeat)

        def with_colours(settings: MatteSettings = scaled) -> None:
            refine_alpha_and_foreground(small_image, small_prior, settings)

        full = timed(with_colours, args.repeat)
        # The slowest slider end: the widest guided filter and feather.
        worst = timed(lambda: with_colours(replace(scaled, guided_radius=32, feather=10.0)), args.repeat)
        shrink_image = timed(lambda: shrink_for_preview(image, PREVIEW_SIDE), 3)[0]
        shrink_prior = timed(lambda: shrink_for_preview(prior, PREVIEW_SIDE), 3)[0]
        print(f"{label:<18} {alpha_only[0]:7.1f} / {alpha_only[1]:5.1f} {full[0]:8.1f} / {full[1]:5.1f} "
              f"{worst[0]:6.1f} / {worst[1]:4.1f}   {shrink_image:.1f}, {shrink_prior:.1f}")


if __name__ == "__main__":
    main()
