"""The anime instance model: RTMDet-Ins-L (``rtmdetl_e60.ckpt``) as a :class:`~inference.segmenter.Segmenter`.

This is the only module of Nukki that imports mmdet, mmcv and mmengine; import
it lazily (inside functions) from everywhere else.

Loading
    ``rtmdetl_e60.ckpt`` is an mmengine checkpoint: ``state_dict`` plus
    ``meta['cfg']``, the full training config as Python source written for an
    older mmdet (``file_client_args``, ``custom_imports`` of the ``animeinsseg``
    package, head type ``RTMDetInsSepBNHeadCustom``). That source is **read, never
    executed**: :func:`read_config_literals` accepts only plain assignments of
    literals and ``dict(...)`` calls, so a crafted checkpoint cannot run code.
    :func:`inference_model_config` then keeps only ``model`` and makes it
    buildable with mmdet 3.3 (see its docstring); the custom head becomes
    :class:`GuardedRTMDetInsSepBNHead`, registered here. A checkpoint without a usable
    embedded config is built from the project's own config,
    ``models/rtmdet_ins_l_anime.py``. The file itself is read by
    :func:`inference.weights.load_checkpoint` (``weights_only`` unless trusted).
    Weights load strictly: a missing, unexpected or mis-shaped key is a
    :class:`~inference.weights.CheckpointError`, never ignored.

Inference (no ``inference_detector``)
    1. letterbox: long side to ``det_size`` (bilinear, as mmdet's ``Resize``),
       pad bottom/right with 114, normalise with the config's mean/std in the
       model's channel order (BGR for the anime model);
    2. backbone, neck and head forward (one batch; with flip TTA the mirrored
       picture is the second image of the batch), under a lock, fp16 autocast on CUDA;
    3. :func:`select_detections`: score threshold first, then top-k per level,
       box decoding, NMS and ``max_instances`` - all before any mask work;
    4. :func:`decode_instance_masks`: for each kept instance only, the dynamic
       mask convolutions run on the stride-8 prototype cells under its box, and
       the logits are resampled straight onto the box in source pixels
       (bilinear, the same geometry as mmdet's upsample-then-rescale) and passed
       through a sigmoid. Masks stay soft and box-sized; nothing is ever
       upsampled to the full picture per instance.
"""

from __future__ import annotations

import ast
import copy
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import mmdet.models  # noqa: F401  (registers mmdet's model classes)
from mmcv.ops import batched_nms
from mmdet.models.dense_heads import RTMDetInsHead, RTMDetInsSepBNHead
from mmdet.registry import MODELS
from mmdet.structures.bbox import distance2bbox
from mmengine.config import ConfigDict
from mmengine.registry import DefaultScope

from inference.image_io import check_rgb_image
from inference.instances import Instances
from inference.letterbox import Letterbox, plan_letterbox
from inference.tta import flip_instances_horizontally, merge_flip_instances
from inference.weights import CheckpointError, extract_state_dict, load_checkpoint, load_weights_strict

__all__ = [
    "CheckpointError",
    "DEFAULT_CONFIG_PATH",
    "DecodeSettings",
    "Detections",
    "GuardedRTMDetInsSepBNHead",
    "HeadOutputs",
    "Preprocessed",
    "RTMDetSegmenter",
    "build_detector",
    "decode_instance_masks",
    "detector_from_checkpoint",
    "inference_model_config",
    "letterbox_image",
    "load_detector_weights",
    "load_model_config",
    "read_config_literals",
    "select_detections",
    "set_fixed_box_predictions",
]

#: The project's own flat config for RTMDet-Ins-L with one class.
DEFAULT_CONFIG_PATH = Path(__file__).resolve().parents[1] / "models" / "rtmdet_ins_l_anime.py"
#: Grey the reference pipeline pads the letterbox with (mmdet ``Pad(pad_val=114)``).
PAD_VALUE = 114
#: Registry name of :class:`GuardedRTMDetInsSepBNHead`.
GUARDED_HEAD_TYPE = "GuardedRTMDetInsSepBNHead"
#: Head types built as :class:`GuardedRTMDetInsSepBNHead` (same parameters).
SEP_BN_HEAD_TYPES = frozenset({"RTMDetInsSepBNHeadCustom", "RTMDetInsSepBNHead", GUARDED_HEAD_TYPE})
#: Mask logits are clamped to this range (the reference head's fp16 guard).
MASK_LOGIT_LIMIT = 8192.0

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


