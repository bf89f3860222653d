"""One interface per model: segmenters find characters, refiners sharpen their masks.

A :class:`Segmenter` turns an ``(H, W, 3)`` uint8 RGB image into
:class:`~inference.instances.Instances`. A :class:`Refiner` takes those and
returns the same instances with better soft masks. :func:`create_segmenter` and
:func:`create_refiner` build them from plain names, so the command line, the
app and the benchmarks share one way of choosing models, and ``"auto"`` always
says which one it took and why.

Which models exist, their weight files and loaders come from
:mod:`inference.registry`; nothing here names a weight file. These factories
load a model on every call: :mod:`inference.model_cache` keeps loaded models
per process.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from inference import registry, weights
from inference.errors import ModelUnavailable
from inference.instances import Click, Instances

#: Detection backends: ``auto``, the classic segmenter (no weights) and the registry's detectors.
BACKENDS = ("auto", "classic", *registry.options_for("detector"))
#: Refiner options: ``none`` and the registry's refiners.
REFINERS = ("none", *registry.options_for("refiner"))


@runtime_checkable
class Segmenter(Protocol):
    """Finds every character in a picture."""

    name: str

    def segment(self, image: np.ndarray) -> Instances:
        """``(H, W, 3)`` uint8 RGB in, instances on that picture out."""
        ...


@runtime_checkable
class PointSegmenter(Protocol):
    """A segmenter that can also cut out whatever lies under one click."""

    def segment_at(self, image: np.ndarray, click: Click) -> Instances:
        """At most one new instance around the clicked pixel of an ``(H, W, 3)`` uint8 RGB image."""
        ...


@runtime_checkable
class Refiner(Protocol):
    """Replaces the soft masks of instances with sharper ones (boxes and scores unchanged)."""

    name: str

    def refine(self, image: np.ndarray, instances: Instances) -> Instances:
        """``(H, W, 3)`` uint8 RGB and its instances in, refined instances out."""
        ...


@dataclass(frozen=True)
class DetectionSettings:
    """Everything that decides the (expensive, cached) detection result.

    Attributes:
        backend: ``auto`` (anime model when its weights are installed, else classic),
            ``classic`` or ``rtmdet``.
        refine: ``none``, ``refinenet_isnet`` (refine_last.ckpt) or ``animeseg`` (isnetis.ckpt).
        det_size: detector input size in pixels (long side, letterboxed square).
        tta: also detect on the mirrored picture and average.
        score_threshold: instances scoring below this are dropped, in ``[0, 1]``.
        device: ``"cpu"``, ``"cuda"``, or ``None`` for CUDA when available.
        trust_checkpoints: allow full unpickling of weight files that need it even
            when our download command did not record their hash (only for files
            the user trusts).
    """

    backend: str = "auto"
    refine: str = "none"
    det_size: int = 640
    tta: bool = False
    score_threshold: float = 0.3
    device: str | None = None
    trust_checkpoints: bool = False

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"expected backend in {BACKENDS}, got {self.backend!r}")
        if self.refine not in REFINERS:
            raise ValueError(f"expected refine in {REFINERS}, got {self.refine!r}")
        if not 64 <= self.det_size <= 2048 or self.det_size % 32:
            raise ValueError(f"expected det_size a multiple of 32 in [64, 2048], got {self.det_size}")
        if not 0.0 <= self.score_threshold <= 1.0:
            raise ValueError(f"expected score_threshold in [0, 1], got {self.score_threshold}")
        if self.device not in (None, "cpu", "cuda"):
            raise ValueError(f"expected device None, 'cpu' or 'cuda', got {self.device!r}")


@dataclass(frozen=True)
class BackendChoice:
    """Which backend ``auto`` (or the user) ended up with, and a sentence saying why."""

    name: str
    reason: str


def mmdet_available() -> bool:
    """True when mmdet and mmcv (with its compiled ops) can be imported."""
    return all(importlib.util.find_spec(m) is not None for m in ("mmdet", "mmcv", "mmengine"))


def detector_missing(option: str) -> tuple[str, ...]:
    """What the registry detector ``option`` lacks here: ``"weights"`` and/or ``"mmdet"`` (empty: it can run).

    Cheap: a file stat and import specs; nothing is loaded.
    """
    spec = registry.spec_for_option("detector", option)
    missing = []
    if not weights.is_installed(spec.key):
        missing.append("weights")
    if not mmdet_available():
        missing.append("mmdet")
    return tuple(missing)


def resolve_backend(backend: str) -> BackendChoice:
    """Turn ``auto`` into ``rtmdet`` or ``classic``; check an explicit ``rtmdet`` can run.

    Raises:
        ModelUnavailable: ``rtmdet`` was asked for explicitly but cannot run.
    """
    if backend not in BACKENDS:
        raise ValueError(f"expected backend in {BACKENDS}, got {backend!r}")
    if backend == "classic":
        return BackendChoice("classic", "Classic segmenter chosen (no model weights needed).")
    option = "rtmdet" if backend == "auto" else backend
    spec = registry.spec_for_option("detector", option)
    missing = detector_missing(option)
    if not missing:
        return BackendChoice(option, f"{spec.title}, {spec.filename}.")
    needs = {
        "weights": f"its weights ({weights.install_hint(spec.key)})",
        "mmdet": "mmdet/mmcv (run ./run.sh, which installs them)",
    }
    why = "The anime model needs " + " and ".join(needs[m] for m in missing) + "."
    if backend != "auto":
        raise ModelUnavailable(why)
    return BackendChoice(
        "classic",
        "Classic segmenter (no weights needed): good on flat and gradient backgrounds. " + why,
    )


def load_detector(option: str, *, device: str | None = None, trust: bool = False) -> Segmenter:
    """Load the registry detector ``option`` with its default options (the expensive step).

    Returns:
        A segmenter with ``with_options(det_size=..., score_threshold=..., tta=...)``
        that shares its loaded network (see :func:`configure_detector`).

    Raises:
        ModelUnavailable: its weights or libraries are missing (message says how to fix it).
        CheckpointError: the weight file is damaged, untrusted or does not fit.
    """
    spec = registry.spec_for_option("detector", option)
    resolve_backend(option)  # raises ModelUnavailable with the reason when it cannot run
    return spec.load(weights.weight_path(spec.key), device=device, trust=trust)


def configure_detector(detector: Segmenter, settings: DetectionSettings) -> Segmenter:
    """A light segmenter sharing ``detector``'s network, with the cheap options of ``settings``
    (input size, score threshold, flip TTA); nothing is reloaded."""
    return detector.with_options(det_size=settings.det_size, score_threshold=settings.score_threshold, tta=settings.tta)


def create_segmenter(settings: DetectionSettings) -> tuple[Segmenter, BackendChoice]:
    """Build the segmenter ``settings`` asks for (loads weights on every call; see :mod:`inference.model_cache`).

    Returns:
        The segmenter and the :class:`BackendChoice` that explains it.

    Raises:
        ModelUnavailable: the requested model cannot run here (message says how to fix it).
    """
    choice = resolve_backend(settings.backend)
    if choice.name == "classic":
        from inference.classic import ClassicSegmenter

        return ClassicSegmenter(), choice
    detector = load_detector(choice.name, device=settings.device, trust=settings.trust_checkpoints)
    return configure_detector(detector, settings), choice


def refiner_missing(option: str) -> str | None:
    """Why the registry refiner ``option`` cannot be built here (its weights are missing), or None."""
    spec = registry.spec_for_option("refiner", option)
    if weights.is_installed(spec.key):
        return None
    return f"The {option} refiner needs its weights: {weights.install_hint(spec.key)}"


def create_refiner(name: str, *, device: str | None = None, trust: bool = False) -> Refiner | None:
    """Build a refiner by option name (loads weights on every call); ``"none"`` gives ``None``.

    ``trust`` allows full unpickling of a weight file whose hash was not recorded
    by our download command (see :func:`inference.weights.load_checkpoint`).

    Raises:
        ModelUnavailable: its weights are not installed (message says how to get them).
    """
    if name not in REFINERS:
        raise ValueError(f"expected refine in {REFINERS}, got {name!r}")
    if name == "none":
        return None
    why = refiner_missing(name)
    if why is not None:
        raise ModelUnavailable(why)
    spec = registry.spec_for_option("refiner", name)
    return spec.load(weights.weight_path(spec.key), device=device, trust=trust)
