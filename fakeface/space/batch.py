"""Batches: uploaded images and .zip archives read into memory within the batch limits, one result row per
file, and the rows as CSV. Gradio-free, so the limits test without a browser."""

from __future__ import annotations

import csv
import logging
import stat
import tempfile
import time
import zipfile
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import FakefaceError
from ..images import MAX_FILE_BYTES, check_file_size
from ..predictor import WHOLE_IMAGE_NOTE, Prediction, Predictor
from ..video import VIDEO_SUFFIXES, is_video
from ..provenance import PROVENANCE_COLUMNS
from .serving import ModelGate, printable

log = logging.getLogger(__name__)

MAX_BATCH_FILES = 64  # images per batch, whether uploaded one by one or inside zips
MAX_BATCH_BYTES = 200 * 1024 * 1024  # uncompressed bytes per batch, all images together
MAX_ZIP_ENTRIES = 1000  # names listed in one zip; more is refused before anything is read
BATCH_TIME_LIMIT_S = 600.0  # files not started by then are reported as not analysed
_READ_CHUNK = 1024 * 1024

# A row's "verdict" is `Prediction.headline` (REAL, UNCERTAIN, FAKE or NO FACE), or "error".
BATCH_COLUMNS = ["file", "faces", "fake_prob", "verdict", "note", "most_like", "provenance"]
# The CSV has every provenance column (provenance.PROVENANCE_COLUMNS); the table on the page its short form only.
CSV_COLUMNS = BATCH_COLUMNS + [c for c in PROVENANCE_COLUMNS if c not in BATCH_COLUMNS]


# ------------------------------------------------------------------------------------------------ reading


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


def _video_refused(name: str) -> str:
    return (f"{name}: a video; batches take images only. Analyse clips one at a time (the Video tab, "
            "/predict_video or POST /api/v1/predict_video).")


def _read_plain(path: Path, budget: _Budget) -> BatchItem:
    name = printable(path.name)
    if is_video(path):
        return BatchItem(name, error=_video_refused(name))
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
    if PurePosixPath(info.filename).suffix.lower() in VIDEO_SUFFIXES:  # refused unread, whatever its size
        return BatchItem(name, error=_video_refused(name))
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


# ------------------------------------------------------------------------------------------------ results


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
        with gate.slot() if gate is not None and item.error is None else nullcontext():
            rows.append(_row(predictor, item, threshold))
    return rows


def _error_row(name: str, note: str) -> dict:
    return {"file": name, "faces": None, "fake_prob": None, "verdict": "error", "note": note}


def _row(predictor: Predictor, item: BatchItem, threshold: float | None) -> dict:
    if item.error is not None:
        return _error_row(item.name, item.error)
    if is_video(item.data):  # a clip inside a zip
        return _error_row(item.name, _video_refused(item.name))
    try:
        pred = predictor.predict_file(item.data, threshold=threshold, heatmap=False)
    except FakefaceError as exc:
        return _error_row(item.name, f"{item.name}: {exc}")
    except Exception:  # a bug of ours must not cost the other rows their results
        log.exception("batch prediction failed for %r", item.name)
        return _error_row(item.name, f"{item.name}: internal error while classifying; it has been logged.")
    return {"file": item.name, "faces": pred.faces_found,
            "fake_prob": round(pred.fake_prob, 4) if pred.face_found else None,
            "verdict": pred.headline, "most_like": kind_text(pred), "note": result_note(pred),
            **(pred.provenance.columns() if pred.provenance else {})}  # none when only pixels were given


def kind_text(pred: Prediction) -> str:
    """"GAN (0.93)": the kind of fake the face most resembles, for a FAKE verdict only ("" otherwise)."""
    return f"{pred.kind['most_like']} ({pred.kind['probability']:.2f})" if pred.kind else ""


def result_note(pred: Prediction) -> str:
    """What a row's verdict needs beside it: what decided it when not the score, which way an uncertain score
    leans, or why there is no verdict."""
    judged = pred.judged
    if judged.decided_by == "content credentials":
        return "decided by the file's signed Content Credentials, not by the score"
    if not pred.face_found:
        return f"no face found; {pred.fake_prob:.2f} is {WHOLE_IMAGE_NOTE}"
    if judged.reason:
        return f"leans {pred.verdict}; raised to uncertain by the file's unsigned metadata"
    if pred.uncertain:
        return (f"leans {pred.verdict}: within ±{pred.uncertain_band:.2f} of the threshold {pred.threshold:.2f}")
    return ""


_CSV_DIR = Path(tempfile.gettempdir()) / "fakeface-csv"
_CSV_MAX_AGE_S = 3600


def write_csv(rows: list[dict]) -> Path:
    """Write rows to a fresh CSV file and return its path; files from earlier batches over an hour old go."""
    _CSV_DIR.mkdir(exist_ok=True)
    _prune(_CSV_DIR, _CSV_MAX_AGE_S)
    fd, name = tempfile.mkstemp(prefix="fakeface-results-", suffix=".csv", dir=_CSV_DIR)
    with open(fd, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
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