# ----------------------------------------------------------------------------- configs


class _UnsupportedExpression(ValueError):
    """A config value is not a plain literal."""


_BINARY_OPERATORS = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.FloorDiv: lambda a, b: a // b,
}


def _literal_value(node: ast.AST, names: Mapping[str, object]) -> object:
    """Evaluate a literal-only expression; anything else raises :class:`_UnsupportedExpression`."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        items = [_literal_value(item, names) for item in node.elts]
        return tuple(items) if isinstance(node, ast.Tuple) else (set(items) if isinstance(node, ast.Set) else items)
    if isinstance(node, ast.Dict):
        if any(key is None for key in node.keys):
            raise _UnsupportedExpression("dict unpacking (**)")
        return {_literal_value(k, names): _literal_value(v, names) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
        if node.args or any(kw.arg is None for kw in node.keywords):
            raise _UnsupportedExpression("dict() with positional or ** arguments")
        return {kw.arg: _literal_value(kw.value, names) for kw in node.keywords}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal_value(node.operand, names)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
        raise _UnsupportedExpression("sign of a non-number")
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY_OPERATORS:
        left, right = _literal_value(node.left, names), _literal_value(node.right, names)
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (left, right))
        joins = isinstance(node.op, ast.Add) and type(left) is type(right) and isinstance(left, (str, list, tuple))
        if numbers or joins:
            return _BINARY_OPERATORS[type(node.op)](left, right)
        raise _UnsupportedExpression("arithmetic on non-numbers")
    if isinstance(node, ast.Name):
        if node.id in names:
            return copy.deepcopy(names[node.id])
        raise _UnsupportedExpression(f"name {node.id!r} not assigned before")
    raise _UnsupportedExpression(type(node).__name__)


def read_config_literals(text: str) -> dict[str, object]:
    """Read an mmengine Python-format config **without executing it**.

    Only top-level ``name = value`` statements whose value is built from
    literals, ``dict(key=...)`` calls, earlier names, signs and ``+ - * / //``
    are read. Everything else (imports, function calls, other statements) is
    skipped, and a name whose value is skipped is absent from the result.

    Args:
        text: the config source, e.g. ``meta['cfg']`` of an mmengine checkpoint.

    Returns:
        ``{name: value}`` with dicts, lists, tuples, strings and numbers.

    Raises:
        ValueError: ``text`` is not valid Python.
    """
    try:
        tree = ast.parse(text)
    except SyntaxError as error:
        raise ValueError(f"expected a Python-format config, got a syntax error: {error}") from error
    names: dict[str, object] = {}
    for statement in tree.body:
        if not (isinstance(statement, ast.Assign) and len(statement.targets) == 1):
            continue
        target = statement.targets[0]
        if not isinstance(target, ast.Name):
            continue
        try:
            names[target.id] = _literal_value(statement.value, names)
        except _UnsupportedExpression:
            names.pop(target.id, None)
    return names


def _rename_keys(value: object, old: str, new: str) -> object:
    """Copy of nested dicts/lists with every dict key ``old`` renamed to ``new``."""
    if isinstance(value, dict):
        return {(new if key == old else key): _rename_keys(item, old, new) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_rename_keys(item, old, new) for item in value)
    return value


def _drop_keys(value: object, key_to_drop: str) -> object:
    """Copy of nested dicts/lists without any dict key ``key_to_drop``."""
    if isinstance(value, dict):
        return {key: _drop_keys(item, key_to_drop) for key, item in value.items() if key != key_to_drop}
    if isinstance(value, (list, tuple)):
        return type(value)(_drop_keys(item, key_to_drop) for item in value)
    return value


def _replace_sync_bn(value: object) -> object:
    """Copy of nested dicts/lists with every ``type='SyncBN'`` norm replaced by ``'BN'``."""
    if isinstance(value, dict):
        out = {key: _replace_sync_bn(item) for key, item in value.items()}
        if out.get("type") in ("SyncBN", "mmdet.SyncBN", "mmcv.SyncBN"):
            out["type"] = "BN"
        return out
    if isinstance(value, (list, tuple)):
        return type(value)(_replace_sync_bn(item) for item in value)
    return value


def inference_model_config(config: Mapping[str, object]) -> dict[str, object]:
    """The ``model`` part of a (training) config, made buildable for inference with mmdet 3.3.

    * ``file_client_args`` is renamed ``backend_args`` (3.0-era name);
    * ``custom_imports`` and everything but ``model`` are left out (dataloaders,
      optimiser, schedules, hooks, visualiser: nothing inference needs);
    * ``model.train_cfg`` (assigner settings) and every ``init_cfg`` (pretrained
      downloads) are dropped; ``model.data_preprocessor.batch_augments`` is None;
    * ``SyncBN`` becomes ``BN`` (same parameters; SyncBN needs a process group);
    * the head ``RTMDetInsSepBNHeadCustom`` (or mmdet's ``RTMDetInsSepBNHead``)
      becomes :class:`GuardedRTMDetInsSepBNHead`.

    Args:
        config: ``{name: value}`` as returned by :func:`read_config_literals`.

    Returns:
        A deep copy of the model dict, ready for :func:`build_detector`.

    Raises:
        ValueError: there is no ``model`` dict with a ``bbox_head``, or the head
            is of another type than RTMDet-Ins with separate BN.
    """
    model = config.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("bbox_head"), dict):
        raise ValueError(f"expected a config with a model dict holding bbox_head, got model={type(model).__name__}")
    model = copy.deepcopy(model)
    model = _rename_keys(model, "file_client_args", "backend_args")
    model = _drop_keys(model, "init_cfg")
    model = _replace_sync_bn(model)
    model.pop("train_cfg", None)
    if isinstance(model.get("data_preprocessor"), dict):
        model["data_preprocessor"]["batch_augments"] = None
    head = model["bbox_head"]
    head.pop("train_cfg", None)
    head_type = str(head.get("type", "")).split(".")[-1]
    if head_type not in SEP_BN_HEAD_TYPES:
        raise ValueError(f"expected an RTMDet-Ins head of type {sorted(SEP_BN_HEAD_TYPES)}, got {head.get('type')!r}")
    head["type"] = GUARDED_HEAD_TYPE
    return model


def load_model_config(path: str | Path = DEFAULT_CONFIG_PATH) -> dict[str, object]:
    """The inference model dict of a flat config file (read, not executed), e.g. the project's own."""
    text = Path(path).read_text(encoding="utf-8")
    return inference_model_config(read_config_literals(text))


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


def letterbox_image(image: np.ndarray, det_size: int, *, pad_value: int = PAD_VALUE) -> tuple[np.ndarray, Letterbox]:
    """Fit an ``(H, W, 3)`` uint8 image into a ``det_size`` square as mmdet's test pipeline does.

    The long side becomes ``det_size`` keeping the aspect ratio (bilinear, like
    mmdet's ``Resize``; small pictures are enlarged), and the canvas is padded at
    the bottom and right with ``pad_value``.

    Returns:
        ``(canvas (det_size, det_size, 3) uint8, geometry)``; channels unchanged.
    """
    geometry = plan_letterbox(image.shape[:2], det_size, allow_upscale=True, centre=False)
    h, w = geometry.scaled_size
    scaled = image if (h, w) == image.shape[:2] else cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    canvas = np.full((det_size, det_size, image.shape[2]), pad_value, np.uint8)
    ox, oy = geometry.offset
    canvas[oy : oy + h, ox : ox + w] = scaled
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
    """Raw head outputs for a batch, float32, on the model's device.

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
    """How raw outputs become instances.

    Attributes:
        score_threshold: keep candidates scoring at least this, before anything else.
        nms_pre: at most this many candidates per pyramid level enter NMS.
        nms_iou_threshold: NMS suppresses boxes overlapping a better one more than this.
        max_instances: keep at most this many after NMS (best first); masks are
            decoded only for these.
        min_box_size: boxes must be wider and taller than this (canvas pixels).
        mask_margin_cells: each mask is decoded this many stride-8 prototype cells
            beyond its box on every side (the mask may reach slightly past the box).
    """

    score_threshold: float = 0.3
    nms_pre: int = 1000
    nms_iou_threshold: float = 0.6
    max_instances: int = 100
    min_box_size: float = 0.0
    mask_margin_cells: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.score_threshold <= 1.0:
            raise ValueError(f"expected score_threshold in [0, 1], got {self.score_threshold}")
        if self.nms_pre < 1 or self.max_instances < 1:
            raise ValueError(f"expected nms_pre and max_instances >= 1, got {self.nms_pre} and {self.max_instances}")
        if not 0.0 < self.nms_iou_threshold <= 1.0:
            raise ValueError(f"expected nms_iou_threshold in (0, 1], got {self.nms_iou_threshold}")
        if self.mask_margin_cells < 0 or self.min_box_size < 0:
            raise ValueError(
                "expected mask_margin_cells and min_box_size >= 0, "
                f"got {self.mask_margin_cells} and {self.min_box_size}"
            )


@dataclass(frozen=True)
class Detections:
    """Kept detections of one canvas, best score first, on the CPU.

    Attributes:
        boxes: ``(K, 4)`` float32 ``xyxy`` on the canvas, clipped to the picture's region.
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

    Same rules as mmdet's ``RTMDetInsHead.predict_by_feat`` (per level: score filter,
    then the ``nms_pre`` best; box decoding from the prior points; ``min_box_size``;
    class-aware NMS; ``max_instances`` best), except that the score threshold is
    ``settings.score_threshold`` (inclusive). Because NMS only lets a box suppress
    lower-scoring ones, thresholding first keeps exactly the instances mmdet would
    keep at a lower threshold and then filter.
    """
    featmap_sizes = [tuple(level.shape[-2:]) for level in outputs.cls_scores]
    device = outputs.cls_scores[0].device
    level_priors = head.prior_generator.grid_priors(featmap_sizes, dtype=torch.float32, device=device, with_stride=True)
    boxes_parts, scores_parts, labels_parts, kernels_parts, priors_parts = [], [], [], [], []
    ignored = 0
    for cls_score, bbox_pred, kernel_pred, priors in zip(
        outputs.cls_scores, outputs.bbox_preds, outputs.kernel_preds, level_priors
    ):
        logits = cls_score[index].permute(1, 2, 0).reshape(-1, cls_score.shape[1])
        ignored += int(torch.isneginf(logits).all(dim=1).sum())
        scores = logits.sigmoid()
        prior_index, labels = torch.nonzero(scores >= settings.score_threshold, as_tuple=True)
        level_scores = scores[prior_index, labels]
        if level_scores.numel() > settings.nms_pre:
            level_scores, best = level_scores.topk(settings.nms_pre)
            prior_index, labels = prior_index[best], labels[best]
        distances = bbox_pred[index].permute(1, 2, 0).reshape(-1, 4)[prior_index]
        kernels = kernel_pred[index].permute(1, 2, 0).reshape(-1, kernel_pred.shape[1])[prior_index]
        kept_priors = priors[prior_index]
        boxes_parts.append(distance2bbox(kept_priors[:, :2], distances))
        scores_parts.append(level_scores)
        labels_parts.append(labels)
        kernels_parts.append(kernels)
        priors_parts.append(kept_priors)
    boxes = torch.cat(boxes_parts).float().cpu()
    scores = torch.cat(scores_parts).float().cpu()
    labels = torch.cat(labels_parts).cpu()
    kernels = torch.cat(kernels_parts).float().cpu()
    priors = torch.cat(priors_parts).float().cpu()

    ox, oy = letterbox.offset
    h, w = letterbox.scaled_size
    boxes[:, 0::2] = boxes[:, 0::2].clamp(ox, ox + w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(oy, oy + h)
    sizes = boxes[:, 2:] - boxes[:, :2]
    valid = (sizes > settings.min_box_size).all(dim=1)
    boxes, scores, labels, kernels, priors = boxes[valid], scores[valid], labels[valid], kernels[valid], priors[valid]
    if boxes.shape[0]:
        _, keep = batched_nms(boxes, scores, labels, dict(type="nms", iou_threshold=settings.nms_iou_threshold))
        keep = keep[: settings.max_instances]
        boxes, scores, labels, kernels, priors = boxes[keep], scores[keep], labels[keep], kernels[keep], priors[keep]
    return Detections(boxes, scores, labels, kernels, priors, ignored)


def _interpolation_matrix(feature_coords: Tensor, size: int) -> tuple[Tensor, int]:
    """Bilinear weights from a run of feature cells to sample points.

    Args:
        feature_coords: ``(n,)`` float positions in feature-cell units (cell ``i``'s centre is ``i``).
        size: number of cells along this axis.

    Returns:
        ``(weights (n, m), first)``: sample ``k`` equals ``weights[k] @ cells[first:first + m]``.
        Positions are clamped to ``[0, size - 1]`` like ``F.interpolate(align_corners=False)``.
    """
    coords = feature_coords.clamp(0, size - 1)
    low = coords.floor().long()
    high = (low + 1).clamp(max=size - 1)
    frac = coords - low
    first, last = int(low.min()), int(high.max())
    weights = torch.zeros(coords.shape[0], last - first + 1, dtype=torch.float32)
    rows = torch.arange(coords.shape[0])
    weights.index_put_((rows, low - first), 1 - frac, accumulate=True)
    weights.index_put_((rows, high - first), frac, accumulate=True)
    return weights, first


def _dynamic_mask_logits(
    head: RTMDetInsHead, cell_feat: Tensor, cell_x: Tensor, cell_y: Tensor, kernel: Tensor, prior: Tensor
) -> Tensor:
    """One instance's mask logits on a window of prototype cells: ``(h, w)``.

    Args:
        cell_feat: ``(P, h, w)`` prototypes of the window.
        cell_x, cell_y: ``(w,)`` and ``(h,)`` canvas coordinates of the window's cell points.
        kernel: ``(G,)`` the instance's dynamic conv parameters.
        prior: ``(4,)`` ``(x, y, stride_x, stride_y)`` of its prior point.

    The 1x1 dynamic convolutions are per-pixel, so a window gives exactly the
    values mmdet computes for those cells on the full map.
    """
    weights, biases = head.parse_dynamic_params(kernel[None])
    height, width = cell_feat.shape[-2:]
    scale = prior[2] * 8
    rel_x = ((prior[0] - cell_x) / scale)[None, :].expand(height, width)
    rel_y = ((prior[1] - cell_y) / scale)[:, None].expand(height, width)
    x = torch.cat([rel_x[None], rel_y[None], cell_feat], dim=0).reshape(cell_feat.shape[0] + 2, -1)
    for layer, (weight, bias) in enumerate(zip(weights, biases)):
        x = weight.reshape(weight.shape[0], -1) @ x + bias[:, None]
        if layer < len(weights) - 1:
            x = F.relu(x)
    return x.reshape(height, width)


def decode_instance_masks(
    head: RTMDetInsHead,
    mask_feat: Tensor,
    detections: Detections,
    letterbox: Letterbox,
    *,
    mask_margin_cells: float = 1.0,
) -> tuple[np.ndarray, list[np.ndarray], list[int]]:
    """Soft masks of the kept detections, each cropped to its box in source pixels.

    For each detection, the source-pixel box (its detector box plus
    ``mask_margin_cells`` prototype cells on each side, clipped to the picture)
    is mapped onto the stride-8 prototype grid; the dynamic convolutions run on
    the cells under it only, and the logits are resampled bilinearly straight to
    the box's pixels, then a sigmoid gives the soft mask.

    Geometry, as mmdet's upsample-by-8 then rescale (one resampling instead of
    two): source pixel ``x`` samples canvas point ``ox + (x + 0.5) * sx``, and
    prototype cell ``i`` (whose logit is computed for the prior-grid point
    ``8 i``) stands for canvas point ``8 i + 4`` - the convention the model was
    trained with (its mask loss compares cell ``i`` with ground-truth pixel ``8 i + 4``).

    Args:
        head: the detector's head (prior generator, dynamic conv layout).
        mask_feat: ``(P, S/8, S/8)`` prototypes of this canvas.
        detections: from :func:`select_detections` on the same canvas.
        letterbox: its geometry.

    Returns:
        ``(boxes (N, 4) int32, masks, kept)``: box ``i`` holds ``masks[i]``, an
        ``(y1 - y0, x1 - x0)`` float32 array in ``[0, 1]``; ``kept`` lists which
        detections they are (a box that is empty in the picture is skipped).
    """
    mask_feat = mask_feat.float().cpu()
    stride = float(head.prior_generator.strides[0][0])
    offset = float(head.prior_generator.offset)
    cells_y, cells_x = mask_feat.shape[-2:]
    height, width = letterbox.source_size
    sx, sy = letterbox.scale
    ox, oy = letterbox.offset
    source_boxes = letterbox.boxes_to_source(detections.boxes.numpy())
    margin_x, margin_y = mask_margin_cells * stride / sx, mask_margin_cells * stride / sy
    boxes, masks, kept = [], [], []
    for k, (x0, y0, x1, y1) in enumerate(source_boxes):
        bx0, by0 = max(0, math.floor(x0 - margin_x)), max(0, math.floor(y0 - margin_y))
        bx1, by1 = min(width, math.ceil(x1 + margin_x)), min(height, math.ceil(y1 + margin_y))
        if bx1 <= bx0 or by1 <= by0:
            continue
        xs = ox + (torch.arange(bx0, bx1, dtype=torch.float32) + 0.5) * sx
        ys = oy + (torch.arange(by0, by1, dtype=torch.float32) + 0.5) * sy
        weights_x, first_x = _interpolation_matrix(xs / stride - 0.5, cells_x)
        weights_y, first_y = _interpolation_matrix(ys / stride - 0.5, cells_y)
        window = mask_feat[:, first_y : first_y + weights_y.shape[1], first_x : first_x + weights_x.shape[1]]
        cell_x = (torch.arange(first_x, first_x + weights_x.shape[1], dtype=torch.float32) + offset) * stride
        cell_y = (torch.arange(first_y, first_y + weights_y.shape[1], dtype=torch.float32) + offset) * stride
        logits = _dynamic_mask_logits(head, window, cell_x, cell_y, detections.kernels[k], detections.priors[k])
        logits = _clean_mask_logits(weights_y @ logits @ weights_x.T)
        boxes.append((bx0, by0, bx1, by1))
        masks.append(torch.sigmoid_(logits).numpy())
        kept.append(k)
    return np.array(boxes, np.int32).reshape(-1, 4), masks, kept


# ----------------------------------------------------------------------------- the segmenter


def _resolve_device(device: str | None) -> torch.device:
    """``None`` means CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, str) or not (device == "cpu" or device.startswith("cuda")):
        raise ValueError(f"expected device None, 'cpu' or 'cuda[:N]', got {device!r}")
    return torch.device(device)


