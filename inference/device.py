"""The one device rule for every model of Nukki (detector, refiners, point prompters).

``--device`` / ``DetectionSettings.device`` takes ``None`` (CUDA when torch
sees a GPU, else the CPU), ``"cpu"`` or ``"cuda"`` (``"cuda:N"`` picks one GPU
of several). Asking for CUDA where torch sees none is a
:class:`~inference.errors.ModelUnavailable` with a message saying what to do,
never an ``AssertionError`` from deep inside a model.
"""

from __future__ import annotations

import re

import torch

from inference.errors import ModelUnavailable

__all__ = ["resolve_device", "use_half_precision"]

_CUDA_INDEX = re.compile(r"cuda:\d+")


def resolve_device(requested: str | torch.device | None) -> torch.device:
    """The torch device a model should run on.

    Args:
        requested: ``None`` (CUDA when available, else the CPU), ``"cpu"``,
            ``"cuda"`` or ``"cuda:N"`` (or a ``torch.device`` of those types).

    Returns:
        The device.

    Raises:
        ModelUnavailable: CUDA was asked for but torch sees no CUDA device.
        ValueError: ``requested`` is none of the above.
    """
    if requested is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(requested, torch.device):
        requested = str(requested)
    if not isinstance(requested, str) or not (
        requested in ("cpu", "cuda") or _CUDA_INDEX.fullmatch(requested)
    ):
        raise ValueError(f"expected device None, 'cpu' or 'cuda', got {requested!r}")
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ModelUnavailable(
                f"expected a CUDA device for --device {requested}, but torch sees none "
                f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); use --device cpu"
            )
        if ":" in requested and int(requested.split(":")[1]) >= torch.cuda.device_count():
            raise ModelUnavailable(
                f"expected a CUDA device for --device {requested}, but torch sees only "
                f"{torch.cuda.device_count()} GPU(s); use --device cuda or --device cpu"
            )
    return torch.device(requested)


def use_half_precision(device: torch.device) -> bool:
    """Whether models run in float16 on ``device``: on CUDA yes, on the CPU no (slow and inexact there)."""
    return device.type == "cuda"
