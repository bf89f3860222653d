"""A throwaway API server in a child process (``python -m api``), for tests and benchmarks.

    with ApiProcess(log_path, NUKKI_API_MAX_JOBS="2") as server:
        httpx.get(server.url + "/healthz")

It listens on a free port of 127.0.0.1, is waited for until ``/healthz`` answers, and is
stopped (SIGTERM, then SIGKILL) on exit, so no server outlives its user.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ApiProcess:
    """``python -m api`` in a child process; a context manager.

    Args:
        log_path: where the server's stdout and stderr go.
        start_timeout_s: how long to wait for ``/healthz``.
        **env: extra environment variables for the server (e.g. ``NUKKI_MODELS_DIR``).
    """

    def __init__(self, log_path: Path, *, start_timeout_s: float = 180.0, **env: str) -> None:
        self.log_path = Path(log_path)
        self.start_timeout_s = start_timeout_s
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **env,
                    "NUKKI_API_HOST": "127.0.0.1", "NUKKI_API_PORT": str(self.port)}
        self.process: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        if self.process is None:
            raise ValueError("expected a started server, got none")
        return self.process.pid

    def log(self) -> str:
        """Everything the server printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> ApiProcess:
        """Start the server and wait until it answers.

        Raises:
            RuntimeError: it exited or did not answer in time (the message holds its log).
        """
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "api"], cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the API server exited with {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as answer:
                    if answer.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"the API server did not answer within {self.start_timeout_s:g} s:\n{self.log()}")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 20 s); safe to call twice."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=20)

    def __enter__(self) -> ApiProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
