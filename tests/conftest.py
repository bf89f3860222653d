"""Test-wide set-up: the suite never sees weights installed on the developer's machine.

Every test starts with ``NUKKI_MODELS_DIR`` pointing at an empty folder, so
``backend="auto"`` means the classic segmenter everywhere, as in CI. Tests that
need weights write their own small checkpoints into their own folders.
"""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_installed_weights(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("NUKKI_MODELS_DIR", str(tmp_path_factory.mktemp("no-models")))
