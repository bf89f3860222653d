"""Keep a generated download until its own session moves on, not until any session does.

The Cutout page's download buttons make their file when pressed (Streamlit's deferred
downloads: ``st.download_button(data=callable)``), so a slider move never pays for a
full-resolution PNG. Streamlit 1.67 stores the file made on a press without tying it to
the session that pressed: ``MediaFileManager.execute_deferred`` leaves it unmapped, and
``remove_orphaned_files``, which runs at the end of *every* script run of *every*
session, marks it on its first pass and deletes it on the second. With eight people
working at once, two of their reruns can end between the server making the file and the
browser fetching its URL, and that download never arrives (seen in the 8-session browser
test: "canceled", no message on the page).

:func:`hold_generated_downloads` wraps ``execute_deferred`` so that the file it makes is
referenced by the pressing session (under a coordinate of its own, beside the button's).
Streamlit drops a session's references at the start of that session's next full run, so
the file lives until its owner moves on, whatever the other sessions do, and is then
collected as before. Nothing else changes: the button's placeholder id, repeat presses
(each makes a fresh file) and the clean-up of closed sessions are Streamlit's own.

Streamlit is pinned (``requirements.txt``); :func:`hold_generated_downloads` checks the
private members it relies on and leaves the manager alone if they are missing.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

_LOGGER = logging.getLogger(__name__)
#: Marks a manager already wrapped (the wrap is idempotent).
_HELD_FLAG = "_nukki_holds_generated_downloads"
#: Appended to the button's coordinates for the generated file's reference.
_HOLD_SUFFIX = "#nukki-generated"
_REQUIRED_MEMBERS = ("execute_deferred", "_lock", "_deferred_callables", "_files_by_session_and_coord", "_file_metadata")


def generated_file_id(url: str) -> str:
    """The media file id in a URL Streamlit's memory storage made (``…/media/<id><.ext>``)."""
    name = url.rsplit("/", 1)[-1]
    return name.split(".", 1)[0]


def hold_generated_downloads(manager: Any) -> bool:
    """Make ``manager`` (a Streamlit ``MediaFileManager``) keep each file a deferred
    download generates until the pressing session's next full run.

    Returns:
        True when the manager holds generated downloads now (wrapped by this call or an
        earlier one); False when this Streamlit lacks the members the wrap needs.
    """
    if getattr(manager, _HELD_FLAG, False):
        return True
    if not all(hasattr(manager, name) for name in _REQUIRED_MEMBERS):
        _LOGGER.warning("Streamlit's MediaFileManager changed; generated downloads are not held")
        return False
    execute = manager.execute_deferred

    @functools.wraps(execute)
    def execute_and_hold(file_id: str) -> str:
        with manager._lock:
            entry = manager._deferred_callables.get(file_id)
        url = execute(file_id)
        if entry is not None:
            generated = generated_file_id(url)
            with manager._lock:
                if generated in manager._file_metadata:
                    refs = manager._files_by_session_and_coord[entry["session_id"]]
                    refs[entry["coordinates"] + _HOLD_SUFFIX] = generated
        return url

    manager.execute_deferred = execute_and_hold
    setattr(manager, _HELD_FLAG, True)
    return True


def hold_generated_downloads_in_this_server() -> bool:
    """Apply :func:`hold_generated_downloads` to the running Streamlit server's manager
    (no-op outside ``streamlit run``, e.g. in ``AppTest``)."""
    from streamlit import runtime

    if not runtime.exists():
        return False
    return hold_generated_downloads(runtime.get_instance().media_file_mgr)