class RTMDetSegmenter:
    """Finds anime characters with RTMDet-Ins (the ``rtmdetl_e60.ckpt`` model).

    The model is loaded once; :meth:`segment` may be called from several
    threads (app sessions) at once: the network forward runs under a lock and
    everything else works on per-call data only.

    Attributes:
        name: ``"rtmdet"``.
        model: the detector (eval mode).
        device: where it runs.
        det_size: side of the square detector input.
        tta: whether :meth:`segment` also detects on the mirrored picture.
        decode_settings: thresholds and limits of :func:`select_detections`.
        config_origin: which config built the model.
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
            score_threshold: instances scoring below this are dropped before mask decoding.
            device: ``"cpu"``, ``"cuda"``, or ``None`` for CUDA when available
                (CUDA runs the network in fp16 autocast).
            max_instances: at most this many instances per picture (default: the
                config's ``max_per_img``).
            trust: allow a checkpoint holding arbitrary Python objects (only for a
                file the user chose to trust).
            fallback_config: flat config used when the checkpoint carries none.

        Raises:
            CheckpointError: the file is unreadable or its weights do not fit.
            ValueError: an option is out of range.
        """
        source = Path(checkpoint_path).name
        checkpoint = load_checkpoint(checkpoint_path, trust=trust)
        model, origin = detector_from_checkpoint(checkpoint, source=source, fallback_config=fallback_config)
        del checkpoint
        self._setup(model, det_size, tta, score_threshold, device, max_instances, origin)

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
        segmenter = cls.__new__(cls)
        segmenter._setup(model, det_size, tta, score_threshold, device, max_instances, "model given by the caller")
        return segmenter

    def _setup(
        self,
        model: nn.Module,
        det_size: int,
        tta: bool,
        score_threshold: float,
        device: str | None,
        max_instances: int | None,
        origin: str,
    ) -> None:
        if not isinstance(det_size, int) or not 64 <= det_size <= 2048 or det_size % 32:
            raise ValueError(f"expected det_size a multiple of 32 in [64, 2048], got {det_size}")
        head = getattr(model, "bbox_head", None)
        if not isinstance(head, RTMDetInsHead):
            raise ValueError(f"expected a detector with an RTMDet-Ins head, got {type(model).__name__}")
        test_cfg = head.test_cfg or {}
        self.device = _resolve_device(device)
        self.model = model.to(self.device).eval()
        self.det_size = det_size
        self.tta = bool(tta)
        self.config_origin = origin
        self.decode_settings = DecodeSettings(
            score_threshold=float(score_threshold),
            nms_pre=int(test_cfg.get("nms_pre", 1000)),
            nms_iou_threshold=float(test_cfg.get("nms", {}).get("iou_threshold", 0.6)),
            max_instances=int(max_instances if max_instances is not None else test_cfg.get("max_per_img", 100)),
            min_box_size=float(max(0, test_cfg.get("min_bbox_size", 0))),
        )
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

    # -- stages (public so that bench/detect.py can time them) --------------------------

    def preprocess(self, image: np.ndarray, *, with_mirror: bool | None = None) -> Preprocessed:
        """Letterbox and normalise an ``(H, W, 3)`` uint8 RGB image.

        Args:
            with_mirror: add the mirrored picture as batch item 1 (default: ``self.tta``).
        """
        check_rgb_image(image)
        canvas, geometry = letterbox_image(image, self.det_size)
        canvases = [canvas]
        if self.tta if with_mirror is None else with_mirror:
            canvases.append(_mirror_content(canvas, geometry))
        batch = torch.from_numpy(np.stack(canvases)).to(self.device).permute(0, 3, 1, 2).float()
        if not self._rgb_input:
            batch = batch.flip(1)  # RGB -> BGR, the order the model was trained on
        batch = ((batch - self._mean) / self._std).contiguous()
        return Preprocessed(batch, geometry)

    def forward(self, batch: Tensor) -> HeadOutputs:
        """Backbone, neck and head on a ``(B, 3, S, S)`` batch; outputs in float32."""
        autocast = torch.autocast(device_type="cuda", dtype=torch.float16, enabled=self.device.type == "cuda")
        with self._forward_lock, torch.inference_mode(), autocast:
            features = self.model.extract_feat(batch)
            cls_scores, bbox_preds, kernel_preds, mask_feat = self.model.bbox_head(features)
        return HeadOutputs(
            tuple(t.float() for t in cls_scores),
            tuple(t.float() for t in bbox_preds),
            tuple(t.float() for t in kernel_preds),
            mask_feat.float(),
        )

    def decode(self, outputs: HeadOutputs, letterbox: Letterbox, *, index: int = 0) -> Instances:
        """Instances of batch item ``index`` on its ``(H, W)`` source picture (no TTA merge)."""
        head = self.model.bbox_head
        with torch.inference_mode():
            detections = select_detections(head, outputs, index, letterbox, self.decode_settings)
            boxes, masks, kept = decode_instance_masks(
                head,
                outputs.mask_feat[index],
                detections,
                letterbox,
                mask_margin_cells=self.decode_settings.mask_margin_cells,
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
        """Every character in an ``(H, W, 3)`` uint8 RGB image, as box-cropped soft masks."""
        prepared = self.preprocess(image)
        outputs = self.forward(prepared.batch)
        instances = self.decode(outputs, prepared.letterbox, index=0)
        if self.tta:
            instances = self.merge_mirrored(instances, self.decode(outputs, prepared.letterbox, index=1))
        return instances


# ----------------------------------------------------------------------------- test/bench hook


def set_fixed_box_predictions(
    model: nn.Module,
    *,
    box_size: tuple[float, float],
    score_logit: float = 2.0,
    score_spread: float = 1.0,
    mask_sharpness: float = 8.0,
    calibration_size: int = 256,
) -> None:
    """Make a randomly initialised detector predict plausible instances (tests and benchmarks only).

    Afterwards every prior predicts:

    * a ``box_size = (width, height)`` canvas-pixel box centred on its point;
    * a class logit that still depends on the picture (the random cls weights,
      rescaled on a seeded noise image so that the logits have mean
      ``score_logit`` and standard deviation ``score_spread``): scores are
      distinct, so NMS and top-k behave as on a real picture;
    * a diamond-shaped mask centred on its point whose tips touch the box edges:
      mask logit ``mask_sharpness * (1 - |dx| / (width / 2) - |dy| / (height / 2))``.
    """
    head = model.bbox_head
    width, height = box_size
    prototypes = head.num_prototypes
    cls_statistics: dict[int, tuple[float, float]] = {}
    hooks = [
        cls.register_forward_hook(
            lambda _module, _inputs, output, level=level: cls_statistics.__setitem__(
                level, (float(output.float().mean()), float(output.float().std()))
            )
        )
        for level, cls in enumerate(head.rtm_cls)
    ]
    noise = torch.randn(1, 3, calibration_size, calibration_size, generator=torch.Generator().manual_seed(0))
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            head(model.extract_feat(noise.to(device)))
    finally:
        for hook in hooks:
            hook.remove()
    with torch.no_grad():
        for level, (reg, cls, kernel) in enumerate(zip(head.rtm_reg, head.rtm_cls, head.rtm_kernel)):
            stride = float(head.prior_generator.strides[level][0])
            reg.weight.zero_()
            reg.bias.copy_(torch.tensor([width / 2, height / 2, width / 2, height / 2]) / stride)
            mean, std = cls_statistics[level]
            gain = score_spread / max(std, 1e-12)
            cls.weight.mul_(gain)
            cls.bias.copy_(score_logit - gain * (mean - cls.bias))
            # Dynamic convs: layer 0 gives (rx, -rx, ry, -ry), layer 1 passes them through
            # (ReLU makes |rx| and |ry| out of the pairs), layer 2 sums them into the diamond.
            layer0 = torch.zeros(head.dyconv_channels, prototypes + 2)
            layer0[0, 0], layer0[1, 0], layer0[2, 1], layer0[3, 1] = 1.0, -1.0, 1.0, -1.0
            layer1 = torch.eye(head.dyconv_channels)
            layer2 = torch.zeros(1, head.dyconv_channels)
            unit = stride * 8  # relative coordinates are in units of 8 strides
            layer2[0, :2] = -mask_sharpness * unit / (width / 2)
            layer2[0, 2:4] = -mask_sharpness * unit / (height / 2)
            zeros = torch.zeros(head.dyconv_channels)
            biases = [zeros, zeros, torch.tensor([mask_sharpness])]
            params = torch.cat([layer0.flatten(), layer1.flatten(), layer2.flatten(), *biases])
            if params.numel() != head.num_gen_params:
                raise ValueError(f"expected a head with 3 dynamic conv layers, got {head.num_gen_params} parameters")
            kernel.weight.zero_()
            kernel.bias.copy_(params)
