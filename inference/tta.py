"""Horizontal-flip test-time augmentation: merge the detections of a picture and of its mirror image.

The detector runs on the picture and on the picture mirrored left-right. The
mirrored result is mapped back with :func:`flip_instances_horizontally`, then
:func:`merge_flip_instances` pairs the two sets by mask IoU:

* **matched pairs** (mask IoU >= ``iou_threshold``, greedy, best original score
  first) become one instance: its soft mask is the mean of the two soft masks,
  its score the mean of the two scores, and its box the union of the two boxes
  (an :class:`~inference.instances.Instances` box is the frame its mask is
  stored in, so it must hold both masks; where only one of the two boxes
  reaches, the mean is half that mask);
* **unmatched** instances (found in only one of the two views) are kept,
  unchanged, when their score is at least ``unmatched_min_score``, and dropped
  otherwise. A detector that is sure of a character finds it in both views; a
  lone, weak detection is more often a false positive.

The merged instances carry a note saying how many pairs were merged and how
many unmatched instances were kept and dropped.

Pure numpy: no torch, no mmdet.
"""

from __future__ import annotations

import numpy as np

from inference.instances import COVER_THRESHOLD, Instances

#: Two detections of the same character overlap at least this much (mask IoU).
DEFAULT_IOU_THRESHOLD = 0.5
#: An instance seen in only one of the two views is kept only at or above this score.
DEFAULT_UNMATCHED_MIN_SCORE = 0.5


def flip_instances_horizontally(instances: Instances) -> Instances:
    """Mirror instances left-right on their ``(H, W)`` picture.

    A box ``(x0, y0, x1, y1)`` becomes ``(W - x1, y0, W - x0, y1)`` and each
    ``(h, w)`` mask crop has its columns reversed. Applying it twice gives back
    the same boxes and masks exactly.
    """
    width = instances.image_size[1]
    boxes = instances.boxes.copy()
    boxes[:, 0] = width - instances.boxes[:, 2]
    boxes[:, 2] = width - instances.boxes[:, 0]
    masks = tuple(np.ascontiguousarray(mask[:, ::-1]) for mask in instances.masks)
    return Instances(
        instances.image_size,
        boxes,
        masks,
        instances.scores.copy(),
        instances.backend,
        instances.refined_by,
        instances.notes,
    )


def mask_iou_matrix(first: Instances, second: Instances, *, cover_threshold: float = COVER_THRESHOLD) -> np.ndarray:
    """IoU of the masks (soft mask >= ``cover_threshold``) of every pair: ``(N1, N2)`` float32.

    Only the overlap of the two boxes is compared, so the cost grows with the
    overlapping area, never with the picture size. Two empty masks have IoU 0.
    """
    if first.image_size != second.image_size:
        raise ValueError(f"expected instances on the same picture {first.image_size}, got {second.image_size}")
    covers_a = [mask >= cover_threshold for mask in first.masks]
    covers_b = [mask >= cover_threshold for mask in second.masks]
    areas_a = [int(c.sum()) for c in covers_a]
    areas_b = [int(c.sum()) for c in covers_b]
    iou = np.zeros((len(first), len(second)), np.float32)
    for i, (box_a, cover_a) in enumerate(zip(first.boxes, covers_a)):
        for j, (box_b, cover_b) in enumerate(zip(second.boxes, covers_b)):
            x0, y0 = max(box_a[0], box_b[0]), max(box_a[1], box_b[1])
            x1, y1 = min(box_a[2], box_b[2]), min(box_a[3], box_b[3])
            if x1 <= x0 or y1 <= y0:
                continue
            part_a = cover_a[y0 - box_a[1] : y1 - box_a[1], x0 - box_a[0] : x1 - box_a[0]]
            part_b = cover_b[y0 - box_b[1] : y1 - box_b[1], x0 - box_b[0] : x1 - box_b[0]]
            inter = int(np.count_nonzero(part_a & part_b))
            union = areas_a[i] + areas_b[j] - inter
            if union > 0:
                iou[i, j] = inter / union
    return iou


