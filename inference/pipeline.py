"""The stateless steps of a cutout: detect once, render many times.

* :func:`detect_characters` is the expensive half (segmenter and refiner); its
  :class:`Detection` numbers the characters left to right, as every door shows them.
* :func:`render_cutout` is the cheap half (matte and colour clean-up) that every
  slider change re-runs, at full resolution or, with ``max_side``, at display size.
* :func:`render_composite` puts a cutout over a background; :func:`layers_zip`
  renders one layer per character and packs them with :mod:`inference.export`.

:class:`inference.session.CutoutSession` holds a picture, its detection and the
click history and calls these; the studio, the command line, the batch page and
the HTTP API all go through it.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from inference import model_cache
from inference.composite import Background, background_plate, composite_over, render_background
from inference.export import cutout_png, encode_png, mask_png, trimmed_rgba
from inference.image_io import check_rgb_image
from inference.instances import COVER_THRESHOLD, Instances
from inference.matte import MatteSettings, preview_inputs, refine_alpha_and_foreground, shrink_for_preview
from inference.segmenter import BackendChoice, DetectionSettings, Refiner, Segmenter

#: The message of every export asked for with no character chosen.
NOTHING_CHOSEN = "expected at least one chosen character, got none"


@dataclass(frozen=True, eq=False)
class Detection:
    """The expensive result for one picture.

    Attributes:
        instances: every character found (refined when a refiner ran), numbered
            left to right (:meth:`Instances.left_to_right`).
        choice: which backend ran and why.
        seconds: wall time of segmenting plus refining.
    """

    instances: Instances
    choice: BackendChoice
    seconds: float


@dataclass(frozen=True, eq=False)
class Cutout:
    """The cheap result: ``alpha`` ``(H, W)`` float32 in ``[0, 1]`` and the
    ``foreground`` colour ``(H, W, 3)`` uint8 RGB to use with it (``H, W`` are the
    display size for a preview rendered with ``max_side``)."""

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
    choice: BackendChoice | None = None,
) -> Detection:
    """Find every character in an ``(H, W, 3)`` uint8 RGB image, numbered left to right.

    ``segmenter``/``refiner`` may be passed in with the ``choice`` that explains
    them; otherwise they come from ``settings`` through :mod:`inference.model_cache`
    (loaded once per process).

    Raises:
        ModelUnavailable: the requested model cannot run here.
    """
    check_rgb_image(image)
    if segmenter is None:
        segmenter, choice = model_cache.get_segmenter(settings)
    elif choice is None:
        choice = BackendChoice(segmenter.name, f"{segmenter.name} segmenter (given by the caller).")
    if refiner is None and settings.refine != "none":
        refiner = model_cache.get_refiner(settings.refine, device=settings.device, trust=settings.trust_checkpoints)
    start = time.perf_counter()
    instances = segmenter.segment(image)
    if refiner is not None and len(instances):
        instances = refiner.refine(image, instances)
    return Detection(instances.left_to_right(), choice, time.perf_counter() - start)


#: Rules that choose characters without clicks (besides numbers like ``1,3``).
SELECTION_RULES = ("all", "largest")


def check_rule(rule: str) -> str:
    """``rule`` stripped if it is ``all``, ``largest`` or numbers like ``1,3`` (checked before any
    picture is known), else ``ValueError``."""
    text = str(rule).strip()
    parts = [p.strip() for p in text.split(",")]
    if text in SELECTION_RULES or (text and all(p.isdigit() and int(p) >= 1 for p in parts)):
        return text
    raise ValueError(f"expected rule all, largest or character numbers like 1,3; got {rule!r}")


def choose_by_rule(instances: Instances, rule: str) -> list[int]:
    """The chosen indices (0-based, sorted) for a rule.

    ``all`` characters; the ``largest`` one (most covered pixels); or 1-based
    numbers as every door shows them (``"1,3"``). ``all``/``largest`` give ``[]``
    when there are no characters.

    Raises:
        ValueError: an unknown rule or a number outside ``1..len(instances)``.
    """
    text = check_rule(rule)
    if text == "all" or (text == "largest" and not len(instances)):
        return list(range(len(instances)))
    if text == "largest":
        areas = [int((mask >= COVER_THRESHOLD).sum()) for mask in instances.masks]
        return [int(np.argmax(areas))]
    numbers = [int(part) for part in text.split(",")]
    bad = [n for n in numbers if not 1 <= n <= len(instances)]
    if bad:
        raise ValueError(f"expected character numbers 1-{len(instances)}, got {bad}")
    return sorted({n - 1 for n in numbers})


def _check_selection(image: np.ndarray, instances: Instances, selected: Sequence[int]) -> None:
    check_rgb_image(image)
    if image.shape[:2] != instances.image_size:
        raise ValueError(f"expected an image of size {instances.image_size}, got {image.shape[:2]}")
    for index in selected:
        if not 0 <= index < len(instances):
            raise ValueError(f"expected instance indices in [0, {len(instances)}), got {index}")


def shrink_image(image: np.ndarray, max_side: int) -> np.ndarray:
    """``image`` (``(H, W, 3)`` uint8) area-averaged so its long side is at most ``max_side``
    (itself when already that small): the same shrink the preview's matte uses."""
    return shrink_for_preview(check_rgb_image(image), max_side)


