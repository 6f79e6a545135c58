"""What every route of the server shares: the one ModelGate for model calls, request-body limits, and the checks
on what clients send (threshold, file names). Gradio-free, so it tests without a browser.

The other serving modules in fakeface/space/, one job each: batch.py (batches and zips, result rows, CSV),
rest.py (the plain REST route), uploads.py (which files a client may name, and when an upload is deleted); the Gradio side is ui.py
(what the events do), guard.py (the file check in front of them) and components.py.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

from fastapi.responses import JSONResponse

from ..errors import FakefaceError

RETRY_AFTER_S = 5  # what a 503 or 429 tells the client to wait
REST_MAX_WAITING = 16  # REST requests waiting beyond this get a prompt 503 instead of a long wait
# REST requests one client may have in the server at once (more get a prompt 429), so that one client cannot
# take every waiting place; 8 lets a benchmark or a batch script run 8 at a time. $FAKEFACE_REST_PER_CLIENT
# overrides it.
REST_MAX_PER_CLIENT = int(os.environ.get("FAKEFACE_REST_PER_CLIENT", "").strip() or 8)


# -------------------------------------------------------------------------------------- one gate for all


def model_slots(cpus: int | None = None) -> int:
    """Model calls worth running at once on this machine: one per two CPU cores this process may use, 1 to 4.

    A call already spreads over several cores (PyTorch's and ONNX Runtime's own threads), so more calls at once
    only share the same cores and make each one slower. $FAKEFACE_MODEL_SLOTS overrides it.
    """
    override = os.environ.get("FAKEFACE_MODEL_SLOTS", "").strip()
    if override.isdigit() and int(override) > 0:
        return int(override)
    if cpus is None:
        try:
            cpus = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            cpus = os.cpu_count() or 1
    return min(4, max(1, cpus // 2))


MODEL_SLOTS = model_slots()  # shared by every route: the page and its API events, batches, and REST


class _Job:
    """One REST computation on the gate's pool: waiting for a model slot, running, or abandoned."""

    def __init__(self):
        self.lock = threading.Lock()
        self.started = self.abandoned = False


class ModelGate:
    """The one admission gate for model calls, shared by every route of the server.

    * `slot()`: a model call holds one of `slots` places while it runs; callers beyond that wait. The Gradio
      events (in their worker threads), each image of a batch and each REST request take their place here, so
      no more than `slots` model calls ever run at once, whichever routes they came from.
    * `try_enter`/`run`/`leave` (async code, the REST route): `slots + waiting` REST requests may be held,
      running or waiting for a slot; anyone beyond that is told "busy" at once (so overload costs no memory).
      A place is taken before the request body is read and is given back only when the work has really ended:
      a request that gave up waiting (time limit) leaves its computation running, and that computation still
      counts, so abandoned work cannot pile up behind the limit.
    """

    def __init__(self, slots: int, waiting: int):
        self.slots = slots
        self.capacity = slots + waiting
        self._pool = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="fakeface-model")
        self._slots = threading.BoundedSemaphore(slots)
        self._lock = threading.Lock()
        self.held = 0  # REST requests admitted and not yet finished
        self.running = 0  # model calls inside slot() now, from any route

    @contextmanager
    def slot(self):
        """Hold one model slot for the duration (blocking until one is free)."""
        with self._slots:
            with self._lock:
                self.running += 1
            try:
                yield
            finally:
                with self._lock:
                    self.running -= 1

    def try_enter(self) -> bool:
        with self._lock:
            if self.held >= self.capacity:
                return False
            self.held += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self.held -= 1

    def run(self, fn) -> tuple[Future, _Job]:
        """Run fn in a model slot, on the pool; the caller's place passes to the work and is given back when it
        ends (or is given up, see `abandon`, before it started)."""
        job = _Job()

        def work():
            with self.slot():
                with job.lock:
                    if job.abandoned:
                        return None
                    job.started = True
                return fn()

        future = self._pool.submit(work)
        future.add_done_callback(lambda _: self.leave())
        return future, job

    @staticmethod
    def abandon(future: Future, job: _Job) -> bool:
        """Give up work that has not started computing (queued, or waiting for a slot); False if it has."""
        if future.cancel():
            return True
        with job.lock:
            if job.started:
                return False
            job.abandoned = True
            return True


class ClientLimit:
    """How many REST requests each client has in the server now; one client cannot take every place at the
    gate. A client is the first address in X-Forwarded-For (a Space sits behind the Hub's proxy, so the peer
    address is the proxy's), else the peer address. The header can be forged, which only moves a client from
    this limit to the gate's overall one."""

    def __init__(self, per_client: int):
        self.per_client = per_client
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    @staticmethod
    def client_of(headers, peer: str | None) -> str:
        forwarded = headers.get("x-forwarded-for", "")
        return forwarded.split(",")[0].strip() or peer or "unknown"

    def try_enter(self, client: str) -> bool:
        with self._lock:
            if self._held.get(client, 0) >= self.per_client:
                return False
            self._held[client] = self._held.get(client, 0) + 1
            return True

    def leave(self, client: str) -> None:
        with self._lock:
            left = self._held.pop(client) - 1
            if left:
                self._held[client] = left


def new_gate() -> ModelGate:
    """The server's one gate, sized for this machine (read at call time, so tests can resize it)."""
    return ModelGate(MODEL_SLOTS, REST_MAX_WAITING)


# ---------------------------------------------------------------------------------------- request bodies


def error_response(status: int, message: str, **extra) -> JSONResponse:
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status in (429, 503) else None
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


class BodyLimit:
    """ASGI middleware: a request body over its route's limit gets 413 before a byte of it is read.

    Gradio checks each uploaded file against max_file_size but takes up to 1000 files per upload request, so
    the sum is bounded here. A body sent without a declared length (chunked) is refused with 411 except on
    routes that count the bytes themselves (`counted`): browsers and HTTP clients declare the length of
    uploads, and Gradio would leave a part-written temp file behind if the stream were cut mid-way.
    """

    def __init__(self, app, limits: dict[str, int], default: int, counted: tuple[str, ...]):
        # limits: exact request path -> bytes; default: every other path
        self.app, self.limits, self.default, self.counted = app, limits, default, counted

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            refusal = self._refusal(scope)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _refusal(self, scope) -> JSONResponse | None:
        path = scope["path"]
        limit = self.limits.get(path, self.default)
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        declared = headers.get(b"content-length", b"").decode("latin-1").strip()
        if declared:
            if not declared.isdigit():
                return error_response(400, "invalid Content-Length header.")
            if int(declared) > limit:
                return error_response(413, f"request body too large: {declared} bytes (limit {limit}).")
        elif b"chunked" in headers.get(b"transfer-encoding", b"").lower() and path not in self.counted:
            return error_response(411, "send the body with a Content-Length header (chunked uploads are refused).")
        return None


# ------------------------------------------------------------------------------ what clients send and get


def checked_threshold(value) -> float | None:
    """The threshold as a float in [0, 1], or None for the model's default (API callers can send anything)."""
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not 0.0 <= number <= 1.0:  # also false for NaN
        raise FakefaceError(f"The threshold must be a number from 0 to 1, not {str(value)[:40]!r}.")
    return number


def printable(name: str, limit: int = 200) -> str:
    """A client's file name fit for a table cell or a reply: control characters replaced, length capped."""
    clean = "".join(c if c.isprintable() else "?" for c in name)
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"

