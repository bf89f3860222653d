"""Which characters are chosen: clicks, checkboxes, select all/none, with undo.

A :class:`SelectionHistory` starts from one detection with every character
chosen ("untouched"). Clicks follow the engine's rules
(:func:`inference.pipeline.choose_characters`, one click at a time through
:func:`inference.instances.apply_click`): the first include click that hits a
character starts from nobody and adds it, an exclude click drops the
best-scoring chosen character under it, and while untouched a click that hits
nothing changes nothing, so a stray click never empties the cutout. Checkboxes and select all/none set the
choice directly. Every change is one step that :meth:`SelectionHistory.undo`
takes back; an include click on the background may add a new character
(the classic segmenter's point prompt), and undoing that click removes it again.

Nothing here imports Streamlit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from inference.instances import Click, Instances, apply_click

#: Cuts out something new under an include click that hits no character:
#: ``(instances, click) -> instances`` (the same object when nothing was found).
AddAt = Callable[[Instances, Click], Instances]


@dataclass(frozen=True, eq=False)
class Snapshot:
    """The state after some steps: the characters known, the chosen ones, and
    whether the user has changed the choice yet (untouched = all, by default)."""

    instances: Instances
    selected: frozenset[int]
    untouched: bool
    #: Changes whenever ``instances`` does (a click added a character), for cache keys.
    version: int = 0


@dataclass(frozen=True)
class Step:
    """One change: ``kind`` is ``click``, ``toggle``, ``all`` or ``none``."""

    kind: str
    click: Click | None = None
    index: int | None = None
    value: bool | None = None


class SelectionHistory:
    """The chosen characters of one detection and the steps that led there."""

    def __init__(self, instances: Instances) -> None:
        self._base = instances
        self._snapshots: list[Snapshot] = [Snapshot(instances, frozenset(range(len(instances))), True)]
        self._steps: list[Step] = []
        self._versions = 0

    # ------------------------------------------------------------------ reading
    @property
    def instances(self) -> Instances:
        """The characters known now (detected plus any added by clicks)."""
        return self._snapshots[-1].instances

    @property
    def version(self) -> int:
        """Names the current :attr:`instances` (same number, same characters)."""
        return self._snapshots[-1].version

    @property
    def selected(self) -> list[int]:
        """Chosen character indices, sorted."""
        return sorted(self._snapshots[-1].selected)

    @property
    def untouched(self) -> bool:
        """True until the user changes the choice (every character is chosen then)."""
        return self._snapshots[-1].untouched

    @property
    def steps(self) -> tuple[Step, ...]:
        return tuple(self._steps)

    @property
    def clicks(self) -> list[Click]:
        """The clicks among the steps, in order."""
        return [s.click for s in self._steps if s.kind == "click" and s.click is not None]

    @property
    def can_undo(self) -> bool:
        return bool(self._steps)

    # ------------------------------------------------------------------ changing
    def _push(self, step: Step, snapshot: Snapshot) -> None:
        self._steps.append(step)
        self._snapshots.append(snapshot)

    def click(self, click: Click, add_at: AddAt | None = None) -> int | None:
        """Apply one click; returns the index of the character it chose or dropped (``None``: none).

        The click is recorded even when it changes nothing, so the step list
        stays aligned with the points drawn on the canvas.
        """
        now = self._snapshots[-1]
        instances = now.instances
        chosen = set() if (now.untouched and click.include) else set(now.selected)
        height, width = instances.image_size
        inside = 0 <= click.x < width and 0 <= click.y < height
        if inside and click.include and add_at is not None and not instances.covering(click.x, click.y):
            grown = add_at(instances, click)
            if len(grown) > len(instances):
                instances = grown
        hit = apply_click(instances, chosen, click)
        untouched = now.untouched and hit is None
        if untouched:
            chosen = set(now.selected)
        version = now.version
        if instances is not now.instances:
            self._versions += 1
            version = self._versions
        self._push(Step("click", click=click), Snapshot(instances, frozenset(chosen), untouched, version))
        return hit

    def set_chosen(self, index: int, value: bool) -> None:
        """Choose or drop one character (a checkbox)."""
        now = self._snapshots[-1]
        if not 0 <= index < len(now.instances):
            raise ValueError(f"expected a character index in [0, {len(now.instances)}), got {index}")
        chosen = set(now.selected)
        if value:
            chosen.add(index)
        else:
            chosen.discard(index)
        snapshot = Snapshot(now.instances, frozenset(chosen), False, now.version)
        self._push(Step("toggle", index=index, value=value), snapshot)

    def select_all(self) -> None:
        now = self._snapshots[-1]
        self._push(Step("all"), Snapshot(now.instances, frozenset(range(len(now.instances))), False, now.version))

    def select_none(self) -> None:
        now = self._snapshots[-1]
        self._push(Step("none"), Snapshot(now.instances, frozenset(), False, now.version))

    def undo(self) -> Step | None:
        """Take back the last step; returns it (``None`` when there was nothing to undo)."""
        if not self._steps:
            return None
        self._snapshots.pop()
        return self._steps.pop()

    def reset(self) -> None:
        """Back to the detection: no clicks, every character chosen, added characters gone."""
        del self._snapshots[1:]
        self._steps.clear()

    def sync_clicks(self, clicks: Sequence[Click], add_at: AddAt | None = None) -> bool:
        """Make the recorded clicks equal ``clicks`` (the points on the canvas).

        New trailing clicks are applied in order. If the canvas lost points (its
        own undo or reset) or they differ, steps are undone back to the longest
        common prefix of clicks first. Returns True when anything changed.
        """
        mine = self.clicks
        common = 0
        while common < min(len(mine), len(clicks)) and mine[common] == clicks[common]:
            common += 1
        changed = False
        while len(self.clicks) > common:
            self.undo()
            changed = True
        for click in clicks[common:]:
            self.click(click, add_at)
            changed = True
        return changed
