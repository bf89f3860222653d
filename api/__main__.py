"""Serve the API: ``python -m api`` (``./run.sh api`` sets up first).

Listens on ``NUKKI_API_HOST``:``NUKKI_API_PORT`` (default 127.0.0.1:8000); see
:mod:`api.config` for the limits and their variables.
"""

from __future__ import annotations

import sys


def main() -> int:
    from api.config import ApiConfig

    try:
        config = ApiConfig.from_env()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import uvicorn

    from api.app import create_app

    app = create_app(config)
    print(
        f"Nukki API on http://{config.host}:{config.port} (docs at /docs); "
        f"{config.max_jobs} jobs at once, uploads up to {config.max_upload_bytes / 2**20:g} MB, "
        f"pictures up to {config.max_pixels / 1e6:g} MP",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(app, host=config.host, port=config.port, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
