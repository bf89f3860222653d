"""Per-session state: the Cutout workspace and widget values that outlive a page.

Everything a person does is kept in *their* ``st.session_state``: nothing here
is module-level, so two sessions never see each other's pictures or choices.

Streamlit forgets a widget's value when a page that does not draw it runs.
Widgets whose key starts with :data:`KEEP_PREFIX` (matte sliders, detection
options, background choice) are re-assigned at the top of every page by
:func:`keep_widget_state`, the documented way to carry them across pages.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from studio.workspace import Workspace

WORKSPACE_KEY = "nukki.workspace"
#: A sample the home page asked the Cutout page to open.
PENDING_SAMPLE_KEY = "nukki.pending_sample"
#: The Batch page's last result.
BATCH_RESULT_KEY = "nukki.batch_result"
KEEP_PREFIX = "keep."
#: Set once a session has run through ``app.py``'s navigation (see :func:`keep_widget_state`).
NAVIGATION_CHECKED_KEY = "nukki.navigation_checked"


def workspace() -> Workspace:
    """This session's :class:`~studio.workspace.Workspace` (created on first use)."""
    if WORKSPACE_KEY not in st.session_state:
        st.session_state[WORKSPACE_KEY] = Workspace()
    return st.session_state[WORKSPACE_KEY]


def _use_the_apps_navigation() -> None:
    """Make sure ``app.py``'s ``st.navigation`` (Home, Cutout, Batch, Models) is in charge.

    Until some run in the process has called ``st.navigation``, Streamlit treats an app
    with a ``pages/`` folder the old way: a first visit straight to ``/Cutout`` after the
    server starts runs the page on its own, with a sidebar whose first entry reads "app".
    On a session's first run that run is stopped here and run again through ``app.py``;
    later runs only switch the old way off (a rerun then could swallow a button press).
    """
    from streamlit.runtime.pages_manager import PagesManager

    if getattr(PagesManager, "uses_pages_directory", False):
        PagesManager.uses_pages_directory = False
        if NAVIGATION_CHECKED_KEY not in st.session_state:
            st.session_state[NAVIGATION_CHECKED_KEY] = True
            st.rerun()
    st.session_state[NAVIGATION_CHECKED_KEY] = True


def keep_widget_state() -> None:
    """Carry ``keep.*`` widget values over page switches (call first thing on every page)."""
    _use_the_apps_navigation()
    for key in list(st.session_state.keys()):
        if isinstance(key, str) and key.startswith(KEEP_PREFIX):
            st.session_state[key] = st.session_state[key]


def default(key: str, value: Any) -> None:
    """Give a keyed widget its first value through session state (so it never needs ``value=``)."""
    if key not in st.session_state:
        st.session_state[key] = value


def get(key: str, fallback: Any = None) -> Any:
    return st.session_state.get(key, fallback)
