"""Model weight files: where they live, how to download and verify them, how to load them safely.

Three files are known (see ``models/README.md``):

=========  ==================================  ====================================================
key        Hugging Face file                   path under the models folder
=========  ==================================  ====================================================
rtmdet     dreMaz/AnimeInstanceSegmentation    ``AnimeInstanceSegmentation/rtmdetl_e60.ckpt``
refine     dreMaz/AnimeInstanceSegmentation    ``AnimeInstanceSegmentation/refine_last.ckpt``
animeseg   skytnt/anime-seg                    ``anime-seg/isnetis.ckpt``
=========  ==================================  ====================================================

The models folder is ``<repo>/models`` unless the environment variable
``NUKKI_MODELS_DIR`` names another one.

Command line::

    python -m inference.weights download [rtmdet|refine|animeseg|all]
    python -m inference.weights status

``download`` fetches with ``huggingface_hub`` (progress bars; an interrupted
download resumes), compares the file's size and sha256 with the hub's metadata,
and records them in ``weights.lock.json`` in the models folder.

Trust rule for loading (:func:`load_checkpoint`): a checkpoint is first opened
with ``torch.load(weights_only=True)``, which cannot run code. A file that needs
full unpickling (a Lightning checkpoint holding Python objects) is opened only
if it is trusted: its sha256 equals one recorded by ``download``, or the caller
passes ``trust=True`` (``--trust-checkpoint`` on command lines).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import pickle
import sys
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:  # torch is imported lazily: `status` and `is_installed` do not need it
    import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
#: Default models folder; ``NUKKI_MODELS_DIR`` overrides it (see :func:`models_dir`).
MODELS_DIR = REPO_ROOT / "models"
MODELS_DIR_ENV = "NUKKI_MODELS_DIR"
LOCK_FILENAME = "weights.lock.json"
#: The command-line flag that trusts a checkpoint needing full unpickling.
TRUST_FLAG = "--trust-checkpoint"
DOWNLOAD_COMMAND = "python -m inference.weights download all"
INSTALL_HINT = f"run `{DOWNLOAD_COMMAND}` (offline: see models/README.md for the git-lfs alternative)"

_HASH_CHUNK = 1 << 20
#: Files smaller than this that start with the Git LFS header are pointers, not weights.
_LFS_POINTER_MAX_BYTES = 1024
_LFS_POINTER_HEADER = b"version https://git-lfs"


@dataclass(frozen=True)
class WeightSpec:
    """One downloadable weight file.

    Attributes:
        key: short name used on the command line (``rtmdet``, ``refine``, ``animeseg``).
        repo_id: Hugging Face model repository.
        filename: file name inside that repository.
        relative_path: where it goes, relative to the models folder (POSIX separators).
        licence: licence of the repository.
        description: one line saying what the file is.
    """

    key: str
    repo_id: str
    filename: str
    relative_path: str
    licence: str
    description: str

    @property
    def url(self) -> str:
        """Web address of the file on the hub."""
        return f"https://huggingface.co/{self.repo_id}/resolve/main/{self.filename}"


WEIGHTS: dict[str, WeightSpec] = {
    "rtmdet": WeightSpec(
        "rtmdet", "dreMaz/AnimeInstanceSegmentation", "rtmdetl_e60.ckpt",
        "AnimeInstanceSegmentation/rtmdetl_e60.ckpt", "MIT",
        "RTMDet-Ins-L anime instance segmentation (mmengine checkpoint, ~230 MB)",
    ),
    "refine": WeightSpec(
        "refine", "dreMaz/AnimeInstanceSegmentation", "refine_last.ckpt",
        "AnimeInstanceSegmentation/refine_last.ckpt", "MIT",
        "IS-Net mask refiner, 4 input channels (bare state dict, ~176 MB)",
    ),
    "animeseg": WeightSpec(
        "animeseg", "skytnt/anime-seg", "isnetis.ckpt",
        "anime-seg/isnetis.ckpt", "Apache-2.0",
        "IS-Net anime foreground segmentation (Lightning checkpoint)",
    ),
}


class CheckpointError(ValueError):
    """A checkpoint file is missing, damaged, untrusted or does not fit the model; the message says which."""


class DownloadError(RuntimeError):
    """Fetching or verifying a weight file failed; the message is one line for the user."""


# ---------------------------------------------------------------------------------------------- paths


def models_dir() -> Path:
    """The models folder: ``$NUKKI_MODELS_DIR`` if set, else ``<repo>/models``."""
    override = os.environ.get(MODELS_DIR_ENV, "").strip()
    return Path(override).expanduser() if override else MODELS_DIR


def weight_spec(key: str) -> WeightSpec:
    """The :class:`WeightSpec` of ``key`` (``rtmdet``, ``refine`` or ``animeseg``)."""
    if key not in WEIGHTS:
        raise ValueError(f"expected a weight key in {tuple(WEIGHTS)}, got {key!r}")
    return WEIGHTS[key]


def weight_path(key: str) -> Path:
    """Where the file of ``key`` lives (it may not exist yet)."""
    return models_dir() / weight_spec(key).relative_path


def lock_path() -> Path:
    """``weights.lock.json`` in the models folder."""
    return models_dir() / LOCK_FILENAME


def is_lfs_pointer(path: Path) -> bool:
    """True for a small Git LFS pointer file (what ``git clone`` leaves without ``git lfs``)."""
    try:
        if path.stat().st_size > _LFS_POINTER_MAX_BYTES:
            return False
        with path.open("rb") as handle:
            return handle.read(len(_LFS_POINTER_HEADER)) == _LFS_POINTER_HEADER
    except OSError:
        return False


def is_installed(key: str) -> bool:
    """True when the file of ``key`` is present and is not an empty file or a Git LFS pointer."""
    path = weight_path(key)
    try:
        return path.is_file() and path.stat().st_size > 0 and not is_lfs_pointer(path)
    except OSError:
        return False


def _display_path(path: Path) -> str:
    """``path`` relative to the repository root when it lies inside it, else absolute."""
    try:
        return path.resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return str(path)


def manual_install_command(keys: Sequence[str]) -> str:
    """The git-lfs commands that fetch the repositories holding ``keys`` by hand."""
    clones: list[str] = []
    for key in keys:
        spec = weight_spec(key)
        folder = _display_path(models_dir() / Path(spec.relative_path).parent)
        clone = f"git clone https://huggingface.co/{spec.repo_id} {folder}"
        if clone not in clones:
            clones.append(clone)
    return " && ".join(["git lfs install", *clones])


# ---------------------------------------------------------------------------------------------- hashes and lock


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _git_blob_sha1(path: Path) -> str:
    """Git's object id of a file's content (what the hub reports for files not stored in LFS)."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def read_lock() -> dict[str, dict[str, Any]]:
    """Entries of ``weights.lock.json``: ``{key: {path, size, sha256, source, downloaded_at}}``.

    A missing or unreadable lock file reads as empty (nothing is trusted by hash).
    """
    try:
        data = json.loads(lock_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, dict) and isinstance(v.get("sha256"), str)}


