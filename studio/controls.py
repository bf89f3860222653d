"""Widget groups shared by the pages: detection options, matte sliders, background choice.

Each function draws its widgets and returns the engine's settings object; the
values persist per session under ``keep.*`` keys (see :mod:`studio.session`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import streamlit as st

from inference.composite import Background
from inference.image_io import ImageLoadError
from inference.matte import MatteSettings
from inference.segmenter import DetectionSettings
from studio import assets, engine_cache, limits
from studio.model_options import REFINER_TITLES, ModelOptions
from studio.preview import BACKGROUND_CHOICES, parse_hex_color
from studio.session import default, get
from studio.workspace import Workspace, decode_picture

# ---------------------------------------------------------------------------- detection
DET_ANIME = "keep.det.anime"
DET_TTA = "keep.det.tta"
DET_REFINE = "keep.det.refine"


def detection_settings(options: ModelOptions) -> DetectionSettings:
    """The detection settings the session's widgets hold (without drawing them)."""
    anime = options.anime_available and bool(get(DET_ANIME, True))
    refine = get(DET_REFINE, "none")
    if refine not in options.refiners:
        refine = "none"
    if not options.anime_available:
        backend = "auto"  # resolves to classic, with the reason
    else:
        backend = "rtmdet" if anime else "classic"
    return DetectionSettings(backend=backend, refine=refine, tta=anime and bool(get(DET_TTA, False)))


def detection_controls(options: ModelOptions) -> DetectionSettings:
    """Anime model on/off, flip TTA, refiner; each disabled with the reason when it cannot run."""
    default(DET_ANIME, options.anime_available)
    default(DET_TTA, False)
    default(DET_REFINE, "none")
    if not options.anime_available:
        st.session_state[DET_ANIME] = False
        st.session_state[DET_TTA] = False
    if st.session_state[DET_REFINE] not in options.refiners:
        st.session_state[DET_REFINE] = "none"
    st.toggle(
        "Anime model (RTMDet-Ins)",
        key=DET_ANIME,
        disabled=not options.anime_available,
        help="Finds characters on any background. Off: the classic segmenter (no weights needed).",
    )
    if not options.anime_available and options.anime_reason:
        st.caption(options.anime_reason)
    anime_on = bool(st.session_state[DET_ANIME])
    st.checkbox("Flip TTA", key=DET_TTA, disabled=not anime_on, help=options.tta_reason)
    if not anime_on:
        st.caption(f"Flip TTA is off: {options.tta_reason}")
    st.selectbox(
        "Refine masks with",
        options.refiners,
        key=DET_REFINE,
        format_func=REFINER_TITLES.get,
        disabled=len(options.refiners) == 1,
        help="An IS-Net pass that sharpens each character's mask (slower, better hair).",
    )
    if len(options.refiners) < len(REFINER_TITLES):
        st.caption(options.refine_reason)
    return detection_settings(options)


# ---------------------------------------------------------------------------- uploads the browser refuses
_REFUSAL_JS = r"""
const WATCHERS = new WeakMap();
export default function (component) {
  const { parentElement, setTriggerValue } = component;
  const known = WATCHERS.get(parentElement);
  if (known) { known.setTriggerValue = setTriggerValue; return known.cleanup; }
  const column = parentElement.closest('[data-testid="stColumn"]') || document;
  const uploader = column.querySelector('[data-testid="stFileUploader"]');
  const state = { setTriggerValue, cleanup: () => {} };
  WATCHERS.set(parentElement, state);
  if (!uploader) return state.cleanup;
  const refused = () => uploader.querySelectorAll('[data-testid="stFileChipIconError"]').length;
  let seen = refused();
  const observer = new MutationObserver(() => {
    const now = refused();
    if (now > seen) state.setTriggerValue("refused", now);
    seen = now;
  });
  observer.observe(uploader, { subtree: true, childList: true });
  state.cleanup = () => { observer.disconnect(); WATCHERS.delete(parentElement); };
  return state.cleanup;
}
"""
_refusal_watcher = None


def watch_refused_uploads(*, key: str, on_refused) -> None:
    """Call ``on_refused`` when the uploader drawn just before this (in the same column) refuses
    a file in the browser (e.g. larger than ``server.maxUploadSize``).

    Such a file never reaches the server, so no rerun would otherwise happen and an error
    about an earlier upload would stay on screen next to the uploader's own message.
    """
    global _refusal_watcher
    if _refusal_watcher is None:
        _refusal_watcher = st.components.v2.component(
            "nukki.refused_upload_watcher", html="<span></span>", js=_REFUSAL_JS, isolate_styles=False
        )
    _refusal_watcher(key=key, on_refused_change=on_refused, width="content", height="content")


# ---------------------------------------------------------------------------- matte
MATTE_KEYS = {
    "threshold": "keep.matte.threshold",
    "guided_radius": "keep.matte.guided_radius",
    "guided_eps": "keep.matte.guided_eps",
    "min_island_area": "keep.matte.min_island_area",
    "max_hole_area": "keep.matte.max_hole_area",
    "feather": "keep.matte.feather",
    "decontaminate": "keep.matte.decontaminate",
    "strands": "keep.matte.strands",
}

