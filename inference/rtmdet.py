"""The anime instance model: RTMDet-Ins-L (``rtmdetl_e60.ckpt``) as a :class:`~inference.segmenter.Segmenter`.

This is the only module of Nukki that imports mmdet, mmcv and mmengine; import
it lazily (inside functions) from everywhere else.

Loading
    ``rtmdetl_e60.ckpt`` is an mmengine checkpoint: ``state_dict`` plus
    ``meta['cfg']``, the training config as Python source. The config is read,
    never executed (:mod:`inference.rtmdet_config`); the custom head becomes
    :class:`GuardedRTMDetInsSepBNHead`, registered here. A checkpoint without a
    usable embedded config is built from ``models/rtmdet_ins_l_anime.py``. The
    file is read by :func:`inference.weights.load_checkpoint` (``weights_only``
    unless trusted) and its weights load strictly.

    :meth:`RTMDetSegmenter.from_checkpoint` loads the network once;
    :meth:`RTMDetSegmenter.with_options` gives segmenters with other cheap
    options (``det_size``, ``score_threshold``, ``tta``, ``max_instances``)
    that share that one network.

Inference: the reference's semantics (mmdet 3.3 ``RTMDetInsHead`` with
``rescale=True``, as CartoonSegmentation's ``AnimeInsSeg`` runs it), without
``inference_detector``
    1. letterbox as mmdet's test pipeline: ``Resize(scale=(S, S), keep_ratio=True)``
       (scale ``S / max(H, W)``, new size ``int(side * scale + 0.5)``, bilinear),
       ``Pad`` bottom/right with 114 to ``S x S``, normalise with the config's
       mean/std in the model's channel order (BGR for the anime model);
    2. backbone, neck and head forward (one batch; with flip TTA the mirrored
       picture is the second image), under a lock;
    3. :func:`select_detections`, as mmdet's ``_predict_by_feat_single`` and
       ``_bbox_mask_post_process``: per level scores ``> score_threshold`` and the
       ``nms_pre`` best; boxes decoded and clipped to the padded ``S x S`` canvas;
       boxes scaled to the picture (``x / w_scale``, ``y / h_scale``, not clipped);
       ``min_bbox_size``; NMS on the scaled boxes; ``max_per_img`` best. The
       reference thresholds twice (mmdet's ``score_thr`` 0.05, then CartoonSegmentation's
       ``scores > 0.3``); thresholding once at the larger value keeps exactly the
       same instances (NMS only lets a box suppress lower-scoring ones);
    4. :func:`decode_instance_masks`, as mmdet's mask branch: each kept
       instance's mask logits on the whole stride-8 prototype grid, upsampled x8
       (bilinear, half-pixel), resized to ``ceil(S / w_scale)`` rows and
       ``ceil(S / h_scale)`` columns (mmdet's axis pairing) and cut to the
       picture; a pixel is covered where ``sigmoid > 0.5``. Memory stays bounded
       without cutting masks: the support (logit above ``logit(mask_floor)``)
       is found on the prototype grid, and only picture pixels whose
       interpolation stencil touches it are decoded at full resolution; every
       other pixel's value is at most ``mask_floor`` (bilinear values are convex
       combinations). Masks stay soft and are stored cropped to their own
       support (the pixels above ``mask_floor``), not to the detector's box.
"""

from __future__ import annotations

import copy
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import mmdet.models  # noqa: F401  (registers mmdet's model classes)
import numpy as np
import torch
import torch.nn.functional as F
from mmcv.ops import batched_nms
from mmdet.models.dense_heads import RTMDetInsHead, RTMDetInsSepBNHead
from mmdet.registry import MODELS
from mmdet.structures.bbox import distance2bbox
from mmengine.config import ConfigDict
from mmengine.registry import DefaultScope
from torch import Tensor, nn

from inference.device import resolve_device, use_half_precision
from inference.image_io import check_rgb_image
from inference.instances import Instances, tight_box
from inference.letterbox import Letterbox
from inference.rtmdet_config import (
    DEFAULT_CONFIG_PATH,
    GUARDED_HEAD_TYPE,
    inference_model_config,
    load_model_config,
    read_config_literals,
)
from inference.tta import flip_instances_horizontally, merge_flip_instances
from inference.weights import (
    CheckpointError,
    extract_state_dict,
    load_checkpoint,
    load_weights_strict,
)

__all__ = [
    "CheckpointError",
    "DEFAULT_CONFIG_PATH",
    "DecodeSettings",
    "Detections",
    "GuardedRTMDetInsSepBNHead",
    "HeadOutputs",
    "MaskResampling",
    "Preprocessed",
    "RTMDetNetwork",
    "RTMDetSegmenter",
    "build_detector",
    "decode_instance_masks",
    "detector_from_checkpoint",
    "inference_model_config",
    "letterbox_image",
    "load_detector_weights",
    "load_model_config",
    "mask_resampling",
    "mmdet_letterbox",
    "read_config_literals",
    "select_detections",
]

#: Grey the reference pipeline pads the letterbox with (mmdet ``Pad(pad_val=114)``).
PAD_VALUE = 114
#: Mask logits are clamped to this range (the reference head's fp16 guard).
MASK_LOGIT_LIMIT = 8192.0
#: Soft mask values at or below this are not stored (the mask's support is where it is above).
DEFAULT_MASK_FLOOR = 1e-3

_BUILD_LOCK = threading.Lock()  # mmengine's default scope is process-global


# ----------------------------------------------------------------------------- the head


