"""Installing weight files: what is on disk for each model, and fetching what is not from the Hugging Face Hub.

The weights command line lives here (``python -m inference.weights download
[KEY ...|all]`` and ``status``; :func:`inference.weights.main` calls
:func:`main`). A download asks the hub for the file's size and sha256 (git blob
id for files not in LFS), fetches it with ``huggingface_hub`` (progress bars; an
interrupted download resumes), keeps it only if it matches, and records it with
:func:`inference.weights.record_download` so that loading trusts it. The studio's
Models page uses :func:`weight_status` and :func:`download_weight` too.
Which files exist comes from :mod:`inference.registry`.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from inference.registry import ModelSpec, download_all_keys, model_keys, model_spec
from inference.weights import (
    HASH_CHUNK,
    LOCK_FILENAME,
    MODELS_DIR_ENV,
    display_path,
    file_sha256,
    is_lfs_pointer,
    models_dir,
    read_lock,
    record_download,
    short_error,
    weight_path,
)


class DownloadError(RuntimeError):
    """Fetching or verifying a weight file failed; the message is one line for the user."""


class VerificationError(DownloadError):
    """The hub was reached but the file did not match its size and hash (it was deleted)."""


def manual_install_command(keys: Sequence[str]) -> str:
    """The git-lfs commands that fetch the repositories holding ``keys`` by hand."""
    clones: list[str] = []
    for key in keys:
        spec = model_spec(key)
        folder = display_path(models_dir() / Path(spec.relative_path).parent)
        clone = f"git clone https://huggingface.co/{spec.repo_id} {folder}"
        if clone not in clones:
            clones.append(clone)
    return " && ".join(["git lfs install", *clones])


def _git_blob_sha1(path: Path) -> str:
    """Git's object id of a file's content (what the hub reports for files not stored in LFS)."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class RemoteFile:
    """What the hub says about a file: size, sha256 (LFS files) and git blob id."""

    size: int
    sha256: str | None
    blob_id: str | None


def fetch_remote_file(spec: ModelSpec) -> RemoteFile:
    """Ask the hub for the size and hashes of ``spec``'s file.

    Raises:
        DownloadError: the hub is unreachable or does not have the file.
    """
    import huggingface_hub

    try:
        infos = huggingface_hub.HfApi().get_paths_info(spec.repo_id, [spec.filename])
    except _hub_errors() as exc:
        raise DownloadError(f"could not reach huggingface.co/{spec.repo_id} ({short_error(exc)})") from None
    for info in infos:
        if getattr(info, "path", None) == spec.filename and getattr(info, "size", None) is not None:
            lfs = getattr(info, "lfs", None)
            sha256 = getattr(lfs, "sha256", None) if lfs is not None else None
            size = getattr(lfs, "size", None) if lfs is not None else None
            return RemoteFile(
                size=int(size if size is not None else info.size),
                sha256=sha256.lower() if isinstance(sha256, str) else None,
                blob_id=getattr(info, "blob_id", None),
            )
    raise DownloadError(f"huggingface.co/{spec.repo_id} has no file {spec.filename}")


def _hub_errors() -> tuple[type[BaseException], ...]:
    """Exceptions meaning "the hub could not be used": network, HTTP, offline mode, missing entries."""
    from huggingface_hub import errors

    return (OSError, errors.HTTPError, errors.EntryNotFoundError, errors.HfHubHTTPError)


def _matches(path: Path, remote: RemoteFile) -> tuple[bool, str]:
    """Whether a local file matches the hub's metadata, and its sha256."""
    sha256 = file_sha256(path)
    if path.stat().st_size != remote.size:
        return False, sha256
    if remote.sha256 is not None:
        return sha256 == remote.sha256, sha256
    if remote.blob_id:
        return _git_blob_sha1(path) == remote.blob_id, sha256
    return False, sha256


