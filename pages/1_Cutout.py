"""Cutout: upload a picture, click the characters, tune the matte, pick a background, download.

Expensive work (decode, detect, point prompts) runs once per picture, settings and
click; the right-hand panel (matte sliders, background, preview, downloads) is an
``st.fragment``, so moving a slider re-runs only that half.

The choice of characters is derived on every run from the workspace's ordered
step history (:mod:`studio.workspace`, replayed by the engine's
:class:`~inference.session.CutoutSession`); the click picture reports clicks as
state with ids (:mod:`studio.canvas`), so a repeated or late update never
counts twice and nothing here calls ``st.rerun``.
"""

from __future__ import annotations

import dataclasses
import time

import streamlit as st

st.set_page_config(page_title="Nukki · Cutout", page_icon=":material/content_cut:", layout="wide")

from inference.export import encode_image  # noqa: E402
from inference.image_io import ImageLoadError  # noqa: E402
from inference.overlay import draw_instance_overlay, instance_colors  # noqa: E402
from inference.pipeline import shrink_image  # noqa: E402
from inference.segmenter import ModelUnavailable  # noqa: E402
from inference.session import CutoutSession  # noqa: E402
from studio import assets, canvas, controls, download_hold, errors, limits, session  # noqa: E402
from studio.model_options import model_options  # noqa: E402
from studio.preview import (  # noqa: E402
    PREVIEW_LONG_SIDE,
    composite_preview,
    describe_report,
    prepare_preview,
    render_preview,
    rgb_hex,
    side_by_side,
    split_view,
)
from studio.workspace import CLICK_PICTURE_LONG_SIDE, Workspace, decode_picture  # noqa: E402

UPLOAD_KEY = "upload"
SAMPLE_KEY = "sample_pick"
VIEW_KEY = "keep.view"

session.keep_widget_state()
ws = session.workspace()


# ---------------------------------------------------------------------------- picture in
def _load(ws: Workspace, name: str, data: bytes, source: str) -> None:
    try:
        picture = decode_picture(name, data, max_pixels=limits.max_pixels())
    except ImageLoadError as exc:
        keep = f" Still working on {ws.picture.name}." if ws.picture else ""
        ws.load_error = f"{name} could not be opened. {exc}{keep}"
    else:
        if ws.picture is None or picture.digest != ws.picture.digest:
            ws.set_picture(picture, source)
        ws.load_error = None


def _pick_sample() -> None:
    st.session_state[session.PENDING_SAMPLE_KEY] = st.session_state[SAMPLE_KEY]
    st.session_state[SAMPLE_KEY] = None  # so the same sample can be picked again later


def _upload_changed() -> None:
    # A new file in the uploader (or one the browser refused as too big): the old
    # refusal no longer describes what is on screen.
    session.workspace().load_error = None


def picture_source(ws: Workspace) -> None:
    samples = {a.name: a for a in assets.samples()}
    upload_col, sample_col = st.columns([3, 2])
    with upload_col:
        # No `type=` filter: Streamlit would refuse other files with an exception, and a
        # wrong file deserves the same clear message as a damaged one (load_image's).
        upload = st.file_uploader(
            "Upload a picture",
            key=UPLOAD_KEY,
            help=limits.describe_limits(st.get_option("server.maxUploadSize")),
            on_change=_upload_changed,
        )
        controls.watch_refused_uploads(key="upload_refused", on_refused=_upload_changed)
    with sample_col:
        st.selectbox(
            "…or try a sample",
            list(samples),
            index=None,
            key=SAMPLE_KEY,
            format_func=lambda n: samples[n].title,
            placeholder="Choose a sample picture",
            on_change=_pick_sample,
        )
    pending = st.session_state.pop(session.PENDING_SAMPLE_KEY, None)
    if pending in samples:
        _load(ws, samples[pending].path.name, samples[pending].read_bytes(), "sample")
    elif upload is not None and upload.file_id != ws.seen_upload:
        ws.seen_upload = upload.file_id
        _load(ws, upload.name, upload.getvalue(), "upload")
    if ws.load_error:
        st.error(ws.load_error)


