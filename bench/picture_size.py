"""The ``WIDTHxHEIGHT`` command-line argument the benchmarks share."""

from __future__ import annotations

import argparse


def parse_picture_size(text: str, *, minimum: int = 32) -> tuple[int, int]:
    """``"1920x1080"`` -> ``(H, W)``; an ``argparse`` error for anything else or below ``minimum`` px."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    if width < minimum or height < minimum:
        raise argparse.ArgumentTypeError(f"expected a picture of at least {minimum}x{minimum}, got {text!r}")
    return height, width
