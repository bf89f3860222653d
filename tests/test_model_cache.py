"""Models are loaded once per process, keyed by what each depends on (issue 8: "4 calls differing only in
refine built the detector 3 times").

The registry's loaders are pointed at a small fake module that counts loads; everything else (the
registry, the weights folder, the choice of backend, the cache) is the real code.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time
import types
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from inference import model_cache, registry, segmenter, weights
from inference.errors import ModelUnavailable
from inference.instances import Instances
from inference.model_cache import get_prompter, get_refiner, get_segmenter
from inference.once_cache import OnceCache
from inference.prompt import ClassicPrompter
from inference.segmenter import DetectionSettings

FAKE_MODULE = "nukki_fake_models_for_tests"


class FakeDetector:
    """Stands in for RTMDetSegmenter: ``from_checkpoint`` is the expensive load, ``with_options`` is cheap."""

    name = "rtmdet"
    loads: ClassVar[list[tuple[Path, str | None, bool]]] = []

    def __init__(self, network: object, *, det_size: int = 640, score_threshold: float = 0.3, tta: bool = False):
        self.network = network
        self.det_size, self.score_threshold, self.tta = det_size, score_threshold, tta

    @classmethod
    def from_checkpoint(cls, path: Path, *, device: str | None, trust: bool) -> FakeDetector:
        cls.loads.append((Path(path), device, trust))
        time.sleep(0.05)  # long enough for concurrent callers to overlap
        return cls(network=object())

    def with_options(self, *, det_size: int, score_threshold: float, tta: bool) -> FakeDetector:
        return FakeDetector(self.network, det_size=det_size, score_threshold=score_threshold, tta=tta)

    def segment(self, image: np.ndarray) -> Instances:
        return Instances.empty(image.shape[:2], self.name)


class FakeRefiner:
    loads: ClassVar[list[tuple[Path, str | None, bool]]] = []

    def __init__(self, path: Path) -> None:
        self.name = Path(path).name

    @classmethod
    def from_checkpoint(cls, path: Path, *, device: str | None, trust: bool) -> FakeRefiner:
        cls.loads.append((Path(path), device, trust))
        return cls(path)

    def refine(self, image: np.ndarray, instances: Instances) -> Instances:
        return instances


class FakePrompter:
    loads: ClassVar[list[tuple[Path, str | None, bool, str]]] = []
    name = "sam2"

    def __init__(self, variant: str) -> None:
        self.variant = variant

    @classmethod
    def from_checkpoint(cls, path: Path, *, device: str | None, trust: bool, variant: str) -> FakePrompter:
        cls.loads.append((Path(path), device, trust, variant))
        return cls(variant)


@pytest.fixture(autouse=True)
def fake_loaders(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registry loaders -> the fakes above; mmdet counts as installed; caches start empty."""
    module = types.ModuleType(FAKE_MODULE)
    module.FakeDetector, module.FakeRefiner, module.FakePrompter = FakeDetector, FakeRefiner, FakePrompter
    monkeypatch.setitem(sys.modules, FAKE_MODULE, module)
    fake = {"detector": "FakeDetector", "refiner": "FakeRefiner", "prompt": "FakePrompter"}
    specs = tuple(
        dataclasses.replace(spec, loader=f"{FAKE_MODULE}:{fake[spec.role]}.from_checkpoint") for spec in registry.MODELS
    )
    monkeypatch.setattr(registry, "MODELS", specs)
    monkeypatch.setattr(segmenter, "mmdet_available", lambda: True)
    monkeypatch.setattr(model_cache, "sam2_library_available", lambda: True)
    for fake_class in (FakeDetector, FakeRefiner, FakePrompter):
        monkeypatch.setattr(fake_class, "loads", [])
    model_cache.clear()
    yield
    model_cache.clear()


def install(key: str, content: bytes = b"weights") -> Path:
    path = weights.weight_path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


# ------------------------------------------------------------------------------------------- detector


