"""The click picture: a small Streamlit component that turns clicks into state, not events.

The studio shows the picture (with the coloured, numbered characters drawn on it)
inside its own component, with the Include / Exclude switch *in the same
component*. Each click is recorded in the browser, at once, with

* a unique id (``"<mount nonce>:<n>"``),
* the picture pixel under it (the browser maps the pointer position through the
  picture's displayed size, so the page zoom, the column width or a 390-px phone
  never change which pixel a click lands on),
* the mode the switch showed at that moment (no round trip to the server decides it).

The switch itself lives in the browser: moving it sends nothing, so it costs no rerun.
(It used to send its position as state. A switch followed at once by a click then made
two reruns back to back, and now and then Streamlit's page was left showing a run in
progress that the server had long finished, with no script thread left on the server:
``tests/test_browser.py::test_switching_pictures_starts_a_fresh_selection`` timed out
in about one run of four; repeating its steps six times over, 3 runs of 4 hung, and none
of 7 without that update.) When the component mounts again it starts in the mode of the
last click it recorded (:func:`mode_to_show`).

The component's state is the append-only list of the clicks made since it was
mounted; every update carries the whole list. The server appends a click to its
history the first time it sees its id, so an update that arrives twice, late, or
out of order changes nothing (see :func:`new_clicks`). The server sends back the
clicks its history holds (``points``) and the ids it has seen (``seen``): the
component draws the former, plus its own clicks the server has not seen yet.

Why not a drawing canvas: a fabric.js canvas reloads its drawing whenever the
server sends a different ``initial_drawing`` and sends the reloaded drawing back
(a second update of every click, at slightly different coordinates), which wiped
clicks made while a rerun was on its way; and its point colour (include or exclude)
was only updated after a rerun, so a click right after switching the mode was drawn
and applied in the old mode.

The pure parts (:func:`parse_clicks`, :func:`new_clicks`, :func:`display_to_image`)
import nothing from Streamlit; :func:`click_picture` does, lazily.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

#: Fill colour of include dots (green) and exclude dots (red).
INCLUDE_COLOR = "#16a34a"
EXCLUDE_COLOR = "#dc2626"
#: Longest a click id may be (the browser makes ``"<nonce>:<n>"``, about 20 characters).
MAX_ID_LENGTH = 64
COMPONENT_NAME = "nukki.click_picture"
MODES = ("include", "exclude")


@dataclass(frozen=True)
class PictureClick:
    """One click as the component recorded it: id, picture pixel ``(x, y)``, mode."""

    id: str
    x: int
    y: int
    include: bool


def display_to_image(
    x: float, y: float, *, display_size: tuple[float, float], image_size: tuple[int, int]
) -> tuple[int, int]:
    """The picture pixel ``(col, row)`` under point ``(x, y)`` of a picture shown at ``display_size``.

    ``display_size`` = ``(h, w)`` in CSS pixels (any positive floats),
    ``image_size`` = ``(H, W)``. The picture is stretched over the whole display
    box, so display ``[0, w)`` covers columns ``[0, W)``; the result is floored and
    clipped into the picture (the far edge still lands on the last pixel). The
    component's JavaScript does exactly this; the function documents and tests it.
    """
    disp_h, disp_w = display_size
    height, width = image_size
    if not (disp_h > 0 and disp_w > 0 and height > 0 and width > 0):
        raise ValueError(f"expected positive sizes, got display {display_size} and image {image_size}")
    col = math.floor(x * width / disp_w)
    row = math.floor(y * height / disp_h)
    return min(max(col, 0), width - 1), min(max(row, 0), height - 1)


def _as_int(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value):
        return None
    return int(value)


def _clicks_list(value: object) -> list | tuple:
    """The raw ``"clicks"`` list of the component's state ``value``, unchecked entries and all
    (empty when ``value`` is no mapping or holds no list there)."""
    clicks_value = value.get("clicks") if hasattr(value, "get") and not isinstance(value, str) else None
    return clicks_value if isinstance(clicks_value, (list, tuple)) else []


def parse_clicks(value: object, *, image_size: tuple[int, int]) -> list[PictureClick]:
    """The clicks in the component's state value, in the order they were made.

    ``value`` is what Streamlit keeps for the component (a mapping with a
    ``"clicks"`` list of ``[id, x, y, include]``) or anything else (``[]``).
    Entries that are malformed or outside the ``(H, W)`` picture are skipped: the
    browser is not trusted to send only what the JavaScript would.
    """
    height, width = image_size
    out = []
    for entry in _clicks_list(value):
        if not isinstance(entry, (list, tuple)) or len(entry) != 4:
            continue
        click_id, x, y, include = entry
        x, y = _as_int(x), _as_int(y)
        if not isinstance(click_id, str) or not 0 < len(click_id) <= MAX_ID_LENGTH or x is None or y is None:
            continue
        if not isinstance(include, bool) or not (0 <= x < width and 0 <= y < height):
            continue
        out.append(PictureClick(click_id, x, y, include))
    return out


def mode_to_show(value: object) -> str:
    """The switch's position when the click picture mounts: the mode of the last click in the
    component's state ``value`` (what :func:`parse_clicks` reads), ``"include"`` before any."""
    clicks_value = _clicks_list(value)
    if clicks_value:
        last = clicks_value[-1]
        if isinstance(last, (list, tuple)) and len(last) == 4 and last[3] is False:
            return "exclude"
    return "include"