def download_weight(key: str, *, out: TextIO | None = None) -> dict[str, Any]:
    """Fetch one weight file into the models folder, verify it, record it in the lock file.

    A file already present that matches the hub is kept (and recorded) without
    downloading again. A file that does not match after downloading is deleted.

    Returns:
        The lock entry written for ``key``.

    Raises:
        DownloadError: hub unreachable, file missing on the hub, or verification failed.
    """
    import huggingface_hub

    stream = out if out is not None else sys.stdout
    spec = model_spec(key)
    target = weight_path(key)
    remote = fetch_remote_file(spec)
    if target.is_file():
        ok, sha256 = _matches(target, remote)
        if ok:
            print(f"{key}: {display_path(target)} already present and verified", file=stream)
            return record_download(key, target, size=remote.size, sha256=sha256, source=spec.url)
        print(f"{key}: {display_path(target)} does not match the hub; downloading it again", file=stream)
        target.unlink()
    print(f"{key}: downloading {spec.filename} from huggingface.co/{spec.repo_id} "
          f"({remote.size / 1e6:.1f} MB)", file=stream, flush=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        fetched = Path(huggingface_hub.hf_hub_download(spec.repo_id, spec.filename, local_dir=target.parent))
    except _hub_errors() as exc:
        raise DownloadError(f"downloading {spec.filename} from huggingface.co/{spec.repo_id} failed "
                            f"({short_error(exc)})") from None
    if fetched.resolve() != target.resolve():
        fetched.replace(target)
    ok, sha256 = _matches(target, remote)
    if not ok:
        got_size = target.stat().st_size
        target.unlink()
        expected = remote.sha256 or remote.blob_id or "unknown"
        raise VerificationError(
            f"{spec.filename} failed verification (got {got_size} bytes, sha256 {sha256[:16]}...; expected "
            f"{remote.size} bytes, hash {expected[:16]}...); the file was deleted, try again"
        )
    entry = record_download(key, target, size=remote.size, sha256=sha256, source=spec.url)
    print(f"{key}: ok, {display_path(target)} ({remote.size / 1e6:.1f} MB, sha256 {sha256[:12]}...)", file=stream)
    return entry


# ---------------------------------------------------------------------------------------------- status


_STATUS_HASHES: dict[tuple[str, int, int], str] = {}


def _status_sha256(path: Path) -> str:
    """:func:`file_sha256` remembered per (path, size, mtime) so status pages do not rehash
    hundreds of MB on every redraw. For display only: trust decisions always hash afresh."""
    stat = path.stat()
    memo_key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo_key not in _STATUS_HASHES:
        if len(_STATUS_HASHES) > 64:
            _STATUS_HASHES.clear()
        _STATUS_HASHES[memo_key] = file_sha256(path)
    return _STATUS_HASHES[memo_key]


#: Status states, in the words of :attr:`WeightStatus.label`.
_STATE_LABELS = {
    "missing": "Not installed",
    "lfs-pointer": "Git LFS pointer, not the weights",
    "installed": "Installed (not verified)",
    "verified": "Installed and verified",
    "changed": "Changed since download",
}


@dataclass(frozen=True)
class WeightStatus:
    """What is on disk for one registry model, and what to do about it.

    Attributes:
        key: registry key.
        state: ``"missing"``, ``"lfs-pointer"``, ``"installed"`` (present, no hash recorded),
            ``"verified"`` (sha256 equals the lock file's) or ``"changed"`` (it differs).
        path: where the file lives.
        size: its size in bytes, ``None`` when missing.
        advice: one sentence saying what to do (empty when verified).
    """

    key: str
    state: str
    path: Path
    size: int | None
    advice: str

    @property
    def installed(self) -> bool:
        """True when a usable file is present (the same test as :func:`is_installed`)."""
        return self.state in ("installed", "verified", "changed")

    @property
    def label(self) -> str:
        """Plain words for the state (no symbols, so any font shows it)."""
        return _STATE_LABELS[self.state]


def weight_status(key: str, lock: Mapping[str, Mapping[str, Any]] | None = None) -> WeightStatus:
    """Inspect the file of ``key``; hashes it (once per file version) when the lock file has an entry.

    Args:
        key: registry key.
        lock: :func:`read_lock`'s result, to share one read among several calls.
    """
    spec = model_spec(key)
    path = weight_path(key)
    command = spec.download_command
    if lock is None:
        lock = read_lock()
    if not path.exists():
        return WeightStatus(key, "missing", path, None, f"run `{command}`")
    if is_lfs_pointer(path):
        return WeightStatus(key, "lfs-pointer", path, path.stat().st_size,
                            f"run `git lfs pull` in {display_path(path.parent)}, or `{command}`")
    size = path.stat().st_size
    entry = lock.get(key)
    if entry is None:
        return WeightStatus(key, "installed", path, size,
                            f"no hash recorded: run `{command}` to verify it against {spec.repo_id}")
    if size == entry.get("size") and _status_sha256(path) == entry["sha256"]:
        return WeightStatus(key, "verified", path, size, "")
    return WeightStatus(key, "changed", path, size, f"sha256 differs from {LOCK_FILENAME}: run `{command}`")


def _status_line(status: WeightStatus, width: int) -> str:
    shown = display_path(status.path)
    size = "" if status.size is None else f"{status.size / 1e6:.1f} MB"
    if status.state == "verified":
        note = f"{size}, sha256 matches {LOCK_FILENAME}"
    else:
        note = "; ".join(part for part in (size, status.advice) if part)
    words = {"lfs-pointer": "LFS pointer", "changed": "CHANGED"}.get(status.state, status.state)
    return f"{status.key:<{width}} {words:<12} {shown}  ({note})"


def status_lines() -> list[str]:
    """One line per registry model: missing, LFS pointer, installed (unverified), verified or CHANGED."""
    lock = read_lock()
    width = max(len(key) for key in model_keys())
    lines = [f"models folder: {display_path(models_dir())} (set {MODELS_DIR_ENV} to use another)"]
    lines += [_status_line(weight_status(key, lock), width) for key in model_keys()]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``download [KEY ...|all]`` or ``status``. Returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m inference.weights", description="Download, verify and list Nukki's model weight files."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    download = commands.add_parser("download", help="fetch weight files from the Hugging Face Hub and verify them")
    download.add_argument(
        "which", nargs="*", default=["all"], choices=[*model_keys(), "all"],
        help=f"registry keys; 'all' (the default) means {' '.join(download_all_keys())}",
    )
    commands.add_parser("status", help="list weight files and whether they match the lock file")
    args = parser.parse_args(argv)

    if args.command == "status":
        print("\n".join(status_lines()))
        return 0
    keys: list[str] = []
    for which in args.which:
        for key in download_all_keys() if which == "all" else (which,):
            if key not in keys:
                keys.append(key)
    for key in keys:
        try:
            download_weight(key)
        except DownloadError as exc:
            print(f"error: {key}: {exc}. Manual alternative: {manual_install_command(keys)}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