def record_download(key: str, path: Path, *, size: int, sha256: str, source: str) -> dict[str, Any]:
    """Write (or replace) the lock entry of ``key`` and return it."""
    entry = {
        "path": _relative_to_models(path),
        "size": int(size),
        "sha256": sha256,
        "source": source,
        "downloaded_at": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
    }
    lock = read_lock()
    lock[key] = entry
    target = lock_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(target.name + ".tmp")
    temporary.write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    temporary.replace(target)
    return entry


def _relative_to_models(path: Path) -> str:
    try:
        return Path(path).resolve().relative_to(models_dir().resolve()).as_posix()
    except ValueError:
        return str(path)


def is_trusted(path: Path) -> bool:
    """True when the file's sha256 equals a hash recorded by ``download`` in ``weights.lock.json``."""
    recorded = {entry["sha256"].lower() for entry in read_lock().values()}
    if not recorded:
        return False
    try:
        return file_sha256(Path(path)) in recorded
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------- loading


def _file_kind(head: bytes) -> str:
    """Classify a file by its first bytes: ``zip`` (torch.save), ``pickle`` (legacy torch.save),
    ``lfs-pointer``, ``html`` or ``unknown``."""
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head[:1] == b"\x80":
        return "pickle"
    if head.startswith(_LFS_POINTER_HEADER):
        return "lfs-pointer"
    if head.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html")):
        return "html"
    return "unknown"