# ---------------------------------------------------------------------------- detection
def detect(ws: Workspace) -> None:
    with st.expander("Detection options"):
        settings = controls.detection_controls(model_options())
    key = (ws.picture.digest, dataclasses.astuple(settings))
    if ws.detection_key == key:
        return
    start = time.perf_counter()
    try:
        with st.spinner(f"Finding characters in {ws.picture.name}…", show_time=True):
            cut = CutoutSession(ws.picture, settings)
            _ = cut.detection  # runs the models once (cached by picture digest and settings)
    except Exception as exc:  # the page boundary: a message, never a traceback
        expected = isinstance(exc, (ModelUnavailable, ValueError, MemoryError))
        st.error(f"Detection failed: {exc}" if expected else errors.unexpected(exc, "finding characters"))
        if ws.cut is None:
            st.stop()
        st.warning("Showing the previous detection of this picture.")
        return
    ws.set_session(key, cut)
    ws.detection_wall_s = time.perf_counter() - start


def detection_summary(ws: Workspace) -> None:
    detection = ws.cut.detection
    n = len(detection.instances)
    cached = ws.detection_wall_s < 0.5 * detection.seconds
    st.caption(
        f"**{ws.picture.name}** · {ws.picture.size[1]}×{ws.picture.size[0]} · "
        f"found {n} character{'s' if n != 1 else ''} in {detection.seconds:.2f} s"
        f"{' (cached)' if cached else ''} · backend **{detection.choice.name}**",
        help=detection.choice.reason,
    )
    for note in detection.instances.notes:
        st.info(note, icon=":material/info:")
    if n == 0:
        st.warning("No character found. Include-click on a character and Nukki will try to cut out what is there.")


# ---------------------------------------------------------------------------- clicks
def take_clicks(ws: Workspace) -> None:
    """Append the click component's new clicks to the history (idempotent: ids seen once)."""
    value = st.session_state.get(ws.click_key)
    ws.take_clicks(canvas.parse_clicks(value, image_size=ws.picture.size))


def _current(generation: int) -> Workspace | None:
    """The workspace, if a callback made for ``generation`` still applies (not after a new picture)."""
    ws = session.workspace()
    return ws if ws.generation == generation and ws.cut is not None else None


def _undo(generation: int) -> None:
    if (ws := _current(generation)) is not None:
        ws.undo()


def _reset(generation: int) -> None:
    if (ws := _current(generation)) is not None:
        ws.reset()


def _set_all(generation: int, value: bool) -> None:
    if (ws := _current(generation)) is not None:
        ws.set_all(value)


def _toggle(generation: int, index: int, key: str, drawn: bool) -> None:
    """A checkbox changed. Streamlit also calls this when a browser update that left before the
    last run finished still holds a checkbox that run replaced (with the value it was drawn
    with): only a value other than the drawn one, once per checkbox, is the person's toggle."""
    ws = _current(generation)
    if ws is None:
        return
    value = bool(st.session_state.get(key, drawn))
    if value == drawn or key in ws.seen_toggles or index >= len(ws.sync().instances):
        return
    ws.seen_toggles.add(key)
    ws.toggle(index, value)


def _overlay_url(ws: Workspace, cut: CutoutSession) -> str:
    key = (ws.generation, id(cut.instances), tuple(cut.selected))
    cached = ws.remembered_overlay(key)
    if cached is None:
        overlay = draw_instance_overlay(cut.picture.image, cut.instances, set(cut.selected))
        small = shrink_image(overlay, CLICK_PICTURE_LONG_SIDE)
        cached = canvas.jpeg_data_url(encode_image(small, "jpeg", quality=85))
        ws.remember_overlay(key, cached)
    return cached


