"""The pictures bundled in ``assets/``: samples to try, backgrounds, the home page example.

``assets/catalogue.json`` (written by ``assets/make_assets.py``) lists them with
titles. Nothing here imports Streamlit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"


@dataclass(frozen=True)
class Asset:
    """One bundled picture: ``name`` (stable id), ``title`` (for people), ``path``."""

    name: str
    title: str
    path: Path

    def read_bytes(self) -> bytes:
        return self.path.read_bytes()


@lru_cache(maxsize=1)
def _catalogue() -> dict:
    return json.loads((ASSETS_DIR / "catalogue.json").read_text())


def _entries(section: str) -> list[Asset]:
    return [
        Asset(name, entry["title"], ASSETS_DIR / entry["file"])
        for name, entry in _catalogue().get(section, {}).items()
    ]


def samples() -> list[Asset]:
    """Sample pictures to try, in catalogue order."""
    return _entries("samples")


def backgrounds() -> list[Asset]:
    """Backgrounds to put a cutout on, in catalogue order."""
    return _entries("backgrounds")


def find(section_assets: list[Asset], name: str) -> Asset:
    for asset in section_assets:
        if asset.name == name:
            return asset
    raise KeyError(f"expected one of {[a.name for a in section_assets]}, got {name!r}")


def example() -> dict | None:
    """The home page's before/after: ``{"before": Path, "after": Path, ...}`` or ``None``."""
    entry = _catalogue().get("example")
    if not entry:
        return None
    out = dict(entry)
    out["before"] = ASSETS_DIR / entry["before"]
    out["after"] = ASSETS_DIR / entry["after"]
    if not (out["before"].is_file() and out["after"].is_file()):
        return None
    return out
