"""Many pictures in, one ZIP of cutouts out, with a line per file saying what happened.

Each file goes through :func:`inference.outputs.cut_out_picture`, the same
function as the command line and the HTTP API, so a batch cutout equals the
command line's for the same picture and settings. :func:`cut_out_batch` never
stops at a bad file: each failure (not a picture, too large, no character found,
a model missing) becomes a :class:`FileReport` with the reason, and the rest go
on. Each report carries the segmenter's notes (e.g. "busy background: the anime
model does better"). The ZIP holds, per good file, ``<stem>_cutout.png`` (RGBA),
optionally ``<stem>_layers/`` (one RGBA layer per character, the background
plate and a manifest), plus ``report.csv`` and ``report.json``. Stems follow
:func:`inference.image_io.unique_stems` (files with one name keep their extension).

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

from inference.detection_cache import DetectionCache
from inference.errors import ModelUnavailable
from inference.image_io import ImageLoadError, unique_stems
from inference.matte import MatteSettings
from inference.outputs import OutputOptions, cut_out_picture
from inference.picture import Picture
from inference.segmenter import DetectionSettings
from studio.errors import unexpected

#: ``(done, total, name)`` after each file.
Progress = Callable[[int, int, str], None]

#: Labels of :data:`inference.pipeline.SELECTION_RULES` for the page.
SELECT_RULES = {"all": "every character", "largest": "the largest character"}


@dataclass(frozen=True)
class FileReport:
    """What happened to one file (``notes``: the segmenter's sentences for the user)."""

    name: str
    ok: bool
    characters: int
    message: str
    seconds: float
    outputs: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


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


def cut_out_batch(
    files: Sequence[tuple[str, bytes]],
    settings: DetectionSettings,
    matte: MatteSettings,
    *,
    rule: str = "all",
    layers: bool = False,
    trim: bool = False,
    max_pixels: int | None = None,
    detections: DetectionCache | None = None,
    progress: Progress | None = None,
) -> BatchResult:
    """Cut out every file.

    Args:
        files: ``(name, bytes)`` per upload.
        settings: detection settings (detections are shared through ``detections``).
        matte: matte settings for every cutout.
        rule: which characters to keep, ``all`` or ``largest``.
        layers: also write each file's per-character layers and background plate.
        trim: crop each cutout PNG to its characters.
        max_pixels: refuse pictures with more pixels (``None``: the one limit, 24 MP or ``NUKKI_MAX_PIXELS``).
        detections: the detection cache (default: the process-wide one).
        progress: called after each file.
    """
    reports: list[FileReport] = []
    stems = unique_stems([name for name, _ in files])
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for done, ((name, data), stem) in enumerate(zip(files, stems), start=1):
            start = time.perf_counter()
            try:
                picture = Picture.from_bytes(data, name=name, max_pixels=max_pixels)
                result = cut_out_picture(
                    picture,
                    stem=stem,
                    settings=settings,
                    matte=matte,
                    select=rule,
                    options=OutputOptions(trim=trim, layers=layers),
                    detections=detections,
                )
                outputs = []
                for file_name, file_bytes in result.files:
                    if file_name.endswith("_layers.zip"):
                        with zipfile.ZipFile(io.BytesIO(file_bytes)) as layer_zip:
                            for member in layer_zip.namelist():
                                target = f"{stem}_layers/{member}"
                                archive.writestr(target, layer_zip.read(member))
                                outputs.append(target)
                    else:
                        archive.writestr(file_name, file_bytes)
                        outputs.append(file_name)
                message = f"{result.chosen} of {result.found} character(s) cut out ({result.backend})"
                if result.notes:
                    message += ". Note: " + " ".join(result.notes)
                reports.append(
                    FileReport(name, True, result.chosen, message, time.perf_counter() - start, tuple(outputs),
                               result.notes)
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