def _first_line(exc: BaseException) -> str:
    """``"ErrorType: first sentence of the message"``, at most about 200 characters."""
    lines = str(exc).strip().splitlines()
    if not lines:
        return type(exc).__name__
    sentence = lines[0].strip().split(". ")[0].rstrip(".")
    if len(sentence) > 200:
        sentence = sentence[:197] + "..."
    return f"{type(exc).__name__}: {sentence}"


class _PlaceholderObject(dict):
    """Stands in for an object whose class cannot be imported (e.g. Lightning's ``AttributeDict``
    when Lightning is not installed). Keeps whatever the pickle gives it; has no behaviour.

    Works whichever way the pickle builds it: called with arguments, created
    with ``__new__`` and filled with dict items, list items or a state.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__()
        self.__dict__["pickled_args"] = args
        self.__dict__["pickled_kwargs"] = kwargs

    def __setstate__(self, state: object) -> None:
        self.__dict__["pickled_state"] = state

    def append(self, item: object) -> None:
        self.__dict__.setdefault("pickled_items", []).append(item)

    def extend(self, items: Sequence[object]) -> None:
        self.__dict__.setdefault("pickled_items", []).extend(items)


class _LenientUnpickler(pickle.Unpickler):
    """Full unpickler (for trusted files only) that replaces classes it cannot import by placeholders.

    Checkpoints written by training code name classes of packages users do not have
    (Lightning, the training repository); the weights never depend on them.
    """

    def find_class(self, module: str, name: str) -> Any:
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return type(name, (_PlaceholderObject,), {"__module__": f"placeholder.{module}"})


_LENIENT_PICKLE = types.ModuleType("nukki_lenient_pickle")
_LENIENT_PICKLE.Unpickler = _LenientUnpickler  # type: ignore[attr-defined]
_LENIENT_PICKLE.load = pickle.load  # type: ignore[attr-defined]
_LENIENT_PICKLE.loads = pickle.loads  # type: ignore[attr-defined]


def _unsafe_globals(path: Path) -> list[str] | None:
    """Python names a zip checkpoint needs beyond what ``weights_only`` allows; None if unknown."""
    import torch

    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # noqa: BLE001 - only a hint for the message
        return None


def load_checkpoint(path: str | Path, *, trust: bool = False) -> dict[str, Any]:
    """Load a checkpoint file into a dict on the CPU, refusing to run code from untrusted files.

    ``torch.load(map_location="cpu", weights_only=True)`` first. A file that
    needs full unpickling is opened with ``weights_only=False`` only when
    ``trust`` is True or its sha256 is recorded in ``weights.lock.json`` by
    ``python -m inference.weights download``. Classes the pickle names but this
    environment lacks (e.g. Lightning's) become inert placeholders.

    Args:
        path: checkpoint written by ``torch.save`` (mmengine, Lightning or a bare state dict).
        trust: allow full unpickling of this file (``--trust-checkpoint``).

    Returns:
        The checkpoint's top-level dict.

    Raises:
        CheckpointError: missing, empty, truncated, not a checkpoint, untrusted, or not a dict.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path} does not exist; to get the model weights, {INSTALL_HINT}")
    if not path.is_file():
        raise CheckpointError(f"expected a checkpoint file, got the folder {path}")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes), not a checkpoint; to get the model weights, {INSTALL_HINT}")
    with path.open("rb") as handle:
        head = handle.read(64)
    kind = _file_kind(head)
    if kind == "lfs-pointer":
        raise CheckpointError(
            f"{path} is a Git LFS pointer ({size} bytes), not the weights: run `git lfs pull` in "
            f"{path.parent}, or {INSTALL_HINT}"
        )
    if kind in ("html", "unknown"):
        what = "a web page" if kind == "html" else f"a file starting with {head[:16]!r}"
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (expected a file written by torch.save, got {what})")

    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        needed = _unsafe_globals(path) if kind == "zip" else None
        if kind == "zip" and not needed:
            raise CheckpointError(f"{path} is damaged ({size} bytes, {_first_line(exc)}); download it again") from None
        if not (trust or is_trusted(path)):
            names = f" ({', '.join(needed[:4])}{', ...' if len(needed) > 4 else ''})" if needed else ""
            raise CheckpointError(
                f"{path} holds Python objects besides tensors{names}, so loading it needs full unpickling, "
                f"which can run arbitrary code, and its sha256 is not one recorded by our download command in "
                f"{LOCK_FILENAME}. If you trust the file, download it with `python -m inference.weights download` "
                f"(which verifies it against the hub), or pass {TRUST_FLAG} (trust=True)."
            ) from None
        checkpoint = _load_trusted(path, size)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch reports damage as RuntimeError, EOFError, ...
        raise CheckpointError(
            f"{path} is damaged or truncated ({size} bytes, {_first_line(exc)}); download it again"
        ) from None
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f"expected {path} to hold a dict (a state dict or a training checkpoint), "
                              f"got {type(checkpoint).__name__}")
    return dict(checkpoint)