@MODELS.register_module(name=GUARDED_HEAD_TYPE, force=True)
class GuardedRTMDetInsSepBNHead(RTMDetInsSepBNHead):
    """mmdet's ``RTMDetInsSepBNHead`` with NaN/Inf guards at inference; no extra parameters.

    Stands in for ``RTMDetInsSepBNHeadCustom`` of the ``animeinsseg`` package
    (whose only inference change is a NaN check). Instead of raising, it:

    * gives every prior with a non-finite class, box or kernel output a class
      logit of ``-inf``, so it can never pass a score threshold, and zeroes its
      other non-finite outputs so later arithmetic stays finite;
    * replaces non-finite mask prototype values with 0;
    * computes mask logits in float32 and clamps them to ``[-8192, 8192]``.
    """

    def forward(self, feats: tuple[Tensor, ...]) -> tuple:
        """Head outputs as mmdet's, guarded.

        Returns:
            ``(cls_scores, bbox_preds, kernel_preds, mask_feat)``: per level
            ``(B, C, h, w)``, ``(B, 4, h, w)``, ``(B, G, h, w)`` tuples, and the
            ``(B, P, H/8, W/8)`` mask prototypes.
        """
        cls_scores, bbox_preds, kernel_preds, mask_feat = super().forward(feats)
        guarded_cls, guarded_bbox, guarded_kernel = [], [], []
        for cls_score, bbox_pred, kernel_pred in zip(cls_scores, bbox_preds, kernel_preds):
            finite = (
                torch.isfinite(cls_score).all(dim=1, keepdim=True)
                & torch.isfinite(bbox_pred).all(dim=1, keepdim=True)
                & torch.isfinite(kernel_pred).all(dim=1, keepdim=True)
            )
            guarded_cls.append(cls_score.masked_fill(~finite, float("-inf")))
            guarded_bbox.append(torch.nan_to_num(bbox_pred, nan=0.0, posinf=0.0, neginf=0.0))
            guarded_kernel.append(torch.nan_to_num(kernel_pred, nan=0.0, posinf=0.0, neginf=0.0))
        mask_feat = torch.nan_to_num(mask_feat, nan=0.0, posinf=0.0, neginf=0.0)
        return tuple(guarded_cls), tuple(guarded_bbox), tuple(guarded_kernel), mask_feat

    def _mask_predict_by_feat_single(self, mask_feat: Tensor, kernels: Tensor, priors: Tensor) -> Tensor:
        """mmdet's full-map mask logits ``(N, h, w)``, in float32, finite and clamped."""
        logits = super()._mask_predict_by_feat_single(mask_feat.float(), kernels.float(), priors.float())
        return _clean_mask_logits(logits)


def _clean_mask_logits(logits: Tensor) -> Tensor:
    """Non-finite logits become background; the rest are clamped to +-MASK_LOGIT_LIMIT."""
    logits = torch.nan_to_num(logits, nan=-MASK_LOGIT_LIMIT, posinf=MASK_LOGIT_LIMIT, neginf=-MASK_LOGIT_LIMIT)
    return logits.clamp_(-MASK_LOGIT_LIMIT, MASK_LOGIT_LIMIT)


# ----------------------------------------------------------------------------- building and loading


def build_detector(model_config: Mapping[str, object]) -> nn.Module:
    """Build an RTMDet-Ins detector with random weights, in eval mode on the CPU.

    Args:
        model_config: a model dict from :func:`inference_model_config` or :func:`load_model_config`.

    Raises:
        ValueError: mmdet cannot build it, or it is not a single-stage RTMDet-Ins detector.
    """
    config = ConfigDict(copy.deepcopy(dict(model_config)))
    with _BUILD_LOCK, DefaultScope.overwrite_default_scope("mmdet"):
        try:
            model = MODELS.build(config)
        except Exception as error:  # noqa: BLE001 - mmengine wraps build errors in many types
            raise ValueError(
                f"expected a buildable RTMDet-Ins model config, got {type(error).__name__}: {error}"
            ) from error
    head = getattr(model, "bbox_head", None)
    if not isinstance(head, RTMDetInsHead) or not hasattr(model, "extract_feat"):
        raise ValueError(f"expected a single-stage detector with an RTMDet-Ins head, got {type(model).__name__}")
    return model.eval()


def load_detector_weights(model: nn.Module, state_dict: Mapping[str, Tensor], *, source: str) -> None:
    """Copy ``state_dict`` into ``model``, strictly.

    Every key of the model must be present with the same shape and no other key
    may be present (:func:`inference.weights.load_weights_strict`). Keys that
    name one shared tensor of the model (the head's shared convolutions appear
    under every pyramid level) must also hold equal values, or which copy wins
    would be an accident of key order.

    Args:
        model: the detector.
        state_dict: ``{key: tensor}``.
        source: what to call the weights in error messages (e.g. the file name).

    Raises:
        CheckpointError: naming the missing, unexpected or mis-shaped keys, or
            the shared keys that disagree.
    """
    by_storage: dict[tuple[int, int], list[str]] = {}
    for key, tensor in model.state_dict().items():
        if tensor.numel() and key in state_dict:
            by_storage.setdefault((tensor.untyped_storage().data_ptr(), tensor.storage_offset()), []).append(key)
    for keys in by_storage.values():
        first = state_dict[keys[0]]
        for other in keys[1:]:
            value = state_dict[other]
            if value.shape == first.shape and not torch.equal(value, first):
                raise CheckpointError(
                    f"{source}: keys {keys[0]} and {other} name one shared convolution of the model "
                    "but hold different values"
                )
    load_weights_strict(model, state_dict, source=source)


