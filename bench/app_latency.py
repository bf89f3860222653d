"""Slider -> new preview in the studio, on a 1920x1080 and a 24-megapixel picture. Prints tables; asserts nothing.

Two views of the same latency:

1. **engine**: what the preview fragment computes after a slider move: the matte at
   display resolution with the island/hole report (``studio.preview.render_preview``),
   the composite over the background, and the JPEG ``data:`` URL the page shows;
   and, for scale, the full-resolution cutout a download makes;
2. **browser** (``--browser``, needs Chromium): a real ``streamlit run`` server and
   Chromium; the feather slider is stepped with the keyboard and the time is taken
   from the key press until the new preview picture has loaded in the page (what
   the user sees).

    .venv/bin/python bench/app_latency.py                    # engine, both sizes
    .venv/bin/python bench/app_latency.py --browser          # engine + browser
    .venv/bin/python bench/app_latency.py --sizes 1080x1920 --repeat 20
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from inference.composite import Background  # noqa: E402
from inference.export import encode_image  # noqa: E402
from inference.matte import MatteSettings  # noqa: E402
from inference.pipeline import detect_characters, render_cutout  # noqa: E402
from inference.segmenter import DetectionSettings  # noqa: E402
from studio.canvas import jpeg_data_url  # noqa: E402
from studio.preview import composite_preview, prepare_preview, render_preview  # noqa: E402
from tests.scenes import make_scene  # noqa: E402


def _stats(samples_s: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples_s)
    p95 = ms[min(len(ms) - 1, int(round(0.95 * (len(ms) - 1))))]
    return f"{statistics.median(ms):8.1f} {p95:8.1f} {ms[0]:8.1f} {len(ms):4d}"


def _header(title: str) -> None:
    print(f"\n{title}")
    print(f"{'what':<56} {'median':>8} {'p95':>8} {'min':>8} {'n':>4}   (ms)")
    print("-" * 96)


def _time(fn, repeat: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def picture(size: tuple[int, int]) -> np.ndarray:
    """Three characters on a gradient at ``size`` = (H, W) (drawn small and enlarged above 8 MP)."""
    height, width = size
    if height * width <= 8_000_000:
        return make_scene(3, "gradient", size=size, seed=2).image
    small = make_scene(3, "gradient", size=(height // 2, width // 2), seed=2).image
    return np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC))


def bench_engine(image: np.ndarray, repeat: int) -> None:
    instances = detect_characters(image, DetectionSettings(backend="classic")).instances
    chosen = list(range(len(instances)))
    inputs = prepare_preview(image, instances, chosen)
    small = inputs.small_image
    scale = small.shape[1] / image.shape[1]
    _header(f"engine: work after one slider move, {image.shape[1]}x{image.shape[0]}, {len(chosen)} characters")
    for label, matte in {
        "display-size matte + report, defaults": MatteSettings(),
        "display-size matte + report, feather 3": MatteSettings(feather=3.0),
        "display-size matte + report, guided radius 16": MatteSettings(guided_radius=16),
    }.items():
        print(f"{label:<56} {_stats(_time(lambda m=matte: render_preview(inputs, m), repeat))}")
    cut, _ = render_preview(inputs, MatteSettings())
    for kind, background in {"transparent": Background(), "blur": Background(kind="blur")}.items():
        samples = _time(lambda b=background: composite_preview(small, cut, b, scale=scale), repeat)
        print(f"{'composite over ' + kind:<56} {_stats(samples)}")
    shown = composite_preview(small, cut, Background(), scale=scale).after
    print(f"{'JPEG data URL of the preview':<56} "
          f"{_stats(_time(lambda: jpeg_data_url(encode_image(shown, 'jpeg', quality=88)), repeat))}")

    def total() -> str:
        cutout, _ = render_preview(inputs, MatteSettings(feather=2.0))
        return jpeg_data_url(encode_image(composite_preview(small, cutout, Background(), scale=scale).after, "jpeg"))

    print(f"{'total: matte + composite + JPEG (what a slider costs)':<56} {_stats(_time(total, repeat))}")
    prepare = _time(lambda: prepare_preview(image, instances, chosen), max(1, repeat // 3))
    print(f"{'once per choice of characters: shrink picture and prior':<56} {_stats(prepare)}")
    full = _time(lambda: render_cutout(image, instances, chosen, MatteSettings()), max(1, repeat // 3))
    print(f"{'for scale: full-resolution cutout (a download)':<56} {_stats(full)}")


def bench_browser(image: np.ndarray, repeat: int) -> None:
    from playwright.sync_api import sync_playwright

    from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, start_server, stop_server

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.png"
        Image.fromarray(image).save(path, compress_level=1)
        models = Path(tmp) / "models"
        models.mkdir()
        server = start_server(models, Path(tmp) / "streamlit.log")
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1600, "height": 1200})
                page.goto(f"{server.url}/Cutout")
                page.locator("input[type=file]").first.set_input_files(str(path))
                page.get_by_text(re.compile(r"found \d+ characters?")).wait_for(timeout=600_000)
                page.get_by_text("Matte (expert)").click()
                slider = page.get_by_role("slider", name="Feather (px)")
                slider.wait_for(timeout=60_000)
                preview = "[data-testid='stImage'] img"
                page.wait_for_selector(preview, timeout=60_000)
                samples = []
                for step in range(repeat + 1):
                    old = page.eval_on_selector(preview, "img => img.src")
                    slider.focus()
                    start = time.perf_counter()
                    page.keyboard.press("ArrowRight" if (step // 20) % 2 == 0 else "ArrowLeft")
                    page.wait_for_function(
                        """(old) => { const i = document.querySelector("[data-testid='stImage'] img");
                                      return i && i.src !== old && i.complete && i.naturalWidth > 0; }""",
                        arg=old, timeout=120_000, polling=10,
                    )
                    if step:  # the first is a warm-up
                        samples.append(time.perf_counter() - start)
                    page.wait_for_timeout(200)
                browser.close()
        finally:
            stop_server(server)
    _header(f"browser: Chromium + streamlit run, {image.shape[1]}x{image.shape[0]}: feather key press -> new preview shown")
    print(f"{'feather slider step -> new preview picture shown':<56} {_stats(samples)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1080x1920,4000x6000", help="HxW of the test pictures, comma-separated")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--browser", action="store_true", help="also measure in Chromium (needs /usr/bin/chromium)")
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    print(f"classic backend; {os.cpu_count()} CPU cores; load average {load:.1f} at start (numbers vary with load)")
    for text in args.sizes.split(","):
        height, width = (int(v) for v in text.lower().split("x"))
        image = picture((height, width))
        print(f"\n=== picture {width}x{height} ({width * height / 1e6:.1f} MP), 3 characters")
        bench_engine(image, args.repeat)
        if args.browser:
            bench_browser(image, args.repeat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
