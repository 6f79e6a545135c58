"""Serving helpers shared by the Space (app.py) and any other server: batch and zip reading within limits,
result tables and CSV, the heat-map overlay, the one admission gate for model calls and the plain REST route.
(Which files a client may name, and when an upload is deleted: fakeface/uploads.py.)

Nothing here knows about Gradio, so the limits and the REST contract can be tested without a browser.
"""

from __future__ import annotations

import asyncio
import csv
import logging
import os
import stat
import tempfile
import threading
import time
import zipfile
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import anyio
import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from PIL import Image
from starlette.datastructures import UploadFile

from .errors import FakefaceError, TooLargeError
from .images import MAX_FILE_BYTES, check_file_size
from .predictor import Prediction, Predictor
from .uploads import UploadClaims, UploadTracker, delete_uploads  # noqa: F401 - their old home; see uploads.py

log = logging.getLogger(__name__)

MAX_BATCH_FILES = 64  # images per batch, whether uploaded one by one or inside zips
MAX_BATCH_BYTES = 200 * 1024 * 1024  # uncompressed bytes per batch, all images together
MAX_ZIP_ENTRIES = 1000  # names listed in one zip; more is refused before anything is read
BATCH_TIME_LIMIT_S = 600.0  # files not started by then are reported as not analysed
_READ_CHUNK = 1024 * 1024

BATCH_COLUMNS = ["file", "faces", "fake_prob", "verdict", "note"]


# ------------------------------------------------------------------------------------------- result rows
# A row's "verdict" is `Prediction.verdict`: the label, with " (uncertain)" within the uncertain band.


def face_count(prediction: Prediction) -> int:
    """Faces found; 0 when none was found and the whole image was classified instead."""
    return len(prediction.faces) if prediction.face_found else 0


# ------------------------------------------------------------------------------------------- batch reading


@dataclass
class BatchItem:
    """One image of a batch: its bytes, or why it could not be read."""

    name: str
    data: bytes | None = None
    error: str | None = None


class _Budget:
    """Counts the bytes a batch has taken; the whole batch is refused once it would go over."""

    def __init__(self, limit: int):
        self.left = limit

    def take(self, n_bytes: int) -> None:
        if n_bytes > self.left:
            raise FakefaceError(f"The batch is over {MAX_BATCH_BYTES // (1024 * 1024)} MB of images once "
                                "uncompressed. Split it into smaller batches.")
        self.left -= n_bytes


def read_batch(paths: list[str | Path]) -> list[BatchItem]:
    """Read uploaded files (images or .zip archives of images) into memory, within the batch limits.

    A file that cannot be used becomes an item with an error (shown as a row); a batch over the count or byte
    limits raises FakefaceError. Zip entries are read into memory, never extracted, so no name in an archive
    can reach the file system.
    """
    if len(paths) > MAX_BATCH_FILES:
        raise _too_many()
    budget = _Budget(MAX_BATCH_BYTES)
    items: list[BatchItem] = []
    for path in paths:
        path = Path(path)
        new = _read_zip(path, budget) if path.suffix.lower() == ".zip" else [_read_plain(path, budget)]
        items.extend(new)
        if len(items) > MAX_BATCH_FILES:
            raise _too_many()
    return items


def _too_many() -> FakefaceError:
    return FakefaceError(f"The batch holds more than {MAX_BATCH_FILES} files. Split it into smaller batches.")


def _read_plain(path: Path, budget: _Budget) -> BatchItem:
    name = printable(path.name)
    try:
        size = path.stat().st_size
        check_file_size(size, name)
    except FakefaceError as exc:
        return BatchItem(name, error=str(exc))
    except OSError:
        return BatchItem(name, error=f"{name}: the upload is no longer available; upload it again.")
    budget.take(size)
    return BatchItem(name, data=path.read_bytes())


