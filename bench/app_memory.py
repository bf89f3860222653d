"""Memory of the studio server under eight users: peak RSS and RSS after each round. Prints a table.

A real ``streamlit run`` server and eight Chromium sessions. Each round, every session
uploads a picture of its own (a new one each round, 1920x1080 by default), makes two
include/exclude clicks, moves the feather slider and downloads the RGBA PNG; all
eight do it interleaved. After each round the server's resident memory (``VmRSS``) is
read once the sessions are idle, and its peak (``VmHWM``) at the end. Bounded caches
mean the memory stops growing: round 3 should not be above round 2 by more than 10 %.

    .venv/bin/python bench/app_memory.py                    # 8 sessions x 3 rounds, 1920x1080
    .venv/bin/python bench/app_memory.py --sessions 4 --rounds 2 --size 720x1280
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from inference.picture import Picture  # noqa: E402
from inference.session import CutoutSession  # noqa: E402
from tests.scenes import make_scene  # noqa: E402
from tests.test_browser_load import plan_keeping_someone  # noqa: E402
from tests.test_browser import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_ARGS,
    CLASSIC,
    WAIT_MS,
    click_picture,
    open_picture,
    set_mode,
    settle,
    start_server,
    stop_server,
)


def status_kb(pid: int, field: str) -> int:
    """A ``VmRSS``/``VmHWM`` line of ``/proc/<pid>/status``, in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise ValueError(f"expected {field} in /proc/{pid}/status, got none")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", default="1080x1920", help="HxW of each session's pictures")
    args = parser.parse_args(argv)
    height, width = (int(v) for v in args.size.lower().split("x"))
    from playwright.sync_api import sync_playwright

    rng = random.Random(5)
    print(f"{args.sessions} sessions x {args.rounds} rounds, {width}x{height} pictures, classic backend; "
          f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} at start; "
          f"MALLOC_ARENA_MAX={os.environ.get('MALLOC_ARENA_MAX', 'unset')}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        models = tmp_path / "models"
        models.mkdir()
        server = start_server(models, tmp_path / "streamlit.log")
        pid = server.process.pid
        rows.append(("server started, no session", status_kb(pid, "VmRSS"), 0.0))
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                pages = []
                for _ in range(args.sessions):
                    context = browser.new_context(viewport={"width": 1280, "height": 1000}, accept_downloads=True)
                    page = context.new_page()
                    page.goto(f"{server.url}/Cutout")
                    pages.append(page)
                for round_ in range(1, args.rounds + 1):
                    start = time.perf_counter()
                    users = []
                    for n, page in enumerate(pages):
                        characters = 2 + (n + round_) % 2
                        scene = make_scene(characters, "gradient", size=(height, width), seed=100 * round_ + n)
                        path = tmp_path / f"r{round_}-s{n}.png"
                        Image.fromarray(scene.image).save(path)
                        oracle = CutoutSession(Picture.from_path(path), CLASSIC)
                        users.append((page, path, oracle))
                    for page, path, oracle in users:
                        open_picture(page, server, path, len(oracle.instances))
                    plans = [plan_keeping_someone(oracle, rng, 2) for _, _, oracle in users]
                    for k in range(2):
                        for (page, _, oracle), plan in zip(users, plans):
                            xy, include, _ = plan[k]
                            if (page.locator(".nk-root").get_attribute("data-mode") == "include") != include:
                                set_mode(page, "include" if include else "exclude")
                            click_picture(page, xy, oracle.picture.size)
                    for page, _, _ in users:
                        settle(page, 2)
                    for page, _, _ in users:
                        if not page.get_by_text("Matte (expert)").is_visible():
                            continue
                        if not page.get_by_role("slider", name="Feather (px)").is_visible():
                            page.get_by_text("Matte (expert)").click()
                        slider = page.get_by_role("slider", name="Feather (px)")
                        slider.focus()
                        page.keyboard.press("ArrowRight")
                    downloads = 0
                    for page, _, oracle in users:
                        if not oracle.selected:
                            continue
                        with page.expect_download(timeout=WAIT_MS) as info:
                            page.get_by_role("button", name="RGBA PNG").click()
                        info.value.path()
                        downloads += 1
                    time.sleep(3)  # let the last reruns finish
                    rows.append((f"after round {round_} ({downloads} downloads)", status_kb(pid, "VmRSS"),
                                 time.perf_counter() - start))
                browser.close()
            time.sleep(3)
            rows.append(("all tabs closed (3 s later)", status_kb(pid, "VmRSS"), 0.0))
            peak = status_kb(pid, "VmHWM")
        finally:
            stop_server(server)
    print(f"\n{'when':<40} {'RSS (MB)':>10} {'round (s)':>10}")
    print("-" * 62)
    for label, kb, seconds in rows:
        print(f"{label:<40} {kb / 1024:10.0f} {seconds:10.1f}")
    print(f"{'peak RSS (VmHWM)':<40} {peak / 1024:10.0f}")
    by_round = [kb for label, kb, _ in rows if label.startswith("after round")]
    if len(by_round) >= 3:
        print(f"\nround 3 vs round 2: {100 * (by_round[2] / by_round[1] - 1):+.1f} % (target: at most +10 %)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
