"""Detected characters and the click rule that chooses among them.

Every segmenter (the weight-free classic one, the RTMDet-Ins anime model) returns
one :class:`Instances`. Soft masks are stored cropped to their boxes, so ten
characters on an 8 MP picture cost tens of megabytes, not gigabytes.

Conventions used throughout Nukki:

* ``image``: ``(H, W, 3)`` uint8 RGB.
* ``mask``: ``(H, W)`` bool.
* ``alpha`` / soft mask: ``(H, W)`` float32 in ``[0, 1]``.
* boxes: ``xyxy`` integer pixel edges, ``x0 <= x < x1`` and ``y0 <= y < y1``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

#: A soft mask value at or above this counts as "the character covers this pixel".
COVER_THRESHOLD = 0.5


@dataclass(frozen=True)
class Click:
    """One click on the picture, in image pixel coordinates.

    ``include=True`` adds the character under the pixel, ``False`` removes it.
    """

    x: int
    y: int
    include: bool = True


@dataclass(frozen=True, eq=False)
class Instances:
    """A set of N detected characters on one ``(H, W)`` picture.

    Attributes:
        image_size: ``(H, W)`` of the picture the masks belong to.
        boxes: ``(N, 4)`` int32 ``xyxy``; each mask is stored cropped to its box.
        masks: N float32 arrays in ``[0, 1]``; ``masks[i]`` has shape
            ``(y1 - y0, x1 - x0)`` of ``boxes[i]``.
        scores: ``(N,)`` float32 confidences in ``[0, 1]``.
        backend: which segmenter made them (``"classic"``, ``"rtmdet"``, ...).
        refined_by: the refiner that replaced the soft masks, or ``None``.
        notes: sentences for the user about this result (e.g. "busy background:
            the anime model does better", "TTA dropped 1 unmatched instance").
    """

    image_size: tuple[int, int]
    boxes: np.ndarray
    masks: tuple[np.ndarray, ...]
    scores: np.ndarray
    backend: str
    refined_by: str | None = None
    notes: tuple[str, ...] = ()
    _order: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        height, width = self.image_size
        boxes = np.asarray(self.boxes, dtype=np.int32).reshape(-1, 4)
        scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        if len(boxes) != len(self.masks) or len(scores) != len(self.masks):
            raise ValueError(
                f"expected as many boxes and scores as masks ({len(self.masks)}), "
                f"got {len(boxes)} boxes and {len(scores)} scores"
            )
        masks = []
        for box, mask in zip(boxes, self.masks):
            x0, y0, x1, y1 = (int(v) for v in box)
            if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
                raise ValueError(
                    f"expected a non-empty box inside the {width}x{height} picture, got {box.tolist()}"
                )
            mask = np.asarray(mask, dtype=np.float32)
            if mask.shape != (y1 - y0, x1 - x0):
                raise ValueError(
                    f"expected a mask of shape {(y1 - y0, x1 - x0)} for box {box.tolist()}, got {mask.shape}"
                )
            masks.append(mask)
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "masks", tuple(masks))
        # Highest score first; ties keep detection order.
        object.__setattr__(self, "_order", tuple(int(i) for i in np.argsort(-scores, kind="stable")))

    # ------------------------------------------------------------------ constructors
    @classmethod
    def empty(cls, image_size: tuple[int, int], backend: str) -> Instances:
        """No characters on an ``(H, W)`` picture."""
        return cls(image_size, np.zeros((0, 4), np.int32), (), np.zeros(0, np.float32), backend)

    @classmethod
    def from_full_masks(
        cls,
        masks: Iterable[np.ndarray],
        scores: Sequence[float],
        backend: str,
        *,
        image_size: tuple[int, int] | None = None,
        refined_by: str | None = None,
        notes: tuple[str, ...] = (),
    ) -> Instances:
        """Build from full-picture soft masks, cropping each to its tight box.

        Args:
            masks: N ``(H, W)`` arrays, bool or float in ``[0, 1]``.
            scores: N confidences.
            backend: segmenter name.
            image_size: ``(H, W)``; needed only when ``masks`` is empty.

        Masks with no pixel above zero are dropped together with their score.
        """
        boxes, crops, kept_scores = [], [], []
        size = image_size
        for mask, score in zip(masks, scores, strict=True):
            mask = np.asarray(mask, dtype=np.float32)
            if mask.ndim != 2:
                raise ValueError(f"expected (H, W) masks, got shape {mask.shape}")
            if size is None:
                size = mask.shape
            elif mask.shape != tuple(size):
                raise ValueError(f"expected masks of shape {tuple(size)}, got {mask.shape}")
            box = tight_box(mask > 0)
            if box is None:
                continue
            x0, y0, x1, y1 = box
            boxes.append(box)
            crops.append(mask[y0:y1, x0:x1].copy())
            kept_scores.append(float(score))
        if size is None:
            raise ValueError("expected image_size when no masks are given, got None")
        return cls(
            (int(size[0]), int(size[1])),
            np.array(boxes, np.int32).reshape(-1, 4),
            tuple(crops),
            np.array(kept_scores, np.float32),
            backend,
            refined_by,
            notes,
        )

    # ------------------------------------------------------------------ queries
    def __len__(self) -> int:
        return len(self.masks)

    @property
    def by_score(self) -> tuple[int, ...]:
        """Instance indices, best score first."""
        return self._order

    def full_mask(self, index: int) -> np.ndarray:
        """Soft mask of one instance pasted into the picture: ``(H, W)`` float32."""
        out = np.zeros(self.image_size, np.float32)
        x0, y0, x1, y1 = self.boxes[index]
        out[y0:y1, x0:x1] = self.masks[index]
        return out

    def combined_alpha(self, indices: Iterable[int]) -> np.ndarray:
        """Union (pixel-wise maximum) of the chosen soft masks: ``(H, W)`` float32."""
        out = np.zeros(self.image_size, np.float32)
        for index in indices:
            x0, y0, x1, y1 = self.boxes[index]
            np.maximum(out[y0:y1, x0:x1], self.masks[index], out=out[y0:y1, x0:x1])
        return out

    def value_at(self, index: int, x: int, y: int) -> float:
        """Soft mask value of one instance at pixel ``(x, y)``; 0 outside its box."""
        x0, y0, x1, y1 = self.boxes[index]
        if x0 <= x < x1 and y0 <= y < y1:
            return float(self.masks[index][y - y0, x - x0])
        return 0.0

    def covering(self, x: int, y: int) -> list[int]:
        """Indices of instances covering pixel ``(x, y)``, best score first."""
        return [i for i in self._order if self.value_at(i, x, y) >= COVER_THRESHOLD]

    def nbytes(self) -> int:
        """Memory held by the masks, in bytes."""
        return sum(m.nbytes for m in self.masks)

    # ------------------------------------------------------------------ derived sets
    def subset(self, indices: Sequence[int]) -> Instances:
        """The chosen instances, in the given order."""
        idx = list(indices)
        return Instances(
            self.image_size,
            self.boxes[idx] if idx else np.zeros((0, 4), np.int32),
            tuple(self.masks[i] for i in idx),
            self.scores[idx] if idx else np.zeros(0, np.float32),
            self.backend,
            self.refined_by,
            self.notes,
        )

    def left_to_right(self) -> Instances:
        """The same instances numbered as the studio shows them: left to right by box
        ``x0``, ties by ``y0`` (then by detection order). Every door (studio, command
        line ``--select 1,3``, API) numbers characters this way."""
        order = sorted(range(len(self)), key=lambda i: (int(self.boxes[i][0]), int(self.boxes[i][1]), i))
        if order == list(range(len(self))):
            return self
        return self.subset(order)

    def with_masks(self, masks: Sequence[np.ndarray], refined_by: str) -> Instances:
        """Same boxes and scores with replaced soft masks (one per box, box-cropped)."""
        return Instances(self.image_size, self.boxes, tuple(masks), self.scores, self.backend, refined_by, self.notes)

    def appended(self, other: Instances) -> Instances:
        """These instances followed by ``other``'s (same picture)."""
        if other.image_size != self.image_size:
            raise ValueError(f"expected instances on a {self.image_size} picture, got {other.image_size}")
        return Instances(
            self.image_size,
            np.concatenate([self.boxes, other.boxes]),
            self.masks + other.masks,
            np.concatenate([self.scores, other.scores]),
            self.backend,
            self.refined_by,
            self.notes + tuple(n for n in other.notes if n not in self.notes),
        )

    def with_notes(self, *notes: str) -> Instances:
        """The same instances with extra user-facing notes."""
        return Instances(
            self.image_size, self.boxes, self.masks, self.scores, self.backend, self.refined_by, self.notes + notes
        )

    def describe(self) -> list[dict[str, object]]:
        """JSON-ready summary per instance: index (0-based), number (as people see it: index + 1),
        box, score, area in pixels."""
        return [
            {
                "index": i,
                "number": i + 1,
                "box_xyxy": [int(v) for v in self.boxes[i]],
                "score": round(float(self.scores[i]), 4),
                "area_px": int((self.masks[i] >= COVER_THRESHOLD).sum()),
            }
            for i in range(len(self))
        ]


def tight_box(mask: np.ndarray, *, margin: int = 0) -> tuple[int, int, int, int] | None:
    """The one box helper: smallest ``xyxy`` box (exclusive ends) holding every nonzero pixel of
    an ``(H, W)`` mask (bool, or any dtype: nonzero counts), grown by ``margin`` px and clipped
    to the mask; ``None`` when no pixel is set."""
    if margin < 0:
        raise ValueError(f"expected margin >= 0, got {margin}")
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected an (H, W) mask, got shape {mask.shape}")
    if mask.dtype != np.bool_:
        mask = mask != 0
    x, y, w, h = cv2.boundingRect(np.ascontiguousarray(mask).view(np.uint8))
    if w == 0 or h == 0:
        return None
    height, width = mask.shape
    return max(0, x - margin), max(0, y - margin), min(width, x + w + margin), min(height, y + h + margin)


def apply_click(instances: Instances, chosen: set[int], click: Click) -> int | None:
    """Apply one click to the set of ``chosen`` indices, in place.

    * An include click adds the best-scoring instance covering that pixel.
    * An exclude click removes the best-scoring *chosen* instance covering it.
    * A click on background (or outside the picture) changes nothing.

    Returns:
        The index added or removed, or ``None`` when the click changed nothing.
    """
    height, width = instances.image_size
    if not (0 <= click.x < width and 0 <= click.y < height):
        return None
    covering = instances.covering(click.x, click.y)
    if click.include:
        if covering:
            chosen.add(covering[0])
            return covering[0]
        return None
    for index in covering:
        if index in chosen:
            chosen.discard(index)
            return index
    return None

