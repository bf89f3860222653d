"""The API server's settings: where it listens and the limits that protect it.

Every value has a default and an environment variable:

=========================  =======================  =================================================
variable                   default                  what
=========================  =======================  =================================================
``NUKKI_API_HOST``         ``127.0.0.1``            interface to listen on (``0.0.0.0`` for all)
``NUKKI_API_PORT``         ``8000``                 TCP port
``NUKKI_API_MAX_JOBS``     ``2``                    pictures worked on at once; more get 503 + Retry-After
``NUKKI_API_MAX_UPLOAD_MB`` the studio's limit (40)  largest request body in MB (``server.maxUploadSize``
                                                    of ``.streamlit/config.toml``)
``NUKKI_MAX_PIXELS``       24 MP                    largest picture (the one pixel limit, see
                                                    :func:`inference.session.pixel_limit`)
=========================  =======================  =================================================
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from inference.image_io import MAX_PIXELS

#: The studio's Streamlit settings; its ``server.maxUploadSize`` is Nukki's one upload limit.
STUDIO_CONFIG = Path(__file__).resolve().parents[1] / ".streamlit" / "config.toml"
#: Used when the studio's config file is absent (e.g. the package copied alone).
FALLBACK_UPLOAD_MB = 40
#: Megabytes as Streamlit counts them for ``server.maxUploadSize``.
MB = 1024 * 1024


def studio_upload_mb(config_path: Path = STUDIO_CONFIG) -> int:
    """The studio's upload limit in MB (``server.maxUploadSize``), or :data:`FALLBACK_UPLOAD_MB`."""
    try:
        with config_path.open("rb") as handle:
            value = tomllib.load(handle).get("server", {}).get("maxUploadSize", FALLBACK_UPLOAD_MB)
    except (OSError, tomllib.TOMLDecodeError):
        return FALLBACK_UPLOAD_MB
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return FALLBACK_UPLOAD_MB
    return value


@dataclass(frozen=True)
class ApiConfig:
    """What the server needs to know before it starts.

    Attributes:
        host: interface to listen on.
        port: TCP port, 1-65535.
        max_jobs: requests to the ``/v1/`` routes handled at once (upload, detection and
            rendering); one more is answered 503 with ``Retry-After``, never queued.
        max_upload_bytes: largest request body in bytes; bigger ones get 413.
        max_pixels: largest picture in pixels (width x height); bigger ones get 413.
        max_points: most points one cutout request may carry.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    max_jobs: int = 2
    max_upload_bytes: int = FALLBACK_UPLOAD_MB * MB
    max_pixels: int = MAX_PIXELS
    max_points: int = 64

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("expected a host name or address to listen on, got an empty string")
        for name, low, high in (
            ("port", 1, 65535),
            ("max_jobs", 1, 1024),
            ("max_upload_bytes", 1, 2**40),
            ("max_pixels", 1, 2**40),
            ("max_points", 0, 10_000),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"expected {name} as a whole number in [{low}, {high}], got {value!r}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ApiConfig:
        """Settings from the environment (see the module docstring); defaults where unset.

        Raises:
            ValueError: a variable is set to something that is not a valid value (the
                message names the variable).
        """
        from inference.session import pixel_limit

        env = os.environ if environ is None else environ
        return cls(
            host=env.get("NUKKI_API_HOST", "").strip() or cls.host,
            port=_whole_number(env, "NUKKI_API_PORT", cls.port, low=1, high=65535),
            max_jobs=_whole_number(env, "NUKKI_API_MAX_JOBS", cls.max_jobs, low=1, high=1024),
            max_upload_bytes=_whole_number(env, "NUKKI_API_MAX_UPLOAD_MB", studio_upload_mb(), low=1, high=2**20) * MB,
            max_pixels=pixel_limit(),
        )


def _whole_number(env: Mapping[str, str], name: str, default: int, *, low: int, high: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise ValueError(f"expected {name} as a whole number in [{low}, {high}], got {raw!r}")
    return int(raw)
