"""The studio in a real browser: Playwright driving Debian's Chromium against ``streamlit run``.

* ``test_upload_click_slider_download_in_chromium``: upload, click a character, move a
  slider, download the RGBA PNG and check its alpha, a broken upload keeps the work,
  a new background; takes the README's screenshots.
* ``test_clicks_at_three_pacings_all_take_effect``: 68 clicks on a bundled sample,
  include and exclude mixed, >= 1 s apart, 0.3 s apart, and within 0.2 s of switching
  the mode; every click must take effect as the click rule says (the engine's own
  :class:`~inference.session.CutoutSession` replaying the same clicks is the oracle):
  0 lost, 0 wrong. No click is ever repeated.
* ``test_switching_pictures_starts_a_fresh_selection``: 3 characters -> 2 -> 3 in one
  session, clicks in between: never an error, each picture starts with everyone chosen.
* ``test_a_click_on_an_object_no_character_covers_adds_a_numbered_instance``: with the
  SAM 2 test checkpoint (weights that cut out one colour), a click on a red ball no
  character covers adds character N+1.

Screenshots go to ``tests/out/screenshots/``; with ``NUKKI_UPDATE_SCREENSHOTS=1`` also to
``docs/screenshots/`` (the ones the README shows).

Needs ``/usr/bin/chromium`` (or ``NUKKI_CHROMIUM``). Without it the tests are skipped,
unless ``NUKKI_REQUIRE_BROWSER=1`` (what ``.ci/run`` sets), which turns the skip into a failure.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from inference.matte import MatteSettings
from inference.picture import Picture
from inference.segmenter import DetectionSettings
from inference.session import ClickStep, CutoutSession
from tests.scenes import make_scene

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("NUKKI_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOTS = ROOT / "tests" / "out" / "screenshots"
DOC_SHOTS = ROOT / "docs" / "screenshots"
SAMPLES = ROOT / "assets" / "samples"
WAIT_MS = 90_000
CLASSIC = DetectionSettings(backend="classic")
#: Picture pixels a click may land from where it was aimed (sub-pixel positions on a shrunk picture).
SLACK = 1


# ---------------------------------------------------------------------------- server and browser
def require_browser() -> None:
    problem = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problem = "the playwright package is not installed (pip install -r requirements-dev.txt)"
    if problem is None and not Path(CHROMIUM).is_file():
        problem = f"no Chromium at {CHROMIUM} (apt-get install chromium, or set NUKKI_CHROMIUM)"
    if problem:
        if os.environ.get("NUKKI_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser test required but {problem}")
        pytest.skip(problem)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    url: str
    log: Path
    models: Path
    process: subprocess.Popen

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def start_server(models: Path, log: Path) -> Server:
    """``streamlit run app.py`` on a free port, from the repository root (so its config applies)."""
    port = free_port()
    handle = log.open("w")
    env = {**os.environ, "NUKKI_MODELS_DIR": str(models), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [
            sys.executable, "-m", "streamlit", "run", "app.py",
            "--server.headless", "true",
            "--server.port", str(port),
            "--server.address", "127.0.0.1",
            "--browser.gatherUsageStats", "false",
        ],
        cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT,
    )
    handle.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read().strip() == b"ok":
                    return Server(url, log, models, process)
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"streamlit did not start; see {log}")
        time.sleep(0.3)


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(timeout=10)


def assert_clean_log(server: Server) -> None:
    text = server.log_text()
    assert "Traceback" not in text and "MediaFileStorageError" not in text, text[-4000:]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    require_browser()
    models = tmp_path_factory.mktemp("models")
    running = start_server(models, tmp_path_factory.mktemp("server") / "streamlit.log")
    yield running
    stop_server(running)
    assert_clean_log(running)


@pytest.fixture(scope="module")
def browser(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


# ---------------------------------------------------------------------------- page helpers
def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("NUKKI_UPDATE_SCREENSHOTS") == "1":
        DOC_SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, DOC_SHOTS / path.name)


@contextlib.contextmanager
def shot_on_failure(page, name: str):
    """Keep a screenshot of the page when the block fails (``tests/out/screenshots/failed-<name>.png``)."""
    try:
        yield
    except BaseException:
        SHOTS.mkdir(parents=True, exist_ok=True)
        try:
            page.screenshot(path=str(SHOTS / f"failed-{name}.png"), full_page=True)
        except Exception:  # the page may be gone; the original error matters
            pass
        raise


#: True when the page's script run has finished (then stale elements of earlier runs are gone).
NOT_RUNNING = "document.querySelector(\"[data-testid='stApp']\")?.dataset.testScriptState === 'notRunning'"


def idle(page) -> None:
    """Wait until Streamlit has no run in progress."""
    page.wait_for_function(f"() => {NOT_RUNNING}", timeout=WAIT_MS, polling=50)


def settle(page, steps: int, *, timeout_ms: int = WAIT_MS) -> None:
    """Wait until the server holds ``steps`` steps, the click picture has no pending click,
    and the run that drew them has finished (the checkboxes then show the server's choice)."""
    root = page.locator(".nk-root")
    page.wait_for_function(
        """([steps]) => {
            const hosts = [...document.querySelectorAll('*')].filter(e => e.shadowRoot && e.shadowRoot.querySelector('.nk-root'));
            const root = hosts.length === 1 && hosts[0].shadowRoot.querySelector('.nk-root');
            const marker = steps ? `${steps} step${steps === 1 ? '' : 's'} in the history` : 'No steps in the history yet.';
            const captions = [...document.querySelectorAll("[data-testid='stCaptionContainer']")];
            return root && root.dataset.steps === String(steps) && root.dataset.pending === '0'
                && captions.some(c => c.textContent.trim() === marker) && NOT_RUNNING;
        }""".replace("NOT_RUNNING", NOT_RUNNING),
        arg=[steps],
        timeout=timeout_ms,
        polling=50,
    )
    assert root.get_attribute("data-steps") == str(steps)


def checkbox(page, number: int):
    return page.get_by_role("checkbox", name=re.compile(rf"^Character {number} · score"))


def checked(page, count: int) -> list[int]:
    """0-based indices of the checked character boxes."""
    return [i for i in range(count) if checkbox(page, i + 1).is_checked()]


def open_picture(page, server: Server, path: Path, characters: int) -> None:
    """Upload ``path`` and wait until its detection is shown with an empty history (one click picture)."""
    page.locator("input[type=file]").first.set_input_files(str(path))
    summary = re.compile(rf"^{re.escape(path.name)} · .* · found {characters} characters? ")
    page.get_by_text(summary).wait_for(timeout=WAIT_MS)
    settle(page, 0)


def set_mode(page, mode: str) -> None:
    page.locator(f".nk-modes button[data-mode='{mode}']").click()


def click_picture(page, xy: tuple[int, int], image_size: tuple[int, int]) -> None:
    """Click the picture where picture pixel ``xy`` = ``(col, row)`` is shown (once; never repeated)."""
    img = page.locator(".nk-stage img")
    box = img.bounding_box()
    height, width = image_size
    img.click(
        position={"x": (xy[0] + 0.5) * box["width"] / width, "y": (xy[1] + 0.5) * box["height"] / height},
        force=True,
    )


def recorded_clicks(page) -> list[tuple[int, int, bool]]:
    """The clicks the server's history holds, as the click picture draws them."""
    dots = page.locator(".nk-dot[data-pending='false']")
    return [
        (int(d.get_attribute("data-x")), int(d.get_attribute("data-y")), d.get_attribute("data-include") == "true")
        for d in dots.all()
    ]


def targets(session: CutoutSession, rng: random.Random, per_character: int = 8) -> list[list[tuple[int, int]]]:
    """For each character, pixels only it covers, well inside it (so a click there is unambiguous)."""
    instances = session.instances
    out = []
    height, width = instances.image_size
    for index in range(len(instances)):
        mask = (instances.full_mask(index) >= 0.5).astype(np.uint8)
        inner = cv2.erode(mask, np.ones((9, 9), np.uint8)) > 0
        rows, cols = np.nonzero(inner)
        picks = []
        for j in rng.sample(range(len(rows)), min(len(rows), 400)):
            x, y = int(cols[j]), int(rows[j])
            # Every pixel within SLACK of the aim is this character's alone: a click landing there does the same.
            around = [(x + dx, y + dy) for dx in range(-SLACK, SLACK + 1) for dy in range(-SLACK, SLACK + 1)]
            if all(0 <= u < width and 0 <= v < height and instances.covering(u, v) == [index] for u, v in around):
                picks.append((x, y))
            if len(picks) == per_character:
                break
        assert picks, f"no unambiguous pixel inside character {index + 1}"
        out.append(picks)
    return out


def plan_clicks(session: CutoutSession, rng: random.Random, count: int, modes: list[bool] | None = None):
    """``count`` clicks that each change the choice, include and exclude mixed (``modes`` forces them)."""
    spots = targets(session, rng)
    plan = []
    for n in range(count):
        chosen, untouched = set(session.selected), session.untouched
        everyone = set(range(len(session.instances)))
        include_options = sorted(everyone if untouched else everyone - chosen)
        exclude_options = sorted(chosen)
        if modes is not None:
            include = modes[n]
        elif include_options and exclude_options:
            include = rng.random() < 0.5
        else:
            include = bool(include_options)
        options = include_options if include else exclude_options
        assert options, f"plan cannot continue: no {'include' if include else 'exclude'} target"
        index = rng.choice(options)
        xy = rng.choice(spots[index])
        result = session.apply(ClickStep(xy[0], xy[1], include))
        assert result.changed and result.hit == index
        plan.append((xy, include, session.selected))
    return plan


# ---------------------------------------------------------------------------- tests
def test_upload_click_slider_download_in_chromium(server, browser, tmp_path):
    from playwright.sync_api import expect

    scene = make_scene(2, "flat", size=(360, 640), seed=3)
    picture = tmp_path / "two characters.png"
    Image.fromarray(scene.image).save(picture)
    oracle = CutoutSession(Picture.from_path(picture), CLASSIC)
    target_mask = scene.character_masks[1]
    dist = cv2.distanceTransform(target_mask.astype(np.uint8), cv2.DIST_L2, 5)
    row, col = np.unravel_index(int(np.argmax(dist)), dist.shape)
    target = oracle.instances.covering(int(col), int(row))[0]
    other = 1 - target

    # Tall enough that the screenshots hold the whole page (Streamlit scrolls inside its own container).
    page = browser.new_page(viewport={"width": 1440, "height": 1700}, accept_downloads=True)
    page.goto(server.url)
    expect(page.get_by_role("heading", name=re.compile("Nukki"))).to_be_visible(timeout=WAIT_MS)
    expect(page.get_by_test_id("stSidebarNav").get_by_text("Home", exact=True)).to_be_visible()
    idle(page)
    shot(page, "home")

    page.goto(f"{server.url}/Cutout")
    expect(page.get_by_text("Upload a picture or choose a sample")).to_be_visible(timeout=WAIT_MS)
    open_picture(page, server, picture, 2)
    assert checked(page, 2) == [0, 1]

    click_picture(page, (int(col), int(row)), (360, 640))
    settle(page, 1)
    assert checked(page, 2) == [target]
    expect(page.get_by_text(re.compile(r"^1 of 2 character\(s\)"))).to_be_visible(timeout=WAIT_MS)

    # Move the feather slider with the keyboard: 0 -> 3 px in six 0.5-px steps.
    page.get_by_text("Matte (expert)").click()
    feather = page.get_by_role("slider", name=re.compile("Feather"))
    expect(feather).to_be_visible(timeout=WAIT_MS)
    feather.focus()
    for _ in range(6):
        page.keyboard.press("ArrowRight")
    expect(feather).to_have_value("3", timeout=WAIT_MS)
    idle(page)
    shot(page, "cutout")

    with page.expect_download(timeout=WAIT_MS) as download_info:
        page.get_by_role("button", name="RGBA PNG").click()
    download = download_info.value
    assert download.suggested_filename == "two_characters_cutout.png"
    png = Image.open(io.BytesIO(Path(download.path()).read_bytes()))
    assert png.mode == "RGBA" and png.size == (640, 360)
    alpha = np.asarray(png)[:, :, 3]
    chosen = alpha >= 128
    assert (chosen & target_mask).sum() / (chosen | target_mask).sum() > 0.9
    assert alpha[scene.character_masks[other]].max() == 0
    # The download carries the slider: the same file as the engine's with feather 3.
    oracle.apply(ClickStep(int(col), int(row), True))
    expected = np.asarray(Image.open(io.BytesIO(oracle.export("cutout", MatteSettings(feather=3.0)))))[:, :, 3]
    assert np.abs(alpha.astype(int) - expected.astype(int)).max() <= 1

    # A broken upload: a clear error, and the picture and its selection stay.
    broken = tmp_path / "broken.png"
    broken.write_bytes(picture.read_bytes()[:200])
    page.locator("input[type=file]").first.set_input_files(str(broken))
    expect(page.get_by_text(re.compile("broken.png could not be opened"))).to_be_visible(timeout=WAIT_MS)
    idle(page)
    assert checked(page, 2) == [target]
    shot(page, "bad-upload")
    # A file over the upload limit is refused by the browser itself: the old error must go.
    too_big = tmp_path / "too big.png"
    with too_big.open("wb") as handle:
        handle.truncate(41 * 1024 * 1024)
    page.locator("input[type=file]").first.set_input_files(str(too_big))
    expect(page.get_by_text(re.compile("File must be 40.0MB or smaller"))).to_be_visible(timeout=WAIT_MS)
    expect(page.get_by_text(re.compile("broken.png could not be opened"))).to_have_count(0, timeout=WAIT_MS)
    idle(page)
    assert checked(page, 2) == [target]
    # The error shifted the click picture down; a second include click adds the other character.
    rows, cols = np.nonzero(cv2.erode(scene.character_masks[other].astype(np.uint8), np.ones((15, 15), np.uint8)))
    click_picture(page, (int(np.median(cols)), int(np.median(rows))), (360, 640))
    settle(page, 2)
    assert checked(page, 2) == [0, 1]
    page.get_by_role("button", name="Undo").click()
    settle(page, 1)
    assert checked(page, 2) == [target]

    # A new background for the README: the bundled sunset behind the chosen character.
    page.get_by_text("Bundled background").click()
    idle(page)
    page.get_by_text("Before | after").click()
    idle(page)
    shot(page, "background")

    page.goto(f"{server.url}/Models")
    expect(page.get_by_text("Weights", exact=True)).to_be_visible(timeout=WAIT_MS)
    idle(page)
    shot(page, "models")
    page.close()


def test_clicks_at_three_pacings_all_take_effect(server, browser):
    """68 clicks, include and exclude mixed, three pacings: 0 lost, 0 wrong, none repeated."""
    rng = random.Random(7)
    sample = SAMPLES / "trio-gradient.png"
    oracle = CutoutSession(Picture.from_path(sample), CLASSIC)
    assert len(oracle.instances) == 3
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(f"{server.url}/Cutout")
    page.get_by_text("Upload a picture or choose a sample").wait_for(timeout=WAIT_MS)
    open_picture(page, server, sample, 3)
    sent: list[tuple[int, int, bool]] = []
    problems: list[str] = []
    with shot_on_failure(page, "pacings"):
        run_pacings(page, oracle, rng, sent, problems)
    assert len(sent) >= 60
    assert not problems, "\n".join(problems[:6]) + "\n--- server log ---\n" + server.log_text()[-3000:]
    page.close()


def run_pacings(page, oracle: CutoutSession, rng: random.Random, sent: list, problems: list[str]) -> None:
    size = oracle.picture.size
    count = len(oracle.instances)

    def check(label: str, expected: list[int]) -> None:
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        try:
            settle(page, len(sent), timeout_ms=30_000)
        except PlaywrightTimeout:
            root = page.locator(".nk-root")
            if not problems:
                SHOTS.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(SHOTS / "failed-pacings.png"), full_page=True)
            problems.append(
                f"{label}: the server holds {root.get_attribute('data-steps')} steps after {len(sent)} clicks "
                f"({root.get_attribute('data-pending')} pending)"
            )
        got_clicks = recorded_clicks(page)
        if len(got_clicks) != len(sent) or any(
            abs(g[0] - e[0]) > SLACK or abs(g[1] - e[1]) > SLACK or g[2] != e[2] for g, e in zip(got_clicks, sent)
        ):
            problems.append(f"{label}: server holds {got_clicks}, sent {sent}")
        got = checked(page, count)
        if got != expected:
            problems.append(f"{label}: chosen {got}, click rule says {expected}")

    # 1) >= 1 s apart, each checked before the next.
    for n, (xy, include, expected) in enumerate(plan_clicks(oracle, rng, 22)):
        start = time.monotonic()
        if (page.locator(".nk-root").get_attribute("data-mode") == "include") != include:
            set_mode(page, "include" if include else "exclude")
        click_picture(page, xy, size)
        sent.append((*xy, include))
        check(f"slow click {n + 1}", expected)
        page.wait_for_timeout(max(0, int(1000 - (time.monotonic() - start) * 1000)))
    # 2) 0.3 s apart, in bursts of 6 (a mode switch, when needed, also 0.3 s before the click),
    #    checked after each burst.
    for burst in range(4):
        burst_plan = plan_clicks(oracle, rng, 6)
        for xy, include, _ in burst_plan:
            if (page.locator(".nk-root").get_attribute("data-mode") == "include") != include:
                set_mode(page, "include" if include else "exclude")
                page.wait_for_timeout(300)
            click_picture(page, xy, size)
            sent.append((*xy, include))
            page.wait_for_timeout(300)
        check(f"0.3-s burst {burst + 1}", burst_plan[-1][2])
    # 3) within 0.2 s of switching the mode, alternating include and exclude.
    for n, (xy, include, expected) in enumerate(plan_clicks(oracle, rng, 22, modes=[n % 2 == 1 for n in range(22)])):
        set_mode(page, "include" if include else "exclude")
        page.wait_for_timeout(rng.choice([0, 50, 150]))
        click_picture(page, xy, size)
        sent.append((*xy, include))
        if n % 2 == 1:
            check(f"mode-switch click {n + 1}", expected)
    check("end", oracle.selected)