def _average_pair(
    box_a: np.ndarray, mask_a: np.ndarray, box_b: np.ndarray, mask_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Mean of two box-cropped soft masks on the union of their boxes: ``(box (4,), mask (h, w))``."""
    union = np.array(
        [min(box_a[0], box_b[0]), min(box_a[1], box_b[1]), max(box_a[2], box_b[2]), max(box_a[3], box_b[3])],
        np.int32,
    )
    out = np.zeros((union[3] - union[1], union[2] - union[0]), np.float32)
    for box, mask in ((box_a, mask_a), (box_b, mask_b)):
        x0, y0 = box[0] - union[0], box[1] - union[1]
        out[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]] += mask
    out *= 0.5
    return union, out


def merge_flip_instances(
    original: Instances,
    mirrored_unflipped: Instances,
    *,
    iou_threshold: float = DEFAULT_IOU_THRESHOLD,
    unmatched_min_score: float = DEFAULT_UNMATCHED_MIN_SCORE,
) -> Instances:
    """Merge detections on a picture with those on its mirror image (already mapped back).

    Args:
        original: instances found on the ``(H, W)`` picture.
        mirrored_unflipped: instances found on the mirrored picture, passed
            through :func:`flip_instances_horizontally` (same picture as ``original``).
        iou_threshold: smallest mask IoU, in ``(0, 1]``, for two instances to be the same character.
        unmatched_min_score: instances without a partner are kept only if they score at
            least this (in ``[0, 1]``); their mask, box and score stay as they were.

    Returns:
        Matched pairs (mean soft mask on the union box, mean score) followed by the
        kept unmatched instances, best score first, with backend and refined_by of
        ``original`` and a note counting merged, kept and dropped instances.

    Matching is greedy: original instances in order of descending score each take the
    still-free mirrored instance with the highest mask IoU at or above ``iou_threshold``.
    """
    if original.image_size != mirrored_unflipped.image_size:
        raise ValueError(
            f"expected both instance sets on the same picture {original.image_size}, "
            f"got {mirrored_unflipped.image_size}"
        )
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"expected iou_threshold in (0, 1], got {iou_threshold}")
    if not 0.0 <= unmatched_min_score <= 1.0:
        raise ValueError(f"expected unmatched_min_score in [0, 1], got {unmatched_min_score}")

    iou = mask_iou_matrix(original, mirrored_unflipped)
    partner: dict[int, int] = {}
    taken: set[int] = set()
    for i in original.by_score:
        if iou.shape[1] == 0:
            break
        candidates = [
            (float(iou[i, j]), -j) for j in range(iou.shape[1]) if j not in taken and iou[i, j] >= iou_threshold
        ]
        if candidates:
            best = -max(candidates)[1]
            partner[i] = best
            taken.add(best)

    boxes: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    scores: list[float] = []
    for i, j in partner.items():
        box, mask = _average_pair(
            original.boxes[i], original.masks[i], mirrored_unflipped.boxes[j], mirrored_unflipped.masks[j]
        )
        boxes.append(box)
        masks.append(mask)
        scores.append(0.5 * (float(original.scores[i]) + float(mirrored_unflipped.scores[j])))

    kept = dropped = 0
    lonely = [(original, i) for i in range(len(original)) if i not in partner]
    lonely += [(mirrored_unflipped, j) for j in range(len(mirrored_unflipped)) if j not in taken]
    for source, k in lonely:
        if float(source.scores[k]) >= unmatched_min_score:
            boxes.append(source.boxes[k].copy())
            masks.append(source.masks[k])
            scores.append(float(source.scores[k]))
            kept += 1
        else:
            dropped += 1

    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    if lonely:
        note = (
            f"Flip TTA: merged {len(partner)} instance(s) found in both the picture and its mirror image; "
            f"of {len(lonely)} found in only one, kept {kept} scoring at least {unmatched_min_score:g} "
            f"and dropped {dropped}."
        )
    else:
        note = f"Flip TTA: merged {len(partner)} instance(s) found in both the picture and its mirror image."
    extra_notes = tuple(n for n in mirrored_unflipped.notes if n not in original.notes)
    return Instances(
        original.image_size,
        np.array([boxes[k] for k in order], np.int32).reshape(-1, 4),
        tuple(masks[k] for k in order),
        np.array([scores[k] for k in order], np.float32),
        original.backend,
        original.refined_by,
        original.notes + extra_notes + (note,),
    )