def click_panel(ws: Workspace) -> None:
    cut = ws.sync()
    generation = ws.generation
    canvas.click_picture(
        key=ws.click_key,
        image_url=_overlay_url(ws, cut),
        image_size=ws.picture.size,
        points=ws.points,
        seen=ws.seen_clicks,
        steps=len(ws.entries),
        mode=canvas.mode_to_show(st.session_state.get(ws.click_key)),
        alt=f"{ws.picture.name} with {len(cut.instances)} numbered characters; click one to choose it",
        help_text="Choose what a click does, then click on the picture.",
    )
    result = cut.last_result
    if ws.entries and result is not None and result.message:
        st.info(result.message, icon=":material/info:")
    elif ws.entries and result is not None and result.added is not None:
        st.success(f"Added character {result.added + 1} under the click.", icon=":material/check_circle:")
    cols = st.columns(4)
    cols[0].button("Undo", icon=":material/undo:", on_click=_undo, args=(generation,),
                   disabled=not ws.entries, width="stretch", key="undo")
    cols[1].button("Reset clicks", on_click=_reset, args=(generation,), disabled=not ws.entries,
                   width="stretch", key="reset")
    cols[2].button("Select all", on_click=_set_all, args=(generation, True), width="stretch", key="select_all")
    cols[3].button("Select none", on_click=_set_all, args=(generation, False), width="stretch", key="select_none")
    character_list(ws)


def character_list(ws: Workspace) -> None:
    cut = ws.sync()
    instances = cut.instances
    chosen = set(cut.selected)
    colours = instance_colors(len(instances))
    described = instances.describe()
    if cut.untouched and len(instances):
        st.caption("No clicks yet: every character is kept. Include-click one to keep only the ones you click.")
    # The checkboxes show the derived choice, so their keys name the history revision they
    # were drawn for: a new key (value = the choice) after every change. The server never writes a value
    # into a checkbox the browser already holds (that made a browser update sent while a run
    # was on its way read as a toggle: phantom steps that reverted clicks), and _toggle takes
    # each checkbox's change once.
    for index in range(len(instances)):
        key = f"pick.{ws.generation}.{ws.revision}.{index}"
        swatch, box = st.columns([1, 14], vertical_alignment="center")
        swatch.markdown(
            f"<div aria-hidden='true' style='width:1.1rem;height:1.1rem;border-radius:3px;"
            f"background:{rgb_hex(colours[index])}'></div>",
            unsafe_allow_html=True,
        )
        info = described[index]
        box.checkbox(
            f"Character {index + 1} · score {info['score']:.2f} · {info['area_px']:,} px",
            value=index in chosen,
            key=key,
            on_change=_toggle,
            args=(ws.generation, index, key, index in chosen),
        )
    # Drawn after the checkboxes: when it shows the new count, the list above shows the new choice.
    steps = len(ws.entries)
    st.caption(f"{steps} step{'s' if steps != 1 else ''} in the history" if steps else "No steps in the history yet.")


# ---------------------------------------------------------------------------- matte, preview, downloads
def _preview(ws: Workspace, cut: CutoutSession, matte):
    """The display-size cutout and the matte report (remembered for the last few settings)."""
    choice = (ws.generation, id(cut.instances), tuple(cut.selected))
    found = ws.remembered_preview((*choice, matte))
    if found is None:
        inputs = ws.remembered_preview(choice)
        if inputs is None:
            inputs = prepare_preview(cut.picture.image, cut.instances, cut.selected, long_side=PREVIEW_LONG_SIDE)
            ws.remember_preview(choice, inputs)
        found = (inputs.small_image, *render_preview(inputs, matte))
        ws.remember_preview((*choice, matte), found)
    return found


