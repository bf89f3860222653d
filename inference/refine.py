"""Mask refiners built on IS-Net (:mod:`inference.isnet`).

Two refiners implement :class:`inference.segmenter.Refiner`:

``refinenet_isnet`` (:class:`RefineNetISNet`, weights ``refine_last.ckpt``)
    CartoonSegmentation's refinement network. Per instance it sees the picture
    (BGR in ``[0, 1]``) plus that instance's mask as a 4th channel, scaled down
    (never up) so the long side is at most 720 and padded with zeros at the
    bottom and right to 720x720, and predicts the instance's mask anew.
    Instances go through the network in batches (one forward per chunk of
    ``batch_size`` instances). The sigmoid of the first side output is mapped
    back to the picture and kept soft.

``animeseg`` (:class:`AnimeSegRefiner`, weights ``isnetis.ckpt``)
    SkyTNT's anime-seg foreground network, run once per picture (RGB in
    ``[0, 1]``, scaled to a ``1024`` square, centred with zero padding). Its
    foreground alpha ``F`` knows nothing about instances, so each instance's
    mask ``M`` (soft, in ``[0, 1]``) limits it::

        allowed = grey_dilate(M, disk of radius r)      r = max(1, round(edge_margin * long side))
        refined = F * allowed

    The alpha can therefore follow the character's true edge up to ``r``
    pixels outside the detector's mask and cut background out from inside it,
    but it can never reach a pixel farther than ``r`` from the instance, so
    neighbouring characters do not merge. If the refined mask keeps less than
    ``min_kept_fraction`` of the instance's covered area (anime-seg missed the
    character), the instance keeps its original mask (the reference pipeline's
    rule).

Both keep boxes and scores: refined masks are cropped to the instance's box.
Inference runs under ``torch.inference_mode`` on the CPU, or on CUDA when asked
for (or when ``device=None`` and CUDA is available).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import cv2
import numpy as np
import torch
from torch import nn

from inference import weights
from inference.image_io import check_rgb_image
from inference.instances import COVER_THRESHOLD, Instances
from inference.isnet import ISNet
from inference.letterbox import Letterbox, apply_letterbox, plan_letterbox
from inference.segmenter import ModelUnavailable


@dataclass(frozen=True)
class RefineNetSettings:
    """Options of :class:`RefineNetISNet`.

    Attributes:
        input_size: side of the square network input; pictures are scaled down
            (never up) to fit it. 720 is what the network was trained at.
        batch_size: instances per forward pass; bounds memory (activations take
            about 0.35 GB per instance at 720 in float32).
        mask_input_threshold: the instance mask is binarised at this value
            before it is scaled, as in the reference pipeline (whose detector
            masks were binary); ``None`` feeds the soft mask unchanged.
        half_precision: run the network in float16 (CUDA only; ignored on the CPU).
    """

    input_size: int = 720
    batch_size: int = 4
    mask_input_threshold: float | None = COVER_THRESHOLD
    half_precision: bool = False

    def __post_init__(self) -> None:
        if not 32 <= self.input_size <= 4096:
            raise ValueError(f"expected input_size in [32, 4096], got {self.input_size}")
        if self.batch_size < 1:
            raise ValueError(f"expected batch_size >= 1, got {self.batch_size}")
        if self.mask_input_threshold is not None and not 0.0 < self.mask_input_threshold <= 1.0:
            raise ValueError(f"expected mask_input_threshold in (0, 1] or None, got {self.mask_input_threshold}")


@dataclass(frozen=True)
class AnimeSegSettings:
    """Options of :class:`AnimeSegRefiner`.

    Attributes:
        input_size: side of the square network input (the picture is scaled to
            fit, up or down, and centred). 1024 is anime-seg's recommendation.
        edge_margin: how far the foreground alpha may reach beyond an instance's
            mask, as a fraction of the picture's long side (at least 1 pixel).
        min_kept_fraction: if the refined mask covers less than this fraction of
            the original mask's covered area, the original mask is kept.
        half_precision: run the network in float16 (CUDA only; ignored on the CPU).
    """

    input_size: int = 1024
    edge_margin: float = 0.01
    min_kept_fraction: float = 0.3
    half_precision: bool = False

    def __post_init__(self) -> None:
        if not 32 <= self.input_size <= 4096:
            raise ValueError(f"expected input_size in [32, 4096], got {self.input_size}")
        if not 0.0 <= self.edge_margin <= 0.25:
            raise ValueError(f"expected edge_margin in [0, 0.25], got {self.edge_margin}")
        if not 0.0 <= self.min_kept_fraction <= 1.0:
            raise ValueError(f"expected min_kept_fraction in [0, 1], got {self.min_kept_fraction}")


def resolve_device(device: str | None) -> torch.device:
    """``"cpu"``, ``"cuda"`` / ``"cuda:N"``, or ``None`` for CUDA when available else the CPU.

    Raises:
        ModelUnavailable: CUDA was asked for but torch sees no CUDA device.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device != "cpu" and device != "cuda" and not device.startswith("cuda:"):
        raise ValueError(f"expected device None, 'cpu' or 'cuda', got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelUnavailable(f"device {device!r} was asked for, but this torch build sees no CUDA GPU; use 'cpu'")
    return torch.device(device)


def _check_picture(image: np.ndarray, instances: Instances) -> None:
    check_rgb_image(image)
    if image.shape[:2] != tuple(instances.image_size):
        raise ValueError(f"expected an image of size {tuple(instances.image_size)} (the instances'), "
                         f"got {image.shape[:2]}")


class _NetworkRunner:
    """A network on a device, returning the probability map of its first side output."""

    def __init__(self, model: nn.Module, *, in_channels: int, device: str | None, half_precision: bool) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"expected a torch.nn.Module, got {type(model).__name__}")
        model_channels = getattr(model, "in_channels", in_channels)
        if model_channels != in_channels:
            raise ValueError(f"expected a network with {in_channels} input channels, got {model_channels}")
        self.device = resolve_device(device)
        self.dtype = torch.float16 if half_precision and self.device.type == "cuda" else torch.float32
        self.model = model.to(device=self.device, dtype=self.dtype).eval()

    def probabilities(self, batch: torch.Tensor) -> np.ndarray:
        """``(N, C, S, S)`` float32 CPU tensor -> ``(N, S, S)`` float32 sigmoid of the first side output."""
        with torch.inference_mode():
            x = batch.to(device=self.device, dtype=self.dtype)
            if isinstance(self.model, ISNet):
                logits = self.model.full_resolution_logits(x)
            else:
                outputs = self.model(x)
                logits = outputs[0] if isinstance(outputs, (list, tuple)) else outputs
            return torch.sigmoid(logits.float())[:, 0].cpu().numpy()


