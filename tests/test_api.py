"""The HTTP API end to end: a real uvicorn process (``python -m api``) spoken to over HTTP with httpx.

The server runs with an empty models folder, so it uses the weight-free classic
segmenter, whose answers on the synthetic scenes of ``tests/scenes.py`` are known.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import threading
import time
import zipfile
import zlib
from collections.abc import Iterator

import cv2
import httpx
import numpy as np
import pytest
from PIL import Image

from api.config import ApiConfig, studio_upload_mb
from api.process import REPO, ApiProcess
from inference.instances import tight_box
from tests.scenes import make_scene

SIZE = (240, 400)  # (H, W) of the test scenes


# ---------------------------------------------------------------------------- the server
@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[ApiProcess]:
    folder = tmp_path_factory.mktemp("api")
    (folder / "models").mkdir()
    with ApiProcess(folder / "server.log", NUKKI_MODELS_DIR=str(folder / "models"), NUKKI_API_MAX_JOBS="2") as running:
        yield running
    assert running.process.returncode is not None  # stopped: no server outlives the tests


@pytest.fixture(scope="module")
def client(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120) as http:
        yield http


# ---------------------------------------------------------------------------- pictures
def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def trio():
    """Three characters side by side on a flat background; ``.png`` is the upload."""
    scene = make_scene(3, "flat", size=SIZE, seed=1)
    return scene, _png(scene.image)


@pytest.fixture(scope="module")
def duo():
    scene = make_scene(2, "flat", size=SIZE, seed=0)
    return scene, _png(scene.image)


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def _near(mask: np.ndarray, px: int = 4) -> np.ndarray:
    """``mask`` grown by ``px`` pixels (the matte may spread a little past the true edge)."""
    return cv2.dilate(mask.astype(np.uint8), np.ones((2 * px + 1, 2 * px + 1), np.uint8)) > 0


def _interior(alpha: np.ndarray, px: int = 4) -> np.ndarray:
    """Pixels fully inside a character, at least ``px`` pixels from its edge."""
    return cv2.erode((alpha > 0.999).astype(np.uint8), np.ones((2 * px + 1, 2 * px + 1), np.uint8)) > 0


def _centre(mask: np.ndarray) -> tuple[int, int]:
    """``(x, y)`` of a pixel in the middle of a character's mask."""
    ys, xs = np.nonzero(mask)
    return int(np.median(xs)), int(np.median(ys))


def _mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int64) - b.astype(np.int64)).mean())


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def _box_iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def _truth_boxes_left_to_right(scene) -> list[tuple[int, int, int, int]]:
    return sorted((tight_box(mask) for mask in scene.character_masks), key=lambda b: b[0])


def _cutout(client: httpx.Client, png: bytes, **fields) -> httpx.Response:
    data = {k: (json.dumps(v) if k == "points" else str(v).lower() if isinstance(v, bool) else str(v))
            for k, v in fields.items()}
    return client.post("/v1/cutout", files={"image": ("scene.png", png, "image/png")}, data=data)


def _assert_json_error(response: httpx.Response, status: int | tuple[int, ...], words: str = "") -> str:
    statuses = (status,) if isinstance(status, int) else status
    assert response.status_code in statuses, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) >= {"error"} and isinstance(body["error"], str) and body["error"]
    assert "Traceback" not in response.text
    assert words.lower() in body["error"].lower(), body["error"]
    return body["error"]


# ---------------------------------------------------------------------------- health, docs
def test_healthz_reports_the_backend_and_limits(client):
    body = client.get("/healthz").json()
    assert body["status"] == "ok"
    assert body["backend"] == "classic"  # the models folder is empty
    assert "weights" in body["backend_reason"]
    assert body["prompter"] == "classic" and "SAM 2" in body["prompter_reason"]
    assert body["max_jobs"] == 2
    assert body["max_upload_bytes"] == 40 * 2**20  # the studio's server.maxUploadSize
    assert body["max_pixels"] == 24_000_000


