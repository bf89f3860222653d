"""Loaded models, kept once per process and keyed by exactly what each depends on.

Loading a model reads hundreds of megabytes; choosing options must not repeat it.
Each model is cached under the things its loaded weights depend on:

* the detector: its weight file (path, size, modification time), the device and
  the trust flag; NOT the refiner, flip TTA, input size or score threshold, which
  :func:`inference.segmenter.configure_detector` applies to a light object sharing
  the loaded network;
* a refiner: its weight file, device and trust flag;
* a point prompter: its weight file, device and trust flag (the classic ones need none).

A replaced weight file (new size or time) is loaded afresh. Each role keeps at
most :data:`ENTRIES_PER_ROLE` models (least recently used dropped first). All of
it is thread-safe: concurrent requests for the same model wait for one load.

The studio, the command line and the HTTP API all get their models here.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from inference import registry, segmenter, weights
from inference.errors import ModelUnavailable
from inference.once_cache import OnceCache
from inference.segmenter import BackendChoice, DetectionSettings, Refiner, Segmenter

if TYPE_CHECKING:
    from inference.prompt import PointPrompter

#: Loaded models kept per role (detector, refiner, prompt).
ENTRIES_PER_ROLE = 2
#: Point prompt options: ``auto``, ``classic`` (no weights) and the registry's prompt models.
PROMPTERS = ("auto", "classic", *registry.options_for("prompt"))


_CACHES: dict[str, OnceCache] = {role: OnceCache(ENTRIES_PER_ROLE) for role in registry.ROLES}
_CLASSIC_LOCK = threading.Lock()
_CLASSIC: dict[str, Any] = {}


def clear() -> None:
    """Drop every cached model (e.g. after new weights were downloaded)."""
    for cache in _CACHES.values():
        cache.clear()


def cached_keys(role: str) -> list[Hashable]:
    """The cache keys of one role's loaded models, least recently used first (for tests and status pages)."""
    return _CACHES[role].keys()


def _file_key(spec: registry.ModelSpec) -> tuple[str, int, int]:
    """``(path, size, mtime_ns)`` of a model's weight file: a replaced file is a new key."""
    path = weights.weight_path(spec.key)
    try:
        stat = path.stat()
    except OSError:
        raise ModelUnavailable(f"The {spec.option} model needs its weights: {weights.install_hint(spec.key)}") from None
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns


def _device_key(device: str | None) -> str:
    """The device a model will run on, so ``None`` and ``"cpu"`` on a CPU machine share one load."""
    from inference.device import resolve_device

    return str(resolve_device(device))


def _classic(kind: str, build: Callable[[], Any]) -> Any:
    """One shared weight-free model of each kind (they load nothing, so no key is needed)."""
    with _CLASSIC_LOCK:
        if kind not in _CLASSIC:
            _CLASSIC[kind] = build()
        return _CLASSIC[kind]


def get_segmenter(settings: DetectionSettings) -> tuple[Segmenter, BackendChoice]:
    """The segmenter ``settings`` asks for, its network loaded at most once per process.

    Settings that differ only in refiner, flip TTA, input size or score threshold
    share one loaded detector.

    Returns:
        The segmenter and the :class:`~inference.segmenter.BackendChoice` that explains it.

    Raises:
        ModelUnavailable: the requested model cannot run here (message says how to fix it).
        CheckpointError: its weight file is damaged, untrusted or does not fit.
    """
    choice = segmenter.resolve_backend(settings.backend)
    if choice.name == "classic":
        from inference.classic import ClassicSegmenter

        return _classic("segmenter", ClassicSegmenter), choice
    spec = registry.spec_for_option("detector", choice.name)
    key = (spec.key, _file_key(spec), _device_key(settings.device), settings.trust_checkpoints)
    detector = _CACHES["detector"].get(
        key,
        lambda: segmenter.load_detector(choice.name, device=settings.device, trust=settings.trust_checkpoints),
    )
    return segmenter.configure_detector(detector, settings), choice


def get_refiner(option: str, *, device: str | None = None, trust: bool = False) -> Refiner | None:
    """The refiner named ``option`` (``"none"`` gives ``None``), loaded at most once per process.

    Raises:
        ValueError: unknown option.
        ModelUnavailable: its weights are not installed (message says how to get them).
        CheckpointError: its weight file is damaged, untrusted or does not fit.
    """
    if option not in segmenter.REFINERS:
        raise ValueError(f"expected refine in {segmenter.REFINERS}, got {option!r}")
    if option == "none":
        return None
    why = segmenter.refiner_missing(option)
    if why is not None:
        raise ModelUnavailable(why)
    spec = registry.spec_for_option("refiner", option)
    key = (spec.key, _file_key(spec), _device_key(device), trust)
    return _CACHES["refiner"].get(key, lambda: segmenter.create_refiner(option, device=device, trust=trust))


