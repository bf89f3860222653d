"""Download one weight file while reporting its progress.

:func:`inference.weights.download_weight` prints lines but has no progress
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

from inference import weights

#: ``(fraction in [0, 1], text)``.
Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class DownloadOutcome:
    ok: bool
    message: str
    log: str


def _bytes_on_disk(folder: Path, target: Path) -> int:
    total = 0
    cache = folder / ".cache" / "huggingface" / "download"
    if cache.is_dir():
        total += sum(p.stat().st_size for p in cache.rglob("*.incomplete") if p.is_file())
    if target.is_file():
        total = max(total, target.stat().st_size)
    return total


def offline_message(key: str, reason: str) -> str:
    return (
        f"Could not download {key}: {reason}. This machine may be offline or unable to reach "
        f"huggingface.co. The studio keeps working with the classic segmenter. To install the weights "
        f"by hand: {weights.manual_install_command([key])}"
    )


def download_with_progress(key: str, progress: Progress, *, poll_s: float = 0.5) -> DownloadOutcome:
    """Fetch, verify and record the weight ``key``; never raises for network trouble."""
    spec = weights.weight_spec(key)
    try:
        remote = weights.fetch_remote_file(spec)
    except weights.DownloadError as exc:
        return DownloadOutcome(False, offline_message(key, str(exc)), "")
    target = weights.weight_path(key)
    log = io.StringIO()
    failure: list[BaseException] = []

    def work() -> None:
        try:
            weights.download_weight(key, out=log)
        except BaseException as exc:  # reported to the page below
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
        if isinstance(exc, weights.DownloadError):
            return DownloadOutcome(False, offline_message(key, str(exc)), log.getvalue())
        return DownloadOutcome(False, f"Could not download {key}: {type(exc).__name__}: {exc}", log.getvalue())
    progress(1.0, f"{key}: {total_mb:.1f} MB, verified")
    return DownloadOutcome(True, f"{key} installed and verified ({total_mb:.1f} MB).", log.getvalue())
