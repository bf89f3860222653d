"""Cutout: upload a picture, click the characters, tune the matte, pick a background, download.

Expensive work (decode, detect, refine) runs once per picture and settings; the
right-hand panel (matte sliders, background, preview, downloads) is an
``st.fragment``, so moving a slider re-runs only the cheap half.
"""

from __future__ import annotations

import dataclasses
import time

import streamlit as st

st.set_page_config(page_title="Nukki · Cutout", page_icon="✂️", layout="wide")

from streamlit_drawable_canvas import st_canvas  # noqa: E402  (needs the Streamlit runtime)

from inference import pipeline  # noqa: E402
from inference.export import cutout_png, encode_image, layers_zip, mask_png  # noqa: E402
from inference.image_io import ImageLoadError  # noqa: E402
from inference.overlay import draw_instance_overlay, instance_colors  # noqa: E402
from inference.segmenter import ModelUnavailable  # noqa: E402
from studio import assets, canvas, controls, engine_cache, errors, limits, session  # noqa: E402
from studio.model_options import model_options  # noqa: E402
from studio.preview import make_preview, rgb_hex, shrink, side_by_side, split_view  # noqa: E402
from studio.workspace import CANVAS_DEFAULT_WIDTH, CANVAS_WIDTHS, Workspace, decode_picture  # noqa: E402

UPLOAD_KEY = "upload"
SAMPLE_KEY = "sample_pick"
CLICK_MODE_KEY = "keep.click_mode"
VIEW_KEY = "keep.view"
CANVAS_WIDTH_KEY = "keep.canvas_width"

session.keep_widget_state()
ws = session.workspace()


# ---------------------------------------------------------------------------- picture in
def _load(ws: Workspace, name: str, data: bytes, source: str) -> None:
    try:
        picture = decode_picture(name, data, source=source, max_pixels=limits.max_pixels())
    except ImageLoadError as exc:
        keep = f" Still working on {ws.picture.name}." if ws.picture else ""
        ws.load_error = f"{name} could not be opened. {exc}{keep}"
    else:
        if ws.picture is None or picture.digest != ws.picture.digest:
            ws.set_picture(picture)
        ws.load_error = None


def _pick_sample() -> None:
    st.session_state[session.PENDING_SAMPLE_KEY] = st.session_state[SAMPLE_KEY]
    st.session_state[SAMPLE_KEY] = None  # so the same sample can be picked again later


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
        )
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
            detection = engine_cache.detect(ws.picture.image, ws.picture.digest, settings)
    except Exception as exc:  # the page boundary: a message, never a traceback
        expected = isinstance(exc, (ModelUnavailable, ValueError, MemoryError))
        st.error(f"Detection failed: {exc}" if expected else errors.unexpected(exc, "finding characters"))
        if ws.detection is None:
            st.stop()
        st.warning("Showing the previous detection of this picture.")
        return
    ws.set_detection(key, detection)
    ws.detection_wall_s = time.perf_counter() - start


def detection_summary(ws: Workspace) -> None:
    detection = ws.detection
    n = len(detection.instances)
    cached = ws.detection_wall_s < 0.5 * detection.seconds
    st.caption(
        f"**{ws.picture.name}** · {ws.picture.size[1]}×{ws.picture.size[0]} · "
        f"found {n} character{'s' if n != 1 else ''} in {detection.seconds:.2f} s"
        f"{' (cached)' if cached else ''} · backend **{detection.choice.name}**",
        help=detection.choice.reason,
    )
    for note in detection.instances.notes:
        st.info(note)
    if n == 0:
        st.warning("No character found. Include-click on a character and Nukki will try to cut out what is there.")


# ---------------------------------------------------------------------------- clicks
def _canvas_drawing(value) -> dict | None:
    """The fabric JSON inside the canvas component's session-state value, if any."""
    if isinstance(value, dict) or hasattr(value, "get"):
        drawing = value.get("drawing")
        if hasattr(drawing, "get"):
            raw = drawing.get("raw")
            return raw if hasattr(raw, "get") else None
    return None


def _sync(ws: Workspace, drawing: dict | None) -> bool:
    clicks = canvas.clicks_from_canvas(drawing, canvas_size=ws.canvas_size, image_size=ws.picture.size)
    try:
        return ws.selection.sync_clicks(clicks, engine_cache.add_at(ws.picture.image))
    except (ModelUnavailable, ValueError) as exc:
        st.warning(f"That click could not add a character: {exc}")
        return False
    except Exception as exc:  # the page boundary
        st.warning(errors.unexpected(exc, "adding a character under the click"))
        return False


