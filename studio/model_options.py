"""Which detection options can run here, the sentence saying why not, and the weights table.

The studio shows every option; the ones that cannot run are disabled with a
reason next to them. Everything is read from :mod:`inference.registry` and
:func:`inference.weight_install.weight_status` (cheap: file stats and import specs).
Nothing here imports Streamlit.
"""

from __future__ import annotations

from dataclasses import dataclass

from inference import registry, weight_install, weights
from inference.segmenter import REFINERS, detector_missing

#: Refiner option -> title shown in the studio (``none`` plus the registry's refiners).
REFINER_TITLES = {
    "none": "None (segmenter masks as they are)",
    **{spec.option: spec.title for spec in registry.models_for("refiner")},
}

#: What each role does, in a user's words.
ROLE_WORDS = {
    "detector": "finds every character",
    "refiner": "sharpens character masks",
    "prompt": "cuts out what you click",
}


@dataclass(frozen=True)
class ModelOptions:
    """What can run: the anime model, TTA (it needs the anime model), each refiner.

    Attributes:
        anime_available: the anime detector can run.
        anime_reason: why it cannot (empty when it can); never describes the
            classic segmenter, so it reads right after "Unavailable:".
        refiners: installed refiner options, ``"none"`` first.
        refine_reason: which refiners are missing and how to get them (empty when none is).
    """

    anime_available: bool
    anime_reason: str
    refiners: tuple[str, ...]
    refine_reason: str

    @property
    def tta_reason(self) -> str:
        if self.anime_available:
            return "Detects on the mirrored picture too and averages the masks (about 2x slower)."
        return "Flip TTA runs with the anime model, which is unavailable here (see the reason above)."


def _anime_reason(missing: tuple[str, ...]) -> str:
    spec = registry.spec_for_option("detector", "rtmdet")
    needs = []
    if "weights" in missing:
        needs.append(f"its weights ({spec.size_mb:.0f} MB; download them on the Models page)")
    if "mmdet" in missing:
        needs.append("mmdet/mmcv (./run.sh installs them)")
    return "The anime model needs " + " and ".join(needs) + "." if needs else ""


def model_options() -> ModelOptions:
    """Look at the installed weights and libraries now (cheap: file stats and import specs)."""
    missing = detector_missing("rtmdet")
    installed = tuple(
        name for name in REFINERS
        if name == "none" or weights.is_installed(registry.spec_for_option("refiner", name).key)
    )
    absent = [registry.spec_for_option("refiner", name) for name in REFINERS if name not in installed]
    refine_reason = ""
    if absent:
        refine_reason = (
            f"Not installed: {', '.join(spec.title for spec in absent)}. Download them on the Models page "
            f"(or run `python -m inference.weights download {' '.join(spec.key for spec in absent)}`)."
        )
    return ModelOptions(not missing, _anime_reason(missing), installed, refine_reason)


@dataclass(frozen=True)
class WeightRow:
    """One row of the Models page's weights table.

    Attributes:
        key: registry key (what ``python -m inference.weights download`` takes).
        model: the model's title.
        role: what it does, in a user's words.
        status: plain words (``Not installed``, ``Installed and verified``...), no symbols.
        installed: a usable file is present.
        size: its size (actual when installed, approximate otherwise).
        licence: licence of the weights.
        source: the hub page of the model.
        advice: what to do about it (empty when nothing).
    """

    key: str
    model: str
    role: str
    status: str
    installed: bool
    size: str
    licence: str
    source: str
    advice: str


def weight_rows() -> list[WeightRow]:
    """Every registry model with its status (the one way the studio shows weight status)."""
    lock = weights.read_lock()
    rows = []
    for spec in registry.MODELS:
        status = weight_install.weight_status(spec.key, lock)
        size = f"{status.size / 1e6:.0f} MB" if status.installed and status.size else f"about {spec.size_mb:.0f} MB"
        rows.append(WeightRow(
            key=spec.key, model=spec.title, role=ROLE_WORDS[spec.role], status=status.label,
            installed=status.installed, size=size, licence=spec.licence, source=spec.page_url, advice=status.advice,
        ))
    return rows
