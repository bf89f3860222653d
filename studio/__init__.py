"""App-side helpers for the Nukki Streamlit studio (``app.py`` and ``pages/``).

The engine lives in :mod:`inference` and never imports Streamlit; this package is
the thin layer between widgets and the engine:

* :mod:`studio.canvas` - the click picture: a component that reports clicks as state (pure parsing;
  the component itself imports Streamlit lazily).
* :mod:`studio.preview` - the matte at display size, what the island/hole sliders did,
  before/after views (pure).
* :mod:`studio.batch` - many files to one ZIP with a per-file report (pure).
* :mod:`studio.assets` - the bundled sample pictures and backgrounds (pure).
* :mod:`studio.limits` - upload size and pixel limits (pure).
* :mod:`studio.workspace` - one session's picture, cutout session and step history (pure).
* :mod:`studio.model_options` - which detection options can run here, and why not (pure).
* :mod:`studio.weight_download` - downloading weights with progress (pure).
* :mod:`studio.errors` - unexpected errors become a sentence and a server log entry (pure).
* :mod:`studio.engine_cache` - bundled pictures decoded once per process (Streamlit).
* :mod:`studio.session` - per-session state and widget persistence (Streamlit).
* :mod:`studio.controls` - detection, matte and background widget groups (Streamlit).
"""
