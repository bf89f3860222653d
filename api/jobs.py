"""The work behind the routes, free of HTTP: open a picture, detect, cut out, export.

Everything goes through :class:`inference.session.CutoutSession`, so the API follows
exactly the studio's and the command line's rules (click rule, studio numbering,
matte, file formats). One :class:`CutoutService` lives per server process: it owns the
bounded detection cache (keyed by picture digest and detection settings), and the
models behind the sessions are loaded once per process by :mod:`inference.model_cache`.

The selection is :func:`inference.outputs.selection_steps` (the rule, then the points), as
for the command line. Unlike :func:`inference.outputs.cut_out_picture`, which encodes every
file a picture becomes, a request asks for one file, so :meth:`CutoutService.cutout`
exports just that one (and its mask honours ``trim``).

These functions block (numpy, OpenCV, torch); the app calls them in a worker thread.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from urllib.parse import quote

import numpy as np

from api.forms import MEDIA_TYPES, CutoutOptions, ModelChoice, check_points_inside
from inference.image_io import ImageLoadError, PictureTooLarge
from inference.instances import COVER_THRESHOLD
from inference.outputs import selection_steps
from inference.segmenter import DetectionSettings, resolve_backend
from inference.session import CutoutSession, DetectionCache, Picture


class NothingToCut(ValueError):
    """No character was found or chosen, so there is no cutout to send (HTTP 422)."""


@dataclass(frozen=True, eq=False)
class OutputFile:
    """An answer body: ``data`` with its content type, file name and extra headers (ASCII)."""

    data: bytes
    media_type: str
    filename: str
    headers: dict[str, str]


class CutoutService:
    """Opens pictures and runs cutout sessions on them, sharing one detection cache.

    Args:
        max_pixels: largest picture (width x height) accepted.
        detections: the bounded, thread-safe detection cache shared by every request.
        settings: detection settings of every request (the server's choice of models).
    """

    def __init__(
        self,
        *,
        max_pixels: int,
        detections: DetectionCache | None = None,
        settings: DetectionSettings = DetectionSettings(),
    ) -> None:
        if max_pixels <= 0:
            raise ValueError(f"expected max_pixels > 0, got {max_pixels}")
        self.max_pixels = max_pixels
        self.detections = detections if detections is not None else DetectionCache()
        self.settings = settings

    # ------------------------------------------------------------------ pictures
    def open_picture(self, data: bytes, name: str) -> Picture:
        """Decode an upload.

        Raises:
            PictureTooLarge: more than ``max_pixels`` pixels, or a decompression bomb (refused
                from the header, before decoding).
            ImageLoadError: empty, undecodable, truncated or unsupported data.
        """
        return Picture.from_bytes(data, name=name or "picture", max_pixels=self.max_pixels)

    def open_background(self, data: bytes, name: str) -> np.ndarray:
        """Decode an uploaded background picture: ``(h, w, 3)`` uint8 RGB.

        Raises:
            PictureTooLarge, ImageLoadError: as :meth:`open_picture`, the message naming the field.
        """
        try:
            return self.open_picture(data, name).image
        except PictureTooLarge as exc:
            raise PictureTooLarge(f"form field 'background_image': {exc}") from None
        except ImageLoadError as exc:
            raise ImageLoadError(f"form field 'background_image': {exc}") from None

    def session(self, picture: Picture, models: ModelChoice = ModelChoice()) -> CutoutSession:
        """A cutout session on ``picture`` with the ``models`` a request chose, sharing this service's
        detection cache.

        Raises:
            ValueError: an unknown model option.
        """
        settings = dataclasses.replace(self.settings, backend=models.backend, refine=models.refine, tta=models.tta)
        return CutoutSession(picture, settings, prompt_model=models.prompt_model, detections=self.detections)

    def warm_up(self) -> str:
        """Load the detection models now (once per process, through :mod:`inference.model_cache`),
        so the first request does not wait for them. Returns the backend's name.

        Raises:
            ModelUnavailable: the configured models cannot run here.
        """
        from inference import model_cache

        _, choice = model_cache.get_segmenter(self.settings)
        settings = self.settings
        model_cache.get_refiner(settings.refine, device=settings.device, trust=settings.trust_checkpoints)
        return choice.name

    # ------------------------------------------------------------------ routes
    def health(self) -> dict[str, object]:
        """What ``/healthz`` reports: the backend and point prompter ``auto`` resolves to and why, and the
        detection cache's counts."""
        from inference.model_cache import resolve_prompter

        choice = resolve_backend(self.settings.backend)
        prompter = resolve_prompter("auto")
        cache = self.detections
        return {
            "backend": choice.name,
            "backend_reason": choice.reason,
            "prompter": prompter.name,
            "prompter_reason": prompter.reason,
            "detection_cache": {"entries": len(cache), "hits": cache.hits, "misses": cache.misses},
        }

    def detect(self, data: bytes, name: str, models: ModelChoice = ModelChoice()) -> dict[str, object]:
        """Every character in the upload, numbered as the studio numbers them (1 = leftmost).

        Raises:
            ModelUnavailable: a model ``models`` names explicitly is not installed.
        """
        session = self.session(self.open_picture(data, name), models)
        instances = session.instances
        height, width = session.picture.image.shape[:2]
        characters = [
            {
                "index": i + 1,
                "box": [int(v) for v in instances.boxes[i]],
                "score": round(float(instances.scores[i]), 4),
                "area": int((instances.masks[i] >= COVER_THRESHOLD).sum()),
            }
            for i in range(len(instances))
        ]
        return {
            "width": width,
            "height": height,
            "backend": session.detection.choice.name,
            "backend_reason": session.detection.choice.reason,
            "refined_by": instances.refined_by,
            "digest": session.picture.digest,
            "seconds": round(float(session.detection.seconds), 4),
            "characters": characters,
            "notes": list(session.notes),
        }

    def cutout(self, data: bytes, name: str, options: CutoutOptions) -> OutputFile:
        """The file ``options`` asks for.

        Raises:
            ModelUnavailable: a model ``options.models`` names explicitly is not installed.
            NothingToCut: no character found, or the selection and points chose none.
            ValueError: a setting does not fit this picture (e.g. a point outside it,
                a character number that does not exist).
        """
        picture = self.open_picture(data, name)
        height, width = picture.image.shape[:2]
        check_points_inside(options.points, width, height)
        session = self.session(picture, options.models)
        session.set_steps(selection_steps(options.select, options.points))
        if not len(session.instances):
            raise NothingToCut(
                "No character was found in the picture"
                + (" or under the points" if options.points else "")
                + ". Try points on the character (points=[[x, y, true]]) or another picture."
            )
        selected = session.selected
        if not selected:
            raise NothingToCut("The selection and points leave no character chosen, so there is nothing to cut out.")
        fmt = options.format
        if fmt == "zip":
            body = session.export("layers", options.matte)
        elif fmt == "mask":
            body = session.export("mask", options.matte, trim=options.trim)
        elif options.background is None:
            body = session.export("cutout", options.matte, trim=options.trim)
        else:
            body = session.export(
                "composite", options.matte, background=options.background, trim=options.trim, fmt=fmt
            )
        media_type, suffix = MEDIA_TYPES[fmt]
        if fmt == "png" and options.background is not None:
            suffix = "composite.png"
        headers = {
            "X-Nukki-Backend": session.detection.choice.name,
            "X-Nukki-Characters": str(len(session.instances)),
            "X-Nukki-Selected": ",".join(str(i + 1) for i in selected),
            "X-Nukki-Notes": json.dumps(list(session.notes), ensure_ascii=True),
        }
        filename = f"{picture.stem}_{suffix}"
        headers["Content-Disposition"] = content_disposition(filename)
        return OutputFile(body, media_type, filename, headers)


def content_disposition(filename: str) -> str:
    """``attachment`` with the file name, ASCII-safe (RFC 6266 ``filename*`` for others)."""
    ascii_name = filename.encode("ascii", "replace").decode().replace("?", "_").replace('"', "_")
    if ascii_name == filename:
        return f'attachment; filename="{filename}"'
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"