def new_clicks(clicks: Iterable[PictureClick], seen: set[str]) -> list[PictureClick]:
    """The clicks whose id is not in ``seen``, in order, each once (duplicates in ``clicks`` too).

    This is what makes component updates idempotent: the same update twice, or an
    older list arriving after a newer one, gives nothing new the second time.
    """
    out, fresh = [], set()
    for click in clicks:
        if click.id in seen or click.id in fresh:
            continue
        fresh.add(click.id)
        out.append(click)
    return out


def jpeg_data_url(jpeg: bytes) -> str:
    """A ``data:`` URL of JPEG bytes (what the component shows; no media file to go missing)."""
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


# ---------------------------------------------------------------------------- the component
_HTML = '<div class="nk-root"></div>'

_CSS = """
.nk-root { font-family: var(--st-font, sans-serif); color: var(--st-text-color, #31333f); }
.nk-modes { display: inline-flex; gap: 0; margin: 0 0 0.5rem 0; border: 1px solid #c9ccd3; border-radius: 0.5rem;
            overflow: hidden; }
.nk-modes button { font: inherit; font-size: 0.95rem; padding: 0.35rem 0.9rem; border: 0; cursor: pointer;
                   background: #fff; color: inherit; display: inline-flex; align-items: center; gap: 0.4rem; }
.nk-modes button + button { border-left: 1px solid #c9ccd3; }
.nk-modes button[aria-checked="true"] { background: #31333f; color: #fff; }
.nk-modes button:focus-visible { outline: 2px solid #e0487a; outline-offset: -2px; }
.nk-sign { display: inline-block; width: 0.9rem; height: 0.9rem; border-radius: 50%; border: 2px solid #fff;
           box-shadow: 0 0 0 1px #888; }
.nk-help { font-size: 0.85rem; opacity: 0.75; margin-left: 0.6rem; }
.nk-stage { position: relative; display: block; width: 100%; line-height: 0; cursor: crosshair;
            user-select: none; -webkit-user-select: none; touch-action: manipulation; }
.nk-stage img { display: block; width: 100%; height: auto; border-radius: 4px; pointer-events: none; }
.nk-dot { position: absolute; width: 12px; height: 12px; margin: -8px 0 0 -8px; border-radius: 50%;
          border: 2px solid #fff; box-shadow: 0 0 0 1px rgba(0,0,0,0.6); pointer-events: none; }
.nk-dot[data-pending="true"] { opacity: 0.6; }
"""

