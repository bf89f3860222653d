"""One session's work on the Cutout page: the picture, its detection, the choice of characters.

A :class:`Workspace` lives in that session's ``st.session_state`` (see
:mod:`studio.session`), so two people never share one. It only changes when a
picture decodes, a detection finishes, or the person acts; a bad upload never
touches it, so the last good picture and its selection survive it.

Nothing here imports Streamlit.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from inference.image_io import LoadedImage, load_image
from inference.instances import Click
from inference.pipeline import Cutout, Detection, image_digest
from studio.canvas import drawing_of, fit_canvas, image_to_canvas, point_object
from studio.selection import SelectionHistory

#: Canvas widths a person can choose (canvas pixels; clicks map back exactly at any size).
CANVAS_WIDTHS = (400, 480, 560, 640, 720, 840, 960)
#: Default canvas width: fits the left column of a 1366-px-wide window.
CANVAS_DEFAULT_WIDTH = 480
#: Tallest canvas, so portrait pictures fit on a laptop screen.
CANVAS_MAX_HEIGHT = 720
#: Cutouts remembered per session (preview and full quality of the current choice).
CUTOUT_MEMORY = 4


@dataclass(frozen=True, eq=False)
class Picture:
    """A decoded picture and where it came from."""

    name: str
    digest: str
    image: np.ndarray
    file_alpha: np.ndarray | None
    format: str
    source: str  # "upload" or "sample"

    @property
    def size(self) -> tuple[int, int]:
        return self.image.shape[0], self.image.shape[1]

    @property
    def stem(self) -> str:
        stem = self.name.rsplit("/", 1)[-1].rsplit(".", 1)[0].strip()
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)
        return safe or "picture"


def decode_picture(name: str, data: bytes, *, source: str, max_pixels: int) -> Picture:
    """Decode uploaded or bundled bytes.

    Raises:
        ImageLoadError: not a picture Nukki can use (the message says why).
    """
    loaded: LoadedImage = load_image(data, max_pixels=max_pixels)
    return Picture(name, image_digest(data), loaded.image, loaded.alpha, loaded.format, source)


@dataclass
class Workspace:
    """Everything the Cutout page remembers for one session."""

    picture: Picture | None = None
    detection_key: tuple | None = None
    detection: Detection | None = None
    #: Wall time the last detection call took here (short when the cache answered).
    detection_wall_s: float = 0.0
    selection: SelectionHistory | None = None
    #: Bumped whenever the canvas must be rebuilt from :attr:`canvas_seed` (new picture, undo, reset).
    canvas_generation: int = 0
    #: The canvas's ``initial_drawing``: kept equal to the clicks made, so a canvas that
    #: the browser re-mounts (page switch, elements shifting above it) shows them all.
    canvas_seed: dict = field(default_factory=lambda: {"objects": []})
    #: Widest the canvas may be (the picture is never enlarged beyond its own size).
    canvas_width: int = CANVAS_DEFAULT_WIDTH
    #: The last upload handled (its file id), so one upload is decoded once.
    seen_upload: str | None = None
    #: Why the last upload was refused; shown until the next picture loads.
    load_error: str | None = None
    #: A picture the person uploaded as a background (name, RGB) and the upload's id.
    background_picture: tuple[str, np.ndarray] | None = None
    seen_background_upload: str | None = None
    background_error: str | None = None
    _cutouts: OrderedDict = field(default_factory=OrderedDict)
    _overlay: tuple | None = None

    # ------------------------------------------------------------------ picture
    def set_picture(self, picture: Picture) -> None:
        """A new good picture: forget the old detection, clicks and errors."""
        self.picture = picture
        self.detection_key = None
        self.detection = None
        self.selection = None
        self.load_error = None
        self._cutouts.clear()
        self._overlay = None
        self.canvas_seed = {"objects": []}
        self.canvas_generation += 1

    def set_detection(self, key: tuple, detection: Detection) -> None:
        """A finished detection for the current picture: every character chosen, no clicks."""
        self.detection_key = key
        self.detection = detection
        self.selection = SelectionHistory(detection.instances)
        self._cutouts.clear()
        self._overlay = None
        self.canvas_seed = {"objects": []}
        self.canvas_generation += 1

    # ------------------------------------------------------------------ canvas
    @property
    def canvas_key(self) -> str:
        digest = self.picture.digest[:12] if self.picture else "none"
        height, width = self.canvas_size if self.picture else (0, 0)
        return f"canvas.{digest}.{width}x{height}.{self.canvas_generation}"

    @property
    def canvas_size(self) -> tuple[int, int]:
        """``(h, w)`` of the canvas the picture is shown on."""
        if self.picture is None:
            raise ValueError("expected a picture, got none")
        return fit_canvas(self.picture.size, max_width=self.canvas_width, max_height=CANVAS_MAX_HEIGHT)

    def current_drawing(self) -> dict:
        """The canvas drawing of exactly the clicks the selection holds, one point per click
        at the centre of its picture pixel (so it maps back to the same clicks)."""
        clicks: list[Click] = self.selection.clicks if self.selection else []
        objects = []
        for click in clicks:
            x, y = image_to_canvas(click.x, click.y, canvas_size=self.canvas_size, image_size=self.picture.size)
            objects.append(point_object(x, y, include=click.include))
        return drawing_of(objects)

    def rebuild_canvas(self) -> None:
        """Start a fresh canvas holding exactly the selection's clicks (after undo/reset)."""
        self.canvas_seed = self.current_drawing()
        self.canvas_generation += 1

    # ------------------------------------------------------------------ memo
    def remembered_cutout(self, key: tuple) -> Cutout | None:
        cutout = self._cutouts.get(key)
        if cutout is not None:
            self._cutouts.move_to_end(key)
        return cutout

    def remember_cutout(self, key: tuple, cutout: Cutout) -> None:
        self._cutouts[key] = cutout
        while len(self._cutouts) > CUTOUT_MEMORY:
            self._cutouts.popitem(last=False)

    def remembered_overlay(self, key: tuple) -> np.ndarray | None:
        if self._overlay is not None and self._overlay[0] == key:
            return self._overlay[1]
        return None

    def remember_overlay(self, key: tuple, overlay: np.ndarray) -> None:
        self._overlay = (key, overlay)