def detector_from_checkpoint(
    checkpoint: Mapping[str, object], *, source: str, fallback_config: str | Path = DEFAULT_CONFIG_PATH
) -> tuple[nn.Module, str]:
    """Build the detector a loaded checkpoint describes and load its weights strictly.

    The architecture comes from ``checkpoint['meta']['cfg']`` when that config can
    be read and built; otherwise from ``fallback_config``. Either way the weights
    must fit exactly.

    Args:
        checkpoint: the dict from ``load_checkpoint``: an mmengine checkpoint
            (``state_dict`` and ``meta``) or a bare ``{key: tensor}`` state dict.
        source: the checkpoint's name for messages.
        fallback_config: flat config used when the checkpoint has no usable one.

    Returns:
        The detector (eval mode, CPU) and a sentence saying which config built it.

    Raises:
        CheckpointError: there is no state dict, or it does not fit.
    """
    state_dict = extract_state_dict(checkpoint)
    meta = checkpoint.get("meta")
    embedded = meta.get("cfg") if isinstance(meta, Mapping) else None
    model = None
    why_not_embedded = "it has no embedded config"
    if isinstance(embedded, (str, Mapping)):
        try:
            literals = read_config_literals(embedded) if isinstance(embedded, str) else dict(embedded)
            model = build_detector(inference_model_config(literals))
            origin = f"config embedded in {source}"
        except ValueError as error:
            why_not_embedded = f"its embedded config is unusable ({error})"
    if model is None:
        model = build_detector(load_model_config(fallback_config))
        origin = f"project config {Path(fallback_config).name} ({source}: {why_not_embedded})"
    load_detector_weights(model, state_dict, source=source)
    return model, origin


# ----------------------------------------------------------------------------- stages


def mmdet_letterbox(source_size: tuple[int, int], det_size: int) -> Letterbox:
    """Geometry of mmdet's ``Resize(scale=(S, S), keep_ratio=True)`` + ``Pad(size=(S, S))``.

    mmcv's ``rescale_size``: scale ``S / max(H, W)``, new size
    ``(int(W * scale + 0.5), int(H * scale + 0.5))`` (at least 1 pixel); the
    picture sits at the top-left corner of the canvas. ``Letterbox.scale`` is
    then mmdet's ``scale_factor`` ``(w_scale, h_scale) = (new_w / W, new_h / H)``.
    """
    height, width = source_size
    if height <= 0 or width <= 0 or det_size <= 0:
        raise ValueError(f"expected positive sizes, got source {source_size} and det_size {det_size}")
    scale = min(det_size / max(height, width), det_size / min(height, width))
    new_w = max(1, int(width * float(scale) + 0.5))
    new_h = max(1, int(height * float(scale) + 0.5))
    return Letterbox((height, width), (new_h, new_w), det_size, (0, 0))


def letterbox_image(image: np.ndarray, det_size: int, *, pad_value: int = PAD_VALUE) -> tuple[np.ndarray, Letterbox]:
    """Fit an ``(H, W, 3)`` uint8 image into a ``det_size`` square as mmdet's test pipeline does.

    See :func:`mmdet_letterbox`; the picture is resized with ``cv2.INTER_LINEAR``
    (mmcv's ``bilinear``; small pictures are enlarged) and the canvas padded at
    the bottom and right with ``pad_value``.

    Returns:
        ``(canvas (det_size, det_size, 3) uint8, geometry)``; channels unchanged.
    """
    geometry = mmdet_letterbox(image.shape[:2], det_size)
    h, w = geometry.scaled_size
    scaled = image if (h, w) == image.shape[:2] else cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    canvas = np.full((det_size, det_size, image.shape[2]), pad_value, np.uint8)
    canvas[:h, :w] = scaled
    return canvas, geometry


def _mirror_content(canvas: np.ndarray, geometry: Letterbox) -> np.ndarray:
    """The canvas of the left-right mirrored picture: the picture's region flipped, padding in place."""
    out = canvas.copy()
    ox, oy = geometry.offset
    h, w = geometry.scaled_size
    out[oy : oy + h, ox : ox + w] = canvas[oy : oy + h, ox : ox + w][:, ::-1]
    return out


@dataclass(frozen=True)
class Preprocessed:
    """Network input for one picture (and, with flip TTA, its mirror image).

    Attributes:
        batch: ``(B, 3, S, S)`` float32 normalised canvases on the model's device;
            ``B`` is 2 with flip TTA (index 1 is the mirrored picture), else 1.
        letterbox: geometry shared by all canvases of the batch.
    """

    batch: Tensor
    letterbox: Letterbox


@dataclass(frozen=True)
class HeadOutputs:
    """Raw head outputs for a batch, float32, on the CPU.

    Attributes:
        cls_scores: per level ``(B, C, h, w)`` class logits (``-inf`` where guarded).
        bbox_preds: per level ``(B, 4, h, w)`` distances (left, top, right, bottom) in canvas pixels.
        kernel_preds: per level ``(B, G, h, w)`` dynamic mask-conv parameters.
        mask_feat: ``(B, P, S/8, S/8)`` mask prototypes.
    """

    cls_scores: tuple[Tensor, ...]
    bbox_preds: tuple[Tensor, ...]
    kernel_preds: tuple[Tensor, ...]
    mask_feat: Tensor