_JS = r"""
const STATES = new WeakMap();

function nonce() {
  const a = new Uint32Array(2);
  (globalThis.crypto || window.crypto).getRandomValues(a);
  return a[0].toString(36) + a[1].toString(36);
}

function create(parent) {
  const root = parent.querySelector(".nk-root");
  const modes = document.createElement("div");
  modes.className = "nk-modes";
  modes.setAttribute("role", "radiogroup");
  modes.setAttribute("aria-label", "What a click on the picture does");
  const buttons = {};
  for (const [mode, label, colour] of [["include", "Include", "__INC__"], ["exclude", "Exclude", "__EXC__"]]) {
    const b = document.createElement("button");
    b.type = "button";
    b.setAttribute("role", "radio");
    b.dataset.mode = mode;
    const sign = document.createElement("span");
    sign.className = "nk-sign";
    sign.style.background = colour;
    sign.setAttribute("aria-hidden", "true");
    b.append(sign, document.createTextNode(label));
    modes.appendChild(b);
    buttons[mode] = b;
  }
  const help = document.createElement("span");
  help.className = "nk-help";
  const stage = document.createElement("div");
  stage.className = "nk-stage";
  const img = document.createElement("img");
  img.draggable = false;
  stage.appendChild(img);
  const bar = document.createElement("div");
  bar.append(modes, help);
  root.append(bar, stage);
  const s = { root, stage, img, help, buttons, dots: [], log: [], n: 0, nonce: nonce(), mode: null,
              data: null, setStateValue: () => {}, imageUrl: null };
  const setMode = (mode) => {
    s.mode = mode;
    for (const [m, b] of Object.entries(buttons)) b.setAttribute("aria-checked", String(m === mode));
    s.root.dataset.mode = mode;
  };
  s.setMode = setMode;
  for (const [mode, b] of Object.entries(buttons)) {
    b.addEventListener("click", () => { setMode(mode); });
  }
  modes.addEventListener("keydown", (e) => {
    if (e.key === "ArrowLeft" || e.key === "ArrowRight") {
      const next = s.mode === "include" ? "exclude" : "include";
      setMode(next); buttons[next].focus(); e.preventDefault();
    }
  });
  // Pointer events carry sub-pixel positions (a click event's are whole CSS pixels, which on a
  // shrunk picture is off by a picture pixel or two): the position comes from the pointerdown.
  let down = null;
  stage.addEventListener("pointerdown", (e) => { down = { x: e.clientX, y: e.clientY }; });
  stage.addEventListener("click", (e) => {
    const d = s.data;
    if (!d || d.disabled) return;
    const rect = img.getBoundingClientRect();
    if (rect.width <= 0 || rect.height <= 0) return;
    const at = down && Math.abs(down.x - e.clientX) < 2 && Math.abs(down.y - e.clientY) < 2 ? down : { x: e.clientX, y: e.clientY };
    down = null;
    const W = d.width, H = d.height;
    const x = Math.min(W - 1, Math.max(0, Math.floor((at.x - rect.left) * W / rect.width)));
    const y = Math.min(H - 1, Math.max(0, Math.floor((at.y - rect.top) * H / rect.height)));
    s.n += 1;
    s.log.push([s.nonce + ":" + s.n, x, y, s.mode !== "exclude"]);
    draw(s);
    s.setStateValue("clicks", s.log.slice());
  });
  return s;
}

function draw(s) {
  const d = s.data;
  if (!d) return;
  const seen = new Set(d.seen || []);
  const shown = (d.points || []).map((p) => [p, false]);
  for (const p of s.log) if (!seen.has(p[0])) shown.push([p, true]);
  while (s.dots.length > shown.length) s.dots.pop().remove();
  while (s.dots.length < shown.length) {
    const dot = document.createElement("div");
    dot.className = "nk-dot";
    s.stage.appendChild(dot);
    s.dots.push(dot);
  }
  shown.forEach(([p, pending], i) => {
    const dot = s.dots[i];
    dot.style.left = ((p[1] + 0.5) * 100 / d.width) + "%";
    dot.style.top = ((p[2] + 0.5) * 100 / d.height) + "%";
    dot.style.background = p[3] ? "__INC__" : "__EXC__";
    dot.dataset.pending = String(pending);
    dot.dataset.x = String(p[1]);
    dot.dataset.y = String(p[2]);
    dot.dataset.include = String(p[3]);
  });
  const pending = shown.filter(([, q]) => q).length;
  s.root.dataset.pending = String(pending);
  s.root.dataset.points = String((d.points || []).length);
  s.root.dataset.steps = String(d.steps ?? 0);
}

export default function (component) {
  const { data, parentElement, setStateValue } = component;
  let s = STATES.get(parentElement);
  if (!s) {
    s = create(parentElement);
    STATES.set(parentElement, s);
    s.setMode(data.mode === "exclude" ? "exclude" : "include");
  }
  s.setStateValue = setStateValue;
  s.data = data;
  if (data.image !== s.imageUrl) { s.imageUrl = data.image; s.img.src = data.image; }
  s.img.alt = data.alt || "";
  s.stage.style.maxWidth = data.maxWidth ? data.maxWidth + "px" : "";
  s.help.textContent = data.help || "";
  s.root.dataset.ready = "true";
  draw(s);
  return () => { STATES.delete(parentElement); };
}
""".replace("__INC__", INCLUDE_COLOR).replace("__EXC__", EXCLUDE_COLOR)

_component = None


def _mount() -> Callable:
    global _component
    if _component is None:
        import streamlit as st

        _component = st.components.v2.component(COMPONENT_NAME, html=_HTML, css=_CSS, js=_JS, isolate_styles=True)
    return _component


def click_picture(
    *,
    key: str,
    image_url: str,
    image_size: tuple[int, int],
    points: Sequence[PictureClick],
    seen: Iterable[str],
    steps: int,
    mode: str,
    alt: str,
    help_text: str = "",
    max_width: int | None = None,
    on_change: Callable[[], None] | None = None,
) -> None:
    """Draw the click picture (Streamlit). The clicks come back through ``st.session_state[key]``.

    Args:
        key: the component's key; a new key is a new, empty component (a new picture).
        image_url: what to show (:func:`jpeg_data_url` of the overlay, any size: it is
            stretched to the picture's aspect ratio and the column's width).
        image_size: ``(H, W)`` of the picture the clicks are measured on.
        points: the clicks the history holds now (drawn as dots).
        seen: every click id the server has taken in (the component stops drawing its
            own pending dot for those).
        steps: the number of steps in the history (exposed for tests as ``data-steps``).
        mode: ``"include"`` or ``"exclude"``: the switch's position when the component mounts.
        alt: text alternative of the picture.
        max_width: widest the picture is shown, in CSS pixels (``None``: the column's width).
        on_change: called (before the rerun) when the component sends new state.
    """
    if mode not in MODES:
        raise ValueError(f"expected mode in {MODES}, got {mode!r}")
    height, width = image_size
    data = {
        "image": image_url,
        "width": int(width),
        "height": int(height),
        "points": [[p.id, p.x, p.y, p.include] for p in points],
        "seen": sorted(seen),
        "steps": int(steps),
        "mode": mode,
        "alt": alt,
        "help": help_text,
        "maxWidth": max_width,
    }
    callback = on_change or (lambda: None)
    _mount()(
        data=data,
        key=key,
        default={"clicks": []},
        on_clicks_change=callback,
        width="stretch",
        height="content",
    )