def render_cutout(
    image: np.ndarray,
    instances: Instances,
    selected: Sequence[int],
    matte: MatteSettings,
    *,
    max_side: int | None = None,
    small_image: np.ndarray | None = None,
) -> Cutout:
    """Matte the chosen characters of an ``(H, W, 3)`` uint8 RGB image.

    The union of their soft masks is the alpha prior for
    :func:`~inference.matte.refine_alpha_and_foreground`, which also decontaminates
    the foreground colour when ``matte.decontaminate`` is set.
    Nothing chosen renders nothing (alpha 0 everywhere).

    Args:
        max_side: render a preview at display size (long side at most this) with
            the matte parameters scaled to match (:func:`inference.matte.preview_inputs`);
            ``None`` renders at full resolution (what downloads use).
        small_image: ``shrink_image(image, max_side)`` when the caller keeps it (saves
            shrinking the picture on every slider move).
    """
    _check_selection(image, instances, selected)
    prior = instances.combined_alpha(selected)
    if max_side is not None:
        image, prior, matte = preview_inputs(image, prior, matte, max_side=max_side, small_image=small_image)
    alpha, foreground, _ = refine_alpha_and_foreground(image, prior, matte)
    return Cutout(alpha, foreground)


def render_composite(image: np.ndarray, cutout: Cutout, background: Background) -> np.ndarray:
    """The cutout over ``background`` (checkerboard for transparent): ``(h, w, 3)`` uint8 RGB
    at the cutout's size (a full-resolution cutout gives a full-resolution composite;
    ``image`` is shrunk to a preview cutout's size for the blur background)."""
    height, width = cutout.alpha.shape
    if image.shape[:2] != (height, width):
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    return composite_over(cutout.foreground, cutout.alpha, render_background(background, image))


def layers_zip(
    image: np.ndarray,
    instances: Instances,
    selected: Sequence[int],
    matte: MatteSettings,
    *,
    source_name: str,
    extra: dict | None = None,
) -> bytes:
    """A ZIP for rigs and desktop pets: one trimmed RGBA layer per chosen character.

    Contents: ``layers/NN.png`` per character (trimmed; its position is in the
    manifest), ``cutout.png`` (all chosen characters, full size), ``mask.png``,
    ``background_plate.png`` (characters removed, hole inpainted) and
    ``manifest.json`` (picture size, backend, matte settings, and per layer its
    file, character number as the studio shows it, score, detection box and
    placement box ``xyxy``).

    Raises:
        ValueError: ``selected`` is empty (like every export: nothing chosen, nothing to export).
    """
    if not len(selected):
        raise ValueError(NOTHING_CHOSEN)
    _check_selection(image, instances, selected)
    chosen = list(selected)
    height, width = instances.image_size
    manifest: dict = {
        "source": source_name,
        "image_size_wh": [width, height],
        "backend": instances.backend,
        "refined_by": instances.refined_by,
        "matte_settings": asdict(matte),
        "layers": [],
        "cutout": "cutout.png",
        "mask": "mask.png",
        "background_plate": "background_plate.png",
    }
    if extra:
        manifest.update(extra)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for order, index in enumerate(chosen, start=1):
            layer = render_cutout(image, instances, [index], matte)
            trimmed = trimmed_rgba(layer.foreground, layer.alpha)
            if trimmed is None:
                continue
            rgba, (x0, y0, x1, y1) = trimmed
            name = f"layers/{order:02d}.png"
            archive.writestr(name, encode_png(rgba))
            manifest["layers"].append(
                {
                    "file": name,
                    "instance": int(index),
                    "number": int(index) + 1,
                    "score": round(float(instances.scores[index]), 4),
                    "detection_box_xyxy": [int(v) for v in instances.boxes[index]],
                    "placement_xyxy": [x0, y0, x1, y1],
                }
            )
        combined = render_cutout(image, instances, chosen, matte)
        archive.writestr("cutout.png", cutout_png(combined.foreground, combined.alpha))
        archive.writestr("mask.png", mask_png(combined.alpha))
        archive.writestr("background_plate.png", encode_png(background_plate(image, combined.alpha)))
        archive.writestr("manifest.json", json.dumps(manifest, indent=2))
    return buffer.getvalue()
