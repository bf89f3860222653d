"""The set-up and the module boundaries the project relies on."""

from __future__ import annotations

import ast
from pathlib import Path

import cv2

INFERENCE = Path(__file__).resolve().parents[1] / "inference"


def test_opencv_contrib_build_is_the_one_installed():
    # mmengine pulls opencv-python, which shares the cv2 folder and has no ximgproc;
    # run.sh must leave the contrib build in place.
    assert hasattr(cv2, "ximgproc"), "cv2.ximgproc missing: reinstall opencv-contrib-python (./run.sh setup)"
    assert callable(cv2.ximgproc.guidedFilter)


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_engine_never_imports_streamlit_and_only_rtmdet_imports_mmdet():
    modules = sorted(INFERENCE.glob("*.py"))
    assert len(modules) > 5
    for path in modules:
        imported = _imported_modules(path)
        assert "streamlit" not in imported, f"{path.name} imports streamlit"
        if path.name != "rtmdet.py":
            assert not imported & {"mmdet", "mmcv", "mmengine"}, f"{path.name} imports mmdet/mmcv"