@dataclass(frozen=True)
class DecodeSettings:
    """How raw outputs become instances (defaults: the reference's).

    Attributes:
        score_threshold: keep candidates scoring strictly above this (the
            reference's ``scores > pred_score_thr``); never below the config's
            ``score_thr``, as the reference applies both.
        nms_pre: at most this many candidates per pyramid level enter NMS.
        nms_iou_threshold: NMS suppresses boxes overlapping a better one more than this.
        max_instances: keep at most this many after NMS (best first); masks are
            decoded only for these.
        min_box_size: boxes (in picture pixels) must be wider and taller than
            this; ``None`` means no size filter (config without ``min_bbox_size``).
        mask_floor: soft mask values at or below this are not stored: a mask is
            stored on the tight box of its pixels above it, and is 0 outside.
            (The reference's soft value there is at most ``mask_floor``.) An
            instance with no pixel above it is dropped (the reference keeps it
            with an empty mask).
        extend_to_edges: option, off by default (the reference's behaviour).
            mmdet resizes the mask to ``ceil(S / w_scale)`` rows and
            ``ceil(S / h_scale)`` columns; because the letterbox rounds the
            short side, one of these can be up to a few pixels short of the
            picture, and the reference's mask then has no value (here: 0) in the
            last rows or columns. With ``True`` those take the nearest decoded
            row or column instead; nothing else changes. Measured
            (``bench/detect.py --options-report``, det size 640): 1920x1080,
            1080x1920, 3840x2160, 4032x3024, 1680x1359 and 1500x750 lose
            nothing; 1500x1000 loses its last column (0.067% of the pixels),
            2048x1365 two columns (0.098%), 1200x1697 its last row (0.059%).
    """

    score_threshold: float = 0.3
    nms_pre: int = 1000
    nms_iou_threshold: float = 0.6
    max_instances: int = 100
    min_box_size: float | None = 0.0
    mask_floor: float = DEFAULT_MASK_FLOOR
    extend_to_edges: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.score_threshold <= 1.0:
            raise ValueError(f"expected score_threshold in [0, 1], got {self.score_threshold}")
        if self.nms_pre < 1 or self.max_instances < 1:
            raise ValueError(f"expected nms_pre and max_instances >= 1, got {self.nms_pre} and {self.max_instances}")
        if not 0.0 < self.nms_iou_threshold <= 1.0:
            raise ValueError(f"expected nms_iou_threshold in (0, 1], got {self.nms_iou_threshold}")
        if self.min_box_size is not None and self.min_box_size < 0:
            raise ValueError(f"expected min_box_size >= 0 or None, got {self.min_box_size}")
        if not 0.0 < self.mask_floor < 0.5:
            raise ValueError(f"expected mask_floor in (0, 0.5), got {self.mask_floor}")


@dataclass(frozen=True)
class Detections:
    """Kept detections of one canvas, best score first, on the CPU.

    Attributes:
        boxes: ``(K, 4)`` float32 ``xyxy`` in picture pixels, as the reference
            reports them (clipped to the padded canvas, then scaled; a box may
            reach past the picture where it reached into the padding).
        scores: ``(K,)`` float32.
        labels: ``(K,)`` int64 class indices.
        kernels: ``(K, G)`` float32 dynamic mask-conv parameters.
        priors: ``(K, 4)`` float32 ``(x, y, stride_x, stride_y)`` of the point each came from.
        ignored_non_finite: priors skipped because the network gave NaN/Inf for them.
    """

    boxes: Tensor
    scores: Tensor
    labels: Tensor
    kernels: Tensor
    priors: Tensor
    ignored_non_finite: int = 0

    def __len__(self) -> int:
        return int(self.scores.shape[0])


def select_detections(
    head: RTMDetInsHead, outputs: HeadOutputs, index: int, letterbox: Letterbox, settings: DecodeSettings
) -> Detections:
    """Threshold, decode boxes, NMS and cap the outputs of canvas ``index``; no mask work.

    The steps of mmdet's ``RTMDetInsHead._predict_by_feat_single`` and
    ``_bbox_mask_post_process`` with ``rescale=True`` (see the module docstring).
    """
    featmap_sizes = [tuple(level.shape[-2:]) for level in outputs.cls_scores]
    level_priors = head.prior_generator.grid_priors(
        featmap_sizes, dtype=torch.float32, device=outputs.cls_scores[0].device, with_stride=True
    )
    distances_parts, scores_parts, labels_parts, kernels_parts, priors_parts = [], [], [], [], []
    ignored = 0
    for cls_score, bbox_pred, kernel_pred, priors in zip(
        outputs.cls_scores, outputs.bbox_preds, outputs.kernel_preds, level_priors
    ):
        logits = cls_score[index].permute(1, 2, 0).reshape(-1, cls_score.shape[1])
        ignored += int(torch.isneginf(logits).all(dim=1).sum())
        scores = logits.sigmoid()
        valid = scores > settings.score_threshold
        level_scores = scores[valid]
        candidates = torch.nonzero(valid)
        level_scores, order = level_scores.sort(descending=True)
        count = min(settings.nms_pre, candidates.shape[0])
        level_scores = level_scores[:count]
        prior_index, labels = candidates[order[:count]].unbind(dim=1)
        distances_parts.append(bbox_pred[index].permute(1, 2, 0).reshape(-1, 4)[prior_index])
        kernels_parts.append(kernel_pred[index].permute(1, 2, 0).reshape(-1, kernel_pred.shape[1])[prior_index])
        priors_parts.append(priors[prior_index])
        scores_parts.append(level_scores)
        labels_parts.append(labels)
    priors = torch.cat(priors_parts).float()
    canvas = letterbox.canvas_size
    boxes = distance2bbox(priors[:, :2], torch.cat(distances_parts).float(), max_shape=(canvas, canvas))
    scores = torch.cat(scores_parts).float()
    labels = torch.cat(labels_parts)
    kernels = torch.cat(kernels_parts).float()

    w_scale, h_scale = letterbox.scale
    boxes = boxes * boxes.new_tensor([1 / w_scale, 1 / h_scale]).repeat((1, 2))  # as mmdet's scale_boxes
    if settings.min_box_size is not None:
        valid = ((boxes[:, 2] - boxes[:, 0]) > settings.min_box_size) & (
            (boxes[:, 3] - boxes[:, 1]) > settings.min_box_size
        )
        boxes, scores, labels, kernels, priors = boxes[valid], scores[valid], labels[valid], kernels[valid], priors[valid]
    if boxes.shape[0]:
        kept_boxes, keep = batched_nms(boxes, scores, labels, dict(type="nms", iou_threshold=settings.nms_iou_threshold))
        keep = keep[: settings.max_instances]
        scores = kept_boxes[: settings.max_instances, -1]
        boxes, labels, kernels, priors = boxes[keep], labels[keep], kernels[keep], priors[keep]
    return Detections(boxes.cpu(), scores.cpu(), labels.cpu(), kernels.cpu(), priors.cpu(), ignored)


