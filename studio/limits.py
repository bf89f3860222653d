"""How big an upload may be, and why.

Two limits guard the studio:

* **File size**: ``server.maxUploadSize`` in ``.streamlit/config.toml`` (megabytes).
  Streamlit's uploader refuses bigger files in the browser, before they reach Python.
* **Pixels**: the engine's one pixel limit, :func:`inference.image_io.pixel_limit`
  (24 MP, ``NUKKI_MAX_PIXELS`` overrides it), the same for the command line, the
  batch page and the API. Streamlit has no such option, and a small file can still
  decode to a huge picture.
"""

from __future__ import annotations

from inference.image_io import pixel_limit


def max_pixels() -> int:
    """The pixel limit in force (:func:`inference.image_io.pixel_limit`, read on every call)."""
    return pixel_limit()


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
