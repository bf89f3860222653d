"""Errors shared by every model module (kept here so model modules do not import each other)."""

from __future__ import annotations


class ModelUnavailable(RuntimeError):
    """A model was asked for but cannot run here; the message says how to install or enable it."""
