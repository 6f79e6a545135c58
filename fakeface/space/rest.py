"""The plain REST routes, `POST /api/v1/predict` (one image) and `POST /api/v1/predict_video` (one clip):
multipart form data in, JSON out, through the server's one ModelGate. Gradio-free, so the REST contract tests
without a browser."""

from __future__ import annotations

import asyncio
import logging
import tempfile
from concurrent.futures import Future
from typing import Literal

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile

from ..errors import FakefaceError, TooLargeError, UnsupportedFormatError
from ..images import MAX_FILE_BYTES, check_file_size
from ..predictor import Predictor
from ..video import DEFAULT_FRAMES, MAX_FRAMES, MAX_VIDEO_BYTES, analyse_video, check_frame_count
from .serving import REST_MAX_PER_CLIENT, ClientLimit, ModelGate, checked_threshold, error_response, printable

log = logging.getLogger(__name__)

REST_PATH = "/api/v1/predict"
REST_VIDEO_PATH = "/api/v1/predict_video"
REST_TIME_LIMIT_S = 60.0  # a request not answered by then gets 503 (still queued) or 504 (still computing)
REST_VIDEO_TIME_LIMIT_S = 300.0  # a long clip at 64 frames takes a minute or two on 2 cores
_FORM_OVERHEAD = 64 * 1024  # multipart headers and the threshold field on top of the file itself
REST_MAX_BODY = MAX_FILE_BYTES + _FORM_OVERHEAD
REST_VIDEO_MAX_BODY = MAX_VIDEO_BYTES + _FORM_OVERHEAD
_SPOOL_BYTES = 1024 * 1024  # a body or file part stays in memory up to this size, then goes to a temporary file


def _form_schema(file_kinds: str, **extra_fields) -> dict:
    """The multipart form, for the OpenAPI page: the routes read the raw body themselves (to count it), so
    FastAPI cannot infer it."""
    fields = {"file": {"type": "string", "format": "binary", "description": file_kinds},
              "threshold": {"type": "number", "minimum": 0, "maximum": 1,
                            "description": "decision threshold on fake_prob; default from the model"}, **extra_fields}
    schema = {"type": "object", "required": ["file"], "properties": fields}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


_OPENAPI_BODY = _form_schema("JPEG, PNG, WebP, GIF, BMP or TIFF")
_OPENAPI_VIDEO_BODY = _form_schema("MP4, MOV, WebM, MKV or AVI", frames={
    "type": "integer", "minimum": 1, "maximum": MAX_FRAMES, "default": DEFAULT_FRAMES,
    "description": "frames sampled evenly over the clip"})


# ------------------------------------------------------------------------------- the contract, for OpenAPI


class FaceAnswer(BaseModel):
    box: list[int] = Field(description="x0, y0, x1, y1 in the upright image's pixels")
    fake_prob: float


class Answer(BaseModel):
    """200: the seed's {filename, real_prob, fake_prob, verdict}, and what else a client needs."""

    filename: str
    verdict: Literal["REAL", "FAKE"] | None = Field(
        description="the decision at the threshold, or FAKE when the file's valid signed Content Credentials "
                    "declare AI generation; null when no face was found (and no credentials decide)")
    uncertain: bool | None = Field(
        description="true when fake_prob is within uncertain_band of the threshold, or when unsigned metadata "
                    "says the image was generated; null when there is no verdict")
    headline: Literal["REAL", "UNCERTAIN", "FAKE", "NO FACE"] = Field(
        description="what the page shows: UNCERTAIN when `uncertain`, NO FACE when `verdict` is null")
    fake_prob: float | None = Field(description="the most-fake face's probability; null without a face")
    real_prob: float | None = Field(description="1 - fake_prob; null without a face")
    threshold: float
    uncertain_band: float
    faces_found: int = Field(description="faces found (0: no verdict)")
    faces: list[FaceAnswer] = Field(description="every face found, left to right")
    message: str | None = Field(None, description="only without a face: why there is no verdict")
    whole_image_fake_prob: float | None = Field(
        None, description="only without a face: the whole image's score, outside what the model was trained "
                          "for; not a verdict")
    model: str = Field(description="the model that answered")
    decided_by: Literal["pixels", "content credentials"] = Field(
        description="what gave the verdict: the model's score, or the file's signed Content Credentials")
    reason: str | None = Field(description="when the file's metadata settled or changed the verdict: why")
    provenance: dict = Field(
        description="what the uploaded file's own bytes say about where it came from: evidence (signed_ai, "
                    "unsigned_ai, none), summary, findings, content_credentials (state, signer, claim generator, "
                    "actions, ingredients, validation failures), digital_source_type, generator, software, camera, "
                    "notes")