def _undo() -> None:
    ws = session.workspace()
    step = ws.selection.undo()
    if step is not None and step.kind == "click":
        ws.rebuild_canvas()


def _reset() -> None:
    ws = session.workspace()
    ws.selection.reset()
    ws.rebuild_canvas()


def _toggle(index: int, key: str) -> None:
    session.workspace().selection.set_chosen(index, bool(st.session_state[key]))


def _overlay_jpeg(ws: Workspace) -> bytes:
    selection = ws.selection
    key = (ws.detection_key, selection.version, tuple(selection.selected))
    cached = ws.remembered_overlay(key)
    if cached is None:
        overlay = draw_instance_overlay(ws.picture.image, selection.instances, set(selection.selected))
        cached = encode_image(shrink(overlay, ws.canvas_size), "jpeg", quality=88)
        ws.remember_overlay(key, cached)
    return cached


def click_panel(ws: Workspace) -> None:
    session.default(CANVAS_WIDTH_KEY, CANVAS_DEFAULT_WIDTH)
    ws.canvas_width = int(st.session_state[CANVAS_WIDTH_KEY])
    key = ws.canvas_key  # (a new canvas size gets a new key)
    # Apply the canvas's newest points first, so the overlay drawn below already shows them.
    # A canvas with no state yet (new key) will show its initial drawing: nothing to apply.
    drawing = _canvas_drawing(st.session_state.get(key))
    if drawing is not None:
        _sync(ws, drawing)
    # The canvas's initial drawing always holds the clicks made so far: when the browser
    # re-mounts it (another page ran, an error appeared above it), it shows them all, and
    # after a click it reloads the same points and sends them back unchanged.
    ws.canvas_seed = ws.current_drawing()
    session.default(CLICK_MODE_KEY, "include")
    mode_col, size_col = st.columns([1, 1], vertical_alignment="bottom")
    include = (
        mode_col.segmented_control(
            "Clicks",
            ["include", "exclude"],
            key=CLICK_MODE_KEY,
            format_func={"include": ":material/add_circle: Include", "exclude": ":material/remove_circle: Exclude"}.get,
            help="The canvas has no right click: choose what the next click does.",
        )
        != "exclude"
    )
    size_col.select_slider("Canvas width", CANVAS_WIDTHS, key=CANVAS_WIDTH_KEY, format_func=lambda w: f"{w} px")
    height, width = ws.canvas_size
    result = st_canvas(
        drawing_mode="point",
        background_image=_overlay_jpeg(ws),
        width=width,
        height=height,
        key=key,
        point_display_radius=canvas.POINT_RADIUS,
        stroke_width=canvas.POINT_STROKE_WIDTH,
        stroke_color=canvas.POINT_STROKE_COLOR,
        fill_color=canvas.INCLUDE_COLOR if include else canvas.EXCLUDE_COLOR,
        initial_drawing=ws.canvas_seed,
        update_streamlit=True,
    )
    if _sync(ws, result.json_data):
        st.rerun()

    cols = st.columns(4)
    cols[0].button("↶ Undo", on_click=_undo, disabled=not ws.selection.can_undo, width="stretch")
    cols[1].button("Reset clicks", on_click=_reset, disabled=not ws.selection.can_undo, width="stretch")
    cols[2].button("Select all", on_click=ws.selection.select_all, width="stretch")
    cols[3].button("Select none", on_click=ws.selection.select_none, width="stretch")
    character_list(ws)


def character_list(ws: Workspace) -> None:
    instances = ws.selection.instances
    chosen = set(ws.selection.selected)
    colours = instance_colors(len(instances))
    described = instances.describe()
    if ws.selection.untouched and len(instances):
        st.caption("No clicks yet: every character is kept. Include-click one to keep only the ones you click.")
    for index in range(len(instances)):
        key = f"pick.{index}"
        st.session_state[key] = index in chosen
        swatch, box = st.columns([1, 14], vertical_alignment="center")
        swatch.markdown(
            f"<div style='width:1.1rem;height:1.1rem;border-radius:3px;background:{rgb_hex(colours[index])}'></div>",
            unsafe_allow_html=True,
        )
        info = described[index]
        box.checkbox(
            f"**#{index + 1}** · score {info['score']:.2f} · {info['area_px']:,} px",
            key=key,
            on_change=_toggle,
            args=(index, key),
        )