def test_settings_differing_only_in_refine_and_tta_load_the_detector_once() -> None:
    install("rtmdet")
    install("refine")
    built = []
    for refine in ("none", "refinenet_isnet"):
        for tta in (False, True):
            settings = DetectionSettings(backend="rtmdet", refine=refine, tta=tta)
            detector, choice = get_segmenter(settings)
            built.append(detector)
            assert choice.name == "rtmdet"
            assert detector.tta is tta  # the cheap option is applied
    assert FakeDetector.loads == [(weights.weight_path("rtmdet"), None, False)]
    assert len({id(d.network) for d in built}) == 1  # one network shared by the four


def test_input_size_and_score_do_not_reload_but_are_applied() -> None:
    install("rtmdet")
    small, _ = get_segmenter(DetectionSettings(backend="auto", det_size=320, score_threshold=0.5))
    large, _ = get_segmenter(DetectionSettings(backend="rtmdet", det_size=1024, score_threshold=0.1))
    assert (small.det_size, small.score_threshold, large.det_size, large.score_threshold) == (320, 0.5, 1024, 0.1)
    assert small.network is large.network and len(FakeDetector.loads) == 1


def test_trust_and_a_replaced_file_load_again() -> None:
    path = install("rtmdet")
    first, _ = get_segmenter(DetectionSettings(backend="rtmdet"))
    trusted, _ = get_segmenter(DetectionSettings(backend="rtmdet", trust_checkpoints=True))
    assert [trust for _, _, trust in FakeDetector.loads] == [False, True]
    assert trusted.network is not first.network
    path.write_bytes(b"new weights, another size")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    replaced, _ = get_segmenter(DetectionSettings(backend="rtmdet"))
    assert len(FakeDetector.loads) == 3 and replaced.network is not first.network
    assert get_segmenter(DetectionSettings(backend="rtmdet", tta=True))[0].network is replaced.network
    assert len(FakeDetector.loads) == 3
    # At most two detectors are kept: the least recently used (untrusted, old file) was dropped.
    keys = model_cache.cached_keys("detector")
    assert len(keys) == model_cache.ENTRIES_PER_ROLE == 2
    assert [(size, trust) for _, (_, size, _), _, trust in keys] == [(len(b"weights"), True), (stat.st_size, False)]


def test_device_none_and_cpu_share_one_load_on_a_cpu_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    install("rtmdet")
    get_segmenter(DetectionSettings(backend="rtmdet", device=None))
    get_segmenter(DetectionSettings(backend="rtmdet", device="cpu"))
    assert len(FakeDetector.loads) == 1
    with pytest.raises(ModelUnavailable, match="use --device cpu"):
        get_segmenter(DetectionSettings(backend="rtmdet", device="cuda"))


def test_concurrent_callers_wait_for_one_load() -> None:
    install("rtmdet")
    results: list[object] = []
    barrier = threading.Barrier(8)

    def ask() -> None:
        barrier.wait()
        results.append(get_segmenter(DetectionSettings(backend="rtmdet", tta=len(results) % 2 == 0))[0].network)

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8 and len({id(n) for n in results}) == 1
    assert len(FakeDetector.loads) == 1


def test_classic_needs_no_weights_and_is_shared() -> None:
    first, choice = get_segmenter(DetectionSettings(backend="auto"))
    second, _ = get_segmenter(DetectionSettings(backend="classic", tta=True))
    assert choice.name == "classic" and first is second and first.name == "classic"
    assert FakeDetector.loads == []
    with pytest.raises(ModelUnavailable, match="python -m inference.weights download rtmdet"):
        get_segmenter(DetectionSettings(backend="rtmdet"))


# ------------------------------------------------------------------------------------------- refiners


def test_refiners_are_cached_per_option_and_need_their_weights() -> None:
    assert get_refiner("none") is None
    with pytest.raises(ValueError, match="expected refine in"):
        get_refiner("sharpen")
    with pytest.raises(ModelUnavailable, match=r"python -m inference.weights download refine`"):
        get_refiner("refinenet_isnet")
    install("refine")
    install("animeseg")
    a = get_refiner("refinenet_isnet")
    b = get_refiner("animeseg")
    assert get_refiner("refinenet_isnet") is a and get_refiner("animeseg") is b
    assert (a.name, b.name) == ("refine_last.ckpt", "isnetis.ckpt")  # each option loads its own registry file
    assert [path.name for path, _, _ in FakeRefiner.loads] == ["refine_last.ckpt", "isnetis.ckpt"]
    get_refiner("animeseg", trust=True)
    assert len(FakeRefiner.loads) == 3