def test_docs_and_openapi_are_served(client):
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    schema = client.get("/openapi.json").json()
    assert {"/healthz", "/v1/detect", "/v1/cutout"} <= set(schema["paths"])
    form_ref = schema["paths"]["/v1/cutout"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"]
    form = schema["components"]["schemas"][form_ref.rsplit("/", 1)[-1]]
    fields = set(form["properties"])
    assert fields == {
        "image", "select", "points", "threshold", "min_island", "max_hole", "guided_radius",
        "guided_eps", "feather", "decontaminate", "strands", "background", "trim", "format",
        "backend", "refine", "tta", "prompt_model", "background_image", "fit",
    }
    assert form["required"] == ["image"]
    assert form["properties"]["format"]["enum"] == ["png", "jpeg", "webp", "mask", "zip"]


# ---------------------------------------------------------------------------- detect
def test_detect_numbers_characters_left_to_right(client, trio):
    scene, png = trio
    response = client.post("/v1/detect", files={"image": ("trio.png", png, "image/png")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["width"], body["height"]) == (400, 240)
    assert body["backend"] == "classic"
    characters = body["characters"]
    assert [c["index"] for c in characters] == [1, 2, 3]
    assert [c["box"][0] for c in characters] == sorted(c["box"][0] for c in characters)
    truth_boxes = _truth_boxes_left_to_right(scene)
    truth_masks = sorted(scene.character_masks, key=lambda m: tight_box(m)[0])
    for character, box, mask in zip(characters, truth_boxes, truth_masks):
        assert _box_iou(character["box"], box) > 0.85, (character["box"], box)
        assert abs(character["area"] - int(mask.sum())) < 0.15 * mask.sum()
        assert 0.0 < character["score"] <= 1.0


# ---------------------------------------------------------------------------- cutout formats
def test_png_is_an_rgba_cutout_of_every_character(client, duo):
    scene, png = duo
    response = _cutout(client, png)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-nukki-selected"] == "1,2"
    assert 'filename="scene_cutout.png"' in response.headers["content-disposition"]
    rgba = _decode(response.content)
    assert rgba.shape == (240, 400, 4)
    assert _iou(rgba[..., 3] >= 128, scene.alpha >= 0.5) > 0.9
    inside = _interior(scene.alpha)
    # Inside the characters (away from their edges) the colour is the picture's own.
    assert _mean_abs_diff(rgba[..., :3][inside], scene.image[inside]) < 1.0


def test_select_and_trim_give_one_character_cropped(client, trio):
    scene, png = trio
    response = _cutout(client, png, select="2", trim=True)
    assert response.status_code == 200, response.text
    assert response.headers["x-nukki-selected"] == "2"
    rgba = _decode(response.content)
    # Trimmed = the untrimmed cutout cropped to its visible pixels, exactly.
    full = _decode(_cutout(client, png, select="2").content)
    x0, y0, x1, y1 = tight_box(full[..., 3] > 0)
    np.testing.assert_array_equal(rgba, full[y0:y1, x0:x1])
    second = sorted(scene.character_masks, key=lambda m: tight_box(m)[0])[1]
    assert _iou(full[..., 3] >= 128, second) > 0.9
    assert _box_iou((x0, y0, x1, y1), tight_box(second)) > 0.85


def test_points_follow_the_click_rule(client, trio):
    scene, png = trio
    masks = sorted(scene.character_masks, key=lambda m: tight_box(m)[0])
    ys, xs = np.nonzero(masks[0])
    on_first = [int(np.median(xs)), int(np.median(ys)), True]
    # The first include point on a character starts from nobody.
    response = _cutout(client, png, points=[on_first])
    assert response.status_code == 200 and response.headers["x-nukki-selected"] == "1"
    assert _iou(_decode(response.content)[..., 3] >= 128, masks[0]) > 0.9
    # An exclude point drops that character from everyone.
    ys, xs = np.nonzero(masks[2])
    off_third = [float(np.median(xs)) + 0.4, float(np.median(ys)), False]
    response = _cutout(client, png, points=[off_third])
    assert response.status_code == 200 and response.headers["x-nukki-selected"] == "1,2"
    # select comes first, then the points.
    response = _cutout(client, png, select="3", points=[on_first])
    assert response.headers["x-nukki-selected"] == "1,3"


def test_point_on_the_background_goes_to_the_point_prompter(client, trio):
    _, png = trio
    response = _cutout(client, png, points=[[2, 2, True]])
    assert response.status_code == 200
    notes = json.loads(response.headers["x-nukki-notes"])
    assert response.headers["x-nukki-selected"] == "1,2,3"  # nothing separable there: no change
    assert any("(2, 2)" in note for note in notes), notes


def test_jpeg_composite_over_a_colour(client, duo):
    scene, png = duo
    response = _cutout(client, png, format="jpeg", background="#00ff00")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    assert 'filename="scene_composite.jpg"' in response.headers["content-disposition"]
    img = Image.open(io.BytesIO(response.content))
    assert img.format == "JPEG" and img.size == (400, 240)
    rgb = np.asarray(img).astype(int)
    background = ~_near(scene.alpha > 0)
    assert np.abs(rgb[background] - (0, 255, 0)).mean() < 6
    inside = _interior(scene.alpha)
    assert _mean_abs_diff(rgb[inside], scene.image[inside]) < 6  # lossy JPEG


def test_webp_composite_defaults_to_white(client, duo):
    scene, png = duo
    response = _cutout(client, png, format="webp", trim=True)
    assert response.status_code == 200 and response.headers["content-type"] == "image/webp"
    img = Image.open(io.BytesIO(response.content))
    assert img.format == "WEBP"
    rgb = np.asarray(img.convert("RGB")).astype(int)
    alpha = _decode(_cutout(client, png).content)[..., 3]
    x0, y0, x1, y1 = tight_box(alpha > 0)
    assert img.size == (x1 - x0, y1 - y0)  # trimmed to the visible cutout
    outside = ~_near(scene.alpha > 0)[y0:y1, x0:x1]
    assert np.abs(rgb[outside] - 255).mean() < 3  # white where there is no character
    inside = _interior(scene.alpha)[y0:y1, x0:x1]
    assert _mean_abs_diff(rgb[inside], scene.image[y0:y1, x0:x1][inside]) < 6  # lossy WebP


def test_png_with_a_background_is_a_composite(client, duo):
    scene, png = duo
    response = _cutout(client, png, background="black")
    assert response.status_code == 200 and "scene_composite.png" in response.headers["content-disposition"]
    rgb = _decode(response.content)
    assert rgb.shape == (240, 400, 3)
    assert rgb[~_near(scene.alpha > 0)].max() <= 1  # faint matte spill rounds to a level at most
    inside = _interior(scene.alpha)
    assert _mean_abs_diff(rgb[inside], scene.image[inside]) < 1.0


def test_an_uploaded_background_picture_cover_and_contain(client, duo):
    scene, png = duo
    far = ~_near(scene.alpha > 0)
    red = _png(np.full((30, 50, 3), (255, 0, 0), np.uint8))
    response = client.post(
        "/v1/cutout", files={"image": ("duo.png", png, "image/png"), "background_image": ("red.png", red, "image/png")}
    )
    assert response.status_code == 200 and "duo_composite.png" in response.headers["content-disposition"]
    rgb = _decode(response.content)
    assert rgb.shape == (240, 400, 3)
    assert np.abs(rgb[far].astype(int) - (255, 0, 0)).max() <= 2  # faint matte spill rounds a level or two
    # contain: a square picture fills the middle 240x240 and blue pads the sides (80 px each).
    green = _png(np.full((40, 40, 3), (0, 200, 0), np.uint8))
    response = client.post(
        "/v1/cutout",
        files={"image": ("duo.png", png, "image/png"), "background_image": ("g.png", green, "image/png")},
        data={"fit": "contain", "background": "#0000ff", "format": "jpeg"},
    )
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    rgb = np.asarray(Image.open(io.BytesIO(response.content))).astype(int)
    columns = np.arange(400)
    side, middle = far & ((columns < 76) | (columns >= 324)), far & (columns >= 84) & (columns < 316)
    assert np.abs(rgb[side] - (0, 0, 255)).mean() < 6 and np.abs(rgb[middle] - (0, 200, 0)).mean() < 6
    # Bad backgrounds are named as such.
    bad = client.post(
        "/v1/cutout",
        files={"image": ("duo.png", png, "image/png"), "background_image": ("x.png", b"nope", "image/png")},
    )
    _assert_json_error(bad, 422, "background_image")
    blur = client.post(
        "/v1/cutout",
        files={"image": ("duo.png", png, "image/png"), "background_image": ("g.png", green, "image/png")},
        data={"background": "blur"},
    )
    _assert_json_error(blur, 422, "only be a colour")


def test_mask_is_greyscale_white_on_characters(client, duo):
    scene, png = duo
    response = _cutout(client, png, format="mask")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    mask = _decode(response.content)
    assert mask.shape == (240, 400) and mask.dtype == np.uint8
    assert _iou(mask >= 128, scene.alpha >= 0.5) > 0.9
    cutout = _decode(_cutout(client, png).content)
    np.testing.assert_array_equal(mask, cutout[..., 3])  # the same matte as the PNG's alpha


def test_zip_holds_one_layer_per_character(client, trio):
    scene, png = trio
    response = _cutout(client, png, format="zip", select="1,3")
    assert response.status_code == 200 and response.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        assert [layer["file"] for layer in manifest["layers"]] == ["layers/01.png", "layers/02.png"]
        masks = sorted(scene.character_masks, key=lambda m: tight_box(m)[0])
        for layer, truth in zip(manifest["layers"], (masks[0], masks[2])):
            rgba = _decode(archive.read(layer["file"]))
            x0, y0, x1, y1 = layer["placement_xyxy"]
            assert rgba.shape == (y1 - y0, x1 - x0, 4)
            assert _iou(rgba[..., 3] >= 128, truth[y0:y1, x0:x1]) > 0.85
        full = _decode(archive.read("cutout.png"))
        plate = _decode(archive.read("background_plate.png"))
    same = _decode(_cutout(client, png, select="1,3").content)
    np.testing.assert_array_equal(full, same)
    assert plate.shape == (240, 400, 3)


def test_nothing_found_or_nothing_chosen_is_422(client, duo):
    blank = _png(np.full((120, 160, 3), 200, np.uint8))
    _assert_json_error(_cutout(client, blank), 422, "no character was found")
    assert client.post("/v1/detect", files={"image": ("blank.png", blank)}).json()["characters"] == []
    scene, png = duo
    points = []
    for mask in scene.character_masks:
        ys, xs = np.nonzero(mask)
        points.append([int(np.median(xs)), int(np.median(ys)), False])
    _assert_json_error(_cutout(client, png, points=points), 422, "no character chosen")


def test_file_names_outside_ascii(client, duo):
    _, png = duo
    response = client.post("/v1/cutout", files={"image": ("누끼 그림.png", png, "image/png")})
    assert response.status_code == 200
    disposition = response.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="')
    assert "filename*=UTF-8''%EB%88%84%EB%81%BC_%EA%B7%B8%EB%A6%BC_cutout.png" in disposition


# ---------------------------------------------------------------------------- the command line agrees
@pytest.mark.parametrize(
    "fields, argv",
    [
        ({}, []),
        ({"select": "largest", "trim": True}, ["--select", "largest", "--trim"]),
        (
            {"threshold": 0.4, "min_island": 0, "max_hole": 64, "guided_radius": 2, "guided_eps": 0.001,
             "feather": 1.5, "decontaminate": False},
            ["--threshold", "0.4", "--min-island", "0", "--max-hole", "64", "--guided-radius", "2",
             "--guided-eps", "0.001", "--feather", "1.5", "--no-decontaminate"],
        ),
        ({"strands": False}, ["--no-strands"]),
        ({"select": "1", "points": "POINTS"}, ["--select", "1", "--points", "POINTS"]),
    ],
    ids=["defaults", "largest-trim", "matte-settings", "no-strands", "select-points"],
)
def test_png_equals_the_command_line_output(client, trio, tmp_path, monkeypatch, fields, argv):
    import extract

    scene, png = trio
    if fields.get("points") == "POINTS":  # include the third character, exclude the first
        centres = [_centre(mask) for mask in sorted(scene.character_masks, key=lambda m: tight_box(m)[0])]
        fields = {**fields, "points": [[*centres[2], True], [*centres[0], False]]}
        cli_points = f"{centres[2][0]},{centres[2][1]};{centres[0][0]},{centres[0][1]},-"
        argv = [cli_points if a == "POINTS" else a for a in argv]
    monkeypatch.setenv("NUKKI_MODELS_DIR", str(tmp_path / "no-models"))  # classic, like the server
    source = tmp_path / "trio.png"
    source.write_bytes(png)
    assert extract.main(["--img", str(source), "--out", str(tmp_path / "out"), *argv]) == 0
    from_cli = (tmp_path / "out" / "trio_cutout.png").read_bytes()
    response = _cutout(client, png, **fields)
    assert response.status_code == 200, response.text
    np.testing.assert_array_equal(_decode(response.content), _decode(from_cli))
    assert response.content == from_cli  # byte for byte: one encoder behind both doors


# ---------------------------------------------------------------------------- bad input
def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (no pixel data)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"")) + _chunk(b"IEND", b"")


