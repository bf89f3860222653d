"""Nukki studio: the entry point (``streamlit run app.py``, or ``./run.sh app``).

It declares the pages (so the sidebar reads Home, Cutout, Batch, Models) and draws
the home page: what Nukki does, a before/after example, samples to try, and the
active backend. The other pages live in ``pages/``.
"""

from __future__ import annotations

import streamlit as st

st.set_page_config(page_title="Nukki · anime cutouts", page_icon=":material/content_cut:", layout="wide")

from inference.segmenter import ModelUnavailable, resolve_backend  # noqa: E402
from studio import assets, controls, engine_cache, session  # noqa: E402
from studio.model_options import model_options  # noqa: E402

CUTOUT_PAGE = "pages/1_Cutout.py"
BATCH_PAGE = "pages/2_Batch.py"
MODELS_PAGE = "pages/3_Models.py"


def home() -> None:
    """The home page."""
    st.title("Nukki")
    st.markdown(
        "**Cut anime and cartoon characters out of pictures.** Upload a picture, click the characters "
        "you want, tune the edge live, put them on a new background, and download a transparent PNG, "
        "the mask, a composite, or one layer per character."
    )

    example = assets.example()
    if example is not None:
        before, after = st.columns(2)
        before.image(str(example["before"]), caption="Before: a picture with three characters", width="stretch")
        after.image(
            str(example["after"]),
            caption=f"After: cut out by the {example['backend']} segmenter with default settings, "
            "on a bundled background",
            width="stretch",
        )

    steps = st.columns(4)
    for column, (title, text) in zip(
        steps,
        [
            ("1 · Upload", "PNG, JPEG, WebP, BMP, TIFF or GIF, or one of the samples below."),
            ("2 · Click", "Every character gets a colour and a number. Click to include or exclude."),
            ("3 · Tune", "Guided filter, islands, holes, threshold, feather, edge colours: live."),
            ("4 · Download", "RGBA PNG, mask, composite, or a layers ZIP with a clean background plate."),
        ],
    ):
        column.markdown(f"**{title}**  \n{text}")

    st.page_link(CUTOUT_PAGE, label="Open the Cutout studio", icon=":material/content_cut:")

    st.subheader("Try a sample")
    samples = assets.samples()
    for column, sample in zip(st.columns(len(samples)), samples):
        with column:
            st.image(engine_cache.bundled_picture(sample), caption=sample.title, width="stretch")
            if st.button("Try this one", key=f"try.{sample.name}", width="stretch"):
                st.session_state[session.PENDING_SAMPLE_KEY] = sample.name
                st.switch_page(CUTOUT_PAGE)

    st.subheader("Backend")
    options = model_options()
    settings = controls.detection_settings(options)
    try:
        choice = resolve_backend(settings.backend)
    except ModelUnavailable as exc:
        st.error(str(exc))
    else:
        label = {"classic": "Classic segmenter", "rtmdet": "Anime model (RTMDet-Ins)"}.get(choice.name, choice.name)
        st.markdown(f"Active: **{label}**" + (f" + refiner **{settings.refine}**" if settings.refine != "none" else ""))
        st.caption(choice.reason)
    st.caption("Change it, or download the anime models, on the Models page.")


session.keep_widget_state()
navigation = st.navigation(
    [
        st.Page(home, title="Home", icon=":material/home:", default=True),
        st.Page(CUTOUT_PAGE, title="Cutout", icon=":material/content_cut:", url_path="Cutout"),
        st.Page(BATCH_PAGE, title="Batch", icon=":material/folder_zip:", url_path="Batch"),
        st.Page(MODELS_PAGE, title="Models", icon=":material/memory:", url_path="Models"),
    ]
)
navigation.run()
