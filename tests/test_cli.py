"""The command line end to end, on pictures the tests draw."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import extract
from tests.scenes import make_scene

REPO = Path(__file__).resolve().parents[1]


def _write_scene(path: Path, n: int = 2, seed: int = 0):
    scene = make_scene(n, "flat", size=(240, 400), seed=seed)
    Image.fromarray(scene.image).save(path)
    return scene


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def test_single_picture_writes_cutout_beside_it(tmp_path):
    """The behaviour users of the original guide know: python extract.py --img X -> X_cutout.png."""
    scene = _write_scene(tmp_path / "duo.png")
    result = subprocess.run(
        [sys.executable, str(REPO / "extract.py"), "--img", str(tmp_path / "duo.png")],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    out = tmp_path / "duo_cutout.png"
    assert out.exists() and str(out) in result.stdout
    assert "Classic segmenter" in result.stderr  # says which backend ran
    rgba = np.asarray(Image.open(out))
    assert rgba.shape == (240, 400, 4)
    assert _iou(rgba[..., 3] >= 128, scene.alpha >= 0.5) > 0.9


def test_select_largest_trim_mask_and_layers(tmp_path):
    scene = _write_scene(tmp_path / "trio.png", n=3, seed=1)
    code = extract.main(
        ["--img", str(tmp_path / "trio.png"), "--out", str(tmp_path / "out"), "--select", "1", "--trim", "--mask", "--layers"]
    )
    assert code == 0
    cutout = Image.open(tmp_path / "out" / "trio_cutout.png")
    assert cutout.mode == "RGBA" and cutout.size[0] < 400  # trimmed to one character
    mask = np.asarray(Image.open(tmp_path / "out" / "trio_mask.png"))
    assert mask.shape == (240, 400)
    truth = [m for m in scene.character_masks]
    assert max(_iou(mask >= 128, t) for t in truth) > 0.9  # exactly one character
    with zipfile.ZipFile(tmp_path / "out" / "trio_layers.zip") as archive:
        manifest = json.loads(archive.read("manifest.json"))
        assert [layer["file"] for layer in manifest["layers"]] == ["layers/01.png"]
        layer = Image.open(io.BytesIO(archive.read("layers/01.png")))
        x0, y0, x1, y1 = manifest["layers"][0]["placement_xyxy"]
        assert layer.size == (x1 - x0, y1 - y0)
        plate = np.asarray(Image.open(io.BytesIO(archive.read("background_plate.png"))))
        assert plate.shape == (240, 400, 3)


def test_background_colour_and_jpeg(tmp_path):
    _write_scene(tmp_path / "a.png")
    assert extract.main(["--img", str(tmp_path / "a.png"), "--background", "#00ff00", "--format", "jpeg"]) == 0
    img = Image.open(tmp_path / "a_composite.jpg")
    assert img.format == "JPEG" and img.size == (400, 240)
    corner = np.asarray(img)[2, 2].astype(int)
    assert corner[1] > 240 and corner[0] < 20 and corner[2] < 20


def test_batch_skips_bad_files_and_fails_overall(tmp_path, capsys):
    folder = tmp_path / "batch"
    folder.mkdir()
    _write_scene(folder / "good1.png", seed=2)
    _write_scene(folder / "good2.png", seed=3)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (folder / "notes.txt").write_text("not a picture, ignored by folder expansion")
    code = extract.main(["--img", str(folder), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1
    assert (tmp_path / "out" / "good1_cutout.png").exists() and (tmp_path / "out" / "good2_cutout.png").exists()
    assert not (tmp_path / "out" / "broken_cutout.png").exists()
    lines = [l for l in err.splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and "broken.png" in lines[0] and "Traceback" not in err
    assert "2 of 3 pictures done" in err


def test_glob_input(tmp_path):
    for i in range(2):
        _write_scene(tmp_path / f"g{i}.png", seed=i)
    assert extract.main(["--img", str(tmp_path / "g*.png")]) == 0
    assert sorted(p.name for p in tmp_path.glob("*_cutout.png")) == ["g0_cutout.png", "g1_cutout.png"]


def test_busy_background_note_is_printed(tmp_path, capsys):
    scene = make_scene(2, "busy", size=(240, 400), seed=6)
    Image.fromarray(scene.image).save(tmp_path / "busy.png")
    extract.main(["--img", str(tmp_path / "busy.png")])
    err = capsys.readouterr().err
    assert "note: busy.png:" in err and "inference.weights download rtmdet" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--select", "7"], "expected character numbers 1-2"),
        (["--background", "#zzzzzz"], "expected a colour"),
        (["--threshold", "1.5"], "expected"),
    ],
)
def test_bad_options_are_one_line_errors(tmp_path, capsys, argv, message):
    _write_scene(tmp_path / "p.png")
    code = extract.main(["--img", str(tmp_path / "p.png"), *argv])
    err = capsys.readouterr().err
    assert code != 0 and message in err and "Traceback" not in err


def test_missing_input_and_unavailable_model(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NUKKI_MODELS_DIR", str(tmp_path / "no-models"))
    assert extract.main(["--img", str(tmp_path / "nope.png")]) == 1
    assert "no such picture" in capsys.readouterr().err
    _write_scene(tmp_path / "p.png")
    code = extract.main(["--img", str(tmp_path / "p.png"), "--backend", "rtmdet"])
    err = capsys.readouterr().err
    assert code == 2 and "weights" in err and "Traceback" not in err