def _load_trusted(path: Path, size: int) -> Any:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_LENIENT_PICKLE)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - anything a pickle can raise
        raise CheckpointError(
            f"{path} could not be unpickled ({size} bytes, {_first_line(exc)}); it is damaged or not a checkpoint"
        ) from None


def extract_state_dict(
    checkpoint: Mapping[str, Any],
    *,
    strip_prefix: str | None = None,
    drop_prefixes: Sequence[str] = (),
) -> dict[str, torch.Tensor]:
    """The model weights inside a loaded checkpoint.

    Understands a bare state dict, an mmengine checkpoint (``state_dict`` and
    ``meta``) and a Lightning checkpoint (``epoch``, ``state_dict``,
    ``hyper_parameters``, ...).

    Args:
        checkpoint: what :func:`load_checkpoint` returned.
        strip_prefix: removed from the keys that start with it (e.g. ``"net."``);
            keys without it are kept unchanged.
        drop_prefixes: keys starting with any of these are left out (e.g. ``("gt_encoder.",)``).

    Returns:
        ``{name: tensor}`` in the file's order.

    Raises:
        CheckpointError: no state dict found, or it holds something other than tensors.
    """
    import torch

    inner = checkpoint.get("state_dict")
    state = inner if isinstance(inner, Mapping) else checkpoint
    odd = [str(k) for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if odd:
        raise CheckpointError(
            f"expected a state dict (parameter names -> tensors) or a checkpoint with 'state_dict', "
            f"got non-tensor entries {odd[:5]}"
        )
    weights: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if any(key.startswith(prefix) for prefix in drop_prefixes):
            continue
        if strip_prefix and key.startswith(strip_prefix):
            key = key[len(strip_prefix):]
        weights[key] = value
    if not weights:
        raise CheckpointError("expected model weights in the checkpoint, got none after dropping "
                              f"{tuple(drop_prefixes)}")
    return weights


def load_weights_strict(module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], *, source: str) -> None:
    """``module.load_state_dict(state_dict, strict=True)`` with a readable error.

    Raises:
        CheckpointError: names missing from the file, names the model lacks, or
            tensors of another shape; the message lists a few of each.
    """
    expected = module.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    reshaped = [
        f"{k}: file {tuple(state_dict[k].shape)}, model {tuple(expected[k].shape)}"
        for k in expected
        if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    for label, items in (("missing from the file", missing), ("unknown to the model", unexpected),
                         ("of another shape", reshaped)):
        if items:
            problems.append(f"{len(items)} {label} (e.g. {'; '.join(items[:3])})")
    if problems:
        raise CheckpointError(
            f"{source} does not fit {type(module).__name__}: " + ", ".join(problems)
            + ". Is it the right file for this model?"
        )
    module.load_state_dict(dict(state_dict), strict=True)


# ---------------------------------------------------------------------------------------------- download


@dataclass(frozen=True)
class RemoteFile:
    """What the hub says about a file: size, sha256 (LFS files) and git blob id."""

    size: int
    sha256: str | None
    blob_id: str | None


def fetch_remote_file(spec: WeightSpec) -> RemoteFile:
    """Ask the hub for the size and hashes of ``spec``'s file.

    Raises:
        DownloadError: the hub is unreachable or does not have the file.
    """
    import huggingface_hub

    try:
        infos = huggingface_hub.HfApi().get_paths_info(spec.repo_id, [spec.filename])
    except _hub_errors() as exc:
        raise DownloadError(f"could not reach huggingface.co/{spec.repo_id} ({_first_line(exc)})") from None
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
    spec = weight_spec(key)
    target = weight_path(key)
    remote = fetch_remote_file(spec)
    if target.is_file():
        ok, sha256 = _matches(target, remote)
        if ok:
            print(f"{key}: {_display_path(target)} already present and verified", file=stream)
            return record_download(key, target, size=remote.size, sha256=sha256, source=spec.url)
        print(f"{key}: {_display_path(target)} does not match the hub; downloading it again", file=stream)
        target.unlink()
    print(f"{key}: downloading {spec.filename} from huggingface.co/{spec.repo_id} "
          f"({remote.size / 1e6:.1f} MB)", file=stream, flush=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        fetched = Path(huggingface_hub.hf_hub_download(spec.repo_id, spec.filename, local_dir=target.parent))
    except _hub_errors() as exc:
        raise DownloadError(f"downloading {spec.filename} from huggingface.co/{spec.repo_id} failed "
                            f"({_first_line(exc)})") from None
    if fetched.resolve() != target.resolve():
        fetched.replace(target)
    ok, sha256 = _matches(target, remote)
    if not ok:
        got_size = target.stat().st_size
        target.unlink()
        expected = remote.sha256 or remote.blob_id or "unknown"
        raise DownloadError(
            f"{spec.filename} failed verification (got {got_size} bytes, sha256 {sha256[:16]}...; expected "
            f"{remote.size} bytes, hash {expected[:16]}...); the file was deleted, try again"
        )
    entry = record_download(key, target, size=remote.size, sha256=sha256, source=spec.url)
    print(f"{key}: ok, {_display_path(target)} ({remote.size / 1e6:.1f} MB, sha256 {sha256[:12]}...)", file=stream)
    return entry


def _status_line(key: str, lock: Mapping[str, Mapping[str, Any]]) -> str:
    spec = weight_spec(key)
    path = weight_path(key)
    shown = _display_path(path)
    if not path.exists():
        return f"{key:<9} missing      {shown}  (run `python -m inference.weights download {key}`)"
    if is_lfs_pointer(path):
        return f"{key:<9} LFS pointer  {shown}  (not the weights: run `git lfs pull` in {_display_path(path.parent)})"
    size = path.stat().st_size
    entry = lock.get(key)
    if entry is None:
        return (f"{key:<9} installed    {shown}  ({size / 1e6:.1f} MB; no hash recorded, run "
                f"`python -m inference.weights download {key}` to verify it against {spec.repo_id})")
    if size == entry.get("size") and file_sha256(path) == entry["sha256"]:
        return f"{key:<9} verified     {shown}  ({size / 1e6:.1f} MB, sha256 matches {LOCK_FILENAME})"
    return (f"{key:<9} CHANGED      {shown}  ({size / 1e6:.1f} MB; sha256 differs from {LOCK_FILENAME}, "
            f"run `python -m inference.weights download {key}`)")


def status_lines() -> list[str]:
    """One line per weight file: missing, LFS pointer, installed (unverified), verified or changed."""
    lock = read_lock()
    lines = [f"models folder: {_display_path(models_dir())} (set {MODELS_DIR_ENV} to use another)"]
    lines += [_status_line(key, lock) for key in WEIGHTS]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``download [rtmdet|refine|animeseg|all]`` or ``status``. Returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m inference.weights", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    download = commands.add_parser("download", help="fetch weight files from the Hugging Face Hub and verify them")
    download.add_argument("which", nargs="?", default="all", choices=[*WEIGHTS, "all"])
    commands.add_parser("status", help="list installed weight files and whether they match the lock file")
    args = parser.parse_args(argv)

    if args.command == "status":
        print("\n".join(status_lines()))
        return 0
    keys = list(WEIGHTS) if args.which == "all" else [args.which]
    for key in keys:
        try:
            download_weight(key)
        except DownloadError as exc:
            print(f"error: {key}: {exc}. Manual alternative: {manual_install_command(keys)}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
