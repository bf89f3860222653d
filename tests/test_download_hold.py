"""Generated downloads survive other sessions' reruns (studio/download_hold.py).

Streamlit's own ``MediaFileManager`` and memory storage, driven as the server drives
them: a press runs ``execute_deferred``; every script run of any session ends with
``remove_orphaned_files``; a session's next full run starts with ``clear_session_refs``.
"""

from __future__ import annotations

import pytest
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.runtime.media_file_storage import MediaFileKind, MediaFileStorageError
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

from studio.download_hold import generated_file_id, hold_generated_downloads

OWNER = "dontcare"  # the session id MediaFileManager uses outside a script run
PNG = b"\x89PNG\r\n\x1a\n" + b"nukki" * 100


def _press(manager: MediaFileManager) -> str:
    """Draw a deferred download button, press it; returns the generated file's id."""
    placeholder = manager.add_deferred(lambda: PNG, "image/png", "1.2.3", "picture_cutout.png")
    return generated_file_id(manager.execute_deferred(placeholder))


def _other_sessions_finish_runs(manager: MediaFileManager, runs: int) -> None:
    for _ in range(runs):
        manager.remove_orphaned_files()


def test_without_the_hold_two_runs_elsewhere_lose_the_file():
    """The bug this module fixes, shown on Streamlit itself (fails once Streamlit fixes it)."""
    storage = MemoryMediaFileStorage("/media")
    manager = MediaFileManager(storage)
    file_id = _press(manager)
    _other_sessions_finish_runs(manager, 2)
    with pytest.raises(MediaFileStorageError):
        storage.get_file(file_id)


def test_held_file_survives_other_sessions_until_its_owner_reruns():
    storage = MemoryMediaFileStorage("/media")
    manager = MediaFileManager(storage)
    assert hold_generated_downloads(manager)
    assert hold_generated_downloads(manager)  # idempotent: wrapped once
    file_id = _press(manager)
    _other_sessions_finish_runs(manager, 20)
    assert storage.get_file(file_id).content == PNG
    # The owner's next full run drops its references; the file is then collected as before.
    manager.clear_session_refs(OWNER)
    _other_sessions_finish_runs(manager, 2)
    with pytest.raises(MediaFileStorageError):
        storage.get_file(file_id)


def test_repeat_presses_still_generate_and_the_button_stays_pressable():
    storage = MemoryMediaFileStorage("/media")
    manager = MediaFileManager(storage)
    hold_generated_downloads(manager)
    placeholder = manager.add_deferred(lambda: PNG, "image/png", "1.2.3", "picture_cutout.png")
    first = generated_file_id(manager.execute_deferred(placeholder))
    _other_sessions_finish_runs(manager, 5)
    second = generated_file_id(manager.execute_deferred(placeholder))
    assert first == second and storage.get_file(second).content == PNG


def test_a_manager_without_the_expected_members_is_left_alone():
    class Other:
        def execute_deferred(self, file_id: str) -> str:
            return f"/media/{file_id}.png"

    other = Other()
    assert not hold_generated_downloads(other)
    assert other.execute_deferred("x") == "/media/x.png"


def test_generated_file_id_reads_the_memory_storage_url():
    storage = MemoryMediaFileStorage("/media")
    file_id = storage.load_and_get_id(PNG, "image/png", MediaFileKind.DOWNLOADABLE)
    assert generated_file_id(storage.get_url(file_id)) == file_id