def _chunks(count: int, size: int) -> Iterator[range]:
    for start in range(0, count, size):
        yield range(start, min(start + size, count))


def _crop_to_box(full_map: np.ndarray, box: np.ndarray) -> np.ndarray:
    x0, y0, x1, y1 = (int(v) for v in box)
    return np.clip(full_map[y0:y1, x0:x1], 0.0, 1.0).astype(np.float32, copy=True)


#: Either refiner's settings dataclass.
RefinerSettings = RefineNetSettings | AnimeSegSettings


class _ISNetRefiner:
    """What both refiners share: an IS-Net on a device, loaded strictly from its checkpoint.

    Subclasses set the input channels, their settings type and how the state dict
    sits in their checkpoint file.
    """

    name: str
    _in_channels: int
    _settings_type: type
    _strip_prefix: str | None = None
    _drop_prefixes: tuple[str, ...] = ()

    def __init__(
        self, model: nn.Module, *, device: str | None = None, settings: RefinerSettings | None = None
    ) -> None:
        self.settings = settings or self._settings_type()
        self._runner = _NetworkRunner(
            model, in_channels=self._in_channels, device=device, half_precision=self.settings.half_precision
        )
        self.model = self._runner.model
        self.device = self._runner.device

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        *,
        device: str | None = None,
        trust: bool = False,
        settings: RefinerSettings | None = None,
    ) -> Self:
        """Build the full-size network and load its weights strictly.

        Raises:
            CheckpointError: the file is missing, damaged, untrusted or does not fit.
        """
        checkpoint = weights.load_checkpoint(path, trust=trust)
        state = weights.extract_state_dict(
            checkpoint, strip_prefix=cls._strip_prefix, drop_prefixes=cls._drop_prefixes
        )
        model = ISNet(cls._in_channels)
        weights.load_weights_strict(model, state, source=str(path))
        return cls(model, device=device, settings=settings)