@dataclass(frozen=True)
class MaskResampling:
    """mmdet's resampling of stride-8 mask logits onto the picture, as two weight matrices.

    mmdet upsamples the ``(S/8, S/8)`` logits by 8 (``F.interpolate(scale_factor=8,
    mode='bilinear')``), resizes the ``(S, S)`` result to ``(ceil(S / w_scale),
    ceil(S / h_scale))`` (bilinear, ``align_corners=False``) and keeps the top-left
    ``(H, W)``. Bilinear resampling is separable, so picture pixel ``(y, x)`` is
    ``rows[y] @ logits @ cols[x]``.

    Attributes:
        rows: ``(H, S/8)`` float32 weights (a row of zeros where the reference's
            mask has no row: see :attr:`DecodeSettings.extend_to_edges`).
        cols: ``(W, S/8)`` float32 weights.
        row_span: ``(H, 2)`` int64 first and last cell with a non-zero weight
            (``(S/8, -1)`` for an all-zero row); non-decreasing down the picture.
        col_span: ``(W, 2)`` the same for columns.
    """

    rows: Tensor
    cols: Tensor
    row_span: np.ndarray
    col_span: np.ndarray


def _axis_weights(cells: int, stride: int, resized: int, keep: int, *, extend: bool) -> Tensor:
    """Weights from ``cells`` logits to ``keep`` output pixels along one axis: ``(keep, cells)``.

    Built by running the very ``F.interpolate`` calls mmdet makes on an identity
    matrix, so they are the framework's own weights.
    """
    identity = torch.eye(cells, dtype=torch.float32)[None, :, :, None]  # channel c = unit logit at cell c
    upsampled = F.interpolate(identity, scale_factor=(stride, 1), mode="bilinear")  # (1, cells, S, 1)
    resized_maps = F.interpolate(upsampled, size=(resized, 1), mode="bilinear", align_corners=False)
    weights = resized_maps[0, :, :, 0].T  # (resized, cells): row y holds each cell's weight at pixel y
    if resized >= keep:
        return weights[:keep].contiguous()
    missing = keep - resized
    filler = weights[-1:].expand(missing, cells) if extend else weights.new_zeros(missing, cells)
    return torch.cat([weights, filler]).contiguous()


def _spans(weights: Tensor) -> np.ndarray:
    nonzero = (weights > 0).numpy()
    cells = weights.shape[1]
    first = np.where(nonzero.any(axis=1), nonzero.argmax(axis=1), cells)
    last = np.where(nonzero.any(axis=1), cells - 1 - nonzero[:, ::-1].argmax(axis=1), -1)
    return np.stack([first, last], axis=1).astype(np.int64)


def mask_resampling(letterbox: Letterbox, cells: tuple[int, int], stride: int, *, extend_to_edges: bool = False) -> MaskResampling:
    """The :class:`MaskResampling` of a letterbox with a ``(S/stride, S/stride)`` prototype grid."""
    height, width = letterbox.source_size
    w_scale, h_scale = letterbox.scale
    inverse = [1 / w_scale, 1 / h_scale]  # mmdet: scale_factor = [1 / s for s in img_meta['scale_factor']]
    canvas_h, canvas_w = cells[0] * stride, cells[1] * stride
    resized_h = math.ceil(canvas_h * inverse[0])  # mmdet pairs the height with 1 / w_scale
    resized_w = math.ceil(canvas_w * inverse[1])  # and the width with 1 / h_scale
    rows = _axis_weights(cells[0], stride, resized_h, height, extend=extend_to_edges)
    cols = _axis_weights(cells[1], stride, resized_w, width, extend=extend_to_edges)
    return MaskResampling(rows, cols, _spans(rows), _spans(cols))


def _pixel_range(span: np.ndarray, first_cell: int, last_cell: int) -> tuple[int, int]:
    """Pixels whose stencil touches cells ``first_cell..last_cell``: ``[start, stop)``.

    Pixels with weights come first and their spans never decrease; pixels
    without (the reference's missing edge rows or columns) follow them.
    """
    weighted = int(np.count_nonzero(span[:, 1] >= 0))
    start = int(np.searchsorted(span[:weighted, 1], first_cell, side="left"))
    stop = int(np.searchsorted(span[:weighted, 0], last_cell, side="right"))
    return start, stop


def _resample_region(
    resampling: MaskResampling, logits: Tensor, rows: tuple[int, int], cols: tuple[int, int]
) -> Tensor:
    """Picture pixels ``rows[0]:rows[1]`` x ``cols[0]:cols[1]`` of one ``(S/8, S/8)`` logit map, as mmdet resamples it."""
    (y0, y1), (x0, x1) = rows, cols
    cy0, cy1 = int(resampling.row_span[y0:y1, 0].min()), int(resampling.row_span[y0:y1, 1].max()) + 1
    cx0, cx1 = int(resampling.col_span[x0:x1, 0].min()), int(resampling.col_span[x0:x1, 1].max()) + 1
    window = logits[cy0:cy1, cx0:cx1]
    return resampling.rows[y0:y1, cy0:cy1] @ window @ resampling.cols[x0:x1, cx0:cx1].T


