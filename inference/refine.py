"""Mask refiners built on IS-Net (:mod:`inference.isnet`), faithful to their reference pipelines.

Two refiners implement :class:`inference.segmenter.Refiner`. Both return the
network's soft probability (float32 in ``[0, 1]``), stored cropped to its own
support (the pixels above ``mask_floor``); after refinement an instance's box is
the box of its refined mask, never the detector's box.

``refinenet_isnet`` (:class:`RefineNetISNet`, weights ``refine_last.ckpt``)
    CartoonSegmentation's refinement network, with the steps of its
    ``AnimeInsSeg._postprocess_refine`` / ``prepare_refine_batch`` /
    ``resize_pad`` / ``scaledown_maxsize``:

    1. the picture in BGR; if its long side exceeds 720 it is shrunk so the long
       side is 720 and the short side ``max(1, int(round(short * 720 / long)))``
       (Python's ``round``), with ``cv2.INTER_LINEAR`` on the uint8 image; never
       enlarged; zero-padded at the bottom and right to 720x720; then ``/ 255``;
    2. each instance's mask binarised as the detector's (``> 0.5``), as float32
       ``0/1``, shrunk the same way with ``cv2.INTER_LINEAR`` (so its edge is
       soft) and zero-padded: the 4th input channel;
    3. batches of at most 4 instances; the sigmoid of the first side output;
    4. the picture's region of the ``720 x 720`` output is resized to the
       picture with ``F.interpolate(mode='bilinear', align_corners=True)``.

    The reference then binarises at 0.3 (``AnimeInsSeg(mask_thr=0.3)``); Nukki
    keeps the probability (the matte step starts from it), so ``p > 0.3`` is the
    reference's mask. The whole picture is kept: a refiner exists to recover what
    the detector missed, which is often outside its box.

``animeseg`` (:class:`AnimeSegRefiner`, weights ``isnetis.ckpt``)
    SkyTNT's anime-seg foreground network, with the steps of its
    ``inference.get_mask``, run once per picture:

    1. the RGB picture as float32 ``/ 255``;
    2. resized with ``cv2.INTER_LINEAR`` so that the long side is ``s`` (1024)
       and the short side ``int(s * short / long)`` (up or down), placed on a
       zero ``s x s`` canvas at ``((s - h) // 2, (s - w) // 2)``;
    3. the sigmoid of the first side output; its picture region is resized back
       with ``cv2.INTER_LINEAR``: the foreground probability ``F``.

    The combination with the instances is CartoonSegmentation's
    ``animeseg_refine``: an instance's mask becomes ``M AND F`` (each ``> 0.5``)
    when that keeps more than 30% of ``M``'s area, else ``M`` stays. Nukki keeps
    it soft: ``min(M, F)``, which is above 0.5 exactly where both are.
    :attr:`AnimeSegSettings.edge_margin` is Nukki's option (off by default) to
    let ``F`` reach a few pixels beyond ``M``.

Inference runs under ``torch.inference_mode`` on the device chosen by
:func:`inference.device.resolve_device`, in float16 autocast on CUDA
(:func:`inference.device.use_half_precision`; the references run float32 for
refine_last and autocast for anime-seg) unless ``half_precision`` says otherwise.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from inference import weights
from inference.device import resolve_device, use_half_precision
from inference.image_io import check_rgb_image
from inference.instances import Instances, tight_box
from inference.isnet import ISNet
from inference.letterbox import Letterbox

#: Soft mask values at or below this are not stored (a refined mask's support is where it is above).
DEFAULT_MASK_FLOOR = 1e-3


@dataclass(frozen=True)
class RefineNetSettings:
    """Options of :class:`RefineNetISNet` (defaults: the reference's).

    Attributes:
        input_size: side of the square network input; pictures are scaled down
            (never up) to fit it. 720 is what the network was trained at.
        batch_size: instances per forward pass; bounds memory (activations take
            about 0.35 GB per instance at 720 in float32). The reference uses 4.
        mask_input_threshold: the instance mask is binarised (``> threshold``)
            before it is scaled, as in the reference (whose detector masks are
            ``sigmoid > 0.5``). ``None`` is an option, off by default: the soft
            mask is fed unchanged (not measured on real weights; the network was
            trained on binary masks).
        mask_floor: refined values at or below this are not stored.
        half_precision: float16 autocast; ``None`` follows
            :func:`inference.device.use_half_precision` (CUDA only).
    """

    input_size: int = 720
    batch_size: int = 4
    mask_input_threshold: float | None = 0.5
    mask_floor: float = DEFAULT_MASK_FLOOR
    half_precision: bool | None = None

    def __post_init__(self) -> None:
        if not 32 <= self.input_size <= 4096:
            raise ValueError(f"expected input_size in [32, 4096], got {self.input_size}")
        if self.batch_size < 1:
            raise ValueError(f"expected batch_size >= 1, got {self.batch_size}")
        if self.mask_input_threshold is not None and not 0.0 <= self.mask_input_threshold < 1.0:
            raise ValueError(f"expected mask_input_threshold in [0, 1) or None, got {self.mask_input_threshold}")
        if not 0.0 < self.mask_floor < 0.3:
            raise ValueError(f"expected mask_floor in (0, 0.3), got {self.mask_floor}")


@dataclass(frozen=True)
class AnimeSegSettings:
    """Options of :class:`AnimeSegRefiner` (defaults: the reference's).

    Attributes:
        input_size: side of the square network input (the picture is scaled to
            fit, up or down, and centred). 1024 is anime-seg's default.
        min_kept_fraction: an instance takes the refined mask only if it keeps
            more than this fraction of the original mask's area (reference: 0.3).
        edge_margin: option, 0 (off) by default. With ``r = max(1, round(edge_margin
            * long side))`` pixels, the refined mask becomes ``F * grey_dilate(M,
            disk r)`` instead of ``min(M, F)``: it may follow ``F`` up to ``r``
            pixels beyond the instance's mask (recovering hair or hands the
            detector cut off) but never farther, so neighbours do not merge.
            Measured (``bench/detect.py --options-report``: synthetic scenes,
            a perfect foreground, instance masks = true masks eroded by 2 or
            5 px): mean IoU with the true masks 0.78-0.94 with the reference's
            rule (it can only cut, so it keeps the eroded mask), 0.96-0.98 with
            ``edge_margin=0.01`` and 0.97-0.99 with 0.02. Not measured on real
            weights, and those scenes have no touching characters (where a
            margin can take a neighbour's edge).
        mask_floor: refined values at or below this are not stored.
        half_precision: float16 autocast; ``None`` follows
            :func:`inference.device.use_half_precision` (CUDA only).
    """

    input_size: int = 1024
    min_kept_fraction: float = 0.3
    edge_margin: float = 0.0
    mask_floor: float = DEFAULT_MASK_FLOOR
    half_precision: bool | None = None

    def __post_init__(self) -> None:
        if not 32 <= self.input_size <= 4096:
            raise ValueError(f"expected input_size in [32, 4096], got {self.input_size}")
        if not 0.0 <= self.edge_margin <= 0.25:
            raise ValueError(f"expected edge_margin in [0, 0.25], got {self.edge_margin}")
        if not 0.0 <= self.min_kept_fraction <= 1.0:
            raise ValueError(f"expected min_kept_fraction in [0, 1], got {self.min_kept_fraction}")
        if not 0.0 < self.mask_floor < 0.5:
            raise ValueError(f"expected mask_floor in (0, 0.5), got {self.mask_floor}")


def _check_picture(image: np.ndarray, instances: Instances) -> None:
    check_rgb_image(image)
    if image.shape[:2] != tuple(instances.image_size):
        raise ValueError(f"expected an image of size {tuple(instances.image_size)} (the instances'), "
                         f"got {image.shape[:2]}")


class _NetworkRunner:
    """A network on a device, returning the probability map of its first side output."""

    def __init__(self, model: nn.Module, *, in_channels: int, device: str | None, half_precision: bool | None) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"expected a torch.nn.Module, got {type(model).__name__}")
        model_channels = getattr(model, "in_channels", in_channels)
        if model_channels != in_channels:
            raise ValueError(f"expected a network with {in_channels} input channels, got {model_channels}")
        self.device = resolve_device(device)
        self.half_precision = (
            use_half_precision(self.device) if half_precision is None else bool(half_precision)
        ) and self.device.type == "cuda"
        self.model = model.to(device=self.device).eval()

    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        """``(N, C, S, S)`` float32 CPU tensor -> ``(N, S, S)`` float32 CPU sigmoid of the first side output."""
        autocast = (
            torch.autocast(device_type="cuda", dtype=torch.float16) if self.half_precision else contextlib.nullcontext()
        )
        with torch.inference_mode(), autocast:
            x = batch.to(device=self.device, dtype=torch.float32)
            if isinstance(self.model, ISNet):
                logits = self.model.full_resolution_logits(x)
            else:
                outputs = self.model(x)
                logits = outputs[0] if isinstance(outputs, (list, tuple)) else outputs
            return torch.sigmoid(logits.float())[:, 0].cpu()


def _chunks(count: int, size: int) -> Iterator[range]:
    for start in range(0, count, size):
        yield range(start, min(start + size, count))


def _support_crop(
    soft: np.ndarray, floor: float, origin: tuple[int, int] = (0, 0)
) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
    """``(box on the picture, crop)`` of a soft map's values above ``floor``; ``None`` if there are none.

    ``origin`` is the ``(x, y)`` of ``soft``'s top-left pixel on the picture.
    """
    box = tight_box(soft > floor)
    if box is None:
        return None
    x0, y0, x1, y1 = box
    crop = np.clip(soft[y0:y1, x0:x1], 0.0, 1.0).astype(np.float32)
    ox, oy = origin
    return (x0 + ox, y0 + oy, x1 + ox, y1 + oy), np.ascontiguousarray(crop)


def _rebuild(instances: Instances, refined: list, name: str) -> Instances:
    """New instances from ``(box, mask)`` per instance (``None``: the instance is dropped, with a note)."""
    kept = [i for i, item in enumerate(refined) if item is not None]
    notes = instances.notes
    if len(kept) < len(instances):
        notes = notes + (f"The {name} refiner found nothing left of {len(instances) - len(kept)} instance(s); "
                         "they were dropped.",)
    boxes = np.array([refined[i][0] for i in kept], np.int32).reshape(-1, 4)
    return Instances(
        instances.image_size, boxes, tuple(refined[i][1] for i in kept), instances.scores[kept],
        instances.backend, name, notes,
    )


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
        if not isinstance(self.settings, self._settings_type):
            raise ValueError(f"expected {self._settings_type.__name__}, got {type(self.settings).__name__}")
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
            ModelUnavailable: CUDA was asked for but is not there.
        """
        resolve_device(device)  # a missing GPU fails before the file is read
        checkpoint = weights.load_checkpoint(path, trust=trust)
        state = weights.extract_state_dict(
            checkpoint, strip_prefix=cls._strip_prefix, drop_prefixes=cls._drop_prefixes
        )
        model = ISNet(cls._in_channels)
        weights.load_weights_strict(model, state, source=str(path))
        return cls(model, device=device, settings=settings)


class RefineNetISNet(_ISNetRefiner):
    """The ``refinenet_isnet`` refiner (see the module docstring for the reference's steps).

    Args:
        model: an IS-Net with 4 input channels (``ISNet(4)`` for the real
            weights; tests pass small ones). Moved to ``device`` and put in eval mode.
        device: ``"cpu"``, ``"cuda"`` or ``None`` (CUDA when available).
        settings: input size, batch size, mask binarisation, mask floor, float16.
    """

    name = "refinenet_isnet"

    _in_channels = 4
    _settings_type = RefineNetSettings

    def plan(self, image_size: tuple[int, int]) -> Letterbox:
        """The reference's ``resize_pad`` geometry: scaled down only (``round``ed short side), padded bottom/right."""
        height, width = image_size
        size = self.settings.input_size
        ratio = size / max(height, width)
        if ratio < 1:
            if height > width:
                height, width = size, max(1, int(round(width * ratio)))
            else:
                height, width = max(1, int(round(height * ratio))), size
        return Letterbox(tuple(image_size), (height, width), size, (0, 0))

    @staticmethod
    def _to_canvas(picture: np.ndarray, box: Letterbox) -> np.ndarray:
        """``scaledown_maxsize`` (INTER_LINEAR) then zero padding at the bottom and right."""
        h, w = box.scaled_size
        if (h, w) != picture.shape[:2]:
            picture = cv2.resize(picture, (w, h), interpolation=cv2.INTER_LINEAR)
        canvas = np.zeros((box.canvas_size, box.canvas_size) + picture.shape[2:], picture.dtype)
        canvas[:h, :w] = picture
        return canvas

    def _mask_channel(self, instances: Instances, index: int, box: Letterbox) -> np.ndarray:
        mask = instances.full_mask(index)
        threshold = self.settings.mask_input_threshold
        if threshold is not None:
            mask = (mask > threshold).astype(np.float32)
        return self._to_canvas(mask, box)

    def _to_picture(self, probability: torch.Tensor, box: Letterbox) -> np.ndarray:
        """The picture's region of a ``(S, S)`` output, resized to the picture with ``align_corners=True``."""
        h, w = box.scaled_size
        region = probability[:h, :w]
        if (h, w) == tuple(box.source_size):
            return region.numpy()
        resized = F.interpolate(region[None, None], size=tuple(box.source_size), mode="bilinear", align_corners=True)
        return resized[0, 0].numpy()

    def refine(self, image: np.ndarray, instances: Instances) -> Instances:
        """Predict every instance's mask anew on the whole picture.

        Args:
            image: ``(H, W, 3)`` uint8 RGB.
            instances: instances on that picture.

        Returns:
            Same instances and scores; each mask is the network's soft mask
            (float32 in ``[0, 1]``) cropped to its own support, and each box is
            that crop. An instance whose refined mask is empty is dropped (with a note).
        """
        _check_picture(image, instances)
        if len(instances) == 0:
            return instances.with_masks((), refined_by=self.name)
        box = self.plan(instances.image_size)
        bgr = self._to_canvas(np.ascontiguousarray(image[:, :, ::-1]), box)
        picture = torch.from_numpy(bgr).permute(2, 0, 1).float().div_(255.0)  # (3, S, S)
        size = box.canvas_size
        refined: list = []
        for chunk in _chunks(len(instances), self.settings.batch_size):
            masks = np.stack([self._mask_channel(instances, i, box) for i in chunk])  # (n, S, S)
            batch = torch.cat(
                (picture.expand(len(chunk), 3, size, size), torch.from_numpy(masks)[:, None]), dim=1
            )
            for probability in self._runner.probabilities(batch):
                refined.append(_support_crop(self._to_picture(probability, box), self.settings.mask_floor))
        return _rebuild(instances, refined, self.name)


class AnimeSegRefiner(_ISNetRefiner):
    """The ``animeseg`` refiner (see the module docstring for the reference's steps).

    Args:
        model: an IS-Net with 3 input channels (``ISNet(3)`` for the real
            weights). Moved to ``device`` and put in eval mode.
        device: ``"cpu"``, ``"cuda"`` or ``None`` (CUDA when available).
        settings: input size, fallback fraction, edge margin, mask floor, float16.
    """

    name = "animeseg"

    _in_channels = 3
    _settings_type = AnimeSegSettings
    #: isnetis.ckpt is a Lightning checkpoint: the network under ``net.``, plus a
    #: training-only ``gt_encoder`` that inference ignores.
    _strip_prefix = "net."
    _drop_prefixes = ("gt_encoder.",)

    def plan(self, image_size: tuple[int, int]) -> Letterbox:
        """The reference's geometry: long side to ``s``, short side ``int(s * short / long)``, centred."""
        height, width = image_size
        s = self.settings.input_size
        h, w = (s, max(1, int(s * width / height))) if height > width else (max(1, int(s * height / width)), s)
        return Letterbox(tuple(image_size), (h, w), s, ((s - w) // 2, (s - h) // 2))

    def foreground(self, image: np.ndarray) -> np.ndarray:
        """anime-seg's foreground probability of an ``(H, W, 3)`` uint8 RGB picture: ``(H, W)`` float32 in ``[0, 1]``."""
        check_rgb_image(image)
        box = self.plan(image.shape[:2])
        h, w = box.scaled_size
        ox, oy = box.offset
        scaled = cv2.resize((image / 255).astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
        canvas = np.zeros((box.canvas_size, box.canvas_size, 3), np.float32)
        canvas[oy : oy + h, ox : ox + w] = scaled.reshape(h, w, 3)
        batch = torch.from_numpy(canvas).permute(2, 0, 1)[None]
        probability = self._runner.probabilities(batch)[0].numpy()
        return np.clip(box.to_source(probability), 0.0, 1.0)

    def margin_px(self, image_size: tuple[int, int]) -> int:
        """Radius in pixels of the region around an instance the foreground may reach (0: the reference's rule)."""
        if self.settings.edge_margin == 0:
            return 0
        return max(1, int(round(self.settings.edge_margin * max(image_size))))

    def combine(self, foreground: np.ndarray, instances: Instances) -> list:
        """Apply the combination rule to a ``(H, W)`` foreground: ``(box, mask)`` per instance."""
        height, width = instances.image_size
        radius = self.margin_px(instances.image_size)
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1)) if radius else None
        floor = self.settings.mask_floor
        refined = []
        for mask, (x0, y0, x1, y1) in zip(instances.masks, instances.boxes):
            covered = mask > 0.5
            area = int(np.count_nonzero(covered))
            if radius:
                ex0, ey0 = max(0, x0 - radius), max(0, y0 - radius)
                ex1, ey1 = min(width, x1 + radius), min(height, y1 + radius)
                allowed = np.zeros((ey1 - ey0, ex1 - ex0), np.float32)
                allowed[y0 - ey0 : y1 - ey0, x0 - ex0 : x1 - ex0] = mask
                candidate = foreground[ey0:ey1, ex0:ex1] * cv2.dilate(allowed, kernel)
                origin = (ex0, ey0)
                kept = int(np.count_nonzero(candidate > 0.5))
            else:
                candidate = np.minimum(mask, foreground[y0:y1, x0:x1])
                origin = (x0, y0)
                kept = int(np.count_nonzero(covered & (foreground[y0:y1, x0:x1] > 0.5)))
            if area == 0 or not kept / area > self.settings.min_kept_fraction:
                refined.append(((int(x0), int(y0), int(x1), int(y1)), mask))  # the reference keeps the mask
                continue
            refined.append(_support_crop(candidate, floor, origin))
        return refined

    def refine(self, image: np.ndarray, instances: Instances) -> Instances:
        """Refine every instance with one anime-seg pass over the picture.

        Args:
            image: ``(H, W, 3)`` uint8 RGB.
            instances: instances on that picture.

        Returns:
            Same instances and scores; masks float32 in ``[0, 1]``, each cropped to
            its own support (the box is that crop).
        """
        _check_picture(image, instances)
        if len(instances) == 0:
            return instances.with_masks((), refined_by=self.name)
        return _rebuild(instances, self.combine(self.foreground(image), instances), self.name)


__all__ = ["AnimeSegRefiner", "AnimeSegSettings", "RefineNetISNet", "RefineNetSettings"]