@dataclass(frozen=True)
class PrompterChoice:
    """Which point prompter was chosen and a sentence saying why (and how to get SAM 2 when it was not)."""

    name: str
    reason: str


def sam2_library_available() -> bool:
    """True when the ``sam2`` package can be imported (checked without importing it)."""
    return importlib.util.find_spec("sam2") is not None


def _prompt_missing(spec: registry.ModelSpec) -> str | None:
    """Why the prompt model ``spec`` cannot run here, or None."""
    if not weights.is_installed(spec.key):
        return (f"{spec.title} needs its weights (about {spec.size_mb:.0f} MB): download them on the Models page "
                f"or run `{spec.download_command}`")
    if not sam2_library_available():
        return f"{spec.title} needs the sam2 package (./run.sh installs it)"
    return None


_CLASSIC_PROMPT_REASON = "Classic point prompt (no weights needed): good on flat and gradient backgrounds."


def resolve_prompter(option: str = "auto") -> PrompterChoice:
    """Which prompter ``option`` means here, without loading anything.

    ``auto`` is the first SAM 2.1 model (registry order: tiny, small, base+) whose
    weights are installed, else ``classic`` with a reason that says how to get SAM 2.

    Raises:
        ValueError: unknown option.
        ModelUnavailable: an explicit SAM 2 option cannot run here (message says how to fix it).
    """
    if option not in PROMPTERS:
        raise ValueError(f"expected a prompt model in {PROMPTERS}, got {option!r}")
    if option == "classic":
        return PrompterChoice("classic", "Classic point prompt chosen (no model weights needed).")
    if option != "auto":
        spec = registry.spec_for_option("prompt", option)
        why = _prompt_missing(spec)
        if why is not None:
            raise ModelUnavailable(why + ".")
        return PrompterChoice(spec.option, f"{spec.title} ({spec.filename}).")
    problems = []
    for spec in registry.models_for("prompt"):
        why = _prompt_missing(spec)
        if why is None:
            return PrompterChoice(spec.option, f"{spec.title} ({spec.filename}), the installed point-prompt model.")
        problems.append(why)
    return PrompterChoice("classic", f"{_CLASSIC_PROMPT_REASON} For SAM 2 point prompts: {problems[0]}.")


def get_prompter(
    option: str = "auto", *, device: str | None = None, trust: bool = False
) -> tuple[PointPrompter, PrompterChoice]:
    """The point prompter ``option`` asks for, loaded at most once per process.

    Args:
        option: ``"auto"`` (SAM 2 when its weights are installed and load, else classic),
            ``"classic"``, ``"sam2"``, ``"sam2-small"`` or ``"sam2-base-plus"``.
        device: ``"cpu"``, ``"cuda"`` or ``None`` (CUDA when available).
        trust: allow full unpickling of a weight file whose hash was not recorded.

    Returns:
        The prompter and the :class:`PrompterChoice` explaining it.

    Raises:
        ValueError: unknown option.
        ModelUnavailable: an explicit SAM 2 option cannot run here (message has the download command).
        CheckpointError: its weight file is damaged, untrusted or does not fit.
    """
    choice = resolve_prompter(option)
    if choice.name == "classic":
        from inference.prompt import ClassicPrompter

        return _classic("prompter", ClassicPrompter), choice
    spec = registry.spec_for_option("prompt", choice.name)
    key = (spec.key, _file_key(spec), _device_key(device), trust)

    def load() -> PointPrompter:
            return spec.load(weights.weight_path(spec.key), device=device, trust=trust)

    if option != "auto":
        return _CACHES["prompt"].get(key, load), choice
    try:
        return _CACHES["prompt"].get(key, load), choice
    except (weights.CheckpointError, ModelUnavailable, ImportError) as exc:  # auto means "the best that works here"
        from inference.prompt import ClassicPrompter

        reason = (f"{_CLASSIC_PROMPT_REASON} {spec.title} is installed but could not be loaded ({exc}); "
                  f"to fetch it again, use the Models page or run `{spec.download_command}`.")
        return _classic("prompter", ClassicPrompter), PrompterChoice("classic", reason)
