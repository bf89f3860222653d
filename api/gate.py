"""The door of the job routes: at most ``max_jobs`` at once, and no body over the upload limit.

:class:`JobGate` is plain ASGI middleware in front of the app, so it acts before any
byte of an upload is parsed:

* a request whose ``Content-Length`` is over the limit gets 413 at once;
* a body that grows past the limit while it streams in (chunked uploads) stops
  with 413 (:class:`UploadTooLarge`, turned into JSON by the app's handlers);
* when ``max_jobs`` requests are already being worked on, one more is answered
  503 with ``Retry-After`` (the recent job time, rounded up) instead of waiting
  in a queue of unbounded length. Its body is read and dropped first (up to the
  upload limit) so the client, which is still sending, reliably gets the answer.

A slot is held from the first byte of the upload to the last byte of the answer.
Everything here runs on the event loop (one thread), so plain counters suffice.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Weight of the newest job in the running mean of job times behind ``Retry-After``.
_SMOOTHING = 0.2


class UploadTooLarge(HTTPException):
    """The request body grew past the upload limit (HTTP 413)."""

    def __init__(self, limit_bytes: int) -> None:
        super().__init__(status_code=413, detail=too_large_message(limit_bytes))


def too_large_message(limit_bytes: int) -> str:
    """What a person reads when the upload is too big."""
    return f"The upload is too large: the limit is {limit_bytes / 2**20:g} MB per request. Send a smaller file."


class JobSlots:
    """How many jobs may run, how many do, how many were refused, and how long they take.

    Args:
        max_jobs: jobs let through at once (>= 1).
        clock: seconds, monotonic (for the job-time estimate behind ``Retry-After``).
    """

    def __init__(self, max_jobs: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if isinstance(max_jobs, bool) or not isinstance(max_jobs, int) or max_jobs < 1:
            raise ValueError(f"expected max_jobs as an int >= 1, got {max_jobs!r}")
        self.max_jobs = max_jobs
        self.clock = clock
        self.active = 0
        self.refused = 0
        self.mean_job_seconds = 1.0

    @property
    def retry_after_seconds(self) -> int:
        """Whole seconds a refused client should wait: the recent mean job time, at least 1."""
        return max(1, math.ceil(self.mean_job_seconds))

    def try_acquire(self) -> float | None:
        """Take a slot: its start time, or ``None`` (and one more refusal counted) when all are taken."""
        if self.active >= self.max_jobs:
            self.refused += 1
            return None
        self.active += 1
        return self.clock()

    def release(self, start: float) -> None:
        """Give back the slot taken at ``start`` and fold its duration into the mean."""
        self.active -= 1
        self.mean_job_seconds += _SMOOTHING * (self.clock() - start - self.mean_job_seconds)


class JobGate:
    """ASGI middleware: bounded concurrency and upload size for the requests ``accepts`` picks.

    Args:
        app: the application behind the gate.
        slots: the shared job counter (the app's health route reads it too).
        max_upload_bytes: largest request body in bytes.
        accepts: ``scope -> bool``, True for the requests the gate applies to (the job routes).
    """

    def __init__(
        self, app: ASGIApp, *, slots: JobSlots, max_upload_bytes: int, accepts: Callable[[Scope], bool]
    ) -> None:
        if max_upload_bytes < 1:
            raise ValueError(f"expected max_upload_bytes >= 1, got {max_upload_bytes}")
        self.app = app
        self.slots = slots
        self.max_upload_bytes = max_upload_bytes
        self.accepts = accepts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.accepts(scope):
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_upload_bytes:
            await _send_json(send, 413, {"error": too_large_message(self.max_upload_bytes)})
            return
        start = self.slots.try_acquire()
        if start is None:
            await self._drain(receive)
            retry = self.slots.retry_after_seconds
            body = {
                "error": f"The server is busy with {self.slots.active} pictures (its limit). Try again in {retry} s.",
                "retry_after_s": retry,
            }
            await _send_json(send, 503, body, headers=[(b"retry-after", str(retry).encode())])
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_upload_bytes:
                    raise UploadTooLarge(self.max_upload_bytes)
            return message

        try:
            await self.app(scope, limited_receive, send)
        finally:
            self.slots.release(start)

    async def _drain(self, receive: Receive) -> None:
        """Read and drop the request body (up to the upload limit)."""
        received = 0
        while received <= self.max_upload_bytes:
            message = await receive()
            if message["type"] != "http.request":
                return
            received += len(message.get("body", b""))
            if not message.get("more_body", False):
                return


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_json(send: Send, status: int, body: dict, *, headers: list[tuple[bytes, bytes]] = ()) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
