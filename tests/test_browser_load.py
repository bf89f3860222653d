"""Eight people at once: eight Chromium sessions against one ``streamlit run`` server.

Each session opens a bundled sample, makes include/exclude clicks, changes the preview's
view and presses "RGBA PNG" once its page has settled, in two rounds, with all eight
sessions' clicks and downloads interleaved (nobody waits for anybody else). Asserts: every download arrives and decodes and
holds exactly the engine's cutout of the characters that session chose (the
engine's own :class:`~inference.session.CutoutSession` replaying the same clicks is
the oracle), no preview is broken, every selection is as clicked, and the server
log has no traceback (no ``MediaFileStorageError``).

Needs Chromium like ``tests/test_browser.py`` (skipped without it unless
``NUKKI_REQUIRE_BROWSER=1``).
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
from PIL import Image

from inference.matte import MatteSettings
from inference.picture import Picture
from inference.session import CutoutSession
from tests.test_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    CLASSIC,
    SAMPLES,
    WAIT_MS,
    assert_clean_log,
    checked,
    click_picture,
    idle,
    open_picture,
    plan_clicks,
    server,  # noqa: F401  (the module-scoped streamlit server fixture, with a clean-log check)
    set_mode,
    settle,
    shot_on_failure,
)

SESSIONS = 8
ROUNDS = 2
CLICKS_PER_ROUND = 2
PICTURES = [("trio-gradient.png", 3), ("duo-flat.png", 2), ("duo-cool.png", 2)]


def plan_keeping_someone(oracle: CutoutSession, rng: random.Random, count: int):
    """:func:`plan_clicks` whose last click leaves at least one character chosen (so there is a file)."""
    while True:
        plan = plan_clicks(oracle, rng, count)
        if plan[-1][2]:
            return plan
        for _ in range(count):
            oracle.undo()


def preview_loaded(page) -> bool:
    """The preview picture (the last ``st.image``) has loaded and has pixels."""
    return bool(
        page.locator("[data-testid='stImage'] img").last.evaluate("img => img.complete && img.naturalWidth > 0")
    )


def test_eight_sessions_click_and_download_at_once(server, tmp_path):
    from playwright.sync_api import sync_playwright

    rng = random.Random(3)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        users = []
        for n in range(SESSIONS):
            name, count = PICTURES[n % len(PICTURES)]
            context = browser.new_context(viewport={"width": 1280, "height": 1000}, accept_downloads=True)
            page = context.new_page()
            oracle = CutoutSession(Picture.from_path(SAMPLES / name), CLASSIC)
            users.append({"page": page, "name": name, "count": count, "oracle": oracle, "steps": 0, "files": []})
            page.on("download", lambda download, user=users[-1]: user["files"].append(download))
        for user in users:
            user["page"].goto(f"{server.url}/Cutout")
        for user in users:
            page = user["page"]
            page.get_by_text("Upload a picture or choose a sample").wait_for(timeout=WAIT_MS)
            open_picture(page, server, SAMPLES / user["name"], user["count"])

        for round_ in range(ROUNDS):
            plans = [plan_keeping_someone(user["oracle"], rng, CLICKS_PER_ROUND) for user in users]
            # Everybody clicks, interleaved: session 1's click, session 2's click, ...
            for k in range(CLICKS_PER_ROUND):
                for user, plan in zip(users, plans):
                    xy, include, _ = plan[k]
                    page = user["page"]
                    if (page.locator(".nk-root").get_attribute("data-mode") == "include") != include:
                        set_mode(page, "include" if include else "exclude")
                    click_picture(page, xy, user["oracle"].picture.size)
                    user["steps"] += 1
            for user, plan in zip(users, plans):
                page = user["page"]
                with shot_on_failure(page, f"load-{users.index(user)}"):
                    settle(page, user["steps"])
                    assert checked(page, user["count"]) == plan[-1][2], f"{user['name']}: selection not as clicked"
                    assert preview_loaded(page), f"{user['name']}: broken preview"
            # Everybody changes the view (eight preview reruns at once), then downloads as soon as
            # their own page has settled, while the others may still run.
            for user in users:
                user["page"].get_by_text("Before | after" if round_ == 0 else "Side by side", exact=True).click()
            for user in users:
                idle(user["page"])
                user["page"].get_by_role("button", name="RGBA PNG").click()
            for user in users:
                page = user["page"]
                deadline = 0
                while len(user["files"]) < round_ + 1 and deadline < WAIT_MS:
                    page.wait_for_timeout(100)
                    deadline += 100
                assert len(user["files"]) == round_ + 1, f"{user['name']}: the download never arrived"
                data = Path(user["files"][-1].path()).read_bytes()
                png = Image.open(io.BytesIO(data))
                png.load()
                expected = Image.open(io.BytesIO(user["oracle"].export("cutout", MatteSettings())))
                assert png.mode == "RGBA" and png.size == expected.size
                got_alpha = np.asarray(png)[:, :, 3].astype(int)
                want_alpha = np.asarray(expected)[:, :, 3].astype(int)
                assert np.abs(got_alpha - want_alpha).max() <= 1, f"{user['name']}: the file is not the chosen cutout"
        browser.close()
    assert_clean_log(server)
