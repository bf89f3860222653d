"""Download one weight file while reporting its progress.

:func:`inference.weight_install.download_weight` prints lines but has no progress
callback, so it runs in a worker thread while this module watches the bytes
arriving on disk (Hugging Face writes ``*.incomplete`` files under the target
folder's ``.cache/huggingface/download/``) and calls ``progress`` twice a second.

Nothing here imports Streamlit.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from inference import registry, weight_install, weights

#: ``(fraction in [0, 1], text)``.
Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class DownloadOutcome:
    """How a download ended: ``ok``, one message for the page, and the command's printed log."""

    ok: bool
    message: str
    log: str


def _bytes_on_disk(folder: Path, target: Path) -> int:
    """Bytes downloaded so far: the hub's ``*.incomplete`` files under ``folder``, or the finished file."""
    total = 0
    cache = folder / ".cache" / "huggingface" / "download"
    if cache.is_dir():
        total += sum(p.stat().st_size for p in cache.rglob("*.incomplete") if p.is_file())
    if target.is_file():
        total = max(total, target.stat().st_size)
    return total


def offline_message(key: str, reason: str) -> str:
    """What the page says when the hub cannot be used: the reason and the manual (git-lfs) way."""
    return (
        f"Could not download {key}: {reason}. This machine may be offline or unable to reach "
        f"huggingface.co. The studio keeps working with the classic segmenter. To install the weights "
        f"by hand: {weight_install.manual_install_command([key])}"
    )


def download_with_progress(key: str, progress: Progress, *, poll_s: float = 0.5) -> DownloadOutcome:
    """Fetch, verify and record the weight ``key``; never raises for network trouble."""
    spec = registry.model_spec(key)
    try:
        remote = weight_install.fetch_remote_file(spec)
    except weight_install.DownloadError as exc:
        return DownloadOutcome(False, offline_message(key, str(exc)), "")
    target = weights.weight_path(key)
    log = io.StringIO()
    failure: list[BaseException] = []

    def work() -> None:
        try:
            weight_install.download_weight(key, out=log)
        except BaseException as exc:  # noqa: BLE001 - reported to the page below
            failure.append(exc)

    worker = threading.Thread(target=work, name=f"nukki-download-{key}", daemon=True)
    worker.start()
    total_mb = remote.size / 1e6
    while worker.is_alive():
        done = _bytes_on_disk(target.parent, target)
        fraction = min(done / remote.size, 0.99) if remote.size else 0.0
        progress(fraction, f"{key}: {done / 1e6:.1f} of {total_mb:.1f} MB")
        worker.join(poll_s)
    if failure:
        exc = failure[0]
        if isinstance(exc, weight_install.VerificationError):
            return DownloadOutcome(False, f"Could not download {key}: {exc}.", log.getvalue())
        if isinstance(exc, weight_install.DownloadError):
            return DownloadOutcome(False, offline_message(key, str(exc)), log.getvalue())
        return DownloadOutcome(False, f"Could not download {key}: {type(exc).__name__}: {exc}", log.getvalue())
    progress(1.0, f"{key}: {total_mb:.1f} MB, verified")
    return DownloadOutcome(True, f"{key} installed and verified ({total_mb:.1f} MB).", log.getvalue())
