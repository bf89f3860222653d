"""SAM 2.1 point prompts: cut out whatever lies under include/exclude clicks.

This is the only module of Nukki that imports Meta's ``sam2`` package. The
network is built from the package's own Hydra configs (``configs/sam2.1/...``)
and its weights come from the official checkpoint format ``{"model": state_dict}``,
loaded strictly (every name and shape must match) through
:mod:`inference.weights` (``torch.load(weights_only=True)`` first).

Nukki does not use ``sam2``'s ``SAM2ImagePredictor``: that class needs
torchvision, whose PyPI wheels are CUDA builds that do not load beside the CPU
build of torch. The two steps it performs are done here with plain torch:

* **embed** (:meth:`Sam2Prompter.embed`, seconds on a CPU): the picture is resized to
  the model's square input (1024 x 1024, aspect ratio not kept, bilinear with
  antialiasing), normalised with the ImageNet mean and standard deviation, and run
  through the image encoder. The features are cached per picture ``digest``
  (a few pictures, least recently used first out), so the next prompt on the same
  picture costs only the prompt decoder (tens of milliseconds).
* **prompt** (:meth:`Sam2Prompter.segment_points`): include points are positive
  prompts (label 1), exclude points negative ones (label 0), an optional box adds its
  two corners (labels 2 and 3). One point alone is ambiguous, so the decoder returns
  its three candidate masks and the one with the best predicted IoU wins; with more
  prompts the decoder's single-mask output is used (as SAM 2 was trained). The mask
  is the sigmoid of the decoder's logits, upsampled to the picture: a soft float mask.

Coordinates: a Nukki point ``(x, y)`` is the pixel in column ``x`` and row ``y``;
its centre ``(x + 0.5, y + 0.5)`` is mapped to the model's input by scaling each axis
on its own (``1024 / W`` and ``1024 / H``), so the mapping is right for any picture
size and aspect ratio. Box edges ``x0 <= x < x1`` are mapped the same way.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from inference.device import resolve_device, use_half_precision
from inference.image_io import check_rgb_image
from inference.instances import COVER_THRESHOLD, Click, Instances
from inference.once_cache import OnceCache
from inference.prompt import Box, check_points

__all__ = [
    "CONFIGS",
    "DecoderOutput",
    "ImageFeatures",
    "PromptNetwork",
    "Sam2Network",
    "Sam2Prompter",
    "build_sam2_model",
    "load_sam2_model",
    "model_box_coords",
    "model_input",
    "model_point_coords",
    "soft_mask",
    "soft_mask_crop",
]

#: SAM 2.1 variants and the ``sam2`` package's own config file for each.
CONFIGS: dict[str, str] = {
    "tiny": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "small": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "base_plus": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "large": "configs/sam2.1/sam2.1_hiera_l.yaml",
}

#: Normalisation of the model's input (ImageNet mean and standard deviation of RGB in [0, 1]).
PIXEL_MEAN = (0.485, 0.456, 0.406)
PIXEL_STD = (0.229, 0.224, 0.225)

#: Prompt labels of the SAM prompt encoder.
LABEL_EXCLUDE, LABEL_INCLUDE, LABEL_BOX_TOP_LEFT, LABEL_BOX_BOTTOM_RIGHT = 0, 1, 2, 3

#: Soft-mask values below this (one grey level) are set to 0, so an instance's box is the box
#: of what the model segmented rather than the whole picture (a sigmoid is never exactly 0).
MASK_FLOOR = 1.0 / 255.0

#: Pictures whose embeddings are kept (tiny model: about 17 MB each in float32).
DEFAULT_CACHE_SIZE = 4

_BUILD_LOCK = threading.Lock()


# ---------------------------------------------------------------------------------------------- building


def _check_variant(variant: str) -> str:
    if variant not in CONFIGS:
        raise ValueError(f"expected SAM 2.1 variant one of {sorted(CONFIGS)}, got {variant!r}")
    return CONFIGS[variant]


def build_sam2_model(variant: str = "tiny") -> torch.nn.Module:
    """The SAM 2.1 network of ``variant`` with freshly initialised (random) weights, on the CPU, in eval mode.

    Built by the ``sam2`` package from its own Hydra config (:data:`CONFIGS`), with the
    same post-processing options its image predictor uses.

    Raises:
        ValueError: unknown ``variant``.
    """
    config = _check_variant(variant)
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from sam2.build_sam import build_sam2

    with _BUILD_LOCK:  # Hydra's config store is process-global
        if not GlobalHydra.instance().is_initialized():
            initialize_config_module("sam2", version_base="1.2")
        return build_sam2(config, ckpt_path=None, device="cpu", mode="eval")


def load_sam2_model(path: str | Path, *, variant: str = "tiny", trust: bool = False) -> torch.nn.Module:
    """Build the ``variant`` network and load a SAM 2.1 checkpoint ``{"model": state_dict}`` into it strictly.

    Args:
        path: checkpoint as published by Meta (``sam2.1_hiera_tiny.pt`` ...).
        variant: ``"tiny"``, ``"small"``, ``"base_plus"`` or ``"large"``; must match the file.
        trust: allow full unpickling (only needed for files that are not plain tensors).

    Returns:
        The network on the CPU in eval mode.

    Raises:
        ValueError: unknown ``variant``.
        inference.weights.CheckpointError: missing, damaged or untrusted file, no ``"model"``
            entry, or names/shapes that do not fit the variant (the message lists some).
    """
    from inference.weights import (
        CheckpointError,
        extract_state_dict,
        load_checkpoint,
        load_weights_strict,
    )

    _check_variant(variant)
    checkpoint = load_checkpoint(path, trust=trust)
    inner = checkpoint.get("model")
    if not isinstance(inner, dict):
        raise CheckpointError(
            f"expected a SAM 2.1 checkpoint holding {{'model': state_dict}} in {path}, "
            f"got top-level keys {sorted(map(str, checkpoint))[:6]}"
        )
    state = extract_state_dict(inner)
    model = build_sam2_model(variant)
    try:
        load_weights_strict(model, state, source=str(path))
    except CheckpointError as exc:
        raise CheckpointError(
            f"{exc} (loaded as SAM 2.1 {variant}; a file of another variant does not fit)"
        ) from None
    return model.eval()


# ---------------------------------------------------------------------------------------------- geometry


def model_input(image: np.ndarray, input_size: int) -> torch.Tensor:
    """The model's input for an ``(H, W, 3)`` uint8 RGB picture: ``(1, 3, S, S)`` float32 on the CPU.

    The picture is resized to ``S x S`` (each axis on its own, bilinear with antialiasing,
    in uint8 so an 8K picture costs no float copy; at most one grey level from doing it in
    float) and normalised to ``(rgb / 255 - mean) / std`` (:data:`PIXEL_MEAN`, :data:`PIXEL_STD`).
    """
    pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].contiguous()
    resized = F.interpolate(pixels, size=(input_size, input_size), mode="bilinear", antialias=True, align_corners=False)
    mean = torch.tensor(PIXEL_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(PIXEL_STD, dtype=torch.float32).view(1, 3, 1, 1)
    return (resized.to(torch.float32) / 255.0 - mean) / std


def _to_model(positions: np.ndarray, image_size: tuple[int, int], input_size: int) -> np.ndarray:
    """Continuous picture positions ``(..., 2)`` (x, y; pixel ``x`` spans ``[x, x + 1)``) -> the model's
    pixel-index coordinates. SAM's prompt encoder adds 0.5 (pixel index -> centre), hence the ``- 0.5``."""
    height, width = image_size
    scale = np.array([input_size / width, input_size / height], np.float64)
    return (positions * scale - 0.5).astype(np.float32)


