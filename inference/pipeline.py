"""The cutout flow in two halves, like a promptable predictor: detect once, render many times.

* :func:`detect_characters` is the expensive half (segmenter and refiner); callers
  cache its :class:`Detection` per picture and settings.
* :func:`render_cutout` is the cheap half (matte and colour clean-up) that every
  slider change re-runs; :func:`render_preview` puts it over a background.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from inference.composite import Background, composite_over, render_background
from inference.image_io import check_rgb_image
from inference.instances import COVER_THRESHOLD, Click, Instances, apply_click
from inference.matte import MatteSettings, estimate_foreground, refine_alpha
from inference.segmenter import (
    BackendChoice,
    DetectionSettings,
    PointSegmenter,
    Refiner,
    Segmenter,
    create_refiner,
    create_segmenter,
)


@dataclass(frozen=True, eq=False)
class Detection:
    """The expensive result for one picture.

    Attributes:
        instances: every character found (refined when a refiner ran).
        choice: which backend ran and why.
        seconds: wall time of segmenting plus refining.
    """

    instances: Instances
    choice: BackendChoice
    seconds: float


@dataclass(frozen=True, eq=False)
class Cutout:
    """The cheap result: ``alpha`` ``(H, W)`` float32 in ``[0, 1]`` and the
    ``foreground`` colour ``(H, W, 3)`` uint8 RGB to use with it."""

    alpha: np.ndarray
    foreground: np.ndarray


def image_digest(data: bytes) -> str:
    """A short, stable key for a picture's bytes (cache keys, file names)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def detect_characters(
    image: np.ndarray,
    settings: DetectionSettings = DetectionSettings(),
    *,
    segmenter: Segmenter | None = None,
    refiner: Refiner | None = None,
) -> Detection:
    """Find every character in an ``(H, W, 3)`` uint8 RGB image.

    ``segmenter``/``refiner`` may be passed in (already loaded, e.g. from a
    cache); otherwise they are built from ``settings``.

    Raises:
        ModelUnavailable: the requested model cannot run here.
    """
    check_rgb_image(image)
    if segmenter is None:
        segmenter, choice = create_segmenter(settings)
    else:
        choice = BackendChoice(segmenter.name, f"{segmenter.name} segmenter (given by the caller).")
    if refiner is None and settings.refine != "none":
        refiner = create_refiner(settings.refine, device=settings.device, trust=settings.trust_checkpoints)
    start = time.perf_counter()
    instances = segmenter.segment(image)
    if refiner is not None and len(instances):
        instances = refiner.refine(image, instances)
    return Detection(instances, choice, time.perf_counter() - start)


def add_characters_at_clicks(
    image: np.ndarray, instances: Instances, clicks: Iterable[Click], segmenter: Segmenter
) -> Instances:
    """Cut out something new under each include click that hits no character.

    Only segmenters that take point prompts (the classic one) can; others return
    ``instances`` unchanged. New instances are appended, so existing indices stay valid.
    """
    if not isinstance(segmenter, PointSegmenter):
        return instances
    for click in clicks:
        if click.include and not instances.covering(click.x, click.y):
            found = segmenter.segment_at(image, click)
            if len(found):
                instances = instances.appended(found)
    return instances


def choose_characters(instances: Instances, clicks: Sequence[Click]) -> list[int]:
    """The chosen indices after ``clicks``, as the studio shows them.

    Every character is chosen until a click changes something, so a stray click
    never empties the cutout: the first include click that hits a character
    starts from nobody and adds it; an exclude click drops its character from
    everyone; a click on background changes nothing. After that, clicks follow
    :func:`~inference.instances.apply_click`.
    """
    chosen = set(range(len(instances)))
    untouched = True
    for click in clicks:
        trial = set() if (untouched and click.include) else set(chosen)
        if apply_click(instances, trial, click) is not None:
            chosen, untouched = trial, False
    return sorted(chosen)


#: Rules that choose characters without clicks (the CLI's and the batch page's ``--select``).
SELECTION_RULES = ("all", "largest")


def choose_by_rule(instances: Instances, rule: str) -> list[int]:
    """``all`` characters, or the ``largest`` one (most covered pixels); ``[]`` when there are none."""
    if rule not in SELECTION_RULES:
        raise ValueError(f"expected rule in {SELECTION_RULES}, got {rule!r}")
    if rule == "all" or not len(instances):
        return list(range(len(instances)))
    areas = [int((mask >= COVER_THRESHOLD).sum()) for mask in instances.masks]
    return [int(np.argmax(areas))]


def render_cutout(image: np.ndarray, instances: Instances, selected: Sequence[int], matte: MatteSettings) -> Cutout:
    """Matte the chosen characters of an ``(H, W, 3)`` uint8 RGB image.

    The union of their soft masks is the alpha prior for :func:`refine_alpha`;
    the foreground colour is decontaminated when ``matte.decontaminate`` is set.
    """
    check_rgb_image(image)
    if image.shape[:2] != instances.image_size:
        raise ValueError(f"expected an image of size {instances.image_size}, got {image.shape[:2]}")
    for index in selected:
        if not 0 <= index < len(instances):
            raise ValueError(f"expected instance indices in [0, {len(instances)}), got {index}")
    prior = instances.combined_alpha(selected)
    alpha = refine_alpha(image, prior, matte)
    foreground = estimate_foreground(image, alpha) if matte.decontaminate else image
    return Cutout(alpha, foreground)


def render_preview(image: np.ndarray, cutout: Cutout, background: Background) -> np.ndarray:
    """The cutout over ``background`` (checkerboard for transparent): ``(H, W, 3)`` uint8 RGB."""
    return composite_over(cutout.foreground, cutout.alpha, render_background(background, image))
