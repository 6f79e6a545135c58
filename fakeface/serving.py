"""Serving helpers shared by the Space (app.py) and any other server: batch and zip reading within limits,
result tables and CSV, the heat-map overlay, and the plain REST route.

Nothing here knows about Gradio, so the limits and the REST contract can be tested without a browser.
"""

from __future__ import annotations

import csv
import logging
import stat
import tempfile
import time
import zipfile
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

log = logging.getLogger(__name__)

MAX_BATCH_FILES = 64  # images per batch, whether uploaded one by one or inside zips
MAX_BATCH_BYTES = 200 * 1024 * 1024  # uncompressed bytes per batch, all images together
MAX_ZIP_ENTRIES = 1000  # names listed in one zip; more is refused before anything is read
_READ_CHUNK = 1024 * 1024

BATCH_COLUMNS = ["file", "faces", "fake_prob", "verdict", "note"]


# -------------------------------------------------------------------------------------------- verdict text


def verdict_text(prediction: Prediction) -> str:
    """'FAKE' or 'REAL', with '(uncertain)' when the score lies within the model's uncertain band."""
    return f"{prediction.label} (uncertain)" if prediction.uncertain else prediction.label


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
                       on_progress=None) -> list[dict]:
    """One row per item (see BATCH_COLUMNS); a file that fails gets its message, the others go on.

    `on_progress(done, total)` is called before each item, for a progress bar.
    """
    rows = []
    for done, item in enumerate(items):
        if on_progress is not None:
            on_progress(done, len(items))
        rows.append(_row(predictor, item, threshold))
    return rows


def _row(predictor: Predictor, item: BatchItem, threshold: float | None) -> dict:
    if item.error is not None:
        return {"file": item.name, "faces": None, "fake_prob": None, "verdict": "error", "note": item.error}
    try:
        pred = predictor.predict_file(item.data, threshold=threshold, heatmap=False)
    except FakefaceError as exc:
        return {"file": item.name, "faces": None, "fake_prob": None, "verdict": "error",
                "note": f"{item.name}: {exc}"}
    note = "" if pred.face_found else "no face found: whole image classified"
    return {"file": item.name, "faces": face_count(pred), "fake_prob": round(pred.fake_prob, 4),
            "verdict": verdict_text(pred), "note": note}


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


def delete_uploads(paths: list[str | Path], upload_root: str | Path, keep=()) -> None:
    """Delete uploaded files (and their now empty folders), but only inside `upload_root` and not in `keep`.

    Gradio stores uploads by content hash, in the same folder as its copies of example files: an upload equal
    to an example is the example's file, which must stay (pass those paths as `keep`).
    """
    root = Path(upload_root).resolve()
    kept = {Path(k).resolve() for k in keep}
    for path in paths:
        path = Path(path).resolve()
        if root not in path.parents or path in kept:
            continue
        path.unlink(missing_ok=True)
        try:
            path.parent.rmdir()  # gradio keeps each upload in its own folder
        except OSError:
            pass  # not empty, or gone


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
REST_CONCURRENCY = 2  # model calls at once from the REST route (the Gradio queue limits its own)
REST_MAX_WAITING = 16  # requests waiting beyond this get a prompt 503 instead of a long wait
_FORM_OVERHEAD = 64 * 1024  # multipart headers and the threshold field on top of the image itself


def error_response(status: int, message: str, **extra) -> JSONResponse:
    headers = {"Retry-After": "5"} if status == 503 else None
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def _status_for(exc: FakefaceError) -> int:
    return 413 if isinstance(exc, TooLargeError) else 400


def rest_router(predictor: Predictor, model_name: str = "") -> APIRouter:
    """`POST /api/v1/predict`: multipart `file` (+ optional `threshold`) -> JSON; 4xx JSON for bad input."""
    router = APIRouter()
    limiter = anyio.CapacityLimiter(REST_CONCURRENCY)

    @router.post(REST_PATH, openapi_extra=_OPENAPI_BODY, summary="Classify one image as REAL or FAKE")
    async def predict(request: Request):
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_FILE_BYTES + _FORM_OVERHEAD:
            return error_response(413, f"file too large (limit {MAX_FILE_BYTES} bytes).")
        try:
            form = await request.form(max_files=1, max_fields=8)
        except Exception:  # noqa: BLE001 - any parse failure is the client's body, not our bug
            return error_response(400, "send the image as multipart/form-data in a field named 'file'.")
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            return error_response(422, "missing form field 'file' (the image to classify).")
        threshold = _parse_threshold(form.get("threshold"))
        if isinstance(threshold, JSONResponse):
            return threshold
        filename = printable(upload.filename or "")
        data = await upload.read(MAX_FILE_BYTES + 1)
        await upload.close()
        if limiter.statistics().tasks_waiting >= REST_MAX_WAITING:
            return error_response(503, "the server is busy; retry in a few seconds.")
        try:
            check_file_size(len(data))  # the name is in the reply already
            pred = await anyio.to_thread.run_sync(
                lambda: predictor.predict_file(data, threshold=threshold, heatmap=False), limiter=limiter)
        except FakefaceError as exc:
            return error_response(_status_for(exc), str(exc), filename=filename)
        except Exception:  # a bug of ours: log it, answer JSON without a traceback
            log.exception("REST prediction failed for %r", filename)
            return error_response(500, "internal error while classifying; it has been logged.")
        return {**pred.as_dict(filename), "faces_found": face_count(pred), "model": model_name}

    return router


def _parse_threshold(raw) -> float | None | JSONResponse:
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 <= value <= 1.0:  # also false for NaN
        return error_response(422, f"threshold must be a number from 0 to 1, got {str(raw)[:40]!r}.")
    return value


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