@st.fragment
def preview_panel() -> None:
    ws = session.workspace()
    if ws.picture is None or ws.cut is None:
        return
    cut = ws.sync()
    preview_slot = st.container()
    with st.expander("Background", expanded=True):
        background = controls.background_controls(ws)
    with st.expander("Matte (expert)"):
        matte = controls.matte_controls()
        report_slot = st.empty()
    # What the downloads use; read when a download button is pressed (see downloads_panel).
    ws.export_matte, ws.export_background = matte, background
    start = time.perf_counter()
    try:
        small, cutout, report = _preview(ws, cut, matte)
        preview = composite_preview(small, cutout, background, scale=small.shape[1] / cut.picture.size[1])
    except (ValueError, MemoryError) as exc:
        preview_slot.error(f"The preview could not be made: {exc}")
        return
    except Exception as exc:  # the page boundary: a message, never a traceback
        preview_slot.error(errors.unexpected(exc, "making the preview with these matte settings"))
        return
    elapsed_ms = (time.perf_counter() - start) * 1000
    report_slot.caption(describe_report(report, matte))
    with preview_slot:
        session.default(VIEW_KEY, "after")
        view = st.segmented_control(
            "View",
            ["after", "split", "side"],
            key=VIEW_KEY,
            format_func={"after": "After", "split": "Before | after", "side": "Side by side"}.get,
        )
        if view == "split":
            position = st.slider("Divider", 0, 100, 50, format="%d%%", key="keep.split")
            shown = split_view(preview.before, preview.after, position / 100)
        elif view == "side":
            shown = side_by_side(preview.before, preview.after)
        else:
            shown = preview.after
        # A data URL, not a media file: nothing for a clean-up to remove before the browser loads it.
        st.image(canvas.jpeg_data_url(encode_image(shown, "jpeg", quality=88)), width="stretch")
        st.caption(
            f"{len(cut.selected)} of {len(cut.instances)} character(s) · preview made in {elapsed_ms:.0f} ms",
            help="The download's matte at display size: every setting shows here as it will in the file.",
        )


@st.fragment
def downloads_panel() -> None:
    """The download buttons, in a fragment of their own.

    Streamlit gives a download button's file a new id on every run that draws the button
    and revokes the old one, so a press that reaches the server while such a run is on its
    way finds nothing ("Deferred file not found"). Slider and background changes rerun
    only the preview fragment, not this one, so the buttons keep their ids while someone
    tunes; the file is made when the button is pressed, from the settings the preview
    shows at that moment (the workspace's ``export_matte``/``export_background``). The file
    made on a press is held for this session (:mod:`studio.download_hold`), so other
    people's reruns cannot delete it before the browser fetches it.
    """
    ws = session.workspace()
    if ws.picture is None or ws.cut is None:
        return
    download_hold.hold_generated_downloads_in_this_server()
    cut = ws.sync()
    stem = cut.picture.stem
    trim = st.checkbox("Trim PNG to the characters", key="keep.trim")
    fmt = st.session_state.get("keep.composite_format", "png")
    nothing = not cut.selected

    def export(kind: str, **options):
        def make() -> bytes:
            if kind == "composite":
                options["background"] = ws.export_background
            return cut.export(kind, ws.export_matte, **options)

        return make

    cols = st.columns(4)
    cols[0].download_button(
        "RGBA PNG", export("cutout", trim=trim), file_name=f"{stem}_cutout.png", mime="image/png",
        type="primary", disabled=nothing, on_click="ignore", key="dl_png", width="stretch",
    )
    cols[1].download_button(
        "Mask", export("mask"), file_name=f"{stem}_mask.png", mime="image/png",
        disabled=nothing, on_click="ignore", key="dl_mask", width="stretch",
    )
    ext = "jpg" if fmt == "jpeg" else fmt
    cols[2].download_button(
        "Composite", export("composite", fmt=fmt),
        file_name=f"{stem}_composite.{ext}", mime=f"image/{fmt}",
        disabled=nothing, on_click="ignore", key="dl_composite", width="stretch",
        help="The cutout over the background chosen above (the checkerboard for transparent).",
    )
    cols[3].download_button(
        "Layers ZIP", export("layers"), file_name=f"{stem}_layers.zip", mime="application/zip",
        disabled=nothing, on_click="ignore", key="dl_layers", width="stretch",
        help="One trimmed RGBA PNG per character, the full cutout, the mask, the background plate "
        "(characters removed, hole filled) and manifest.json with each layer's position.",
    )
    session.default("keep.composite_format", "png")
    st.radio("Composite format", ["png", "jpeg", "webp"], key="keep.composite_format", horizontal=True)
    if nothing:
        st.caption("Choose at least one character to download.")


# ---------------------------------------------------------------------------- page
st.title("Cutout")
picture_source(ws)
if ws.picture is None:
    st.info("Upload a picture or choose a sample to start. Nothing leaves this server.")
    st.stop()
detect(ws)
take_clicks(ws)
detection_summary(ws)
left, right = st.columns([11, 9], gap="medium")
with left:
    click_panel(ws)
with right:
    preview_panel()
    downloads_panel()
