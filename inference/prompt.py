"""Point prompts: cut out whatever lies under clicks that no detected character covers.

A :class:`PointPrompter` turns a picture plus include/exclude points (and
optionally a box around them) into at most one new instance. Two models do it:

* :class:`ClassicPrompter` (here): the weight-free classic segmenter's
  :meth:`~inference.classic.ClassicSegmenter.segment_at`. Good on flat and
  gradient backgrounds; on busy pictures it often finds nothing.
* ``Sam2Prompter`` (:mod:`inference.sam2_prompt`, the only module importing
  ``sam2``): Segment Anything 2.1, which embeds the picture once (cached by its
  digest) and answers each prompt in tens of milliseconds.

:func:`inference.model_cache.get_prompter` picks one (``auto``: SAM 2 when its
weights are installed). :class:`inference.session.CutoutSession` calls
``segment_points`` for an include click on background and refuses what is mostly
background (see its click rule).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from inference.image_io import check_rgb_image
from inference.instances import Click, Instances

#: A prompt point is simply a click (``x``, ``y`` image pixels, ``include``).
PromptPoint = Click

#: ``(x0, y0, x1, y1)`` in image pixels, exclusive ends.
Box = tuple[int, int, int, int]


@runtime_checkable
class PointPrompter(Protocol):
    """Cuts out the one thing under a set of points."""

    name: str

    def segment_points(
        self, image: np.ndarray, digest: str, points: Sequence[Click], box: Box | None = None
    ) -> Instances:
        """At most one instance for the points on an ``(H, W, 3)`` uint8 RGB image.

        Args:
            image: ``(H, W, 3)`` uint8 RGB.
            digest: names the picture, so a prompter may cache per-picture work
                (an embedding) and reuse it for the next prompt.
            points: include points are positive prompts, exclude points negative ones.
            box: an optional ``xyxy`` box around the thing (e.g. a detected
                character's box the click lies in).

        Returns:
            Instances on that picture: one (soft float32 mask) or none when nothing
            separable lies under the points.
        """
        ...


def check_points(image: np.ndarray, points: Sequence[Click], box: Box | None) -> None:
    """Raise ``ValueError`` unless ``points`` are clicks and ``box`` is ``None`` or an ``xyxy`` box inside ``image``."""
    check_rgb_image(image)
    for point in points:
        if not isinstance(point, Click):
            raise ValueError(f"expected points as Click objects, got {type(point).__name__}")
    if box is not None:
        height, width = image.shape[:2]
        if len(box) != 4:
            raise ValueError(f"expected a box (x0, y0, x1, y1), got {box!r}")
        x0, y0, x1, y1 = (int(v) for v in box)
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            raise ValueError(f"expected a non-empty box inside the {width}x{height} picture, got {tuple(box)}")


def parse_points(text: str) -> tuple[Click, ...]:
    """Click points from the command line's ``"x,y;x,y,-"``: ``;``-separated ``x,y`` image
    pixels, include by default, ``,+`` include and ``,-`` exclude.

    Raises:
        ValueError: ``expected points like "120,80;300,200,-", got ...``.
    """
    points = []
    for item in str(text).split(";"):
        parts = [p.strip() for p in item.split(",")]
        if parts == [""]:
            continue
        sign = parts.pop() if len(parts) == 3 and parts[2] in ("+", "-") else "+"
        try:
            x, y = (int(float(p)) for p in parts)
        except ValueError:
            raise ValueError(f'expected points like "120,80;300,200,-", got {text!r}') from None
        if x < 0 or y < 0:
            raise ValueError(f"expected point coordinates >= 0, got ({x}, {y})")
        points.append(Click(x, y, sign == "+"))
    if not points:
        raise ValueError(f'expected points like "120,80;300,200,-", got {text!r}')
    return tuple(points)


class ClassicPrompter:
    """The classic segmenter's point prompt as a :class:`PointPrompter`.

    The classic cut follows one seed, so it uses the first include point (the
    others, the exclude points and the box are accepted and not used). The
    picture's analysis is computed once per ``digest`` (the classic segmenter
    remembers the last few), so later clicks on a picture are quicker.
    """

    name = "classic"

    def __init__(self, segmenter: object | None = None) -> None:
        if segmenter is None:
            from inference.classic import ClassicSegmenter

            segmenter = ClassicSegmenter()
        if not callable(getattr(segmenter, "segment_at", None)):
            raise ValueError(f"expected a segmenter with segment_at(image, click), got {type(segmenter).__name__}")
        self._segmenter = segmenter

    def segment_points(
        self, image: np.ndarray, digest: str, points: Sequence[Click], box: Box | None = None
    ) -> Instances:
        """At most one instance around the first include point (see :meth:`ClassicSegmenter.segment_at`)."""
        check_points(image, points, box)
        include = [p for p in points if p.include]
        if not include:
            return Instances.empty(image.shape[:2], self.name)
        from inference.classic import ClassicSegmenter

        if isinstance(self._segmenter, ClassicSegmenter):
            found = self._segmenter.segment_at(image, include[0], digest=digest)
        else:
            found = self._segmenter.segment_at(image, include[0])
        if len(found) > 1:  # the protocol promises at most one
            best = int(np.argmax(found.scores))
            found = found.subset([best])
        return found