class ErrorAnswer(BaseModel):
    error: str = Field(description="one sentence: what went wrong and what to do")
    filename: str | None = Field(None, description="the file's name, when the error is about the file")


_ERRORS = {
    400: "the body is not a readable multipart form, or the image is truncated or corrupt",
    408: "the request body did not arrive within the time limit",
    413: "the file is over the byte or pixel limit",
    415: "the body is not a form (multipart/form-data), or the file is not an image in an accepted format",
    422: "the form has no 'file' field, or the threshold is not a number from 0 to 1",
    429: f"this client already has {REST_MAX_PER_CLIENT} requests in the server; retry after Retry-After seconds",
    500: "a bug of ours (logged)",
    503: "the server is busy; retry after Retry-After seconds",
    504: "classifying took longer than the time limit",
}
RESPONSES = {200: {"model": Answer, "description": "the answer (verdict null when no face was found)"},
             **{code: {"model": ErrorAnswer, "description": text} for code, text in _ERRORS.items()}}


class TrackAnswer(BaseModel):
    id: int = Field(description="the track's number (0 first); frames[].faces[].track refers to it")
    fake_prob: float = Field(description="the robust mean of its frames' scores (a fifth left out at each end)")
    frames: int = Field(description="sampled frames it is seen in")
    counted: bool = Field(description="seen in enough frames to decide the clip")
    first_t: float
    last_t: float


class VideoFaceAnswer(FaceAnswer):
    track: int


class FrameAnswer(BaseModel):
    t: float = Field(description="seconds from the clip's first frame")
    faces: list[VideoFaceAnswer]


class VideoAnswer(BaseModel):
    """200: the clip's verdict (as an image's: it follows the most suspicious face track), every track and every
    sampled frame."""

    filename: str
    verdict: Literal["REAL", "FAKE"] | None = Field(description="null when no face was found in the sampled frames")
    uncertain: bool | None
    headline: Literal["REAL", "UNCERTAIN", "FAKE", "NO FACE"]
    fake_prob: float | None = Field(description="the deciding track's score; null without a face")
    real_prob: float | None
    threshold: float
    uncertain_band: float
    faces_found: int = Field(description="face tracks (people) found: 0 means no verdict")
    duration: float = Field(description="seconds of video read")
    frames_sampled: int
    tracks: list[TrackAnswer]
    frames: list[FrameAnswer]
    message: str | None = Field(None, description="why there is no verdict, or that the file was truncated")
    model: str


_VIDEO_ERRORS = {
    **_ERRORS,
    400: "the body is not a readable multipart form, or the clip is truncated, corrupt or a still image",
    413: "the file is over the byte limit, or the clip over the duration or frame-size limit",
    415: "the body is not a form (multipart/form-data), or the file is not a video in an accepted container",
    422: "the form has no 'file' field, the threshold is not a number from 0 to 1, or frames not from 1 to "
         f"{MAX_FRAMES}",
    504: "analysing the clip took longer than the time limit",
}
VIDEO_RESPONSES = {200: {"model": VideoAnswer, "description": "the answer (verdict null when no face was found)"},
                   **{code: {"model": ErrorAnswer, "description": text} for code, text in _VIDEO_ERRORS.items()}}