# ---------------------------------------------------------------------------- matte, preview, downloads
def _cutout(ws: Workspace, matte) -> pipeline.Cutout:
    selection = ws.selection
    key = (ws.detection_key, selection.version, tuple(selection.selected), matte)
    cutout = ws.remembered_cutout(key)
    if cutout is None:
        cutout = pipeline.render_cutout(ws.picture.image, selection.instances, selection.selected, matte)
        ws.remember_cutout(key, cutout)
    return cutout


@st.fragment
def preview_panel() -> None:
    ws = session.workspace()
    if ws.selection is None:
        return
    preview_slot = st.container()
    with st.expander("Background", expanded=True):
        background = controls.background_controls(ws)
    with st.expander("Matte (expert)"):
        matte = controls.matte_controls()
    shown_matte = dataclasses.replace(matte, fast=True) if controls.fast_preview() else matte
    start = time.perf_counter()
    try:
        cutout = _cutout(ws, shown_matte)
        preview = make_preview(ws.picture.image, cutout, background)
    except (ValueError, MemoryError) as exc:
        preview_slot.error(f"The preview could not be made: {exc}")
        return
    except Exception as exc:  # the page boundary: a message, never a traceback
        preview_slot.error(errors.unexpected(exc, "making the preview with these matte settings"))
        return
    elapsed_ms = (time.perf_counter() - start) * 1000
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
        st.image(shown, output_format="JPEG", width="stretch")
        chosen = len(ws.selection.selected)
        st.caption(
            f"{chosen} of {len(ws.selection.instances)} character(s) · preview made in {elapsed_ms:.0f} ms",
            help="Time to matte the chosen characters at full size and composite the preview.",
        )
        downloads(ws, matte, background)


def downloads(ws: Workspace, matte, background) -> None:
    image = ws.picture.image
    instances = ws.selection.instances
    selected = list(ws.selection.selected)
    stem = ws.picture.stem
    name = ws.picture.name
    # Full quality for files; reuse the preview's cutout when it already is.
    ready = ws.remembered_cutout((ws.detection_key, ws.selection.version, tuple(selected), matte))

    def full():
        return ready if ready is not None else pipeline.render_cutout(image, instances, selected, matte)

    trim = st.checkbox("Trim PNG to the characters", key="keep.trim")
    fmt = st.session_state.get("keep.composite_format", "png")

    def rgba_png() -> bytes:
        cut = full()
        return cutout_png(cut.foreground, cut.alpha, trim=trim, margin=2)

    def mask() -> bytes:
        return mask_png(full().alpha)

    def composite() -> bytes:
        cut = full()
        return encode_image(pipeline.render_preview(image, cut, background), fmt)

    def layers() -> bytes:
        return layers_zip(image, instances, selected, matte, source_name=name)

    nothing = not selected
    cols = st.columns(4)
    cols[0].download_button(
        "RGBA PNG", rgba_png, file_name=f"{stem}_cutout.png", mime="image/png",
        type="primary", disabled=nothing, on_click="ignore", key="dl_png", width="stretch",
    )
    cols[1].download_button(
        "Mask", mask, file_name=f"{stem}_mask.png", mime="image/png",
        disabled=nothing, on_click="ignore", key="dl_mask", width="stretch",
    )
    ext = "jpg" if fmt == "jpeg" else fmt
    cols[2].download_button(
        "Composite", composite, file_name=f"{stem}_composite.{ext}", mime=f"image/{fmt}",
        disabled=nothing, on_click="ignore", key="dl_composite", width="stretch",
        help="The cutout over the background chosen above (the checkerboard for transparent).",
    )
    cols[3].download_button(
        "Layers ZIP", layers, file_name=f"{stem}_layers.zip", mime="application/zip",
        disabled=nothing, on_click="ignore", key="dl_layers", width="stretch",
        help="One trimmed RGBA PNG per character, the full cutout, the mask, the background plate "
        "(characters removed, hole filled) and manifest.json with each layer's position.",
    )
    session.default("keep.composite_format", "png")
    st.radio("Composite format", ["png", "jpeg", "webp"], key="keep.composite_format", horizontal=True)
    if nothing:
        st.caption("Choose at least one character to download.")


# ---------------------------------------------------------------------------- page
st.title("✂️ Cutout")
picture_source(ws)
if ws.picture is None:
    st.info("Upload a picture or choose a sample to start. Nothing leaves this server.")
    st.stop()
detect(ws)
detection_summary(ws)
left, right = st.columns([11, 9], gap="medium")
with left:
    click_panel(ws)
with right:
    preview_panel()
