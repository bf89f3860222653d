"""The last line of defence at the page boundary: never a traceback in the browser.

Expected failures (:class:`~inference.image_io.ImageLoadError`,
:class:`~inference.segmenter.ModelUnavailable`, ``ValueError``) carry a message
for people and are shown as they are. Anything else is a bug: its traceback goes
to the server log and the person gets one sentence. Nothing here imports Streamlit.
"""

from __future__ import annotations

import logging

_LOG = logging.getLogger("nukki.studio")


def unexpected(exc: BaseException, doing: str) -> str:
    """Log ``exc`` with its traceback; return a sentence saying what failed."""
    _LOG.error("unexpected error while %s", doing, exc_info=exc)
    detail = str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else ""
    return (
        f"Something went wrong while {doing} ({type(exc).__name__}{': ' + detail if detail else ''}). "
        "The details are in the server log; try other settings, or another picture."
    )
