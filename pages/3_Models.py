"""Models: which weights are installed, downloading them, the device, and the backend choice."""

from __future__ import annotations

import streamlit as st

st.set_page_config(page_title="Nukki · Models", page_icon="🧠", layout="wide")

from inference import weights  # noqa: E402
from inference.segmenter import mmdet_available  # noqa: E402
from studio import controls, session  # noqa: E402
from studio.model_options import model_options  # noqa: E402
from studio.weight_download import download_with_progress  # noqa: E402

session.keep_widget_state()

st.title("Models")
st.markdown(
    "Nukki works without any weights (the **classic** segmenter). The anime models find characters on "
    "any background and sharpen their edges; they are downloaded from the Hugging Face Hub into "
    f"`{weights.models_dir()}` and verified."
)


def _status(key: str) -> str:
    path = weights.weight_path(key)
    if weights.is_installed(key):
        return "✅ installed"
    if path.exists() and weights.is_lfs_pointer(path):
        return "⚠️ Git LFS pointer (run git lfs pull)"
    return "— missing"


st.subheader("Weights")
st.dataframe(
    [
        {
            "weights": key,
            "what": spec.description,
            "status": _status(key),
            "licence": spec.licence,
            "source": spec.url,
        }
        for key, spec in weights.WEIGHTS.items()
    ],
    hide_index=True,
    width="stretch",
)
st.caption(
    "RTMDet-Ins also needs mmdet/mmcv: "
    + ("installed." if mmdet_available() else "not installed (./run.sh installs them).")
)

OUTCOMES_KEY = "models.outcomes"
for ok, message in st.session_state.pop(OUTCOMES_KEY, []):
    (st.success if ok else st.error)(message)

missing = [key for key in weights.WEIGHTS if not weights.is_installed(key)]
if missing:
    which = st.multiselect("Download", missing, default=missing, key="models.download_pick")
    if st.button("Download selected weights", type="primary", disabled=not which):
        outcomes = []
        for key in which:
            bar = st.progress(0.0, text=f"{key}: asking huggingface.co…")
            outcome = download_with_progress(key, lambda f, text, bar=bar: bar.progress(f, text=text))
            outcomes.append((outcome.ok, outcome.message))
            if not outcome.ok:
                break
        if any(ok for ok, _ in outcomes):
            st.cache_resource.clear()  # models and detections made before the new weights
        st.session_state[OUTCOMES_KEY] = outcomes
        st.rerun()  # redraw the table with the new status
else:
    st.success("All weights are installed.")

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