def rest_router(predictor: Predictor, model_name: str, gate: ModelGate) -> APIRouter:
    """`POST /api/v1/predict`: multipart `file` (+ optional `threshold`) -> JSON (`Answer`: Prediction.as_dict
    with `filename` and `model`); `POST /api/v1/predict_video`: a clip (+ optional `threshold`, `frames`) ->
    JSON (`VideoAnswer`: VideoPrediction.as_dict with `model`); the error codes in `RESPONSES` /
    `VIDEO_RESPONSES`, each with an `ErrorAnswer`. Any other form field (a model id, a path) is ignored: the
    model is the server's, chosen at start. `gate`: the server's one ModelGate, shared with the Gradio events."""
    router = APIRouter()
    clients = ClientLimit(REST_MAX_PER_CLIENT)  # one count per client over both routes
    # Limits are read when the router is made (so tests can shorten them).
    image_route = _Route(REST_MAX_BODY, MAX_FILE_BYTES, REST_TIME_LIMIT_S, "the image", "try a smaller image")
    video_route = _Route(REST_VIDEO_MAX_BODY, MAX_VIDEO_BYTES, REST_VIDEO_TIME_LIMIT_S, "the clip",
                         "send a shorter clip or fewer frames")

    @router.post(REST_PATH, openapi_extra=_OPENAPI_BODY, responses=RESPONSES,
                 summary="Classify one image: REAL or FAKE (or no verdict without a face)")
    async def predict(request: Request):
        def prepare(upload: UploadFile, threshold: float | None):
            data = upload.file.read(MAX_FILE_BYTES + 1)
            check_file_size(len(data))  # the name is in the reply already
            return lambda: predictor.predict_file(data, threshold=threshold, heatmap=False)

        def reply(pred, filename: str) -> dict:
            return {**pred.as_dict(filename), "model": model_name}

        return await _answer(request, gate, clients, image_route, _threshold_field, prepare, reply)

    @router.post(REST_VIDEO_PATH, openapi_extra=_OPENAPI_VIDEO_BODY, responses=VIDEO_RESPONSES,
                 summary="Classify the faces of a video clip: REAL or FAKE (or no verdict without a face)")
    async def predict_video(request: Request):
        def fields(form) -> dict:
            frames = form.get("frames")
            return {**_threshold_field(form), "frames": check_frame_count(frames or DEFAULT_FRAMES)}

        def prepare(upload: UploadFile, threshold: float | None, frames: int):
            # The clip is read from the spooled upload (on disk past 1 MB), never copied into memory whole.
            return lambda: analyse_video(predictor, upload.file, frames=frames, threshold=threshold,
                                         name=upload.filename or "")

        def reply(result, filename: str) -> dict:
            return {**result.as_dict(filename), "model": model_name}

        return await _answer(request, gate, clients, video_route, fields, prepare, reply)

    return router


class _Route:
    """What differs between the image and the video route: the body limit (and the file limit it comes from,
    for messages), the time limit, and what the computation is called in messages."""

    def __init__(self, max_body: int, max_file: int, time_limit: float, what: str, hint: str):
        self.max_body, self.max_file, self.time_limit, self.what, self.hint = max_body, max_file, time_limit, what, hint

    def too_large(self) -> JSONResponse:
        return error_response(413, f"file too large (limit {self.max_file} bytes).")


def _threshold_field(form) -> dict:
    return {"threshold": checked_threshold(form.get("threshold"))}