def test_switching_pictures_starts_a_fresh_selection(server, browser):
    from playwright.sync_api import expect

    rng = random.Random(11)
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(f"{server.url}/Cutout")
    page.get_by_text("Upload a picture or choose a sample").wait_for(timeout=WAIT_MS)
    for name, count in [("trio-gradient.png", 3), ("duo-flat.png", 2), ("trio-gradient.png", 3), ("duo-cool.png", 2)]:
        oracle = CutoutSession(Picture.from_path(SAMPLES / name), CLASSIC)
        open_picture(page, server, SAMPLES / name, count)
        assert checked(page, count) == list(range(count)), f"{name} did not start with everyone chosen"
        expect(checkbox(page, count + 1)).to_have_count(0)
        assert page.locator(".nk-dot").count() == 0
        # Exclude the last character (the one a stale selection would trip over), then include the first.
        plan = plan_clicks(oracle, rng, 2, modes=[False, True])
        for n, (xy, include, expected) in enumerate(plan):
            set_mode(page, "include" if include else "exclude")
            click_picture(page, xy, oracle.picture.size)
            settle(page, n + 1)
            assert checked(page, count) == expected
        assert page.locator("[data-testid='stException']").count() == 0
        assert page.get_by_text("could not be opened").count() == 0
    page.close()


