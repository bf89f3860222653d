"""Many pictures in, one ZIP of cutouts out, with a line per file saying what happened.

:func:`cut_out_batch` never stops at a bad file: each failure (not a picture, too
large, no character found, a model missing) becomes a :class:`FileReport` with
the reason, and the rest go on. The ZIP holds, per good file, ``<name>_cutout.png``
(RGBA), optionally ``<name>_layers/`` (one RGBA layer per character, the
background plate and a manifest), plus ``report.csv`` and ``report.json``.

Nothing here imports Streamlit.
"""

from __future__ import annotations

import csv
import io
import json
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from inference.export import cutout_png, layers_zip
from inference.image_io import ImageLoadError, load_image
from inference.matte import MatteSettings
from inference.pipeline import Detection, choose_by_rule, render_cutout
from inference.segmenter import ModelUnavailable
from studio.errors import unexpected

#: ``(image, digest) -> Detection``; the page passes its cached detection.
Detect = Callable[[np.ndarray, str], Detection]
#: ``(done, total, name)`` after each file.
Progress = Callable[[int, int, str], None]

#: Labels of :data:`inference.pipeline.SELECTION_RULES` for the page.
SELECT_RULES = {"all": "every character", "largest": "the largest character"}


@dataclass(frozen=True)
class FileReport:
    """What happened to one file."""

    name: str
    ok: bool
    characters: int
    message: str
    seconds: float
    outputs: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class BatchResult:
    zip_bytes: bytes
    reports: tuple[FileReport, ...]

    @property
    def succeeded(self) -> int:
        return sum(r.ok for r in self.reports)

    @property
    def failed(self) -> int:
        return sum(not r.ok for r in self.reports)


def _unique_stem(name: str, taken: set[str]) -> str:
    stem = name.replace("\\", "/").rsplit("/", 1)[-1].rsplit(".", 1)[0].strip()
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in stem) or "picture"
    candidate, n = stem, 2
    while candidate.lower() in taken:
        candidate, n = f"{stem}-{n}", n + 1
    taken.add(candidate.lower())
    return candidate


def cut_out_batch(
    files: Sequence[tuple[str, bytes]],
    detect: Detect,
    matte: MatteSettings,
    *,
    digest: Callable[[bytes], str],
    rule: str = "all",
    layers: bool = False,
    trim: bool = False,
    max_pixels: int,
    progress: Progress | None = None,
) -> BatchResult:
    """Cut out every file.

    Args:
        files: ``(name, bytes)`` per upload.
        detect: finds the characters of one decoded picture (cached by the caller).
        matte: matte settings for every cutout.
        digest: the key of a file's bytes (``inference.pipeline.image_digest``).
        rule: which characters to keep, ``all`` or ``largest``.
        layers: also write each file's per-character layers and background plate.
        trim: crop each cutout PNG to its characters.
        max_pixels: refuse pictures with more pixels.
        progress: called after each file.
    """
    reports: list[FileReport] = []
    taken: set[str] = {"report"}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for done, (name, data) in enumerate(files, start=1):
            start = time.perf_counter()
            stem = _unique_stem(name, taken)
            try:
                image = load_image(data, max_pixels=max_pixels).image
                detection = detect(image, digest(data))
                instances = detection.instances
                if not len(instances):
                    raise ValueError(
                        "no character found: the classic segmenter needs a plain or gradient background "
                        "(the anime model finds characters anywhere)"
                    )
                chosen = choose_by_rule(instances, rule)
                cutout = render_cutout(image, instances, chosen, matte)
                outputs = [f"{stem}_cutout.png"]
                archive.writestr(outputs[0], cutout_png(cutout.foreground, cutout.alpha, trim=trim))
                if layers:
                    extra = {"detection": {"backend": detection.choice.name}}
                    inner = layers_zip(image, instances, chosen, matte, source_name=name, extra=extra)
                    with zipfile.ZipFile(io.BytesIO(inner)) as layer_zip:
                        for member in layer_zip.namelist():
                            target = f"{stem}_layers/{member}"
                            archive.writestr(target, layer_zip.read(member))
                            outputs.append(target)
                message = f"{len(chosen)} of {len(instances)} character(s) cut out ({detection.choice.name})"
                reports.append(
                    FileReport(name, True, len(chosen), message, time.perf_counter() - start, tuple(outputs))
                )
            except (ImageLoadError, ModelUnavailable, ValueError) as exc:
                reports.append(FileReport(name, False, 0, str(exc), time.perf_counter() - start))
            except MemoryError:
                reports.append(
                    FileReport(name, False, 0, "ran out of memory on this picture", time.perf_counter() - start)
                )
            except Exception as exc:  # a bug on one file must not lose the others
                message = unexpected(exc, f"cutting out {name}")
                reports.append(FileReport(name, False, 0, message, time.perf_counter() - start))
            if progress is not None:
                progress(done, len(files), name)
        archive.writestr("report.csv", report_csv(reports))
        archive.writestr("report.json", json.dumps([asdict(r) for r in reports], indent=2))
    return BatchResult(buffer.getvalue(), tuple(reports))


def report_csv(reports: Sequence[FileReport]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["file", "status", "characters", "seconds", "message"])
    for r in reports:
        writer.writerow([r.name, "ok" if r.ok else "failed", r.characters, f"{r.seconds:.2f}", r.message])
    return out.getvalue()
