"""The model registry: each model declared once, read by the weights command, the factories and the studio."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
import types
from pathlib import Path

import pytest

from inference import registry, segmenter
from inference.registry import ModelSpec, model_spec, models_for, spec_for_option

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_every_model_is_declared_once_with_its_source() -> None:
    table = {(s.key, s.role, s.option, s.repo_id, s.filename, s.licence) for s in registry.MODELS}
    assert table == {
        ("rtmdet", "detector", "rtmdet", "dreMaz/AnimeInstanceSegmentation", "rtmdetl_e60.ckpt", "MIT"),
        ("refine", "refiner", "refinenet_isnet", "dreMaz/AnimeInstanceSegmentation", "refine_last.ckpt", "MIT"),
        ("animeseg", "refiner", "animeseg", "skytnt/anime-seg", "isnetis.ckpt", "Apache-2.0"),
        ("sam2", "prompt", "sam2", "facebook/sam2.1-hiera-tiny", "sam2.1_hiera_tiny.pt", "Apache-2.0"),
        ("sam2-small", "prompt", "sam2-small", "facebook/sam2.1-hiera-small", "sam2.1_hiera_small.pt", "Apache-2.0"),
        ("sam2-base-plus", "prompt", "sam2-base-plus", "facebook/sam2.1-hiera-base-plus",
         "sam2.1_hiera_base_plus.pt", "Apache-2.0"),
    }
    for spec in registry.MODELS:
        assert spec.size_mb > 0 and spec.title and spec.description
        assert spec.relative_path.endswith("/" + spec.filename)
        assert spec.url == f"https://huggingface.co/{spec.repo_id}/resolve/main/{spec.filename}"
    assert {s.key: dict(s.loader_options) for s in models_for("prompt")} == {
        "sam2": {"variant": "tiny"}, "sam2-small": {"variant": "small"}, "sam2-base-plus": {"variant": "base_plus"},
    }
    assert {s.loader for s in models_for("prompt")} == {"inference.sam2_prompt:Sam2Prompter.from_checkpoint"}
    assert registry.download_all_keys() == ("rtmdet", "refine", "animeseg", "sam2")


def test_lookups() -> None:
    assert model_spec("refine").option == "refinenet_isnet"
    assert spec_for_option("refiner", "refinenet_isnet").key == "refine"
    assert spec_for_option("prompt", "sam2-small").filename == "sam2.1_hiera_small.pt"
    assert [s.key for s in models_for("refiner")] == ["refine", "animeseg"]
    assert registry.options_for("detector") == ("rtmdet",)
    with pytest.raises(ValueError, match=r"expected a weight key in \('rtmdet', .*got 'yolo'"):
        model_spec("yolo")
    with pytest.raises(ValueError, match=r"expected a refiner option in \('refinenet_isnet', 'animeseg'\), got 'rtmdet'"):
        spec_for_option("refiner", "rtmdet")
    with pytest.raises(ValueError, match="expected role in"):
        models_for("upscaler")


def test_factories_and_options_come_from_the_registry() -> None:
    assert segmenter.REFINERS == ("none", "refinenet_isnet", "animeseg")
    assert segmenter.BACKENDS == ("auto", "classic", "rtmdet")
    from inference import model_cache
    from studio import model_options

    assert model_cache.PROMPTERS == ("auto", "classic", "sam2", "sam2-small", "sam2-base-plus")
    assert model_options.REFINER_TITLES == {
        "none": "None (segmenter masks as they are)",
        "refinenet_isnet": model_spec("refine").title,
        "animeseg": model_spec("animeseg").title,
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"role": "upscaler"}, "expected role in"),
        ({"loader": "inference.refine.RefineNetISNet"}, "expected loader 'module:callable'"),
        ({"relative_path": "/etc/model.ckpt"}, "relative path inside the models folder"),
        ({"relative_path": "../outside.ckpt"}, "relative path inside the models folder"),
    ],
)
def test_spec_rejects_bad_entries(change: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(model_spec("refine"), **change)


def test_load_resolves_the_loader_lazily_and_passes_its_options(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    class Prompter:
        @classmethod
        def from_checkpoint(cls, path: Path, *, device: str | None, trust: bool, variant: str) -> str:
            calls.append((path, device, trust, variant))
            return "loaded"

    module = types.ModuleType("nukki_fake_loader_module")
    module.Prompter = Prompter
    monkeypatch.setitem(sys.modules, module.__name__, module)
    spec = dataclasses.replace(model_spec("sam2-base-plus"), loader=f"{module.__name__}:Prompter.from_checkpoint")
    assert spec.load(Path("x.pt"), device="cpu", trust=True) == "loaded"
    assert calls == [(Path("x.pt"), "cpu", True, "base_plus")]


@pytest.mark.parametrize("key", ["refine", "animeseg"])
def test_refiner_loaders_exist(key: str) -> None:
    from inference.refine import AnimeSegRefiner, RefineNetISNet

    expected = {"refine": RefineNetISNet, "animeseg": AnimeSegRefiner}[key]
    assert model_spec(key).resolve_loader() == expected.from_checkpoint


def test_reading_the_registry_imports_no_model_library() -> None:
    code = (
        "import sys\n"
        "from inference import registry, weights, segmenter, model_cache\n"
        "from studio import model_options\n"
        "model_options.model_options(); model_options.weight_rows(); model_cache.resolve_prompter('auto')\n"
        "heavy = [m for m in ('torch', 'mmdet', 'mmcv', 'sam2', 'inference.sam2_prompt', 'inference.rtmdet',\n"
        "                     'inference.refine', 'streamlit') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def _string_constants(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
    }
    return {
        node.value for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    }


def test_no_other_module_declares_a_model_file_or_repository() -> None:
    declared = {s.filename for s in registry.MODELS} | {s.repo_id for s in registry.MODELS} | {
        s.relative_path for s in registry.MODELS}
    offenders = {}
    for folder in ("inference", "studio", "pages"):
        for path in sorted((REPO_ROOT / folder).glob("*.py")):
            if path.name == "registry.py":
                continue
            found = _string_constants(path) & declared
            if found:
                offenders[f"{folder}/{path.name}"] = sorted(found)
    for name in ("app.py", "extract.py"):
        found = _string_constants(REPO_ROOT / name) & declared
        if found:
            offenders[name] = sorted(found)
    assert offenders == {}


def test_spec_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        model_spec("rtmdet").key = "other"  # type: ignore[misc]
    assert isinstance(model_spec("rtmdet"), ModelSpec)


def test_sam2_loader_exists_and_knows_every_registry_variant() -> None:
    pytest.importorskip("sam2")
    sam2_prompt = pytest.importorskip("inference.sam2_prompt")
    for spec in models_for("prompt"):
        assert spec.resolve_loader() == sam2_prompt.Sam2Prompter.from_checkpoint
        assert dict(spec.loader_options)["variant"] in sam2_prompt.CONFIGS


def test_studio_weight_rows_and_reasons_read_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    from inference import weights
    from studio import model_options

    monkeypatch.setattr(segmenter, "mmdet_available", lambda: True)
    rows = model_options.weight_rows()
    assert [row.key for row in rows] == list(registry.model_keys())
    assert {row.status for row in rows} == {"Not installed"}
    assert all(row.status.isascii() for row in rows)  # no emoji: readable without an emoji font
    assert rows[3].model == "SAM 2.1 tiny" and rows[3].size == "about 156 MB"
    assert rows[3].source == "https://huggingface.co/facebook/sam2.1-hiera-tiny"
    options = model_options.model_options()
    # Shown after "Unavailable:": it must be about the anime model, never the classic segmenter.
    assert not options.anime_available and options.anime_reason.startswith("The anime model needs its weights")
    assert "Classic" not in options.anime_reason
    assert options.refine_reason.index("Models page") < options.refine_reason.index("python -m inference.weights")

    path = weights.weight_path("rtmdet")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x01" * 2_000_000)
    rows = {row.key: row for row in model_options.weight_rows()}
    assert rows["rtmdet"].installed and rows["rtmdet"].status == "Installed (not verified)"
    assert rows["rtmdet"].size == "2 MB"
    options = model_options.model_options()
    assert options.anime_available and options.anime_reason == ""
    monkeypatch.setattr(segmenter, "mmdet_available", lambda: False)
    assert model_options.model_options().anime_reason == "The anime model needs mmdet/mmcv (./run.sh installs them)."