_EPS_STEPS = [1e-6, 3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
_AREA_STEPS = [0, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384]


def _with(steps: list, value) -> list:
    return sorted(set(steps) | {value})


def matte_settings() -> MatteSettings:
    """The matte settings the session's sliders hold (defaults where untouched), at full quality."""
    defaults = MatteSettings()
    values = {field: get(key, getattr(defaults, field)) for field, key in MATTE_KEYS.items()}
    return dataclasses.replace(defaults, **values)


def _reset_matte() -> None:
    defaults = MatteSettings()
    for field, key in MATTE_KEYS.items():
        st.session_state[key] = getattr(defaults, field)


def matte_controls() -> MatteSettings:
    """The expert matte sliders; returns the settings (the preview and the downloads use the same)."""
    defaults = MatteSettings()
    for field, key in MATTE_KEYS.items():
        default(key, getattr(defaults, field))
    left, right = st.columns(2)
    with left:
        st.slider(
            "Threshold", 0.05, 0.95, step=0.05, key=MATTE_KEYS["threshold"],
            help="Mask value at which a pixel counts as character. Lower keeps more, higher cuts tighter.",
        )
        st.slider(
            "Guided filter radius (px)", 0, 32, step=1, key=MATTE_KEYS["guided_radius"],
            help="Snaps the edge to the picture's own colour edges; 0 turns the filter off.",
        )
        st.select_slider(
            "Guided filter epsilon", _with(_EPS_STEPS, defaults.guided_eps), key=MATTE_KEYS["guided_eps"],
            format_func=lambda v: f"{v:.0e}",
            help="Log scale. Smaller follows colour edges more closely; larger smooths more.",
        )
        st.slider(
            "Feather (px)", 0.0, 10.0, step=0.5, key=MATTE_KEYS["feather"],
            help="Softens the edge by this radius; 0 keeps it as the filter made it.",
        )
    with right:
        st.select_slider(
            "Drop islands smaller than (px)", _with(_AREA_STEPS, defaults.min_island_area),
            key=MATTE_KEYS["min_island_area"], help="Specks of foreground with fewer pixels are removed.",
        )
        st.select_slider(
            "Fill holes smaller than (px)", _with(_AREA_STEPS, defaults.max_hole_area),
            key=MATTE_KEYS["max_hole_area"], help="Enclosed background holes with fewer pixels are filled.",
        )
        st.checkbox(
            "Clean edge colours", key=MATTE_KEYS["decontaminate"],
            help="Re-estimates the colour of half-transparent edge pixels so the old background does not halo.",
        )
        st.checkbox(
            "Keep hair strands", key=MATTE_KEYS["strands"],
            help="Keeps thin structures (hair strands, props) that the mask only half covers where the "
            "picture's colours show them; off cuts strictly at the threshold.",
        )
        st.button("Matte defaults", on_click=_reset_matte, help="Put every matte slider back to its default.")
    return matte_settings()


# ---------------------------------------------------------------------------- background
BG_KIND = "keep.bg.kind"
BG_COLOR = "keep.bg.color"
BG_BUNDLED = "keep.bg.bundled"
BG_BLUR = "keep.bg.blur"
BG_FIT = "keep.bg.fit"
BG_UPLOAD = "bg_upload"


def _background_upload(ws: Workspace) -> None:
    upload = st.file_uploader(
        "Background picture", key=BG_UPLOAD,
        help=limits.describe_limits(st.get_option("server.maxUploadSize")),
    )
    if upload is not None and upload.file_id != ws.seen_background_upload:
        ws.seen_background_upload = upload.file_id
        try:
            picture = decode_picture(upload.name, upload.getvalue(), max_pixels=limits.max_pixels())
        except ImageLoadError as exc:
            ws.background_error = f"{upload.name}: {exc}"
        else:
            ws.background_picture = (upload.name, picture.image)
            ws.background_error = None
    if ws.background_error:
        st.error(f"That background was not used. {ws.background_error}")
    if ws.background_picture is not None:
        st.caption(f"Using {ws.background_picture[0]}")


def background_controls(ws: Workspace) -> Background:
    """Transparent, a colour, a bundled picture, an uploaded picture, or the blurred original."""
    bundled = assets.backgrounds()
    default(BG_KIND, "transparent")
    default(BG_COLOR, "#ffffff")
    default(BG_BUNDLED, bundled[0].name if bundled else None)
    default(BG_BLUR, 16.0)
    default(BG_FIT, "cover")
    kind = st.radio(
        "Background", list(BACKGROUND_CHOICES), key=BG_KIND, format_func=BACKGROUND_CHOICES.get, horizontal=True
    )
    if kind == "color":
        color = st.color_picker("Colour", key=BG_COLOR)
        return Background(kind="color", color=parse_hex_color(color))
    if kind == "blur":
        sigma = st.slider("Blur (px)", 2.0, 64.0, step=1.0, key=BG_BLUR)
        return Background(kind="blur", blur_sigma=float(sigma))
    if kind in ("bundled", "upload"):
        fit = st.radio(
            "Fit", ["cover", "contain"], key=BG_FIT, horizontal=True,
            format_func={"cover": "Fill (crop)", "contain": "Fit inside (pad)"}.get,
        )
        image: np.ndarray | None = None
        if kind == "bundled":
            titles = {a.name: a.title for a in bundled}
            name = st.selectbox("Bundled background", list(titles), key=BG_BUNDLED, format_func=titles.get)
            image = engine_cache.bundled_picture(assets.find(bundled, name))
        else:
            _background_upload(ws)
            image = ws.background_picture[1] if ws.background_picture else None
            if image is None:
                st.info("Upload a picture to put behind the characters; until then the checkerboard shows.")
                return Background()
        return Background(kind="image", image=image, fit=fit, color=(255, 255, 255))
    return Background()