def _read_zip(path: Path, budget: _Budget) -> list[BatchItem]:
    archive = printable(path.name)
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            if len(infos) > MAX_ZIP_ENTRIES:
                raise FakefaceError(f"{archive}: lists {len(infos)} entries (limit {MAX_ZIP_ENTRIES}).")
            wanted = [i for i in infos if not i.is_dir() and not _is_clutter(i.filename)]
            if len(wanted) > MAX_BATCH_FILES:
                raise _too_many()
            # Declared sizes first: a zip that promises too much is refused before a byte is inflated.
            budget_check = _Budget(budget.left)
            for info in wanted:
                if not _unsafe_reason(info) and 0 < info.file_size <= MAX_FILE_BYTES:
                    budget_check.take(info.file_size)
            return [_read_entry(zf, info, archive, budget) for info in wanted]
    except (zipfile.BadZipFile, OSError) as exc:
        return [BatchItem(archive, error=f"{archive}: not a readable zip archive ({exc}).")]


def _read_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, archive: str, budget: _Budget) -> BatchItem:
    name = f"{archive}/{printable(info.filename)}"
    reason = _unsafe_reason(info)
    if reason:
        return BatchItem(name, error=f"{name}: skipped ({reason}).")
    try:
        check_file_size(info.file_size, name)
        data = _inflate(zf, info, name)
    except FakefaceError as exc:
        return BatchItem(name, error=str(exc))
    except (zipfile.BadZipFile, RuntimeError, NotImplementedError, OSError, EOFError) as exc:
        # RuntimeError: encrypted entry; NotImplementedError: unsupported compression method.
        return BatchItem(name, error=f"{name}: cannot be read from the archive ({exc}).")
    budget.take(len(data))
    return BatchItem(name, data=data)


def _inflate(zf: zipfile.ZipFile, info: zipfile.ZipInfo, name: str) -> bytes:
    """Decompress one entry, counting the bytes that actually come out: the declared size may lie."""
    limit = min(info.file_size, MAX_FILE_BYTES)
    out = bytearray()
    with zf.open(info) as entry:
        while chunk := entry.read(_READ_CHUNK):
            out += chunk
            if len(out) > limit:
                raise FakefaceError(f"{name}: inflates past its declared size or the {MAX_FILE_BYTES}-byte "
                                    "limit; skipped (possible zip bomb).")
    return bytes(out)


def _unsafe_reason(info: zipfile.ZipInfo) -> str | None:
    """Why an entry is refused, or None. Names are checked even though nothing is extracted (defence in depth)."""
    name = info.filename.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    if ".." in PurePosixPath(name).parts:
        return "path with '..'"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "symbolic link"
    return None


