"""Every model Nukki can use, declared once.

Each :class:`ModelSpec` says what a model is for (its role), the option name a
user picks it by, where its weight file comes from (Hugging Face repository,
file name, licence, approximate size), where the file goes under the models
folder, and which function loads it. The weights command
(:mod:`inference.weights`), the factories (:mod:`inference.segmenter`,
:mod:`inference.model_cache`), the studio's option lists and its Models page all
read this table; adding a model is one entry here plus its own module and tests.

Loaders are ``"module:attribute.path"`` strings imported only when a model is
actually loaded, so reading the registry never imports torch, mmdet or sam2.
A loader is called as ``loader(path, *, device=..., trust=..., **spec.loader_options)``.

This module imports nothing from the rest of the engine.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: What a model does: finds characters, sharpens their masks, or cuts out what lies under clicks.
ROLES = ("detector", "refiner", "prompt")


@dataclass(frozen=True)
class ModelSpec:
    """One model and its weight file.

    Attributes:
        key: weights key, used by ``python -m inference.weights download KEY`` and in
            ``weights.lock.json`` (``"rtmdet"``, ``"refine"``, ``"animeseg"``, ``"sam2"``...).
        role: ``"detector"``, ``"refiner"`` or ``"prompt"``.
        option: the name a user chooses it by (``--backend rtmdet``, ``--refine refinenet_isnet``,
            prompt model ``sam2``...); unique within its role.
        title: short human name shown in the studio.
        repo_id: Hugging Face model repository.
        filename: file name inside that repository.
        relative_path: where the file goes, relative to the models folder (POSIX separators).
        licence: licence of the weights (SPDX identifier).
        size_mb: approximate size of the file in megabytes (for download prompts).
        description: one line saying what the model does and what its file is.
        loader: ``"module:callable"``; ``callable(path, *, device, trust, **loader_options)``
            returns the loaded model.
        loader_options: extra keyword arguments for the loader, as ``(name, value)`` pairs
            (e.g. the SAM 2.1 variant).
        in_download_all: fetched by ``python -m inference.weights download all`` (the larger
            alternatives are downloaded only when named).
    """

    key: str
    role: str
    option: str
    title: str
    repo_id: str
    filename: str
    relative_path: str
    licence: str
    size_mb: float
    description: str
    loader: str
    loader_options: tuple[tuple[str, str], ...] = ()
    in_download_all: bool = True

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"expected role in {ROLES}, got {self.role!r}")
        module, _, attribute = self.loader.partition(":")
        if not module or not attribute:
            raise ValueError(f"expected loader 'module:callable', got {self.loader!r}")
        if Path(self.relative_path).is_absolute() or ".." in Path(self.relative_path).parts:
            raise ValueError(f"expected a relative path inside the models folder, got {self.relative_path!r}")

    @property
    def url(self) -> str:
        """Web address of the weight file on the hub."""
        return f"https://huggingface.co/{self.repo_id}/resolve/main/{self.filename}"

    @property
    def page_url(self) -> str:
        """Web address of the model's repository on the hub (licence and model card)."""
        return f"https://huggingface.co/{self.repo_id}"

    @property
    def download_command(self) -> str:
        """The shell command that downloads and verifies this model's weights."""
        return f"python -m inference.weights download {self.key}"

    def resolve_loader(self) -> Callable[..., Any]:
        """Import the loader named by :attr:`loader` (this is where torch/mmdet/sam2 get imported).

        Raises:
            ImportError: its module (or a library it needs) is not installed.
        """
        module_name, _, attribute = self.loader.partition(":")
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
        return target

    def load(self, path: Path, *, device: str | None, trust: bool) -> Any:
        """Load the model from ``path`` with its loader and :attr:`loader_options`."""
        return self.resolve_loader()(path, device=device, trust=trust, **dict(self.loader_options))


_SAM2_REPO = "facebook/sam2.1-hiera-{}"
_SAM2_DESCRIPTION = (
    "SAM 2.1 Hiera-{} point-prompt segmentation (Meta; cuts out what lies under your clicks), PyTorch checkpoint"
)


