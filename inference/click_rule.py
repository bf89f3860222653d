"""The one click rule: the steps of a history and what each does to the chosen characters.

A selection is a pure function of the detected characters and an ordered list of
steps; :func:`advance` computes one step, and :class:`~inference.session.CutoutSession`
replays histories with it (memoising point prompts). The rule:

* Until a step changes the choice, every character is chosen ("untouched").
* An include click on a character: the first effective click starts from nobody
  and adds it; later ones add it.
* An exclude click drops the best-scoring chosen character under it.
* An include click on no character asks the point prompter for what lies there
  (the box of a detected character the click lies in is passed as a hint). A
  region it finds is appended as a new character and chosen (numbered after the
  detected ones, in click order). When it finds nothing, or a region far larger
  than any character (over twice the largest character's area and 5 % of the
  picture; over 40 % of the picture when there are no characters), nothing
  changes and a note says why and which model does better. A region that is
  mostly a known character (IoU >= 0.7; e.g. SAM 2 given that character's box)
  counts as a click on that character, so no duplicate is added; a region that
  holds a known character whole plus background around it is refused too.
* Checkboxes (:class:`ToggleStep`), select all/none (:class:`SetAllStep`) and
  rules (:class:`RuleStep`: ``all``, ``largest``, ``1,3``) set the choice directly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from inference.instances import COVER_THRESHOLD, Click, Instances, apply_click
from inference.pipeline import choose_by_rule

#: A point-prompted region larger than this many times the largest character is refused...
REFUSE_OVER_LARGEST = 2.0
#: ...unless it is at most this fraction of the picture (a small thing next to tiny characters).
REFUSE_FLOOR_FRACTION = 0.05
#: With no characters at all, a region larger than this fraction of the picture is refused.
REFUSE_ALONE_FRACTION = 0.4
#: A point-prompted region overlapping a known character this much (IoU) is that character.
SAME_CHARACTER_IOU = 0.7

#: ``(click, box hint or None) -> Instances`` (at most one): the point prompter for one picture.
Prompt = Callable[[Click, "tuple[int, int, int, int] | None"], Instances]


@dataclass(frozen=True)
class ClickStep:
    """A click at image pixel ``(x, y)``; ``include`` is the mode shown when it was made."""

    x: int
    y: int
    include: bool = True


@dataclass(frozen=True)
class ToggleStep:
    """A checkbox: choose (``value=True``) or drop character ``index`` (0-based)."""

    index: int
    value: bool


@dataclass(frozen=True)
class SetAllStep:
    """Select all (``True``) or none (``False``)."""

    value: bool


@dataclass(frozen=True)
class RuleStep:
    """Choose by rule: ``all``, ``largest`` or 1-based numbers as shown (``"1,3"``)."""

    rule: str


Step = ClickStep | ToggleStep | SetAllStep | RuleStep


class StepError(ValueError):
    """A step the rule refuses (malformed, or a character that does not exist at that point).

    ``index`` is the step's position in the history given, so a caller can drop exactly it.
    """

    def __init__(self, message: str, index: int) -> None:
        super().__init__(message)
        self.index = index


@dataclass(frozen=True)
class StepResult:
    """What one step did.

    Attributes:
        step: the step.
        changed: the chosen characters (or the characters known) changed.
        hit: the character (0-based) the step chose or dropped, if one.
        added: the index of a new point-prompted character, if the step made one.
        message: a sentence for the user when the step changed nothing or was refused.
    """

    step: Step
    changed: bool
    hit: int | None = None
    added: int | None = None
    message: str | None = None


@dataclass(frozen=True, eq=False)
class SelectionState:
    """The characters known and chosen after some steps.

    Attributes:
        instances: detected characters, then point-prompted ones.
        selected: chosen indices.
        untouched: no step has changed the choice yet (every character is chosen).
        notes: messages of point clicks that found nothing or were refused, in order.
        result: what the last step did (``None`` before any step).
    """

    instances: Instances
    selected: frozenset[int]
    untouched: bool
    notes: tuple[str, ...] = ()
    result: StepResult | None = None

    @classmethod
    def start(cls, instances: Instances) -> SelectionState:
        """Before any step: every character chosen, untouched."""
        return cls(instances, frozenset(range(len(instances))), True)


def advance(state: SelectionState, step: Step, prompt: Prompt, hint: Callable[[], str] = str) -> SelectionState:
    """The state after one more ``step``.

    Args:
        state: the state before it.
        step: the step.
        prompt: the point prompter (called only for an include click on no character).
        hint: called after a prompt; its sentence is appended to messages of point clicks
            that found nothing or were refused (e.g. how to get SAM 2).

    Raises:
        ValueError: a malformed step, a character index or number that does not exist.
    """
    instances = state.instances
    count = len(instances)
    if isinstance(step, ClickStep):
        return _click(state, step, prompt, hint)
    if isinstance(step, ToggleStep):
        if isinstance(step.index, bool) or not isinstance(step.index, (int, np.integer)):
            raise ValueError(f"expected an integer character index, got {step.index!r}")
        if not 0 <= step.index < count:
            raise ValueError(f"expected a character index in [0, {count}), got {step.index}")
        chosen = set(state.selected)
        (chosen.add if step.value else chosen.discard)(int(step.index))
    elif isinstance(step, SetAllStep):
        chosen = set(range(count)) if step.value else set()
    elif isinstance(step, RuleStep):
        chosen = set(choose_by_rule(instances, step.rule))
    else:
        raise ValueError(f"expected a ClickStep, ToggleStep, SetAllStep or RuleStep, got {type(step).__name__}")
    changed = frozenset(chosen) != state.selected
    hit = int(step.index) if isinstance(step, ToggleStep) and changed else None
    return SelectionState(instances, frozenset(chosen), False, state.notes, StepResult(step, changed, hit))


def _unchanged(state: SelectionState, step: Step, message: str, *, note: bool) -> SelectionState:
    notes = state.notes + (message,) if note else state.notes
    result = StepResult(step, False, message=message)
    return SelectionState(state.instances, state.selected, state.untouched, notes, result)


def _click(state: SelectionState, step: ClickStep, prompt: Prompt, hint: Callable[[], str]) -> SelectionState:
    instances = state.instances
    height, width = instances.image_size
    x, y = int(step.x), int(step.y)
    if not (0 <= x < width and 0 <= y < height):
        message = f"The click at ({x}, {y}) lies outside the {width}x{height} picture."
        return _unchanged(state, step, message, note=False)
    click = Click(x, y, bool(step.include))
    if click.include and not instances.covering(x, y):
        return _prompted(state, step, click, prompt, hint)
    trial = set() if (state.untouched and click.include) else set(state.selected)
    hit = apply_click(instances, trial, click)
    if hit is None:
        return _unchanged(state, step, f"No chosen character under the exclude click at ({x}, {y}).", note=False)
    return SelectionState(instances, frozenset(trial), False, state.notes, StepResult(step, True, hit))


def _prompted(
    state: SelectionState, step: ClickStep, click: Click, prompt: Prompt, hint: Callable[[], str]
) -> SelectionState:
    instances = state.instances
    x, y = click.x, click.y
    found = prompt(click, box_hint(instances, x, y))
    if not len(found):
        return _unchanged(state, step, f"Nothing separable under the click at ({x}, {y}). {hint()}".strip(), note=True)
    best = int(np.argmax(found.scores)) if len(found) > 1 else 0
    same = same_character(instances, found, best)
    if same is not None:
        chosen = set() if state.untouched else set(state.selected)
        changed = state.untouched or same not in chosen
        chosen.add(same)
        return SelectionState(instances, frozenset(chosen), False, state.notes, StepResult(step, changed, same))
    area = int((found.masks[best] >= COVER_THRESHOLD).sum())
    why = refusal(instances, area)
    swallowed_one = swallowed(instances, found, best) if not why else None
    if swallowed_one is not None:
        message = (
            f"Refused the region under the click at ({x}, {y}): it is character #{swallowed_one + 1} with the "
            f"background around it. Click on the character itself to choose it. {hint()}"
        ).strip()
        return _unchanged(state, step, message, note=True)
    if why:
        share = area / (instances.image_size[0] * instances.image_size[1])
        message = (
            f"Refused the region under the click at ({x}, {y}): it covers {share:.0%} of the picture, "
            f"{why}, so it is mostly background. {hint()}"
        ).strip()
        return _unchanged(state, step, message, note=True)
    index = len(instances)
    chosen = (set() if state.untouched else set(state.selected)) | {index}
    return SelectionState(
        instances.appended(found.subset([best])),
        frozenset(chosen),
        False,
        state.notes,
        StepResult(step, True, hit=index, added=index),
    )


def box_hint(instances: Instances, x: int, y: int) -> tuple[int, int, int, int] | None:
    """The smallest character box holding pixel ``(x, y)`` (a prompt hint), or ``None``."""
    inside = [tuple(int(v) for v in b) for b in instances.boxes if b[0] <= x < b[2] and b[1] <= y < b[3]]
    if not inside:
        return None
    return min(inside, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))


def overlaps(instances: Instances, found: Instances, index: int) -> list[tuple[int, int, int]]:
    """Per known character overlapping region ``index`` of ``found``: ``(character, shared pixels,
    character pixels)``, counting pixels the masks cover (>= 0.5)."""
    fx0, fy0, fx1, fy1 = (int(v) for v in found.boxes[index])
    region = found.masks[index] >= COVER_THRESHOLD
    out = []
    for i in range(len(instances)):
        x0, y0, x1, y1 = (int(v) for v in instances.boxes[i])
        ix0, iy0, ix1, iy1 = max(x0, fx0), max(y0, fy0), min(x1, fx1), min(y1, fy1)
        if ix0 >= ix1 or iy0 >= iy1:
            continue
        mine = instances.masks[i][iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0] >= COVER_THRESHOLD
        shared = int((mine & region[iy0 - fy0 : iy1 - fy0, ix0 - fx0 : ix1 - fx0]).sum())
        if shared:
            out.append((i, shared, int((instances.masks[i] >= COVER_THRESHOLD).sum())))
    return out


def same_character(instances: Instances, found: Instances, index: int) -> int | None:
    """The known character that region ``index`` of ``found`` mostly is
    (IoU >= :data:`SAME_CHARACTER_IOU`), or ``None``."""
    area = int((found.masks[index] >= COVER_THRESHOLD).sum())
    best, best_iou = None, SAME_CHARACTER_IOU
    for i, shared, theirs in overlaps(instances, found, index):
        iou = shared / max(1, area + theirs - shared)
        if iou >= best_iou:
            best, best_iou = i, iou
    return best


def swallowed(instances: Instances, found: Instances, index: int) -> int | None:
    """A known character that region ``index`` of ``found`` holds almost whole (>= 80 % of its
    pixels) together with more around it (the region is over 1.25 times its size), or ``None``:
    such a region is that character plus background, not a new thing."""
    area = int((found.masks[index] >= COVER_THRESHOLD).sum())
    for i, shared, theirs in overlaps(instances, found, index):
        if shared >= 0.8 * theirs and area > 1.25 * theirs:
            return i
    return None


def refusal(instances: Instances, area: int) -> str:
    """Why a point-prompted region of ``area`` pixels is refused as mostly background, or ``""``."""
    height, width = instances.image_size
    picture = height * width
    if not len(instances):
        if area > REFUSE_ALONE_FRACTION * picture:
            return f"more than {REFUSE_ALONE_FRACTION:.0%} of a picture with no character found"
        return ""
    largest = max(int((m >= COVER_THRESHOLD).sum()) for m in instances.masks)
    if area > max(REFUSE_OVER_LARGEST * largest, REFUSE_FLOOR_FRACTION * picture):
        return f"{area / max(largest, 1):.1f} times the largest character"
    return ""