def _truncated(fmt: str) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()[: len(buf.getvalue()) // 2]


MALFORMED = [
    ("empty", b"", 422, "empty"),
    ("text", b"hello, this is not a picture", 422, "not a picture"),
    ("pdf", b"%PDF-1.4\n...", 422, "not a picture"),
    ("truncated-png", _truncated("PNG"), 422, ""),
    ("truncated-jpeg", _truncated("JPEG"), 422, ""),
    ("png-bad-signature-tail", b"\x89PNG\r\n\x1a\nnot really", 422, ""),
    ("header-only-png", _png_header_only(50, 40), 422, "damaged or truncated"),
    ("over-the-pixel-limit", _png_header_only(6000, 4001), 413, "too large"),
    ("decompression-bomb", _png_header_only(100_000, 100_000), 413, "pixels"),
]


@pytest.mark.parametrize("route", ["/v1/detect", "/v1/cutout"])
@pytest.mark.parametrize("name, data, status, words", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_pictures_get_clean_json_errors(client, route, name, data, status, words):
    response = client.post(route, files={"image": (f"{name}.png", data, "image/png")})
    _assert_json_error(response, status, words)


@pytest.mark.parametrize(
    "fields, words",
    [
        ({"threshold": "2"}, "threshold"),
        ({"threshold": "abc"}, "threshold"),
        ({"min_island": "-1"}, "min_island"),
        ({"guided_eps": "0"}, "guided_eps"),
        ({"select": "7"}, "1-3"),
        ({"select": "first"}, "select"),
        ({"points": "[[1, 2"}, "points"),
        ({"points": '[[1, 2, "yes"]]'}, "points"),
        ({"points": "[[500, 10, true]]"}, "outside"),
        ({"points": json.dumps([[1, 1]] * 65)}, "at most 64"),
        ({"format": "gif"}, "format"),
        ({"background": "nope"}, "background"),
        ({"format": "jpeg", "background": "transparent"}, "transparency"),
        ({"trim": "maybe"}, "trim"),
    ],
)
def test_bad_settings_get_422(client, trio, fields, words):
    _, png = trio
    response = client.post("/v1/cutout", files={"image": ("trio.png", png, "image/png")}, data=fields)
    _assert_json_error(response, 422, words)


def test_models_that_are_not_installed_get_422_with_the_way_to_get_them(client, trio):
    _, png = trio
    files = {"image": ("trio.png", png, "image/png")}
    _assert_json_error(client.post("/v1/detect", files=files, data={"backend": "rtmdet"}), 422, "weights")
    _assert_json_error(client.post("/v1/cutout", files=files, data={"refine": "animeseg"}), 422, "weights")
    on_background = {"prompt_model": "sam2", "points": "[[2, 2, true]]"}
    _assert_json_error(client.post("/v1/cutout", files=files, data=on_background), 422, "sam2")
    _assert_json_error(client.post("/v1/detect", files=files, data={"backend": "yolo"}), 422, "backend")
    classic = client.post("/v1/detect", files=files, data={"backend": "classic", "tta": "true"})
    assert classic.status_code == 200 and len(classic.json()["characters"]) == 3


def test_a_request_without_a_picture(client):
    _assert_json_error(client.post("/v1/cutout", data={"select": "all"}), 422, "'image' is missing")
    _assert_json_error(client.post("/v1/detect", json={"image": "x"}), 422, "'image' is missing")
    _assert_json_error(client.post("/v1/detect", data={"image": "not a file"}), 422, "image")
    garbage = client.post(
        "/v1/cutout", content=b"garbage", headers={"content-type": "multipart/form-data; boundary=xx"}
    )
    _assert_json_error(garbage, 400, "multipart")
    _assert_json_error(client.get("/v1/cutout"), 405, "does not take GET")
    _assert_json_error(client.get("/v2/nothing"), 404, "no such endpoint")


def test_uploads_over_the_byte_limit_get_413(client):
    big = b"\0" * (40 * 2**20 + 1)
    response = client.post("/v1/detect", files={"image": ("big.png", big, "image/png")})
    _assert_json_error(response, 413, "40 MB")

    def chunks():  # no Content-Length: the limit applies while the body streams in
        yield b'--xx\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'
        for _ in range(41):
            yield b"\0" * 2**20

    streamed = client.post("/v1/cutout", content=chunks(), headers={"content-type": "multipart/form-data; boundary=xx"})
    _assert_json_error(streamed, 413, "too large")


# ---------------------------------------------------------------------------- concurrency and caching
def test_busy_server_answers_503_with_retry_after(client, server, duo):
    """Two uploads hold both job slots (their bodies arrive slowly); a third request is refused."""
    _, png = duo
    boundary = b"nukkiboundary"
    head = b"--" + boundary + b'\r\nContent-Disposition: form-data; name="image"; filename="slow.png"\r\n\r\n'
    tail = b"\r\n--" + boundary + b"--\r\n"
    release = threading.Event()
    results: list[int] = []

    def slow_upload():
        def body():
            yield head + png[:100]
            release.wait(60)
            yield png[100:] + tail

        with httpx.Client(base_url=server.url, timeout=120) as own:
            response = own.post(
                "/v1/cutout",
                content=body(),
                headers={"content-type": f"multipart/form-data; boundary={boundary.decode()}"},
            )
            results.append(response.status_code)

    holders = [threading.Thread(target=slow_upload) for _ in range(2)]
    for thread in holders:
        thread.start()
    try:
        deadline = time.monotonic() + 60
        while client.get("/healthz").json()["jobs_active"] < 2:
            assert time.monotonic() < deadline, "the slow uploads never took their slots"
            time.sleep(0.05)
        refused = client.post("/v1/cutout", files={"image": ("duo.png", png, "image/png")})
        _assert_json_error(refused, 503, "busy")
        assert int(refused.headers["retry-after"]) >= 1
        assert client.get("/healthz").json()["jobs_refused"] >= 1
    finally:
        release.set()
        for thread in holders:
            thread.join(120)
    assert results == [200, 200]


def test_concurrent_clients_get_200_or_503_never_5xx(server, duo, trio):
    pictures = [duo[1], trio[1]]
    outcomes: list[tuple[int, str | None]] = []
    lock = threading.Lock()

    def client_loop(number: int):
        with httpx.Client(base_url=server.url, timeout=120) as own:
            for round_ in range(3):
                png = pictures[(number + round_) % 2]
                route = "/v1/cutout" if round_ != 1 else "/v1/detect"
                response = own.post(route, files={"image": ("p.png", png, "image/png")})
                with lock:
                    outcomes.append((response.status_code, response.headers.get("retry-after")))
                if response.status_code == 200 and route == "/v1/cutout":
                    assert _decode(response.content).shape == (240, 400, 4)

    threads = [threading.Thread(target=client_loop, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert len(outcomes) == 24
    assert {status for status, _ in outcomes} <= {200, 503}, outcomes
    assert any(status == 200 for status, _ in outcomes)
    assert all(retry is not None and int(retry) >= 1 for status, retry in outcomes if status == 503)


def test_detections_are_cached_by_picture(client):
    scene = make_scene(2, "gradient", size=SIZE, seed=11)  # a picture no other test sends
    png = _png(scene.image)
    before = client.get("/healthz").json()["detection_cache"]
    first = client.post("/v1/detect", files={"image": ("a.png", png, "image/png")}).json()
    _cutout(client, png, select="1")
    _cutout(client, png, format="mask")
    after = client.get("/healthz").json()["detection_cache"]
    assert after["misses"] - before["misses"] == 1
    assert after["hits"] - before["hits"] == 2
    assert len(first["digest"]) == 32


def test_server_log_has_no_traceback(server, client):
    """Everything above was bad input or normal work: nothing may have crashed inside the server."""
    client.get("/healthz")
    assert "Traceback" not in server.log()
    assert server.process.poll() is None


# ---------------------------------------------------------------------------- configuration
def test_config_from_the_environment():
    config = ApiConfig.from_env({"NUKKI_API_PORT": "9001", "NUKKI_API_MAX_JOBS": "3", "NUKKI_API_HOST": "0.0.0.0"})
    assert (config.host, config.port, config.max_jobs) == ("0.0.0.0", 9001, 3)
    assert config.max_upload_bytes == studio_upload_mb() * 2**20 == 40 * 2**20
    assert ApiConfig.from_env({"NUKKI_API_MAX_UPLOAD_MB": "5"}).max_upload_bytes == 5 * 2**20
    for name, value in [("NUKKI_API_PORT", "http"), ("NUKKI_API_PORT", "70000"), ("NUKKI_API_MAX_JOBS", "0")]:
        with pytest.raises(ValueError, match=name):
            ApiConfig.from_env({name: value})


def test_studio_upload_limit_is_read_from_its_config(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text("[server]\nmaxUploadSize = 12\n")
    assert studio_upload_mb(config) == 12
    config.write_text("not toml [")
    assert studio_upload_mb(config) == 40
    assert studio_upload_mb(tmp_path / "missing.toml") == 40


def test_bad_environment_stops_the_server_with_one_line(tmp_path):
    env = {**os.environ, "NUKKI_API_PORT": "eighty"}
    command = [sys.executable, "-m", "api"]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "expected NUKKI_API_PORT as a whole number" in result.stderr and "Traceback" not in result.stderr


# ---------------------------------------------------------------------------- in-process pieces
def test_a_server_bug_is_a_json_500_without_traceback(duo):
    """The one 5xx the API may give: its own bug. The body says so in one line; the log has the rest."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from api.jobs import CutoutService

    class Broken(CutoutService):
        def warm_up(self) -> str:
            return "none"  # load no models in the test process

        def detect(self, data: bytes, name: str, models=None) -> dict[str, object]:
            raise RuntimeError("a bug, not bad input")

    app = create_app(ApiConfig(), service=Broken(max_pixels=1_000_000))
    with TestClient(app, raise_server_exceptions=False) as http:
        response = http.post("/v1/detect", files={"image": ("duo.png", duo[1], "image/png")})
        assert response.status_code == 500
        assert response.json() == {"error": "Internal error (RuntimeError); the server log has the details."}
        assert http.get("/healthz").json()["jobs_active"] == 0  # the slot came back


def test_job_slots_refuse_beyond_the_limit_and_estimate_the_wait():
    from api.gate import JobSlots

    now = [100.0]
    slots = JobSlots(1, clock=lambda: now[0])
    assert slots.retry_after_seconds == 1  # no job timed yet
    start = slots.try_acquire()
    assert start == 100.0 and slots.active == 1
    assert slots.try_acquire() is None and slots.refused == 1
    now[0] = 106.0
    slots.release(start)  # a 6 s job moves the running mean from 1 s a fifth of the way: 2 s
    assert slots.active == 0 and slots.mean_job_seconds == pytest.approx(2.0)
    assert slots.retry_after_seconds == 2
    assert slots.try_acquire() == 106.0
    with pytest.raises(ValueError, match="max_jobs"):
        JobSlots(0)