def model_point_coords(points: Sequence[Click], image_size: tuple[int, int], input_size: int) -> np.ndarray:
    """``(N, 2)`` float32 point coordinates for SAM's prompt encoder.

    The centre of picture pixel ``(x, y)`` on an ``(H, W)`` picture lands, after the encoder's
    own ``+ 0.5``, at ``((x + 0.5) * S / W, (y + 0.5) * S / H)`` on the ``S x S`` input.
    """
    centres = np.array([[p.x + 0.5, p.y + 0.5] for p in points], np.float64).reshape(-1, 2)
    return _to_model(centres, image_size, input_size)


def model_box_coords(box: Box, image_size: tuple[int, int], input_size: int) -> np.ndarray:
    """``(2, 2)`` float32 corners (top-left, bottom-right) of an ``xyxy`` box (exclusive ends) for SAM's
    prompt encoder: edge ``x0`` lands at ``x0 * S / W`` on the input after the encoder's ``+ 0.5``."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return _to_model(np.array([[x0, y0], [x1, y1]], np.float64), image_size, input_size)


# ---------------------------------------------------------------------------------------------- network


@dataclass(frozen=True, eq=False)
class ImageFeatures:
    """What the image encoder made of one picture (all on the network's device).

    Attributes:
        image_embed: ``(1, C, h, w)`` lowest-resolution features (64 x 64 for a 1024 input).
        high_res: the higher-resolution feature maps the mask decoder also reads
            (``(1, 32, 256, 256)`` and ``(1, 64, 128, 128)``), highest first.
    """

    image_embed: torch.Tensor
    high_res: tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class DecoderOutput:
    """The mask decoder's answer to one prompt.

    Attributes:
        logits: ``(M, h, w)`` float32 mask logits at the decoder's resolution (256 x 256),
            covering the whole ``S x S`` input, on the network's device; M is 3 for multimask
            output, else 1.
        iou: ``(M,)`` float32 predicted IoU of each mask, in ``[0, 1]``.
        object_logit: the decoder's "an object is there" logit (negative: nothing).
    """

    logits: torch.Tensor
    iou: torch.Tensor
    object_logit: float


class PromptNetwork(Protocol):
    """The two calls :class:`Sam2Prompter` makes (tests substitute a network whose outputs they control)."""

    input_size: int
    device: torch.device

    def embed(self, pixels: torch.Tensor) -> ImageFeatures:
        """Features of a ``(1, 3, S, S)`` normalised float32 input (see :func:`model_input`)."""
        ...

    def decode(
        self, features: ImageFeatures, coords: torch.Tensor, labels: torch.Tensor, *, multimask: bool
    ) -> DecoderOutput:
        """Masks for ``coords`` ``(1, N, 2)`` float32 in input pixel-index space and ``labels`` ``(1, N)`` int."""
        ...


class Sam2Network:
    """A SAM 2.1 network (``sam2.modeling.sam2_base.SAM2Base``) seen as: embed a picture, decode a prompt.

    On CUDA both steps run under autocast (bfloat16 where the GPU supports it, else float16);
    on the CPU in float32.
    """

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        self.model = model.to(device).eval()
        self.device = device
        self.input_size = int(model.image_size)
        if use_half_precision(device):
            self._half = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            self._half = None

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self._half is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self._half)

    def embed(self, pixels: torch.Tensor) -> ImageFeatures:
        """Run the image encoder on ``(1, 3, S, S)`` normalised pixels."""
        model = self.model
        with torch.inference_mode(), self._autocast():
            backbone = model.forward_image(pixels.to(self.device))
            _, flat, _, sizes = model._prepare_backbone_features(backbone)
            if model.directly_add_no_mem_embed:  # a single picture: "no memory" as the video model's frame 0
                flat[-1] = flat[-1] + model.no_mem_embed
            maps = [f.permute(1, 2, 0).reshape(1, -1, h, w) for f, (h, w) in zip(flat, sizes)]
        return ImageFeatures(image_embed=maps[-1], high_res=tuple(maps[:-1]))

    def decode(
        self, features: ImageFeatures, coords: torch.Tensor, labels: torch.Tensor, *, multimask: bool
    ) -> DecoderOutput:
        """Run the prompt encoder and mask decoder on cached features."""
        model = self.model
        with torch.inference_mode(), self._autocast():
            sparse, dense = model.sam_prompt_encoder(
                points=(coords.to(self.device), labels.to(self.device)), boxes=None, masks=None
            )
            logits, iou, _tokens, object_logits = model.sam_mask_decoder(
                image_embeddings=features.image_embed,
                image_pe=model.sam_prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask,
                repeat_image=False,
                high_res_features=list(features.high_res),
            )
        return DecoderOutput(
            logits=logits[0].float(),  # stays on the device: the mask is upsampled there (see soft_mask_crop)
            iou=iou[0].float().cpu().clamp(0.0, 1.0),
            object_logit=float(object_logits.reshape(-1)[0]),
        )


# ---------------------------------------------------------------------------------------------- prompter


def _embedding_key(image: np.ndarray, digest: str) -> tuple[str, int, int]:
    """A picture's embedding is cached by its digest and size."""
    return (str(digest), int(image.shape[0]), int(image.shape[1]))


class Sam2Prompter:
    """SAM 2.1 as a :class:`~inference.prompt.PointPrompter`: embed once per picture, prompt many times.

    Thread-safe: one lock serialises the network (the studio may call from several sessions).

    Attributes:
        name: ``"sam2"`` (also the ``backend`` of the instances it returns).
        variant: the SAM 2.1 variant, for display.
        embed_count: how many pictures were embedded so far (a cached picture is not counted again).
    """

    name = "sam2"

    def __init__(self, network: PromptNetwork, *, variant: str = "tiny", cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        if cache_size < 1:
            raise ValueError(f"expected cache_size >= 1, got {cache_size}")
        self.network = network
        self.variant = variant
        self.embed_count = 0
        self._embeddings: OnceCache[ImageFeatures] = OnceCache(int(cache_size))
        #: One caller at a time uses the network (embedding or decoding).
        self._lock = threading.Lock()

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, *, device: str | None = None, trust: bool = False, variant: str = "tiny"
    ) -> Sam2Prompter:
        """Load a SAM 2.1 checkpoint (see :func:`load_sam2_model`) onto ``device``.

        Args:
            path: ``{"model": state_dict}`` file of ``variant``.
            device: ``None`` (CUDA if available), ``"cpu"`` or ``"cuda"`` (:func:`inference.device.resolve_device`).
            trust: allow full unpickling of the file.
            variant: ``"tiny"``, ``"small"``, ``"base_plus"`` or ``"large"``.

        Raises:
            inference.errors.ModelUnavailable: CUDA asked for but absent.
            inference.weights.CheckpointError: the file is unusable or does not fit ``variant``.
            ValueError: unknown ``variant`` or device.
        """
        torch_device = resolve_device(device)
        model = load_sam2_model(path, variant=variant, trust=trust)
        return cls(Sam2Network(model, torch_device), variant=variant)

    @property
    def device(self) -> torch.device:
        """The device the network runs on."""
        return self.network.device

    # ------------------------------------------------------------------ embedding cache
    def has_embedding(self, image: np.ndarray, digest: str) -> bool:
        """True when the next prompt on this picture needs no embedding (so no progress indicator)."""
        return _embedding_key(image, digest) in self._embeddings.keys()

    def embed(self, image: np.ndarray, digest: str) -> None:
        """Compute and cache the picture's embedding now (the slow step: seconds on a CPU).

        Calling it is optional (:meth:`segment_points` embeds when needed); the studio calls
        it under a progress indicator on the first point click.

        Args:
            image: ``(H, W, 3)`` uint8 RGB.
            digest: names the picture; the cache key (with the picture's size).
        """
        check_rgb_image(image)
        with self._lock:
            self._features(image, digest)

    def clear(self) -> None:
        """Forget every cached embedding."""
        self._embeddings.clear()

    def _features(self, image: np.ndarray, digest: str) -> ImageFeatures:
        """Cached features of the picture; the caller holds the lock."""
        def embed() -> ImageFeatures:
            features = self.network.embed(model_input(image, self.network.input_size))
            self.embed_count += 1
            return features

        return self._embeddings.get(_embedding_key(image, digest), embed)

    # ------------------------------------------------------------------ prompting
    def segment_points(
        self, image: np.ndarray, digest: str, points: Sequence[Click], box: Box | None = None
    ) -> Instances:
        """At most one instance for the points (and box) on an ``(H, W, 3)`` uint8 RGB picture.

        Args:
            image: ``(H, W, 3)`` uint8 RGB.
            digest: names the picture; its embedding is computed once and reused.
            points: include clicks are positive prompts, exclude clicks negative ones; each
                must lie inside the picture.
            box: optional ``xyxy`` box (exclusive ends) around the thing.

        Returns:
            One instance (soft float32 mask in ``[0, 1]``, score = the model's predicted IoU,
            backend ``"sam2"``), or none when there is no include point and no box, when the
            model says no object is there, or when no pixel of the mask reaches 0.5.

        Raises:
            ValueError: a bad image, a point outside the picture, or a bad box.
        """
        check_points(image, points, box)
        height, width = image.shape[:2]
        for point in points:
            if not (0 <= point.x < width and 0 <= point.y < height):
                raise ValueError(f"expected points inside the {width}x{height} picture, got ({point.x}, {point.y})")
        empty = Instances.empty((height, width), self.name)
        if box is None and not any(p.include for p in points):
            return empty

        size = self.network.input_size
        coords = [model_point_coords(points, (height, width), size)]
        labels = [np.array([LABEL_INCLUDE if p.include else LABEL_EXCLUDE for p in points], np.int64)]
        if box is not None:  # corners first, then the points (the order SAM 2's predictor uses)
            coords.insert(0, model_box_coords(box, (height, width), size))
            labels.insert(0, np.array([LABEL_BOX_TOP_LEFT, LABEL_BOX_BOTTOM_RIGHT], np.int64))
        coords_t = torch.from_numpy(np.concatenate(coords)).reshape(1, -1, 2)
        labels_t = torch.from_numpy(np.concatenate(labels)).reshape(1, -1)
        multimask = coords_t.shape[1] == 1  # one point alone is ambiguous: pick among 3 candidates

        with self._lock:
            features = self._features(image, digest)
            out = self.network.decode(features, coords_t, labels_t, multimask=multimask)
        if out.object_logit < 0:
            return empty
        best = int(torch.argmax(out.iou))
        found = soft_mask_crop(out.logits[best], (height, width))
        if found is None or not (found[1] >= COVER_THRESHOLD).any():
            return empty
        mask_box, crop = found
        return Instances(
            image_size=(height, width),
            boxes=np.array([mask_box], np.int32),
            masks=(crop,),
            scores=np.array([float(out.iou[best])], np.float32),
            backend=self.name,
        )


def _bilinear_taps(lo: int, hi: int, out_size: int, in_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For output pixels ``lo..hi-1`` of a resize from ``in_size`` to ``out_size`` (bilinear, pixel centres
    aligned, as ``F.interpolate(..., align_corners=False)``): the two source indices and the second one's weight."""
    source = np.maximum((np.arange(lo, hi, dtype=np.float64) + 0.5) * (in_size / out_size) - 0.5, 0.0)
    first = np.minimum(source.astype(np.int64), in_size - 1)
    second = np.minimum(first + 1, in_size - 1)
    return first, second, (source - first).astype(np.float32)


def _support_span(active: np.ndarray, out_size: int, in_size: int) -> tuple[int, int]:
    """Output pixels ``[lo, hi)`` whose bilinear taps can reach an active source cell (a safe superset)."""
    cells = np.flatnonzero(active)
    first, last = int(cells[0]) - 1, int(cells[-1]) + 1  # a neighbour's tap reaches one cell further
    lo = int(np.floor((first + 0.5) * out_size / in_size - 0.5))
    hi = int(np.ceil((last + 0.5) * out_size / in_size + 0.5)) + 1
    return max(lo, 0), min(hi, out_size)


def soft_mask_crop(
    logits: torch.Tensor, image_size: tuple[int, int]
) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
    """The soft mask of ``(h, w)`` logits covering the whole ``(H, W)`` picture, cropped to where it is non-zero.

    Equal to :func:`soft_mask` inside the returned box and zero outside it. On the CPU only the
    region the mask can reach is upsampled (numpy; a small object on an 8K picture costs little);
    logits on a GPU are upsampled there and only the crop comes back.

    Returns:
        ``((x0, y0, x1, y1), crop)`` with ``crop`` ``(y1 - y0, x1 - x0)`` float32 in ``[0, 1]``,
        or ``None`` when every value is under :data:`MASK_FLOOR`.
    """
    if logits.device.type != "cpu":
        return _soft_mask_crop_on_device(logits, image_size)
    height, width = image_size
    values = logits.detach().to(torch.float32).numpy().clip(-32.0, 32.0)
    low_h, low_w = values.shape
    floor_logit = float(np.log(MASK_FLOOR / (1.0 - MASK_FLOOR)))
    active = values >= floor_logit  # a bilinear mix of values all below the floor stays below it
    if not active.any():
        return None
    y_lo, y_hi = _support_span(active.any(axis=1), height, low_h)
    x_lo, x_hi = _support_span(active.any(axis=0), width, low_w)
    r0, r1, wy = _bilinear_taps(y_lo, y_hi, height, low_h)
    c0, c1, wx = _bilinear_taps(x_lo, x_hi, width, low_w)
    rows = values[r0] * (1.0 - wy)[:, None] + values[r1] * wy[:, None]
    window = rows[:, c0] * (1.0 - wx)[None, :] + rows[:, c1] * wx[None, :]
    soft = (1.0 / (1.0 + np.exp(-window))).astype(np.float32)
    soft[soft < MASK_FLOOR] = 0.0
    inside = soft > 0
    if not inside.any():
        return None
    ys, xs = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
    top, bottom, left, right = int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1
    crop = np.ascontiguousarray(soft[top:bottom, left:right])
    return (x_lo + left, y_lo + top, x_lo + right, y_lo + bottom), crop


def _soft_mask_crop_on_device(
    logits: torch.Tensor, image_size: tuple[int, int]
) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
    """:func:`soft_mask_crop` for logits on a GPU: the whole picture upsampled there (fast), the crop copied back."""
    with torch.inference_mode():
        upsampled = F.interpolate(
            logits.detach().to(torch.float32).clamp(-32.0, 32.0)[None, None], size=image_size,
            mode="bilinear", align_corners=False,
        )[0, 0]
        soft = torch.sigmoid(upsampled)
        soft.masked_fill_(soft < MASK_FLOOR, 0.0)
        rows = torch.nonzero((soft > 0).any(dim=1)).flatten()
        if rows.numel() == 0:
            return None
        cols = torch.nonzero((soft > 0).any(dim=0)).flatten()
        top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        crop = soft[top:bottom, left:right].cpu().numpy()
    return (left, top, right, bottom), np.ascontiguousarray(crop, dtype=np.float32)


def soft_mask(logits: torch.Tensor, image_size: tuple[int, int]) -> np.ndarray:
    """``(H, W)`` float32 soft mask in ``[0, 1]`` from ``(h, w)`` logits covering the whole picture.

    The logits (clamped to +-32) are upsampled bilinearly with pixel centres aligned (as SAM
    does), then passed through a sigmoid; values under :data:`MASK_FLOOR` become 0.
    """
    out = np.zeros(image_size, np.float32)
    found = soft_mask_crop(logits, image_size)
    if found is not None:
        (x0, y0, x1, y1), crop = found
        out[y0:y1, x0:x1] = crop
    return out
