"""Which detection options can run here, and the sentence saying why not.

The studio shows every option; the ones that cannot run are disabled with this
reason next to them (the same words :func:`inference.segmenter.resolve_backend`
and the command line use). Nothing here imports Streamlit.
"""

from __future__ import annotations

from dataclasses import dataclass

from inference import weights
from inference.segmenter import REFINERS, resolve_backend

#: Refiner name -> weight key in :mod:`inference.weights`.
REFINER_WEIGHTS = {"refinenet_isnet": "refine", "animeseg": "animeseg"}
REFINER_TITLES = {
    "none": "None (segmenter masks as they are)",
    "refinenet_isnet": "RefineNet IS-Net (refine_last.ckpt)",
    "animeseg": "anime-seg IS-Net (isnetis.ckpt)",
}


@dataclass(frozen=True)
class ModelOptions:
    """What can run: the anime model, TTA (it needs the anime model), each refiner."""

    anime_available: bool
    anime_reason: str
    refiners: tuple[str, ...]  # installed refiners, "none" first
    refine_reason: str

    @property
    def tta_reason(self) -> str:
        if self.anime_available:
            return "Detects on the mirrored picture too and averages the masks (about 2x slower)."
        return "Flip TTA runs with the anime model, which is unavailable here (see the reason above)."


def model_options() -> ModelOptions:
    """Look at the installed weights and libraries now (cheap: file stats and import specs)."""
    choice = resolve_backend("auto")
    anime = choice.name == "rtmdet"
    installed = tuple(name for name in REFINERS if name == "none" or weights.is_installed(REFINER_WEIGHTS[name]))
    missing = [name for name in REFINERS if name != "none" and name not in installed]
    if missing:
        keys = " ".join(REFINER_WEIGHTS[n] for n in missing)
        refine_reason = (
            f"Not installed: {', '.join(missing)}. Get the weights on the Models page or run "
            f"`python -m inference.weights download {keys}`."
        )
    else:
        refine_reason = "Both refiners are installed."
    return ModelOptions(anime, choice.reason, installed, refine_reason)