async def _answer(request: Request, gate: ModelGate, clients: ClientLimit, route: _Route, fields, prepare, reply):
    """The one way a REST request goes: declared size, the client's limit, a place at the gate, the body
    (counted, spooled), the form, `fields(form)` (the form's other fields, checked: FakefaceError is a 422),
    `prepare(upload, **fields)` (checks the file: FakefaceError is a 400, 413 or 415) giving the computation,
    run on the gate's pool within the time limit, then `reply(result, filename)`; every failure as JSON."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > route.max_body:
        return route.too_large()
    client = ClientLimit.client_of(request.headers, request.client.host if request.client else None)
    if not clients.try_enter(client):
        return error_response(429, f"too many requests at once from this client (limit "
                                   f"{REST_MAX_PER_CLIENT}); retry in a few seconds.")
    try:
        return await _admitted(request, gate, route, fields, prepare, reply)
    finally:
        clients.leave(client)


async def _admitted(request: Request, gate: ModelGate, route: _Route, fields, prepare, reply):
    """_answer past the client's limit: the gate, the body, the form, the work."""
    if not gate.try_enter():
        return error_response(503, "the server is busy; retry in a few seconds.")
    handed_over = False  # once the work is submitted, its end gives the place back
    work: Future | None = None
    job = None
    filename = ""
    form = None
    try:
        with anyio.fail_after(route.time_limit):
            body = await _read_body(request, route.max_body)
            if body is None:
                return route.too_large()
            parsed = await _parse_form(request, body, route.what)
            if isinstance(parsed, JSONResponse):
                return parsed
            form, upload = parsed
            try:
                checked = fields(form)
            except FakefaceError as exc:
                return error_response(422, str(exc))
            filename = printable(upload.filename or "")
            try:
                compute = prepare(upload, **checked)
            except FakefaceError as exc:
                return error_response(_status_for(exc), str(exc), filename=filename)
            work, job = gate.run(compute)
            handed_over = True
            result = await asyncio.wrap_future(work)  # cancelling this cancels the work if not yet started
    except TimeoutError:
        if work is None:
            return error_response(408, f"the request was not received within {route.time_limit:.0f} s.")
        if gate.abandon(work, job):  # still queued behind other requests: it never started
            return error_response(503, "the server is busy; retry in a few seconds.")
        return error_response(504, f"classifying {route.what} took longer than the {route.time_limit:.0f} s limit; "
                                   f"{route.hint} or retry later.")
    except FakefaceError as exc:
        return error_response(_status_for(exc), str(exc), filename=filename)
    except Exception:  # a bug of ours: log it, answer JSON without a traceback
        log.exception("REST prediction failed for %r", filename)
        return error_response(500, "internal error while classifying; it has been logged.")
    finally:
        if not handed_over:
            gate.leave()
        _close_when_done(form, work)
    return reply(result, filename)


def _close_when_done(form, work: Future | None) -> None:
    """Remove the form's spooled files once nothing reads them: now, or when the computation (which may read
    the upload, and may outlive a timed-out request) ends."""
    if form is None:
        return
    files = [value.file for _, value in form.multi_items() if isinstance(value, UploadFile)]
    if work is None:
        for f in files:
            f.close()
    else:
        work.add_done_callback(lambda _: [f.close() for f in files])


def _status_for(exc: FakefaceError) -> int:
    if isinstance(exc, TooLargeError):
        return 413
    return 415 if isinstance(exc, UnsupportedFormatError) else 400


async def _read_body(request: Request, limit: int):
    """The body spooled to a temporary file (in memory up to 1 MB), or None once it passes `limit` bytes (a
    chunked upload declares no length up front)."""
    body = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            body.close()
            return None
        body.write(chunk)
    body.seek(0)
    return body


async def _parse_form(request: Request, body, what: str):
    """(form, its file) from a body already read, or the error response; the caller closes the form's files."""

    async def replay():
        chunk = body.read(_SPOOL_BYTES)
        return {"type": "http.request", "body": chunk, "more_body": len(chunk) == _SPOOL_BYTES}

    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("multipart/form-data", "application/x-www-form-urlencoded"):  # a form without a file: 422
        body.close()
        return error_response(415, f"send {what} as multipart/form-data in a field named 'file'.")
    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=8)
    except Exception:  # noqa: BLE001 - any parse failure is the client's body, not our bug
        return error_response(400, f"send {what} as multipart/form-data in a field named 'file'.")
    finally:
        body.close()
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        await form.close()
        return error_response(422, f"missing form field 'file' ({what} to classify).")
    return form, upload
