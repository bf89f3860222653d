"""The engine's shape checks itself: no import cycles, heavy libraries in one module each, small modules.

* Every ``inference`` module imports alone in a fresh interpreter (an import cycle
  or a missing import fails there, not only in the order the app happens to use).
* The module-level import graph of ``inference`` has no cycle.
* ``inference`` never imports Streamlit; only ``inference/rtmdet.py`` imports
  mmdet/mmcv/mmengine and only ``inference/sam2_prompt.py`` imports ``sam2``.
* No module is over about 500 lines unless it is one cohesive algorithm, listed
  in :data:`LONG_MODULES` with the reason.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ENGINE = REPO / "inference"
MODULES = sorted(p.stem for p in ENGINE.glob("*.py") if p.stem != "__init__")

#: Most lines a module of ``inference`` may have...
MAX_LINES = 500
#: ...unless it is one cohesive algorithm that would only get harder to read cut in pieces.
LONG_MODULES = {
    "classic": "the weight-free segmenter: background model, coarse cut, per-part cuts and the point prompt "
    "share one analysis of the picture",
    "rtmdet": "the RTMDet-Ins network, its checkpoint loading and its mask decoding: one model",
    "sam2_prompt": "the SAM 2.1 point prompter: model built from the package's configs, strict checkpoint "
    "loading, and the image predictor's resize/normalise/prompt/upsample (done here so torchvision is never needed)",
}
#: Libraries only one module may import.
OWNERS = {"mmdet": "rtmdet", "mmcv": "rtmdet", "mmengine": "rtmdet", "sam2": "sam2_prompt"}


def _imports(path: Path) -> list[tuple[str, bool]]:
    """``(module name, at module level)`` for every import statement in a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(node) for node in tree.body}
    for node in tree.body:  # imports guarded by `if TYPE_CHECKING:` do not run
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            top.update(id(n) for n in node.body)
            for n in node.body:
                n.type_checking = True  # type: ignore[attr-defined]
    found = []
    for node in ast.walk(tree):
        if getattr(node, "type_checking", False):
            continue
        if isinstance(node, ast.Import):
            found.extend((alias.name, id(node) in top) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "inference":
                found.extend((f"inference.{alias.name}", id(node) in top) for alias in node.names)
            else:
                found.append((node.module, id(node) in top))
    return found


def test_inference_never_imports_streamlit_and_heavy_libraries_have_one_owner():
    problems = []
    for name in MODULES:
        for module, _ in _imports(ENGINE / f"{name}.py"):
            root = module.split(".")[0]
            if root == "streamlit":
                problems.append(f"inference/{name}.py imports streamlit")
            if root in OWNERS and OWNERS[root] != name:
                problems.append(f"inference/{name}.py imports {root} (only inference/{OWNERS[root]}.py may)")
    assert not problems, problems


def test_module_level_import_graph_has_no_cycle():
    graph = {
        name: {m.split(".")[1] for m, top in _imports(ENGINE / f"{name}.py") if top and m.startswith("inference.")}
        & set(MODULES)
        for name in MODULES
    }
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for name in MODULES:
        if name not in state:
            cycle = visit(name)
            assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_checks_see_cycles_and_lazy_imports(tmp_path):
    # The analysis itself: a lazy import is not module level, a TYPE_CHECKING import does not count.
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\nfrom inference import session\n"
        "if TYPE_CHECKING:\n    import streamlit\n"
        "def f():\n    import mmdet\n"
    )
    found = _imports(source)
    assert ("inference.session", True) in found and ("mmdet", False) in found
    assert not any(m == "streamlit" for m, _ in found)


@pytest.mark.parametrize("name", MODULES)
def test_each_module_imports_alone(name):
    code = (
        "import sys, importlib\n"
        f"importlib.import_module('inference.{name}')\n"
        "print('streamlit' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False", f"importing inference.{name} pulled in streamlit"


def test_modules_stay_small_unless_one_algorithm():
    sizes = {name: len((ENGINE / f"{name}.py").read_text(encoding="utf-8").splitlines()) for name in MODULES}
    too_long = {name: n for name, n in sizes.items() if n > MAX_LINES and name not in LONG_MODULES}
    assert not too_long, f"split these modules (or list them in LONG_MODULES with the reason): {too_long}"
    assert all(name in MODULES for name in LONG_MODULES), "LONG_MODULES names a module that no longer exists"