def test_a_click_on_an_object_no_character_covers_adds_a_numbered_instance(browser, tmp_path_factory, tmp_path):
    """With SAM 2 installed (the test checkpoint cuts out red), a click on a red ball adds character N+1."""
    pytest.importorskip("sam2")
    from playwright.sync_api import expect

    from tests.sam2_fixtures import write_test_sam2_checkpoint

    red = (220, 30, 30)
    scene = make_scene(2, "flat", size=(360, 640), seed=3)
    image = scene.image.copy()
    ball = np.zeros(image.shape[:2], np.uint8)
    cv2.circle(ball, (600, 320), 8, 1, -1)  # below the classic segmenter's speck size
    covered = np.logical_or.reduce(scene.character_masks)
    assert not (ball.astype(bool) & covered).any()
    image[ball.astype(bool)] = red
    picture = tmp_path / "ball.png"
    Image.fromarray(image).save(picture)
    found = CutoutSession(Picture.from_path(picture), CLASSIC).instances
    if found.covering(600, 320):
        pytest.skip("the classic segmenter found the ball itself; nothing for a point prompt to add")
    characters = len(found)

    models = tmp_path_factory.mktemp("sam2-models")
    write_test_sam2_checkpoint(models, colour=red)
    running = start_server(models, tmp_path / "streamlit.log")
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(f"{running.url}/Cutout")
        page.get_by_text("Upload a picture or choose a sample").wait_for(timeout=WAIT_MS)
        open_picture(page, running, picture, characters)
        click_picture(page, (600, 320), (360, 640))
        settle(page, 1)
        expect(checkbox(page, characters + 1)).to_be_checked(timeout=WAIT_MS)
        assert checked(page, characters + 1) == [characters]
        expect(page.get_by_text(f"Added character {characters + 1}")).to_be_visible()
        page.close()
    finally:
        stop_server(running)
    assert_clean_log(running)
