"""Batch: many pictures in, one ZIP of cutouts out, with a line per file saying what happened."""

from __future__ import annotations

import streamlit as st

st.set_page_config(page_title="Nukki · Batch", page_icon=":material/folder_zip:", layout="wide")

from inference.detection_cache import SHARED_DETECTIONS  # noqa: E402
from studio import batch, controls, limits, session  # noqa: E402
from studio.model_options import model_options  # noqa: E402

FILES_KEY = "batch_files"

session.keep_widget_state()

st.title("Batch")
st.markdown(
    "Cut out many pictures at once with the current detection and matte settings "
    "(the ones on the Cutout page). Files that fail are listed with the reason; the others go on."
)

files = st.file_uploader(
    "Pictures",
    accept_multiple_files=True,  # no `type=` filter: wrong files get a reason in the report
    key=FILES_KEY,
    help=limits.describe_limits(st.get_option("server.maxUploadSize")),
)
left, right = st.columns(2)
with left:
    rule = st.radio(
        "Keep", list(batch.SELECT_RULES), format_func=batch.SELECT_RULES.get, horizontal=True, key="keep.batch.rule"
    )
    layers = st.checkbox(
        "Also export layers (one RGBA PNG per character, background plate, manifest)", key="keep.batch.layers"
    )
    trim = st.checkbox("Trim each cutout to its characters", key="keep.batch.trim")
with right:
    options = model_options()
    settings = controls.detection_settings(options)
    matte = controls.matte_settings()
    st.caption(
        f"Detection: backend {settings.backend}, refine {settings.refine}, TTA {'on' if settings.tta else 'off'}. "
        f"Matte: threshold {matte.threshold:g}, guided radius {matte.guided_radius}, eps {matte.guided_eps:.0e}, "
        f"islands < {matte.min_island_area} px, holes < {matte.max_hole_area} px, feather {matte.feather:g} px, "
        f"decontaminate {'on' if matte.decontaminate else 'off'}."
    )

count = len(files or [])
if st.button(f"Cut out {count} file{'s' if count != 1 else ''}", type="primary", disabled=count == 0):
    bar = st.progress(0.0, text="Starting…")

    def report(done: int, total: int, name: str) -> None:
        bar.progress(done / total, text=f"{done} of {total} done (last: {name})")

    result = batch.cut_out_batch(
        [(f.name, f.getvalue()) for f in files],
        settings,
        matte,
        rule=rule,
        layers=layers,
        trim=trim,
        max_pixels=limits.max_pixels(),
        detections=SHARED_DETECTIONS,
        progress=report,
    )
    st.session_state[session.BATCH_RESULT_KEY] = result

result = st.session_state.get(session.BATCH_RESULT_KEY)
if result is not None:
    if result.failed:
        st.warning(f"{result.succeeded} file(s) cut out, {result.failed} failed: see the reasons below.")
    else:
        st.success(f"All {result.succeeded} file(s) cut out.")
    st.dataframe(
        [
            {
                "file": r.name,
                "status": "ok" if r.ok else "failed",  # words: no emoji font needed
                "characters": r.characters,
                "seconds": round(r.seconds, 2),
                "what happened": r.message,
            }
            for r in result.reports
        ],
        hide_index=True,
        width="stretch",
    )
    st.download_button(
        "Download the ZIP",
        result.zip_bytes,
        file_name="nukki_batch.zip",
        mime="application/zip",
        type="primary",
        disabled=result.succeeded == 0,
        on_click="ignore",
        key="dl_batch",
    )
