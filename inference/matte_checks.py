"""Input checks shared by the matte modules: float maps, masks, counts and positive numbers.

Each check returns the value in the form the caller computes with, or raises
``ValueError("expected ..., got ...")``.
"""

from __future__ import annotations

import math

import numpy as np


def describe(value: object) -> str:
    """A short description of ``value`` for error messages (dtype and shape of arrays)."""
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {value.shape}"
    return type(value).__name__


def check_map(values: object, shape: tuple[int, int], what: str) -> np.ndarray:
    """A float (or bool) ``(H, W)`` map of the given shape, as float32."""
    if not isinstance(values, np.ndarray) or values.ndim != 2 or values.dtype.kind not in "fb":
        raise ValueError(f"expected {what} as an (H, W) float array, got {describe(values)}")
    if values.shape != shape:
        raise ValueError(f"expected {what} of shape {shape}, got {values.shape}")
    return values.astype(np.float32, copy=False)


def check_mask(mask: object) -> np.ndarray:
    """An ``(H, W)`` bool mask, unchanged."""
    if not isinstance(mask, np.ndarray) or mask.ndim != 2 or mask.dtype != np.bool_:
        raise ValueError(f"expected mask as an (H, W) bool array, got {describe(mask)}")
    return mask


def check_count(value: object, what: str, *, minimum: int) -> int:
    """An int (not bool) ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"expected {what} as an int >= {minimum}, got {value!r}")
    return int(value)


def check_positive_float(value: object, what: str, *, allow_zero: bool) -> float:
    """A finite number ``> 0`` (``>= 0`` with ``allow_zero``), as float."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    ok = ok and math.isfinite(float(value)) and (float(value) >= 0 if allow_zero else float(value) > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"expected {what} as a finite number {bound}, got {value!r}")
    return float(value)
