"""One session's work on the Cutout page: the picture, its cutout session, the step history.

A :class:`Workspace` lives in that session's ``st.session_state`` (see
:mod:`studio.session`), so two people never share one. It only changes when a
picture decodes, a detection finishes, or the person acts; a bad upload never
touches it, so the last good picture and its selection survive it.

The selection is never stored: the workspace holds the ordered steps (clicks with
the mode shown when each was made, checkbox toggles, select all / none) and hands
them to the engine's :class:`~inference.session.CutoutSession` on every rerun
(:meth:`Workspace.sync`), which replays them (only what changed). A new picture or
a new detection starts a new, empty history and a new click component.

Nothing here imports Streamlit.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from inference.composite import Background
from inference.matte import MatteSettings
from inference.picture import Picture
from inference.session import ClickStep, CutoutSession, SetAllStep, Step, StepError, ToggleStep
from studio.canvas import PictureClick

#: Cutouts remembered per session (previews of recent choices and settings).
CUTOUT_MEMORY = 4
#: Longest side of the picture shown on the click component (CSS scales it to the column).
CLICK_PICTURE_LONG_SIDE = 1024


def decode_picture(name: str, data: bytes, *, max_pixels: int | None = None) -> Picture:
    """Decode uploaded or bundled bytes.

    Raises:
        ImageLoadError: not a picture Nukki can use (the message says why).
    """
    return Picture.from_bytes(data, name=name, max_pixels=max_pixels)


@dataclass(frozen=True)
class Entry:
    """One step of the history; clicks carry the id the click component gave them."""

    step: Step
    click_id: str | None = None


@dataclass
class Workspace:
    """Everything the Cutout page remembers for one session."""

    picture: Picture | None = None
    #: "upload" or "sample".
    source: str = ""
    #: The engine's session for the picture and the detection settings in :attr:`detection_key`.
    cut: CutoutSession | None = None
    detection_key: tuple | None = None
    #: Wall time the last detection call took here (short when the cache answered).
    detection_wall_s: float = 0.0
    #: Bumped for every new picture or detection: names the click component (a new one is empty).
    generation: int = 0
    #: The ordered history of this picture's detection.
    entries: list[Entry] = field(default_factory=list)
    #: Bumped by every change of the history (never repeats within a picture): names the checkboxes.
    revision: int = 0
    #: Every click id taken in from the current click component (undone ones too).
    seen_clicks: set[str] = field(default_factory=set)
    #: Checkbox keys whose change became a toggle step (each counts once).
    seen_toggles: set[str] = field(default_factory=set)
    #: Steps dropped because the engine refused them (e.g. a checkbox of a character gone).
    dropped_steps: int = 0
    #: The last upload handled (its file id), so one upload is decoded once.
    seen_upload: str | None = None
    #: Why the last upload was refused; shown until the next picture loads or upload.
    load_error: str | None = None
    #: A picture the person uploaded as a background (name, RGB) and the upload's id.
    background_picture: tuple[str, np.ndarray] | None = None
    seen_background_upload: str | None = None
    background_error: str | None = None
    #: The matte and background the preview shows now: what a download button press exports.
    export_matte: MatteSettings = field(default_factory=MatteSettings)
    export_background: Background = field(default_factory=Background)
    _previews: OrderedDict = field(default_factory=OrderedDict)
    _overlay: tuple | None = None

    # ------------------------------------------------------------------ picture
    def set_picture(self, picture: Picture, source: str) -> None:
        """A new good picture: forget the old detection, history and errors."""
        self.picture = picture
        self.source = source
        self.cut = None
        self.detection_key = None
        self.load_error = None
        self._fresh_history()

    def set_session(self, key: tuple, cut: CutoutSession) -> None:
        """A cutout session whose detection has finished: every character chosen, no steps."""
        self.detection_key = key
        self.cut = cut
        self._fresh_history()

    def _fresh_history(self) -> None:
        self.entries = []
        self.seen_clicks = set()
        self.seen_toggles = set()
        self._previews.clear()
        self._overlay = None
        self.generation += 1

    # ------------------------------------------------------------------ history
    @property
    def click_key(self) -> str:
        """Key of the click component for this picture and detection."""
        return f"clicks.{self.generation}"

    def take_clicks(self, clicks: list[PictureClick]) -> int:
        """Append the clicks not seen before as steps (idempotent); returns how many were new."""
        added = 0
        for click in clicks:
            if click.id in self.seen_clicks:
                continue
            self.seen_clicks.add(click.id)
            self.entries.append(Entry(ClickStep(click.x, click.y, click.include), click.id))
            added += 1
        self.revision += bool(added)
        return added

    def toggle(self, index: int, value: bool) -> None:
        self.entries.append(Entry(ToggleStep(index, value)))
        self.revision += 1

    def set_all(self, value: bool) -> None:
        self.entries.append(Entry(SetAllStep(value)))
        self.revision += 1

    def undo(self) -> bool:
        if not self.entries:
            return False
        self.entries.pop()
        self.revision += 1
        return True

    def reset(self) -> None:
        self.entries.clear()
        self.revision += 1

    @property
    def steps(self) -> tuple[Step, ...]:
        return tuple(e.step for e in self.entries)

    @property
    def points(self) -> list[PictureClick]:
        """The clicks in the history, as the click component draws them."""
        return [
            PictureClick(e.click_id or f"step{i}", e.step.x, e.step.y, e.step.include)
            for i, e in enumerate(self.entries)
            if isinstance(e.step, ClickStep)
        ]

    def sync(self) -> CutoutSession:
        """The cutout session with exactly this history replayed (idempotent, cheap when unchanged).

        A step the engine refuses (a checkbox of a character that no longer exists) is
        dropped from the history rather than breaking the page.
        """
        if self.cut is None:
            raise ValueError("expected a detected picture, got none")
        while True:
            try:
                self.cut.set_steps(self.steps)
                return self.cut
            except StepError as refused:  # the engine names the refused step: drop exactly it
                del self.entries[refused.index]
                self.dropped_steps += 1
                self.revision += 1

    # ------------------------------------------------------------------ memo
    def remembered_preview(self, key: tuple):
        found = self._previews.get(key)
        if found is not None:
            self._previews.move_to_end(key)
        return found

    def remember_preview(self, key: tuple, value) -> None:
        self._previews[key] = value
        while len(self._previews) > CUTOUT_MEMORY:
            self._previews.popitem(last=False)

    def remembered_overlay(self, key: tuple) -> str | None:
        if self._overlay is not None and self._overlay[0] == key:
            return self._overlay[1]
        return None

    def remember_overlay(self, key: tuple, overlay: str) -> None:
        self._overlay = (key, overlay)