# ------------------------------------------------------------------------------------------- prompters


def test_classic_prompter_needs_nothing() -> None:
    prompter, choice = get_prompter("classic")
    assert isinstance(prompter, ClassicPrompter) and choice.name == "classic"
    assert get_prompter("classic")[0] is prompter


def test_auto_prompter_without_sam2_weights_is_classic_and_says_how_to_get_sam2() -> None:
    prompter, choice = get_prompter()
    assert isinstance(prompter, ClassicPrompter) and choice.name == "classic"
    assert "python -m inference.weights download sam2`" in choice.reason
    assert "Models page" in choice.reason
    assert FakePrompter.loads == []


def test_auto_prompter_without_the_sam2_package_is_classic(monkeypatch: pytest.MonkeyPatch) -> None:
    install("sam2")
    monkeypatch.setattr(model_cache, "sam2_library_available", lambda: False)
    _, choice = get_prompter("auto")
    assert choice.name == "classic" and "sam2 package" in choice.reason
    with pytest.raises(ModelUnavailable, match="sam2 package"):
        get_prompter("sam2")


def test_explicit_sam2_without_weights_raises_with_the_download_command() -> None:
    for option in ("sam2", "sam2-small", "sam2-base-plus"):
        with pytest.raises(ModelUnavailable, match=f"run `python -m inference.weights download {option}`"):
            get_prompter(option)
    with pytest.raises(ValueError, match="expected a prompt model in"):
        get_prompter("sam3")


def test_auto_prompter_loads_the_installed_sam2_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    path = install("sam2")
    prompter, choice = get_prompter("auto", device="cpu")
    assert choice.name == "sam2" and isinstance(prompter, FakePrompter) and prompter.variant == "tiny"
    assert get_prompter("sam2", device=None)[0] is prompter
    assert FakePrompter.loads == [(path, "cpu", False, "tiny")]


def test_auto_prompter_falls_back_to_classic_when_sam2_does_not_load(monkeypatch: pytest.MonkeyPatch) -> None:
    from inference.weights import CheckpointError

    install("sam2")

    def damaged(cls, path, **_):
        raise CheckpointError(f"{path} is damaged or truncated (7 bytes); download it again")

    monkeypatch.setattr(FakePrompter, "from_checkpoint", classmethod(damaged))
    prompter, choice = get_prompter("auto")
    assert isinstance(prompter, ClassicPrompter) and choice.name == "classic"
    assert "could not be loaded" in choice.reason and "damaged or truncated" in choice.reason
    assert "python -m inference.weights download sam2`" in choice.reason
    with pytest.raises(CheckpointError):  # asked for by name: the error itself
        get_prompter("sam2")


def test_auto_prompter_takes_whichever_sam2_variant_is_installed() -> None:
    install("sam2-base-plus")
    prompter, choice = get_prompter("auto")
    assert choice.name == "sam2-base-plus" and prompter.variant == "base_plus"
    with pytest.raises(ModelUnavailable):
        get_prompter("sam2")


# ------------------------------------------------------------------------------------------- OnceCache


def test_once_cache_is_lru_bounded_and_caches_no_failures() -> None:
    cache = OnceCache(2)
    calls: list[str] = []

    def load(name: str):
        def build() -> str:
            calls.append(name)
            return name.upper()

        return build

    assert cache.get("a", load("a")) == "A"
    assert cache.get("b", load("b")) == "B"
    assert cache.get("a", load("a")) == "A"  # a is now the most recent
    assert cache.get("c", load("c")) == "C"  # drops b
    assert cache.keys() == ["a", "c"] and calls == ["a", "b", "c"]

    def broken() -> str:
        raise OSError("disk")

    with pytest.raises(OSError):
        cache.get("d", broken)
    assert cache.keys() == ["a", "c"]
    assert cache.get("d", load("d")) == "D"
    with pytest.raises(ValueError, match="max_entries"):
        OnceCache(0)