class RefineNetISNet(_ISNetRefiner):
    """The ``refinenet_isnet`` refiner (see the module docstring).

    Args:
        model: an IS-Net with 4 input channels (``ISNet(4)`` for the real
            weights; tests pass small ones). Moved to ``device`` and put in eval mode.
        device: ``"cpu"``, ``"cuda"`` or ``None`` (CUDA when available).
        settings: input size, batch size, mask binarisation, float16.
    """

    name = "refinenet_isnet"

    _in_channels = 4
    _settings_type = RefineNetSettings

    def plan(self, image_size: tuple[int, int]) -> Letterbox:
        """Geometry of the network input for an ``(H, W)`` picture: scaled down only, padded bottom/right."""
        return plan_letterbox(image_size, self.settings.input_size, allow_upscale=False, centre=False)

    def _mask_channel(self, instances: Instances, index: int, box: Letterbox) -> np.ndarray:
        mask = instances.full_mask(index)
        threshold = self.settings.mask_input_threshold
        if threshold is not None:
            mask = (mask >= threshold).astype(np.float32)
        return apply_letterbox(mask, box)

    def refine(self, image: np.ndarray, instances: Instances) -> Instances:
        """Predict every instance's mask anew.

        Args:
            image: ``(H, W, 3)`` uint8 RGB.
            instances: instances on that picture.

        Returns:
            Same boxes and scores; each mask is the network's soft mask
            (float32 in ``[0, 1]``) cropped to the instance's box.
        """
        _check_picture(image, instances)
        if len(instances) == 0:
            return instances.with_masks((), refined_by=self.name)
        box = self.plan(instances.image_size)
        bgr = apply_letterbox(np.ascontiguousarray(image[:, :, ::-1]), box)
        picture = torch.from_numpy(bgr).permute(2, 0, 1).float().div_(255.0)  # (3, S, S)
        size = box.canvas_size
        refined: list[np.ndarray] = []
        for chunk in _chunks(len(instances), self.settings.batch_size):
            masks = np.stack([self._mask_channel(instances, i, box) for i in chunk])  # (n, S, S)
            batch = torch.cat(
                (picture.expand(len(chunk), 3, size, size), torch.from_numpy(masks)[:, None]), dim=1
            )
            for index, probability in zip(chunk, self._runner.probabilities(batch)):
                refined.append(_crop_to_box(box.to_source(probability), instances.boxes[index]))
        return instances.with_masks(refined, refined_by=self.name)


class AnimeSegRefiner(_ISNetRefiner):
    """The ``animeseg`` refiner (see the module docstring for the combination rule).

    Args:
        model: an IS-Net with 3 input channels (``ISNet(3)`` for the real
            weights). Moved to ``device`` and put in eval mode.
        device: ``"cpu"``, ``"cuda"`` or ``None`` (CUDA when available).
        settings: input size, edge margin, fallback fraction, float16.
    """

    name = "animeseg"

    _in_channels = 3
    _settings_type = AnimeSegSettings
    #: isnetis.ckpt is a Lightning checkpoint: the network under ``net.``, plus a
    #: training-only ``gt_encoder`` that inference ignores.
    _strip_prefix = "net."
    _drop_prefixes = ("gt_encoder.",)

    def plan(self, image_size: tuple[int, int]) -> Letterbox:
        """Geometry of the network input for an ``(H, W)`` picture: scaled to fit, centred."""
        return plan_letterbox(image_size, self.settings.input_size, allow_upscale=True, centre=True)

    def foreground(self, image: np.ndarray) -> np.ndarray:
        """anime-seg's foreground alpha of an ``(H, W, 3)`` uint8 RGB picture: ``(H, W)`` float32 in ``[0, 1]``."""
        check_rgb_image(image)
        box = self.plan(image.shape[:2])
        canvas = apply_letterbox(image, box)
        batch = torch.from_numpy(canvas).permute(2, 0, 1).float().div_(255.0)[None]
        probability = self._runner.probabilities(batch)[0]
        return np.clip(box.to_source(probability), 0.0, 1.0)

    def margin_px(self, image_size: tuple[int, int]) -> int:
        """Radius in pixels of the region around an instance the foreground alpha may reach."""
        return max(1, int(round(self.settings.edge_margin * max(image_size))))

    def combine(self, foreground: np.ndarray, instances: Instances) -> list[np.ndarray]:
        """Apply the combination rule to a ``(H, W)`` foreground alpha: one box-cropped mask per instance."""
        radius = self.margin_px(instances.image_size)
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        refined = []
        for mask, box in zip(instances.masks, instances.boxes):
            x0, y0, x1, y1 = (int(v) for v in box)
            allowed = cv2.dilate(mask, kernel)  # grey dilation: the mask's own confidence is kept
            candidate = foreground[y0:y1, x0:x1] * allowed
            covered = int(np.count_nonzero(mask >= COVER_THRESHOLD))
            kept = int(np.count_nonzero(candidate >= COVER_THRESHOLD))
            if covered and kept < self.settings.min_kept_fraction * covered:
                candidate = mask
            refined.append(np.clip(candidate, 0.0, 1.0).astype(np.float32, copy=True))
        return refined

    def refine(self, image: np.ndarray, instances: Instances) -> Instances:
        """Refine every instance with one anime-seg pass over the picture.

        Args:
            image: ``(H, W, 3)`` uint8 RGB.
            instances: instances on that picture.

        Returns:
            Same boxes and scores; masks float32 in ``[0, 1]``, cropped to the boxes.
        """
        _check_picture(image, instances)
        if len(instances) == 0:
            return instances.with_masks((), refined_by=self.name)
        return instances.with_masks(self.combine(self.foreground(image), instances), refined_by=self.name)


__all__ = ["AnimeSegRefiner", "AnimeSegSettings", "RefineNetISNet", "RefineNetSettings", "resolve_device"]
