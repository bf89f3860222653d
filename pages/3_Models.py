"""Models: which weights are installed, downloading them, the device, and the backend choice."""

from __future__ import annotations

import streamlit as st

st.set_page_config(page_title="Nukki · Models", page_icon=":material/memory:", layout="wide")

from inference import model_cache, registry, weights  # noqa: E402
from inference.detection_cache import SHARED_DETECTIONS  # noqa: E402
from inference.segmenter import mmdet_available  # noqa: E402
from studio import controls, session  # noqa: E402
from studio.model_options import model_options, weight_rows  # noqa: E402
from studio.weight_download import download_with_progress  # noqa: E402

session.keep_widget_state()

st.title("Models")
st.markdown(
    "Nukki works without any weights (the **classic** segmenter). The anime models find characters on "
    "any background and sharpen their edges, and SAM 2.1 cuts out what you click; their weights are "
    f"downloaded from the Hugging Face Hub into `{weights.models_dir()}` and verified."
)

st.subheader("Weights")
rows = weight_rows()
st.dataframe(
    [
        {
            "model": row.model,
            "weights": row.key,
            "what it does": row.role,
            "status": row.status,
            "size": row.size,
            "licence": row.licence,
            "source": row.source,
        }
        for row in rows
    ],
    hide_index=True,
    width="stretch",
    column_config={"source": st.column_config.LinkColumn("source")},
)
st.caption(
    "The anime model also needs mmdet/mmcv: "
    + ("installed." if mmdet_available() else "not installed (./run.sh installs them).")
)

OUTCOMES_KEY = "models.outcomes"
for ok, message in st.session_state.pop(OUTCOMES_KEY, []):
    (st.success if ok else st.error)(message)

missing = [row.key for row in rows if not row.installed]
if missing:
    titles = {row.key: f"{row.model} ({row.size})" for row in rows}
    suggested = [key for key in missing if key in registry.download_all_keys()]
    which = st.multiselect(
        "Download", missing, default=suggested, format_func=titles.get, key="models.download_pick",
        help="The larger SAM 2.1 variants are optional: the tiny one is enough for point prompts.",
    )
    if st.button("Download selected weights", type="primary", disabled=not which):
        outcomes = []
        for key in which:
            bar = st.progress(0.0, text=f"{key}: asking huggingface.co…")
            outcome = download_with_progress(key, lambda f, text, bar=bar: bar.progress(f, text=text))
            outcomes.append((outcome.ok, outcome.message))
            if not outcome.ok:
                break
        if any(ok for ok, _ in outcomes):
            model_cache.clear()  # models loaded before the new weights
            SHARED_DETECTIONS.clear()  # and the detections they made
        st.session_state[OUTCOMES_KEY] = outcomes
        st.rerun()  # redraw the table with the new status
    st.caption(
        "The same from a terminal in the Nukki folder: "
        f"`python -m inference.weights download {' '.join(which or missing)}`. "
        "Without access to huggingface.co from Python, see models/README.md for the git-lfs way."
    )
else:
    st.success("All weights are installed.")

st.subheader("Point prompts")
st.markdown(
    "A click on a spot no detected character covers cuts out what lies there: "
    + model_cache.resolve_prompter("auto").reason
)

st.subheader("Device")
try:
    import torch

    if torch.cuda.is_available():
        st.markdown(f"**GPU**: {torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda}, fp16 inference)")
    else:
        st.markdown(f"**CPU** ({torch.get_num_threads()} threads, torch {torch.__version__}); no CUDA GPU found.")
except ImportError:
    st.markdown("**CPU** (torch is not installed: only the classic segmenter can run).")

st.subheader("Backend")
options = model_options()
controls.detection_controls(options)
settings = controls.detection_settings(options)
st.caption(
    f"The Cutout and Batch pages use: backend **{settings.backend}**, refine **{settings.refine}**, "
    f"TTA **{'on' if settings.tta else 'off'}**."
)
