"""Nukki's HTTP API (FastAPI + uvicorn). Start it with ``./run.sh api`` or ``python -m api``;
:func:`api.app.create_app` builds the application."""
