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
        (["--background", "#zzzzzz"], "expected --background transparent, blur, a colour"),
        (["--select", "biggest"], "expected rule all, largest"),
        (["--points", "1;2"], "expected points like"),
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


def test_inputs_with_one_stem_never_overwrite_each_other(tmp_path, capsys):
    folder = tmp_path / "same"
    folder.mkdir()
    scenes = {}
    for i, ext in enumerate(("webp", "bmp", "tiff")):
        scenes[ext] = make_scene(i + 1, "flat", size=(240, 400), seed=10 + i)
        Image.fromarray(scenes[ext].image).save(folder / f"plain.{ext}", **({"lossless": True} if ext == "webp" else {}))
    code = extract.main(["--img", str(folder), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 0, err
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["plain.bmp_cutout.png", "plain.tiff_cutout.png", "plain.webp_cutout.png"]
    assert "keep their extension" in err and "plain.bmp -> plain.bmp_*" in err
    for ext, scene in scenes.items():  # each file holds its own picture's characters
        alpha = np.asarray(Image.open(tmp_path / "out" / f"plain.{ext}_cutout.png"))[..., 3]
        assert _iou(alpha >= 128, scene.alpha >= 0.5) > 0.9


def test_select_largest_end_to_end(tmp_path):
    scene = make_scene(3, "flat", size=(240, 400), seed=5)
    Image.fromarray(scene.image).save(tmp_path / "trio.png")
    assert extract.main(["--img", str(tmp_path / "trio.png"), "--select", "largest", "--mask"]) == 0
    mask = np.asarray(Image.open(tmp_path / "trio_mask.png")) >= 128
    areas = [m.sum() for m in scene.character_masks]
    largest = scene.character_masks[int(np.argmax(areas))]
    assert _iou(mask, largest) > 0.9


def test_select_numbers_count_left_to_right(tmp_path):
    scene = _write_scene(tmp_path / "trio.png", n=3, seed=1)
    assert extract.main(["--img", str(tmp_path / "trio.png"), "--select", "1,3", "--mask"]) == 0
    mask = np.asarray(Image.open(tmp_path / "trio_mask.png")) >= 128
    left_and_right = scene.character_masks[0] | scene.character_masks[2]  # the scene draws them left to right
    assert _iou(mask, left_and_right) > 0.9


def _inside(mask: np.ndarray) -> tuple[int, int]:
    ys, xs = np.nonzero(mask)
    order = np.argsort((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2)
    for i in order:
        if mask[max(0, ys[i] - 3) : ys[i] + 4, max(0, xs[i] - 3) : xs[i] + 4].all():
            return int(xs[i]), int(ys[i])
    raise AssertionError("no inner pixel")


def test_points_include_and_exclude(tmp_path, capsys):
    scene = _write_scene(tmp_path / "trio.png", n=3, seed=1)
    (x1, y1), (x2, y2) = _inside(scene.character_masks[0]), _inside(scene.character_masks[1])
    code = extract.main(["--img", str(tmp_path / "trio.png"), "--points", f"{x1},{y1};{x2},{y2}", "--mask"])
    assert code == 0
    mask = np.asarray(Image.open(tmp_path / "trio_mask.png")) >= 128
    assert _iou(mask, scene.character_masks[0] | scene.character_masks[1]) > 0.9
    err = capsys.readouterr().err
    assert "Point prompts:" in err and "weights download sam2" in err  # auto without SAM 2: says how to get it
    code = extract.main(["--img", str(tmp_path / "trio.png"), "--points", f"{x2},{y2},-", "--mask"])
    mask = np.asarray(Image.open(tmp_path / "trio_mask.png")) >= 128
    assert code == 0 and _iou(mask, scene.character_masks[0] | scene.character_masks[2]) > 0.9


def test_point_on_nothing_with_the_classic_prompter_is_a_clear_failure(tmp_path, capsys):
    _write_scene(tmp_path / "p.png")
    code = extract.main(["--img", str(tmp_path / "p.png"), "--points", "3,3", "--prompt-model", "classic"])
    err = capsys.readouterr().err
    # The one click found nothing, so every character stays chosen and a note says why.
    assert code == 0 and "Nothing separable under the click at (3, 3)" in err and "SAM 2 does better" in err


def test_explicit_sam2_without_weights_is_a_one_line_error(tmp_path, capsys):
    _write_scene(tmp_path / "p.png")
    code = extract.main(["--img", str(tmp_path / "p.png"), "--points", "3,3", "--prompt-model", "sam2"])
    err = capsys.readouterr().err
    assert code == 2 and "weights" in err and "Traceback" not in err


def test_batch_page_writes_what_the_command_line_writes(tmp_path):
    """studio.batch and extract.py share one per-file function: same bytes, and the notes reach the report."""
    from inference.matte import MatteSettings
    from inference.segmenter import DetectionSettings
    from studio import batch

    _write_scene(tmp_path / "duo.png", seed=4)
    busy = make_scene(2, "busy", size=(240, 400), seed=6)
    Image.fromarray(busy.image).save(tmp_path / "busy.png")
    assert extract.main(["--img", str(tmp_path / "duo.png"), "--trim"]) == 0
    files = [(name, (tmp_path / name).read_bytes()) for name in ("duo.png", "busy.png")]
    files.append(("duo.jpg", b"\xff\xd8\xff not a picture"))
    result = batch.cut_out_batch(files, DetectionSettings(), MatteSettings(), rule="all", trim=True, layers=True)
    with zipfile.ZipFile(io.BytesIO(result.zip_bytes)) as archive:
        assert archive.read("duo.png_cutout.png") == (tmp_path / "duo_cutout.png").read_bytes()
        assert "duo.png_layers/manifest.json" in archive.namelist()
    reports = {r.name: r for r in result.reports}
    assert reports["duo.png"].ok and not reports["duo.jpg"].ok and "not a picture" in reports["duo.jpg"].message
    busy_report = reports["busy.png"]  # cut out, and the busy-background note goes with it
    assert busy_report.ok and busy_report.notes and "Busy background" in busy_report.message
    assert "weights download rtmdet" in busy_report.message


def test_an_output_never_overwrites_an_input_of_the_run(tmp_path, capsys):
    scene = _write_scene(tmp_path / "a.png", seed=1)
    _write_scene(tmp_path / "a_cutout.png", seed=2)  # an input that a.png's output would replace
    before = (tmp_path / "a_cutout.png").read_bytes()
    code = extract.main(["--img", str(tmp_path / "a.png"), str(tmp_path / "a_cutout.png")])
    err = capsys.readouterr().err
    assert code == 1 and "would overwrite an input of this run" in err
    assert (tmp_path / "a_cutout.png").read_bytes() == before
    alpha = np.asarray(Image.open(tmp_path / "a_cutout_cutout.png"))[..., 3]  # the other input still cut out
    assert alpha.shape == scene.alpha.shape
