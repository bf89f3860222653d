"""Slider -> new preview in the studio, on a 1920x1080 picture. Prints tables; asserts nothing.

Three views of the same latency, from the inside out:

1. **engine**: what the preview fragment computes after a slider move: the full-size
   matte (``render_cutout``), the downscaled composite (``make_preview``) and the
   JPEG that ``st.image`` sends, per background kind;
2. **apptest**: a whole script rerun of the Cutout page in ``AppTest`` after a slider
   change (detection cached; this is more than the fragment rerun a browser gets);
3. **browser** (``--browser``, needs Chromium): a real ``streamlit run`` server and
   Chromium; the feather slider is stepped with the keyboard and the time is taken
   from the key press until the new preview picture has loaded in the page.

    .venv/bin/python bench/app_latency.py                 # engine + apptest
    .venv/bin/python bench/app_latency.py --browser       # all three
    .venv/bin/python bench/app_latency.py --repeat 20 --size 1080x1920
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from inference.composite import Background  # noqa: E402
from inference.matte import MatteSettings  # noqa: E402
from inference.pipeline import detect_characters, render_cutout  # noqa: E402
from inference.segmenter import DetectionSettings  # noqa: E402
from studio.preview import make_preview  # noqa: E402
from tests.scenes import make_scene  # noqa: E402

CHROMIUM = os.environ.get("NUKKI_CHROMIUM", "/usr/bin/chromium")


def _stats(samples_s: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples_s)
    p90 = ms[min(len(ms) - 1, int(round(0.9 * (len(ms) - 1))))]
    return f"{statistics.median(ms):8.1f} {p90:8.1f} {ms[0]:8.1f} {len(ms):4d}"


def _header(title: str) -> None:
    print(f"\n{title}")
    print(f"{'what':<52} {'median':>8} {'p90':>8} {'min':>8} {'n':>4}   (ms)")
    print("-" * 92)


def _time(fn, repeat: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def bench_engine(image: np.ndarray, repeat: int) -> None:
    instances = detect_characters(image, DetectionSettings(backend="classic")).instances
    chosen = list(range(len(instances)))
    backdrop = make_scene(1, "textured", size=(720, 1280), seed=9).background
    _header(f"engine: work after one slider move, {image.shape[1]}x{image.shape[0]}, {len(chosen)} characters")
    variants = {
        "render_cutout, defaults (full quality)": MatteSettings(),
        "render_cutout, fast preview": MatteSettings(fast=True),
        "render_cutout, feather 3, no decontamination": MatteSettings(feather=3.0, decontaminate=False),
        "render_cutout, guided radius 16": MatteSettings(guided_radius=16),
    }
    for label, matte in variants.items():
        try:
            samples = _time(lambda m=matte: render_cutout(image, instances, chosen, m), repeat)
        except Exception as exc:  # an engine bug must not hide the other rows
            print(f"{label:<52} FAILED: {type(exc).__name__}: {str(exc).splitlines()[-1][:80]}")
            continue
        print(f"{label:<52} {_stats(samples)}")
    cutout = render_cutout(image, instances, chosen, MatteSettings())
    for kind, background in {
        "transparent": Background(),
        "color": Background(kind="color", color=(30, 60, 200)),
        "image": Background(kind="image", image=backdrop),
        "blur": Background(kind="blur"),
    }.items():
        samples = _time(lambda b=background: make_preview(image, cutout, b), repeat)
        print(f"{'make_preview (960 px), background ' + kind:<52} {_stats(samples)}")
    shown = make_preview(image, cutout, Background()).after

    def jpeg() -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(shown).save(buffer, format="JPEG", quality=75)
        return buffer.getvalue()

    print(f"{'JPEG of the preview (what st.image sends)':<52} {_stats(_time(jpeg, repeat))}")
    for label, matte in (("fast preview, the default", MatteSettings(feather=2.0, fast=True)),
                         ("full quality", MatteSettings(feather=2.0))):
        total = _time(lambda m=matte: jpeg() if make_preview(image, render_cutout(image, instances, chosen, m),
                                                             Background()) is not None else None, repeat)
        print(f"{'total (' + label + '): matte+preview+JPEG':<52} {_stats(total)}")


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def bench_apptest(image: np.ndarray, repeat: int) -> None:
    from streamlit.testing.v1 import AppTest

    with tempfile.TemporaryDirectory() as models:
        os.environ["NUKKI_MODELS_DIR"] = models
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
        at.run()
        at.switch_page("pages/1_Cutout.py")
        at.run()
        at.file_uploader(key="upload").set_value(("bench.png", _png(image), "image/png"))
        start = time.perf_counter()
        at.run()
        first = time.perf_counter() - start
        assert not at.exception and not at.error, [e.value for e in (*at.exception, *at.error)]
        _header("apptest: whole Cutout page rerun after a slider move (detection cached)")
        print(f"{'upload + decode + detect + first preview (once)':<52} {first * 1000:8.1f}")
        samples = []
        for step in range(repeat):
            at.slider(key="keep.matte.feather").set_value(0.5 * ((step % 20) + 1))
            start = time.perf_counter()
            at.run()
            samples.append(time.perf_counter() - start)
        print(f"{'feather slider -> rerun done':<52} {_stats(samples)}")
        samples = []
        for step in range(repeat):
            at.radio(key="keep.bg.kind").set_value("color" if step % 2 == 0 else "blur")
            start = time.perf_counter()
            at.run()
            samples.append(time.perf_counter() - start)
        print(f"{'background colour <-> blur -> rerun done':<52} {_stats(samples)}")


def bench_browser(image: np.ndarray, repeat: int) -> None:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        picture = Path(tmp) / "bench.png"
        picture.write_bytes(_png(image))
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        env = {**os.environ, "NUKKI_MODELS_DIR": tmp}
        server = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
             "--server.port", str(port), "--server.address", "127.0.0.1"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(200):
                try:
                    with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2):
                        break
                except OSError:
                    time.sleep(0.3)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=CHROMIUM,
                    args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                          "--disable-background-networking", "--disable-component-update", "--disable-sync"],
                )
                page = browser.new_page(viewport={"width": 1600, "height": 1200})
                page.goto(f"{base}/Cutout")
                page.locator("input[type=file]").first.set_input_files(str(picture))
                page.get_by_text("found 3 characters").wait_for(timeout=300_000)
                page.get_by_text("Matte (expert)").click()
                slider = page.get_by_role("slider", name="Feather (px)")
                slider.wait_for(timeout=60_000)
                preview = "[data-testid='stImage'] img"
                page.wait_for_selector(preview, timeout=60_000)
                samples = []
                for step in range(repeat):
                    old = page.eval_on_selector(preview, "img => img.src")
                    slider.focus()
                    start = time.perf_counter()
                    page.keyboard.press("ArrowRight" if (step // 20) % 2 == 0 else "ArrowLeft")
                    page.wait_for_function(
                        """(old) => { const i = document.querySelector("[data-testid='stImage'] img");
                                      return i && i.src !== old && i.complete && i.naturalWidth > 0; }""",
                        arg=old, timeout=60_000,
                    )
                    samples.append(time.perf_counter() - start)
                    page.wait_for_timeout(150)
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=10)
    _header("browser: Chromium + streamlit run, key press on the feather slider -> new preview loaded")
    print(f"{'feather slider step -> new preview picture shown':<52} {_stats(samples)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1080x1920", help="HxW of the test picture (default 1080x1920)")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--browser", action="store_true", help="also measure in Chromium (needs /usr/bin/chromium)")
    parser.add_argument("--skip-apptest", action="store_true")
    args = parser.parse_args(argv)
    height, width = (int(v) for v in args.size.lower().split("x"))
    image = make_scene(3, "gradient", size=(height, width), seed=2).image
    print(f"picture {width}x{height}, 3 characters, classic backend; {os.cpu_count()} CPU cores; "
          f"numbers vary with machine load")
    bench_engine(image, args.repeat)
    if not args.skip_apptest:
        bench_apptest(image, args.repeat)
    if args.browser:
        bench_browser(image, args.repeat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