def _sam2(key: str, variant: str, hub_name: str, shown: str, size_mb: float, *, in_download_all: bool) -> ModelSpec:
    filename = f"sam2.1_hiera_{variant}.pt"
    return ModelSpec(
        key=key,
        role="prompt",
        option=key,
        title=f"SAM 2.1 {shown}",
        repo_id=_SAM2_REPO.format(hub_name),
        filename=filename,
        relative_path=f"sam2.1-hiera-{hub_name}/{filename}",
        licence="Apache-2.0",
        size_mb=size_mb,
        description=_SAM2_DESCRIPTION.format(shown),
        loader="inference.sam2_prompt:Sam2Prompter.from_checkpoint",
        loader_options=(("variant", variant),),
        in_download_all=in_download_all,
    )


MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        key="rtmdet",
        role="detector",
        option="rtmdet",
        title="Anime model (RTMDet-Ins)",
        repo_id="dreMaz/AnimeInstanceSegmentation",
        filename="rtmdetl_e60.ckpt",
        relative_path="AnimeInstanceSegmentation/rtmdetl_e60.ckpt",
        licence="MIT",
        size_mb=230,
        description="RTMDet-Ins-L anime instance segmentation: finds every character (mmengine checkpoint)",
        loader="inference.rtmdet:RTMDetSegmenter.from_checkpoint",
    ),
    ModelSpec(
        key="refine",
        role="refiner",
        option="refinenet_isnet",
        title="RefineNet IS-Net (refine_last.ckpt)",
        repo_id="dreMaz/AnimeInstanceSegmentation",
        filename="refine_last.ckpt",
        relative_path="AnimeInstanceSegmentation/refine_last.ckpt",
        licence="MIT",
        size_mb=176,
        description="IS-Net mask refiner, picture + instance mask in (bare state dict)",
        loader="inference.refine:RefineNetISNet.from_checkpoint",
    ),
    ModelSpec(
        key="animeseg",
        role="refiner",
        option="animeseg",
        title="anime-seg IS-Net (isnetis.ckpt)",
        repo_id="skytnt/anime-seg",
        filename="isnetis.ckpt",
        relative_path="anime-seg/isnetis.ckpt",
        licence="Apache-2.0",
        size_mb=204,
        description="IS-Net anime foreground segmentation used as a refiner (Lightning checkpoint)",
        loader="inference.refine:AnimeSegRefiner.from_checkpoint",
    ),
    _sam2("sam2", "tiny", "tiny", "tiny", 156, in_download_all=True),
    _sam2("sam2-small", "small", "small", "small", 184, in_download_all=False),
    _sam2("sam2-base-plus", "base_plus", "base-plus", "base+", 324, in_download_all=False),
)


def _check_unique(models: tuple[ModelSpec, ...]) -> None:
    keys = [m.key for m in models]
    options = [(m.role, m.option) for m in models]
    paths = [m.relative_path for m in models]
    for what, values in (("key", keys), ("(role, option)", options), ("relative_path", paths)):
        if len(set(values)) != len(values):
            raise ValueError(f"expected each model {what} once in the registry, got {values}")


_check_unique(MODELS)


def model_keys() -> tuple[str, ...]:
    """Every weights key, in registry order."""
    return tuple(m.key for m in MODELS)


def download_all_keys() -> tuple[str, ...]:
    """The weights ``python -m inference.weights download all`` fetches, in registry order."""
    return tuple(m.key for m in MODELS if m.in_download_all)


def model_spec(key: str) -> ModelSpec:
    """The model whose weights key is ``key``.

    Raises:
        ValueError: no such model.
    """
    for spec in MODELS:
        if spec.key == key:
            return spec
    raise ValueError(f"expected a weight key in {model_keys()}, got {key!r}")


def models_for(role: str) -> tuple[ModelSpec, ...]:
    """The models of one role (``"detector"``, ``"refiner"`` or ``"prompt"``), in registry order."""
    if role not in ROLES:
        raise ValueError(f"expected role in {ROLES}, got {role!r}")
    return tuple(m for m in MODELS if m.role == role)


def spec_for_option(role: str, option: str) -> ModelSpec:
    """The model a user option names within a role (e.g. ``("refiner", "refinenet_isnet")`` -> ``refine``).

    Raises:
        ValueError: unknown role or no model of that role has this option.
    """
    candidates = models_for(role)
    for spec in candidates:
        if spec.option == option:
            return spec
    raise ValueError(f"expected a {role} option in {tuple(m.option for m in candidates)}, got {option!r}")


def options_for(role: str) -> tuple[str, ...]:
    """The option names of one role, in registry order."""
    return tuple(m.option for m in models_for(role))