def _is_clutter(name: str) -> bool:
    """Files that archivers add on their own (macOS resource forks, .DS_Store): skipped silently."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return bool(parts) and (parts[0] == "__MACOSX" or parts[-1].startswith("."))


def printable(name: str, limit: int = 200) -> str:
    """A file name fit for a table cell: control characters replaced, length capped."""
    clean = "".join(c if c.isprintable() else "?" for c in name)
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"


# ------------------------------------------------------------------------------------------ batch results


def predict_batch_rows(predictor: Predictor, items: list[BatchItem], threshold: float | None = None,
                       on_progress=None, time_limit_s: float | None = None, gate: ModelGate | None = None
                       ) -> list[dict]:
    """One row per item (see BATCH_COLUMNS); a file that fails gets its message, the others go on.

    `on_progress(done, total)` is called before each item, for a progress bar. Past `time_limit_s` the items
    not yet started are listed as not analysed, so one slow batch cannot hold the model for ever. With a
    `gate`, each image takes one of its model slots while it is classified (so other requests interleave).
    """
    deadline = None if time_limit_s is None else time.monotonic() + time_limit_s
    rows = []
    for done, item in enumerate(items):
        if on_progress is not None:
            on_progress(done, len(items))
        if deadline is not None and time.monotonic() > deadline:
            rows.append(_error_row(item.name, f"{item.name}: not analysed; the batch ran past its "
                                              f"{time_limit_s:.0f} s time limit. Send it in a smaller batch."))
            continue
        if gate is None or item.error is not None:
            rows.append(_row(predictor, item, threshold))
        else:
            with gate.slot():
                rows.append(_row(predictor, item, threshold))
    return rows


def _error_row(name: str, note: str) -> dict:
    return {"file": name, "faces": None, "fake_prob": None, "verdict": "error", "note": note}


def _row(predictor: Predictor, item: BatchItem, threshold: float | None) -> dict:
    if item.error is not None:
        return _error_row(item.name, item.error)
    try:
        pred = predictor.predict_file(item.data, threshold=threshold, heatmap=False)
    except FakefaceError as exc:
        return _error_row(item.name, f"{item.name}: {exc}")
    except Exception:  # a bug of ours must not cost the other rows their results
        log.exception("batch prediction failed for %r", item.name)
        return _error_row(item.name, f"{item.name}: internal error while classifying; it has been logged.")
    note = "" if pred.face_found else "no face found: whole image classified"
    return {"file": item.name, "faces": face_count(pred), "fake_prob": round(pred.fake_prob, 4),
            "verdict": pred.verdict, "note": note}


_CSV_DIR = Path(tempfile.gettempdir()) / "fakeface-csv"
_CSV_MAX_AGE_S = 3600


def write_csv(rows: list[dict]) -> Path:
    """Write rows to a fresh CSV file and return its path; files from earlier batches over an hour old go."""
    _CSV_DIR.mkdir(exist_ok=True)
    _prune(_CSV_DIR, _CSV_MAX_AGE_S)
    fd, name = tempfile.mkstemp(prefix="fakeface-results-", suffix=".csv", dir=_CSV_DIR)
    with open(fd, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=BATCH_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_safe(v) for k, v in row.items()})
    return Path(name)


def _csv_safe(value):
    # A cell starting with = + - @ is run as a formula by spreadsheets; file names come from users.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@"):
        return "'" + value
    return value


def _prune(folder: Path, max_age_s: float) -> None:
    cutoff = time.time() - max_age_s
    for old in folder.glob("*.csv"):
        try:
            if old.stat().st_mtime < cutoff:
                old.unlink()
        except OSError:
            pass  # another worker removed it first


# ------------------------------------------------------------------------------------------------ heat map

_TOWARDS_FAKE = np.array([220, 40, 40], dtype=np.float32)
_TOWARDS_REAL = np.array([40, 90, 220], dtype=np.float32)


def heatmap_overlay(crop: Image.Image, heatmap: np.ndarray, side: int = 384, strength: float = 0.65) -> Image.Image:
    """The crop, scaled to `side` pixels on its longer side, with the heat map blended in: red where the map
    pushes towards FAKE, blue towards REAL.

    The map is scaled by its largest absolute value, so colours compare areas within one image only; the
    blend follows the magnitude, so neutral areas keep the photo visible.
    """
    scale = side / max(crop.size)
    size = (max(1, round(crop.width * scale)), max(1, round(crop.height * scale)))
    base = crop.convert("RGB").resize(size, Image.Resampling.LANCZOS)
    heat = np.nan_to_num(np.asarray(heatmap, dtype=np.float32))
    heat = np.asarray(Image.fromarray(heat).resize(base.size, Image.Resampling.BILINEAR))  # float32 -> mode F
    peak = float(np.abs(heat).max())
    scaled = heat / peak if peak > 0 else np.zeros_like(heat)
    colour = np.where(scaled[..., None] >= 0, _TOWARDS_FAKE, _TOWARDS_REAL)
    alpha = strength * np.abs(scaled)[..., None]
    pixels = np.asarray(base, dtype=np.float32)
    return Image.fromarray(np.clip(pixels * (1 - alpha) + colour * alpha, 0, 255).astype(np.uint8))


# ---------------------------------------------------------------------------------------------- REST route

REST_PATH = "/api/v1/predict"
REST_MAX_WAITING = 16  # REST requests waiting beyond this get a prompt 503 instead of a long wait
REST_TIME_LIMIT_S = 60.0  # a request not answered by then gets 503 (still queued) or 504 (still computing)
RETRY_AFTER_S = 5
_FORM_OVERHEAD = 64 * 1024  # multipart headers and the threshold field on top of the image itself
REST_MAX_BODY = MAX_FILE_BYTES + _FORM_OVERHEAD


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


def error_response(status: int, message: str, **extra) -> JSONResponse:
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def _status_for(exc: FakefaceError) -> int:
    return 413 if isinstance(exc, TooLargeError) else 400


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


def rest_router(predictor: Predictor, model_name: str = "", gate: ModelGate | None = None) -> APIRouter:
    """`POST /api/v1/predict`: multipart `file` (+ optional `threshold`) -> JSON; 4xx JSON for bad input,
    503 + Retry-After when busy, 504 past the time limit. Any other form field (a model id, a path) is ignored:
    the model is the server's, chosen at start. `gate`: the server's one ModelGate (app.py shares it with the
    Gradio events); without one the route gets its own."""
    router = APIRouter()
    gate = gate or ModelGate(MODEL_SLOTS, REST_MAX_WAITING)
    time_limit = REST_TIME_LIMIT_S

    @router.post(REST_PATH, openapi_extra=_OPENAPI_BODY, summary="Classify one image as REAL or FAKE")
    async def predict(request: Request):
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > REST_MAX_BODY:
            return error_response(413, f"file too large (limit {MAX_FILE_BYTES} bytes).")
        if not gate.try_enter():
            return error_response(503, "the server is busy; retry in a few seconds.")
        handed_over = False  # once the work is submitted, its end gives the place back
        work: Future | None = None
        job: _Job | None = None
        filename = ""
        try:
            with anyio.fail_after(time_limit):
                body = await _read_body(request, REST_MAX_BODY)
                if body is None:
                    return error_response(413, f"file too large (limit {MAX_FILE_BYTES} bytes).")
                parsed = await _parse_form(request, body)
                if isinstance(parsed, JSONResponse):
                    return parsed
                filename, data, threshold = parsed
                try:
                    check_file_size(len(data))  # the name is in the reply already
                except FakefaceError as exc:
                    return error_response(_status_for(exc), str(exc), filename=filename)
                work, job = gate.run(lambda: predictor.predict_file(data, threshold=threshold, heatmap=False))
                handed_over = True
                pred = await asyncio.wrap_future(work)  # cancelling this cancels the work if not yet started
        except TimeoutError:
            if work is None:
                return error_response(408, f"the request was not received within {time_limit:.0f} s.")
            if gate.abandon(work, job):  # still queued behind other requests: it never started
                return error_response(503, "the server is busy; retry in a few seconds.")
            return error_response(504, f"classifying took longer than the {time_limit:.0f} s limit; "
                                       "try a smaller image or retry later.")
        except FakefaceError as exc:
            return error_response(_status_for(exc), str(exc), filename=filename)
        except Exception:  # a bug of ours: log it, answer JSON without a traceback
            log.exception("REST prediction failed for %r", filename)
            return error_response(500, "internal error while classifying; it has been logged.")
        finally:
            if not handed_over:
                gate.leave()
        return {**pred.as_dict(filename), "faces_found": face_count(pred), "model": model_name}

    return router


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None once it passes `limit` bytes (a chunked upload declares no length up front)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


async def _parse_form(request: Request, body: bytes):
    """(filename, image bytes, threshold) from a form already read into memory, or the error response."""

    async def replay():
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=8)
    except Exception:  # noqa: BLE001 - any parse failure is the client's body, not our bug
        return error_response(400, "send the image as multipart/form-data in a field named 'file'.")
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            return error_response(422, "missing form field 'file' (the image to classify).")
        threshold = _parse_threshold(form.get("threshold"))
        if isinstance(threshold, JSONResponse):
            return threshold
        return printable(upload.filename or ""), await upload.read(), threshold
    finally:
        await form.close()  # spooled parts that went to disk are removed now, not at garbage collection


class BodyLimit:
    """ASGI middleware: a request body over its route's limit gets 413 before a byte of it is read.

    Gradio checks each uploaded file against max_file_size but takes up to 1000 files per upload request, so
    the sum is bounded here. A body sent without a declared length (chunked) is refused with 411 except on
    routes that count the bytes themselves (`counted`): browsers and HTTP clients declare the length of
    uploads, and Gradio would leave a part-written temp file behind if the stream were cut mid-way.
    """

    def __init__(self, app, limits: dict[str, int], default: int, counted: tuple[str, ...] = ()):
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


def _parse_threshold(raw) -> float | None | JSONResponse:
    try:
        return checked_threshold(raw)
    except FakefaceError as exc:
        return error_response(422, str(exc))


_OPENAPI_BODY = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["file"],
            "properties": {
                "file": {"type": "string", "format": "binary", "description": "JPEG, PNG, WebP, GIF, BMP or TIFF"},
                "threshold": {"type": "number", "minimum": 0, "maximum": 1,
                              "description": "decision threshold on fake_prob; default from the model"},
            }}}},
    },
}
