"""One cutout of one picture: detect once, click many times, render and export on demand.

:class:`CutoutSession` is the engine behind every door (the studio, the command
line, the batch page, the HTTP API). It holds

* the :class:`Picture` (decoded once, named by the digest of its bytes),
* its :class:`~inference.pipeline.Detection`, computed lazily once and shared
  through a :class:`DetectionCache` keyed by the picture's digest and the
  detection settings,
* the ordered history of steps (clicks, checkbox toggles, select all/none,
  rules such as ``largest`` or ``1,3``).

The chosen characters are a pure function of the detection and the steps: the
history is replayed (point prompts memoised), so applying the same history twice
gives the same answer and a late or duplicated update from a browser is harmless.

The click rule is :mod:`inference.click_rule` (the only one); its step types are
re-exported here.

Characters are numbered left to right (box ``x0``, ties by ``y0``); point-prompted
ones follow in click order. Selections are 0-based indices; people see ``index + 1``.

Exports of nothing: rendering no characters gives an empty (fully transparent)
cutout, and every export (PNG, mask, composite, layers ZIP) with none chosen
raises ``ValueError("expected at least one chosen character, got none")``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from inference import model_cache, pipeline
from inference.composite import Background
from inference.export import IMAGE_FORMATS, cutout_png, encode_image, mask_png, trim_box
from inference.detection_cache import SHARED_DETECTIONS, DetectionCache, settings_key
from inference.image_io import MAX_PIXELS, pixel_limit, safe_stem, unique_stems
from inference.click_rule import (
    ClickStep,
    RuleStep,
    SelectionState,
    SetAllStep,
    Step,
    StepError,
    StepResult,
    ToggleStep,
    advance,
)
from inference.instances import Click, Instances
from inference.matte import MatteSettings
from inference.pipeline import (
    NOTHING_CHOSEN,
    Cutout,
    Detection,
    layers_zip,
    render_composite,
)
from inference.picture import Picture
from inference.prompt import PointPrompter
from inference.segmenter import DetectionSettings

__all__ = [  # the session's names, including those re-exported from the modules that hold them
    "MAX_PIXELS", "pixel_limit", "safe_stem", "unique_stems", "Picture", "DetectionCache", "SHARED_DETECTIONS",
    "ClickStep", "ToggleStep", "SetAllStep", "RuleStep", "Step", "StepResult", "StepError", "CutoutSession", "EXPORT_KINDS",
]
#: Renders a session remembers (preview and full quality of the last few choices).
RENDERS_KEPT = 2
#: What :meth:`CutoutSession.export` writes.
EXPORT_KINDS = ("cutout", "mask", "composite", "layers")
#: How to get SAM 2 when the model cache cannot say it.
SAM2_HINT = (
    "SAM 2 does better at point clicks: `--prompt-model sam2` after "
    "`.venv/bin/python -m inference.weights download sam2` (or the Models page)."
)

#: Said with a point click that found nothing while the classic segmenter did the detection.
ANIME_HINT = (
    "The anime model finds characters the classic segmenter misses: "
    "`python -m inference.weights download rtmdet`."
)


# ---------------------------------------------------------------------------- models
def _detect(picture: Picture, settings: DetectionSettings) -> Detection:
    """Run the models ``settings`` ask for (loaded once per process by :mod:`inference.model_cache`)."""
    return pipeline.detect_characters(picture.image, settings)


def _prompter_hint(choice: model_cache.PrompterChoice) -> str:
    """What to tell a user whose click found nothing: how to get SAM 2 when it did not run."""
    if choice.name != "classic":
        return "Try a click nearer the middle of the thing."
    how = choice.reason.partition("For SAM 2 point prompts: ")[2]
    return f"SAM 2 does better at point clicks: {how[0].lower() + how[1:]}" if how else SAM2_HINT


# ---------------------------------------------------------------------------- session
class CutoutSession:
    """A picture, its detection, the step history, and the cutout they make (see the module doc)."""

    def __init__(
        self,
        picture: Picture,
        settings: DetectionSettings = DetectionSettings(),
        *,
        prompt_model: str = "auto",
        detections: DetectionCache | None = None,
        detection: Detection | None = None,
        prompter: PointPrompter | None = None,
    ) -> None:
        """Args:
            picture: the picture.
            settings: what the detection depends on.
            prompt_model: point prompter for clicks on no character: ``auto`` (SAM 2 when its
                weights are installed, else classic), ``sam2`` or ``classic``; loaded on first use.
            detections: the cache to share (default :data:`SHARED_DETECTIONS`).
            detection: use this detection instead of running the models (tests, callers that have one).
            prompter: use this point prompter instead of loading ``prompt_model``.
        """
        if not isinstance(picture, Picture):
            raise ValueError(f"expected a Picture, got {type(picture).__name__}")
        if prompt_model not in model_cache.PROMPTERS:
            raise ValueError(f"expected a prompt model in {model_cache.PROMPTERS}, got {prompt_model!r}")
        if detection is not None and detection.instances.image_size != picture.size:
            raise ValueError(f"expected a detection of a {picture.size} picture, got {detection.instances.image_size}")
        self.picture = picture
        self.settings = settings
        self.prompt_model = prompt_model
        self._detections = detections if detections is not None else SHARED_DETECTIONS
        self._detection = detection
        self._prompter = prompter
        self._prompter_hint = SAM2_HINT if prompter is not None and prompter.name == "classic" else ""
        self._prompts: dict[tuple, Instances] = {}
        self._steps: list[Step] = []
        self._states: list[SelectionState] = []
        self._renders: OrderedDict[tuple, tuple[Instances, Cutout]] = OrderedDict()
        self._smalls: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ detection
    @property
    def detection(self) -> Detection:
        """The detection (computed once; cached by picture digest and settings).

        Raises:
            ModelUnavailable: the requested model cannot run here.
        """
        with self._lock:
            if self._detection is None:
                key = (self.picture.digest, settings_key(self.settings))
                self._detection = self._detections.get(key, lambda: _detect(self.picture, self.settings))
            return self._detection

    def _prompter_now(self) -> PointPrompter:
        if self._prompter is None:
            self._prompter, choice = model_cache.get_prompter(
                self.prompt_model, device=self.settings.device, trust=self.settings.trust_checkpoints
            )
            self._prompter_hint = _prompter_hint(choice)
        return self._prompter

    # ------------------------------------------------------------------ state
    def _base(self) -> SelectionState:
        if not self._states:
            self._states = [SelectionState.start(self.detection.instances)]
        return self._states[0]

    @property
    def _now(self) -> SelectionState:
        self._base()
        return self._states[-1]

    @property
    def instances(self) -> Instances:
        """Detected characters (left to right) followed by point-prompted ones (in click order)."""
        with self._lock:
            return self._now.instances

    @property
    def steps(self) -> tuple[Step, ...]:
        with self._lock:
            return tuple(self._steps)

    @property
    def selected(self) -> list[int]:
        """Chosen character indices (0-based, sorted): a pure function of the detection and :attr:`steps`."""
        with self._lock:
            return sorted(self._now.selected)

    @property
    def untouched(self) -> bool:
        """True until a step changed the choice (every character is chosen then)."""
        with self._lock:
            return self._now.untouched

    @property
    def last_result(self) -> StepResult | None:
        with self._lock:
            return self._now.result

    @property
    def notes(self) -> list[str]:
        """Sentences for the user: the segmenter's (e.g. busy background) and the steps' (refused clicks)."""
        with self._lock:
            now = self._now
            out: list[str] = []
            for note in now.instances.notes + now.notes:
                if note not in out:
                    out.append(note)
            return out

    def apply(self, step: Step) -> StepResult:
        """Append one step and return what it did.

        Raises:
            StepError: (a ``ValueError``) a malformed step or a character index/number that
                does not exist (the history is left unchanged).
        """
        with self._lock:
            try:
                state = self._advance(self._now, step)
            except ValueError as exc:
                raise StepError(str(exc), len(self._steps)) from None
            self._steps.append(step)
            self._states.append(state)
            return state.result

    def set_steps(self, steps: Sequence[Step]) -> bool:
        """Replace the whole history (the studio derives it from its widgets on every rerun).

        Idempotent: the same history again changes nothing. The common prefix with the
        current history is reused; the rest is replayed (point prompts are memoised).
        Returns True when the history changed.

        Raises:
            StepError: (a ``ValueError``) a step is malformed or names a character that does
                not exist at that point; ``.index`` is its position in ``steps``. The history
                is left unchanged.
        """
        steps = list(steps)
        with self._lock:
            self._base()
            common = 0
            while common < min(len(steps), len(self._steps)) and steps[common] == self._steps[common]:
                common += 1
            if common == len(steps) == len(self._steps):
                return False
            states = self._states[: common + 1]
            for index in range(common, len(steps)):
                try:
                    states.append(self._advance(states[-1], steps[index]))
                except ValueError as exc:
                    raise StepError(str(exc), index) from None
            self._steps, self._states = steps, states
            return True

    def undo(self) -> bool:
        """Take back the last step; False when there was none."""
        with self._lock:
            if not self._steps:
                return False
            self._steps.pop()
            self._states.pop()
            return True

    def reset(self) -> None:
        """Back to the detection: no steps, every character chosen, point-prompted ones gone."""
        with self._lock:
            self._steps.clear()
            del self._states[1:]

    def _advance(self, state: SelectionState, step: Step) -> SelectionState:
        return advance(state, step, self._prompt, self._hint)

    def _prompt(self, click: Click, box: tuple[int, int, int, int] | None) -> Instances:
        """The point prompter's answer for one click, memoised (replays never ask twice)."""
        key = (click, box)
        if key not in self._prompts:
            prompter = self._prompter_now()
            self._prompts[key] = prompter.segment_points(self.picture.image, self.picture.digest, [click], box)
        return self._prompts[key]

    def _hint(self) -> str:
        """How to do better than the models that ran (asked only after a prompt, so the prompter is loaded)."""
        hint = self._prompter_hint or ""
        if self.detection.choice.name == "classic":
            hint += f" {ANIME_HINT}"
        return hint.strip()

    # ------------------------------------------------------------------ rendering
    def cutout(self, matte: MatteSettings, *, max_side: int | None = None) -> Cutout:
        """The chosen characters matted: full resolution (what downloads use), or a preview at
        display size (long side at most ``max_side``, matte parameters scaled to match).
        Nothing chosen gives an empty cutout (alpha 0). The last few renders are remembered."""
        with self._lock:
            instances, selected = self._now.instances, tuple(sorted(self._now.selected))
        return self._render(instances, selected, matte, max_side)

    def _render(
        self, instances: Instances, selected: tuple[int, ...], matte: MatteSettings, max_side: int | None
    ) -> Cutout:
        key = (id(instances), selected, matte, max_side)
        with self._lock:
            remembered = self._renders.get(key)
            if remembered is not None:
                self._renders.move_to_end(key)
                return remembered[1]
        small = self._small_picture(max_side) if max_side is not None else None
        cut = pipeline.render_cutout(
            self.picture.image, instances, selected, matte, max_side=max_side, small_image=small
        )
        with self._lock:
            self._renders[key] = (instances, cut)  # the key's id() stays valid while the entry holds them
            while len(self._renders) > RENDERS_KEPT:
                self._renders.popitem(last=False)
        return cut

    def _small_picture(self, max_side: int) -> np.ndarray:
        """The picture at display size for ``max_side`` (computed once per size; the last two kept)."""
        with self._lock:
            small = self._smalls.get(max_side)
        if small is None:
            small = pipeline.shrink_image(self.picture.image, max_side)
            with self._lock:
                self._smalls[max_side] = small
                while len(self._smalls) > 2:
                    self._smalls.popitem(last=False)
        return small

    def composite(self, matte: MatteSettings, background: Background, *, max_side: int | None = None) -> np.ndarray:
        """The cutout over ``background`` (checkerboard for transparent): ``(h, w, 3)`` uint8 RGB,
        full size or at display size with ``max_side``."""
        return render_composite(self.picture.image, self.cutout(matte, max_side=max_side), background)

    def export(
        self,
        kind: str,
        matte: MatteSettings,
        *,
        background: Background | None = None,
        trim: bool = False,
        fmt: str = "png",
    ) -> bytes:
        """A file of the chosen characters at full resolution.

        Args:
            kind: ``cutout`` (RGBA PNG), ``mask`` (8-bit PNG, white = character),
                ``composite`` (over ``background``; transparent/``None`` gives the
                checkerboard the preview shows) or ``layers`` (ZIP: one trimmed RGBA
                layer per character, the full cutout, the mask, the background plate
                and a manifest).
            trim: crop ``cutout``/``mask``/``composite`` to the visible pixels.
            fmt: ``png``, ``jpeg`` or ``webp`` for ``composite``; the others are always PNG/ZIP
                and take only ``png``.

        Raises:
            ValueError: unknown kind or format, or nothing chosen
                (``"expected at least one chosen character, got none"``).
        """
        if kind not in EXPORT_KINDS:
            raise ValueError(f"expected kind in {EXPORT_KINDS}, got {kind!r}")
        allowed = IMAGE_FORMATS if kind == "composite" else ("png",)
        if fmt not in allowed:
            raise ValueError(f"expected format in {allowed} for {kind}, got {fmt!r}")
        with self._lock:
            instances, selected = self._now.instances, tuple(sorted(self._now.selected))
        if not selected:
            raise ValueError(NOTHING_CHOSEN)
        if kind == "layers":
            detection = self.detection
            extra = {"detection": {"backend": detection.choice.name, "refine": self.settings.refine,
                                   "tta": self.settings.tta}}
            return layers_zip(self.picture.image, instances, selected, matte, source_name=self.picture.name,
                              extra=extra)
        cut = self._render(instances, selected, matte, None)
        if kind == "cutout":
            return cutout_png(cut.foreground, cut.alpha, trim=trim)
        box = trim_box(cut.alpha) if trim else None
        x0, y0, x1, y1 = box if box else (0, 0, cut.alpha.shape[1], cut.alpha.shape[0])
        if kind == "mask":
            return mask_png(np.ascontiguousarray(cut.alpha[y0:y1, x0:x1]))
        flat = render_composite(self.picture.image, cut, background or Background())
        return encode_image(np.ascontiguousarray(flat[y0:y1, x0:x1]), fmt)
