"""The files one picture becomes, the same for every door that writes files.

The command line (``extract.py``), the studio's Batch page and the HTTP API all
call :func:`cut_out_picture`: a :class:`~inference.session.CutoutSession` with
the requested selection (a rule such as ``largest`` or ``1,3``, then the click
points), rendered at full quality and encoded as named files. So the API's PNG
is byte for byte the command line's for the same picture and settings.

Naming: ``<stem>_cutout.png`` (RGBA; or ``<stem>_composite.<ext>`` over a
background), ``<stem>_mask.png`` and ``<stem>_layers.zip``. Stems come from
:func:`inference.image_io.unique_stems` when several pictures go to one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from inference.composite import Background
from inference.detection_cache import DetectionCache
from inference.export import IMAGE_FORMATS
from inference.instances import Click
from inference.matte import MatteSettings
from inference.picture import Picture
from inference.segmenter import DetectionSettings
from inference.session import ClickStep, CutoutSession, RuleStep, Step


@dataclass(frozen=True, eq=False)
class OutputOptions:
    """What to write for each picture.

    Attributes:
        background: ``transparent`` writes the RGBA cutout PNG; anything else a composite.
        image_format: ``png``, ``jpeg`` or ``webp`` for composites.
        trim: crop the cutout (or composite) to the chosen characters.
        mask: also write the 8-bit mask.
        layers: also write the layers ZIP (one RGBA layer per character, background plate, manifest).
    """

    background: Background = Background()
    image_format: str = "png"
    trim: bool = False
    mask: bool = False
    layers: bool = False

    def __post_init__(self) -> None:
        if self.image_format not in IMAGE_FORMATS:
            raise ValueError(f"expected image format in {IMAGE_FORMATS}, got {self.image_format!r}")


@dataclass(frozen=True, eq=False)
class PictureFiles:
    """What :func:`cut_out_picture` made of one picture.

    Attributes:
        files: ``(file name, bytes)`` in writing order; the first is the cutout or composite.
        found: characters known (detected plus point-prompted).
        chosen: characters in the files.
        backend: the segmenter that ran.
        notes: sentences for the user (busy background, refused clicks, how to get better models).
    """

    files: tuple[tuple[str, bytes], ...]
    found: int
    chosen: int
    backend: str
    notes: tuple[str, ...]


def selection_steps(select: str | None, points: Sequence[Click] = ()) -> list[Step]:
    """The history for a rule and click points: the rule (if any) first, then one click per point.

    With no rule the click rule's default holds (every character until a click changes it;
    the first include click on a character keeps only it).
    """
    steps: list[Step] = [RuleStep(select)] if select is not None else []
    steps.extend(ClickStep(int(p.x), int(p.y), bool(p.include)) for p in points)
    return steps


def cut_out_picture(
    picture: Picture,
    *,
    stem: str | None = None,
    settings: DetectionSettings = DetectionSettings(),
    matte: MatteSettings = MatteSettings(),
    select: str | None = None,
    points: Sequence[Click] = (),
    options: OutputOptions = OutputOptions(),
    prompt_model: str = "auto",
    detections: DetectionCache | None = None,
) -> PictureFiles:
    """Cut one picture out and encode its files (nothing is written to disk).

    Args:
        picture: the decoded picture.
        stem: file name stem (default ``picture.stem``).
        settings: detection settings; the detection is shared through ``detections``.
        matte: matte settings, applied at full resolution.
        select: ``all``, ``largest``, ``1,3`` or ``None`` (the click rule's default: all).
        points: click points (include/exclude), applied after ``select``.
        options: what to write.
        prompt_model: point prompter for points on no character.
        detections: detection cache to share (default: the process-wide one).

    Raises:
        ValueError: no character found, none chosen, or a bad selection.
        ModelUnavailable: a requested model cannot run here.
    """
    stem = stem or picture.stem
    session = CutoutSession(picture, settings, prompt_model=prompt_model, detections=detections)
    if not len(session.detection.instances) and not any(p.include for p in points):
        hint = (
            "the classic segmenter needs a plain or gradient background (the anime model finds characters anywhere)"
            if session.detection.choice.name == "classic"
            else "try a lower score threshold or click the character"
        )
        raise ValueError(f"no character found: {hint}")
    session.set_steps(selection_steps(select, points))
    notes = tuple(session.notes)
    if not session.selected:
        why = f" ({notes[-1]})" if notes else ""
        raise ValueError(f"expected at least one chosen character, got none{why}")
    files: list[tuple[str, bytes]] = []
    if options.background.kind == "transparent":
        files.append((f"{stem}_cutout.png", session.export("cutout", matte, trim=options.trim)))
    else:
        ext = "jpg" if options.image_format == "jpeg" else options.image_format
        data = session.export(
            "composite", matte, background=options.background, trim=options.trim, fmt=options.image_format
        )
        files.append((f"{stem}_composite.{ext}", data))
    if options.mask:
        files.append((f"{stem}_mask.png", session.export("mask", matte)))
    if options.layers:
        files.append((f"{stem}_layers.zip", session.export("layers", matte)))
    return PictureFiles(
        tuple(files), len(session.instances), len(session.selected), session.detection.choice.name, notes
    )