def decode_instance_masks(
    head: RTMDetInsHead,
    mask_feat: Tensor,
    detections: Detections,
    letterbox: Letterbox,
    settings: DecodeSettings = DecodeSettings(),
    *,
    resampling: MaskResampling | None = None,
) -> tuple[np.ndarray, list[np.ndarray], list[int]]:
    """Soft masks of the kept detections on the picture, each cropped to its own support.

    1. mmdet's dynamic convolutions give every kept instance's logits on the
       whole ``(S/8, S/8)`` prototype grid (cheap: 1x1 convolutions at 1/64 of the canvas);
    2. the support is the box of cells whose logit exceeds ``logit(mask_floor)``;
    3. only the picture pixels whose interpolation stencil touches it are
       resampled (:class:`MaskResampling`, mmdet's geometry), then ``sigmoid``;
       every other pixel's reference value is at most ``mask_floor``;
    4. the mask is cropped to its pixels above ``mask_floor``.

    Args:
        head: the detector's head (prior generator, dynamic conv layout).
        mask_feat: ``(P, S/8, S/8)`` prototypes of this canvas.
        detections: from :func:`select_detections` on the same canvas.
        letterbox: its geometry.
        settings: ``mask_floor`` and ``extend_to_edges``.
        resampling: precomputed :func:`mask_resampling` (else built here).

    Returns:
        ``(boxes (N, 4) int32, masks, kept)``: box ``i`` holds ``masks[i]``, an
        ``(y1 - y0, x1 - x0)`` float32 array in ``[0, 1]``; ``kept`` lists which
        detections they are (an instance with no pixel above ``mask_floor`` is skipped).
    """
    empty = (np.zeros((0, 4), np.int32), [], [])
    if len(detections) == 0:
        return empty
    mask_feat = mask_feat.float().cpu()
    cells = tuple(mask_feat.shape[-2:])
    stride = int(head.prior_generator.strides[0][0])
    if resampling is None:
        resampling = mask_resampling(letterbox, cells, stride, extend_to_edges=settings.extend_to_edges)
    logits = head._mask_predict_by_feat_single(mask_feat, detections.kernels, detections.priors)
    logits = _clean_mask_logits(logits.float())
    floor = settings.mask_floor
    floor_logit = math.log(floor / (1.0 - floor))
    boxes, masks, kept = [], [], []
    for k in range(len(detections)):
        support = (logits[k] > floor_logit).numpy()
        if not support.any():
            continue
        cell_rows = np.flatnonzero(support.any(axis=1))
        cell_cols = np.flatnonzero(support.any(axis=0))
        y0, y1 = _pixel_range(resampling.row_span, int(cell_rows[0]), int(cell_rows[-1]))
        x0, x1 = _pixel_range(resampling.col_span, int(cell_cols[0]), int(cell_cols[-1]))
        if y1 <= y0 or x1 <= x0:
            continue
        soft = torch.sigmoid_(_resample_region(resampling, logits[k], (y0, y1), (x0, x1))).numpy()
        box = tight_box(soft > floor)
        if box is None:
            continue
        bx0, by0, bx1, by1 = box
        boxes.append((x0 + bx0, y0 + by0, x0 + bx1, y0 + by1))
        masks.append(np.ascontiguousarray(soft[by0:by1, bx0:bx1]))
        kept.append(k)
    if not kept:
        return empty
    return np.array(boxes, np.int32).reshape(-1, 4), masks, kept


# ----------------------------------------------------------------------------- the network and the segmenter


