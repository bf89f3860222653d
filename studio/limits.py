"""How big an upload may be, and why.

Two limits guard the studio, and both are explained in ``.streamlit/config.toml``:

* **File size**: ``server.maxUploadSize`` in ``.streamlit/config.toml`` (megabytes).
  Streamlit's uploader refuses bigger files in the browser, before they reach Python.
* **Pixels**: :data:`MAX_PIXELS` below (Streamlit has no such option, and an unknown
  key in ``config.toml`` only earns a warning on every start). A small file can
  still decode to a huge picture (a PNG of one flat colour compresses 1000:1), and
  every decoded megapixel costs about 40 MB while a cutout is worked on (RGB,
  float32 masks, guided-filter planes, the preview). 24 MP (6000 x 4000) keeps one
  session under about 1 GB. ``NUKKI_MAX_PIXELS`` overrides it (e.g. for a big machine).
"""

from __future__ import annotations

import os

#: Default pixel limit (width x height) of pictures opened in the studio.
DEFAULT_MAX_PIXELS = 24_000_000


def max_pixels() -> int:
    """The pixel limit: ``$NUKKI_MAX_PIXELS`` when set to a positive integer, else :data:`DEFAULT_MAX_PIXELS`."""
    raw = os.environ.get("NUKKI_MAX_PIXELS", "").strip().replace("_", "")
    if raw.isdigit() and int(raw) > 0:
        return int(raw)
    return DEFAULT_MAX_PIXELS


MAX_PIXELS = max_pixels()


def describe_limits(max_upload_mb: int | float) -> str:
    """One sentence for the uploader's help text."""
    return (
        f"Up to {max_upload_mb:g} MB per file and {max_pixels() / 1e6:g} megapixels "
        f"(e.g. {_example_size(max_pixels())}). PNG, JPEG, WebP, BMP, TIFF or GIF."
    )


def _example_size(pixels: int) -> str:
    # A 3:2 frame with that many pixels, rounded down to hundreds.
    width = int((pixels * 1.5) ** 0.5) // 100 * 100
    height = int(width / 1.5) // 100 * 100
    return f"{width} x {height}"
