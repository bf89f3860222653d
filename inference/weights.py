"""Model weight files: where they live, which are trusted, and how to load them safely.

Which files exist is declared once, in :mod:`inference.registry` (see also
``models/README.md``); this module knows nothing about particular models.
Their status and their download live in :mod:`inference.weight_install`.

The models folder is ``<repo>/models`` unless the environment variable
``NUKKI_MODELS_DIR`` names another one.

Command line::

    python -m inference.weights download [KEY ...|all]   # keys: rtmdet refine animeseg sam2 sam2-small sam2-base-plus
    python -m inference.weights status

``download`` fetches with ``huggingface_hub``, compares the file's size and
sha256 with the hub's metadata, and records them in ``weights.lock.json`` in the
models folder (:func:`record_download`). ``all`` means the registry's default
set (every model except the larger SAM 2.1 variants). ``status`` lists each file.

Trust rule for loading (:func:`load_checkpoint`): a checkpoint is first opened
with ``torch.load(weights_only=True)``, which cannot run code. A file that needs
full unpickling (a Lightning checkpoint holding Python objects) is opened only
if it is trusted: its sha256 equals one recorded by ``download``, or the caller
passes ``trust=True`` (``--trust-checkpoint`` on command lines).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import pickle
import sys
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inference.registry import model_spec

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

#: Files are hashed in chunks of this many bytes.
HASH_CHUNK = 1 << 20
#: Files smaller than this that start with the Git LFS header are pointers, not weights.
_LFS_POINTER_MAX_BYTES = 1024
_LFS_POINTER_HEADER = b"version https://git-lfs"


class CheckpointError(ValueError):
    """A checkpoint file is missing, damaged, untrusted or does not fit the model; the message says which."""


# ---------------------------------------------------------------------------------------------- paths


def models_dir() -> Path:
    """The models folder: ``$NUKKI_MODELS_DIR`` if set, else ``<repo>/models``."""
    override = os.environ.get(MODELS_DIR_ENV, "").strip()
    return Path(override).expanduser() if override else MODELS_DIR


def install_hint(key: str) -> str:
    """How to get the weights of one registry model, as a clause: ``run `python -m ...` (offline: ...)``."""
    return f"run `{model_spec(key).download_command}` (offline: see models/README.md for the git-lfs alternative)"


def weight_path(key: str) -> Path:
    """Where the file of the registry model ``key`` lives (it may not exist yet).

    Raises:
        ValueError: ``key`` is not in :mod:`inference.registry`.
    """
    return models_dir() / model_spec(key).relative_path


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


def display_path(path: Path) -> str:
    """``path`` relative to the repository root when it lies inside it, else absolute."""
    try:
        return path.resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return str(path)


# ---------------------------------------------------------------------------------------------- hashes and lock


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
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
        "downloaded_at": _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat(),
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


def short_error(exc: BaseException) -> str:
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
            raise CheckpointError(f"{path} is damaged ({size} bytes, {short_error(exc)}); download it again") from None
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
            f"{path} is damaged or truncated ({size} bytes, {short_error(exc)}); download it again"
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
            f"{path} could not be unpickled ({size} bytes, {short_error(exc)}); it is damaged or not a checkpoint"
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


def main(argv: list[str] | None = None) -> int:
    """``python -m inference.weights download [KEY ...|all]`` or ``status`` (see :mod:`inference.weight_install`)."""
    from inference import weight_install

    return weight_install.main(argv)


if __name__ == "__main__":
    sys.exit(main())