class RTMDetNetwork:
    """A loaded RTMDet-Ins detector on a device: the expensive part, shared by segmenters.

    Thread-safe: the forward pass runs under a lock; nothing else is mutable.

    Attributes:
        model: the detector (eval mode).
        device: where it runs.
        half_precision: whether the forward runs in float16 autocast (CUDA).
        config_origin: which config built the model.
    """

    def __init__(self, model: nn.Module, *, device: str | None, origin: str, half_precision: bool | None = None) -> None:
        head = getattr(model, "bbox_head", None)
        if not isinstance(head, RTMDetInsHead):
            raise ValueError(f"expected a detector with an RTMDet-Ins head, got {type(model).__name__}")
        self.device = resolve_device(device)
        # fp16 on CUDA is the project-wide rule (inference.device); the reference runs float32.
        self.half_precision = use_half_precision(self.device) if half_precision is None else bool(half_precision)
        # Channels-last memory layout: the same convolutions, about 9 % less forward time on
        # 2 CPU cores at 640 (0.60 -> 0.55 s, RTMDet-Ins-L); logits move by float rounding only
        # (max 1.2e-6 on random weights), so masks stay equal to the reference's.
        self.model = model.to(self.device).eval().to(memory_format=torch.channels_last)
        self.config_origin = origin
        preprocessor = model.data_preprocessor
        # bgr_to_rgb=True means the network wants RGB (mmdet flips its BGR-loaded input); else BGR.
        self._rgb_input = bool(getattr(preprocessor, "_channel_conversion", False))
        if getattr(preprocessor, "_enable_normalize", False):
            mean, std = preprocessor.mean.detach().float(), preprocessor.std.detach().float()
        else:
            mean, std = torch.zeros(3), torch.ones(3)
        self._mean = mean.reshape(1, 3, 1, 1).to(self.device)
        self._std = std.reshape(1, 3, 1, 1).to(self.device)
        self._forward_lock = threading.Lock()

    @property
    def head(self) -> RTMDetInsHead:
        """The detector's RTMDet-Ins head."""
        return self.model.bbox_head

    def default_settings(self, *, score_threshold: float, max_instances: int | None) -> DecodeSettings:
        """The reference's decode settings from the config's ``test_cfg``, with the caller's threshold and cap."""
        test_cfg = self.head.test_cfg or {}
        min_size = test_cfg.get("min_bbox_size", -1)
        return DecodeSettings(
            score_threshold=max(float(score_threshold), float(test_cfg.get("score_thr", 0.0))),
            nms_pre=int(test_cfg.get("nms_pre", 1000)),
            nms_iou_threshold=float(test_cfg.get("nms", {}).get("iou_threshold", 0.6)),
            max_instances=int(max_instances if max_instances is not None else test_cfg.get("max_per_img", 100)),
            min_box_size=float(min_size) if min_size is not None and min_size >= 0 else None,
        )

    def preprocess(self, image: np.ndarray, det_size: int, *, with_mirror: bool) -> Preprocessed:
        """Letterbox and normalise an ``(H, W, 3)`` uint8 RGB image (and its mirror image as item 1)."""
        check_rgb_image(image)
        canvas, geometry = letterbox_image(image, det_size)
        canvases = [canvas]
        if with_mirror:
            canvases.append(_mirror_content(canvas, geometry))
        batch = torch.from_numpy(np.stack(canvases)).to(self.device).permute(0, 3, 1, 2).float()
        if not self._rgb_input:
            batch = batch.flip(1)  # RGB -> BGR, the order the model was trained on
        batch = ((batch - self._mean) / self._std).contiguous()
        return Preprocessed(batch, geometry)

    def forward(self, batch: Tensor) -> HeadOutputs:
        """Backbone, neck and head on a ``(B, 3, S, S)`` batch; outputs float32 on the CPU."""
        autocast = torch.autocast(device_type="cuda", dtype=torch.float16, enabled=self.half_precision)
        with self._forward_lock, torch.inference_mode(), autocast:
            features = self.model.extract_feat(batch.contiguous(memory_format=torch.channels_last))
            cls_scores, bbox_preds, kernel_preds, mask_feat = self.model.bbox_head(features)
        return HeadOutputs(
            tuple(t.float().cpu() for t in cls_scores),
            tuple(t.float().cpu() for t in bbox_preds),
            tuple(t.float().cpu() for t in kernel_preds),
            mask_feat.float().cpu(),
        )


def _check_det_size(det_size: int) -> int:
    if isinstance(det_size, bool) or not isinstance(det_size, int) or not 64 <= det_size <= 2048 or det_size % 32:
        raise ValueError(f"expected det_size a multiple of 32 in [64, 2048], got {det_size}")
    return det_size


class RTMDetSegmenter:
    """Finds anime characters with RTMDet-Ins (the ``rtmdetl_e60.ckpt`` model).

    The network (:class:`RTMDetNetwork`) is loaded once; :meth:`with_options`
    makes segmenters with other ``det_size`` / ``score_threshold`` / ``tta`` /
    ``max_instances`` that share it (no reload, no copy). :meth:`segment` may be
    called from several threads at once.

    Attributes:
        name: ``"rtmdet"``.
        network: the shared loaded network.
        det_size: side of the square detector input.
        tta: whether :meth:`segment` also detects on the mirrored picture (Nukki's
            option, not the reference's).
        decode_settings: thresholds and limits of :func:`select_detections` and
            :func:`decode_instance_masks`.
    """

    name = "rtmdet"

    def __init__(
        self,
        checkpoint_path: str | Path,
        *,
        det_size: int = 640,
        tta: bool = False,
        score_threshold: float = 0.3,
        device: str | None = None,
        max_instances: int | None = None,
        trust: bool = False,
        fallback_config: str | Path = DEFAULT_CONFIG_PATH,
    ) -> None:
        """Load ``checkpoint_path`` (its real mmengine format) strictly.

        Args:
            checkpoint_path: ``rtmdetl_e60.ckpt`` or a file of the same format.
            det_size: detector input side, a multiple of 32 in ``[64, 2048]``.
            tta: also detect on the mirrored picture and merge (see :mod:`inference.tta`).
            score_threshold: instances scoring at or below this are dropped before mask decoding.
            device: ``"cpu"``, ``"cuda"``, or ``None`` for CUDA when available
                (see :func:`inference.device.resolve_device`).
            max_instances: at most this many instances per picture (default: the
                config's ``max_per_img``).
            trust: allow a checkpoint holding arbitrary Python objects (only for a
                file the user chose to trust).
            fallback_config: flat config used when the checkpoint carries none.

        Raises:
            CheckpointError: the file is unreadable or its weights do not fit.
            ModelUnavailable: CUDA was asked for but is not there.
            ValueError: an option is out of range.
        """
        _check_det_size(det_size)
        network = _load_network(checkpoint_path, device=device, trust=trust, fallback_config=fallback_config)
        self._configure(network, det_size, tta, score_threshold, max_instances)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        *,
        device: str | None = None,
        trust: bool = False,
        fallback_config: str | Path = DEFAULT_CONFIG_PATH,
    ) -> RTMDetSegmenter:
        """Load the network once, with default options (the registry's loader).

        Use :meth:`with_options` for other ``det_size`` / ``score_threshold`` / ``tta``.
        """
        network = _load_network(path, device=device, trust=trust, fallback_config=fallback_config)
        segmenter = cls.__new__(cls)
        segmenter._configure(network, 640, False, 0.3, None)
        return segmenter

    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        *,
        det_size: int = 640,
        tta: bool = False,
        score_threshold: float = 0.3,
        device: str | None = None,
        max_instances: int | None = None,
    ) -> RTMDetSegmenter:
        """Wrap an already built detector (e.g. from :func:`build_detector` with random weights: tests, benchmarks)."""
        _check_det_size(det_size)
        segmenter = cls.__new__(cls)
        network = RTMDetNetwork(model, device=device, origin="model given by the caller")
        segmenter._configure(network, det_size, tta, score_threshold, max_instances)
        return segmenter

    def _configure(
        self, network: RTMDetNetwork, det_size: int, tta: bool, score_threshold: float, max_instances: int | None
    ) -> None:
        self.network = network
        self.det_size = _check_det_size(det_size)
        self.tta = bool(tta)
        self.score_threshold = float(score_threshold)
        self.decode_settings = network.default_settings(score_threshold=score_threshold, max_instances=max_instances)

    def with_options(
        self,
        *,
        det_size: int | None = None,
        score_threshold: float | None = None,
        tta: bool | None = None,
        max_instances: int | None = None,
        decode_settings: DecodeSettings | None = None,
    ) -> RTMDetSegmenter:
        """A segmenter sharing this one's network with some options changed (``None`` keeps them).

        Cheap: no weights are loaded or copied (``new.network is self.network``).

        Args:
            det_size: detector input side, a multiple of 32 in ``[64, 2048]``.
            score_threshold: in ``[0, 1]``.
            tta: flip test-time augmentation.
            max_instances: at most this many instances.
            decode_settings: replaces every decoding option at once (for the
                options that depart from the reference; overrides ``score_threshold``
                and ``max_instances``).

        Raises:
            ValueError: an option is out of range.
        """
        other = RTMDetSegmenter.__new__(RTMDetSegmenter)
        other.network = self.network
        other.det_size = _check_det_size(self.det_size if det_size is None else det_size)
        other.tta = self.tta if tta is None else bool(tta)
        if decode_settings is not None:
            if not isinstance(decode_settings, DecodeSettings):
                raise ValueError(f"expected DecodeSettings, got {type(decode_settings).__name__}")
            other.score_threshold = decode_settings.score_threshold
            other.decode_settings = decode_settings
            return other
        other.score_threshold = self.score_threshold if score_threshold is None else float(score_threshold)
        cap = self.decode_settings.max_instances if max_instances is None else max_instances
        base = self.network.default_settings(score_threshold=other.score_threshold, max_instances=cap)
        other.decode_settings = replace(
            self.decode_settings, score_threshold=base.score_threshold, max_instances=base.max_instances
        )
        return other

    # -- the shared network's parts ------------------------------------------------------

    @property
    def model(self) -> nn.Module:
        """The detector (shared with every segmenter made by :meth:`with_options`)."""
        return self.network.model

    @property
    def device(self) -> torch.device:
        """Where the network runs."""
        return self.network.device

    @property
    def config_origin(self) -> str:
        """Which config built the network."""
        return self.network.config_origin

    # -- stages (public so that bench/detect.py can time them) --------------------------

    def preprocess(self, image: np.ndarray, *, with_mirror: bool | None = None) -> Preprocessed:
        """Letterbox and normalise an ``(H, W, 3)`` uint8 RGB image.

        Args:
            with_mirror: add the mirrored picture as batch item 1 (default: ``self.tta``).
        """
        return self.network.preprocess(image, self.det_size, with_mirror=self.tta if with_mirror is None else with_mirror)

    def forward(self, batch: Tensor) -> HeadOutputs:
        """Backbone, neck and head on a ``(B, 3, S, S)`` batch; outputs in float32 on the CPU."""
        return self.network.forward(batch)

    def decode(self, outputs: HeadOutputs, letterbox: Letterbox, *, index: int = 0) -> Instances:
        """Instances of batch item ``index`` on its ``(H, W)`` source picture (no TTA merge)."""
        head = self.network.head
        with torch.inference_mode():
            detections = select_detections(head, outputs, index, letterbox, self.decode_settings)
            boxes, masks, kept = decode_instance_masks(
                head, outputs.mask_feat[index], detections, letterbox, self.decode_settings
            )
        notes: tuple[str, ...] = ()
        if detections.ignored_non_finite:
            count = detections.ignored_non_finite
            notes = (f"The anime model gave NaN/Inf for {count} candidate(s); they were ignored.",)
        scores = detections.scores.numpy()[kept] if kept else np.zeros(0, np.float32)
        return Instances(letterbox.source_size, boxes, tuple(masks), scores, self.name, None, notes)

    def merge_mirrored(self, original: Instances, mirrored: Instances) -> Instances:
        """Flip TTA: map instances found on the mirrored picture back and merge them with ``original``."""
        return merge_flip_instances(original, flip_instances_horizontally(mirrored))

    # -- the Segmenter protocol ---------------------------------------------------------

    def segment(self, image: np.ndarray) -> Instances:
        """Every character in an ``(H, W, 3)`` uint8 RGB image, as soft masks cropped to their support."""
        prepared = self.preprocess(image)
        outputs = self.forward(prepared.batch)
        instances = self.decode(outputs, prepared.letterbox, index=0)
        if self.tta:
            instances = self.merge_mirrored(instances, self.decode(outputs, prepared.letterbox, index=1))
        return instances


def _load_network(
    path: str | Path, *, device: str | None, trust: bool, fallback_config: str | Path
) -> RTMDetNetwork:
    resolved = resolve_device(device)  # fail on a missing GPU before reading 230 MB
    source = Path(path).name
    checkpoint = load_checkpoint(path, trust=trust)
    model, origin = detector_from_checkpoint(checkpoint, source=source, fallback_config=fallback_config)
    del checkpoint
    return RTMDetNetwork(model, device=str(resolved), origin=origin)
