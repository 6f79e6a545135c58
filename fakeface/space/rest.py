"""The plain REST route, `POST /api/v1/predict`: one image as multipart form data in, JSON out, through the
server's one ModelGate. Gradio-free, so the REST contract tests without a browser."""

from __future__ import annotations

import asyncio
import logging
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
from .serving import REST_MAX_PER_CLIENT, ClientLimit, ModelGate, checked_threshold, error_response, printable

log = logging.getLogger(__name__)

REST_PATH = "/api/v1/predict"
REST_TIME_LIMIT_S = 60.0  # a request not answered by then gets 503 (still queued) or 504 (still computing)
_FORM_OVERHEAD = 64 * 1024  # multipart headers and the threshold field on top of the image itself
REST_MAX_BODY = MAX_FILE_BYTES + _FORM_OVERHEAD

# The form, for the OpenAPI page: the route reads the raw body itself (to count it), so FastAPI cannot infer it.
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


def rest_router(predictor: Predictor, model_name: str, gate: ModelGate) -> APIRouter:
    """`POST /api/v1/predict`: multipart `file` (+ optional `threshold`) -> JSON (`Answer`: Prediction.as_dict
    with `filename` and `model`); the error codes in `RESPONSES`, each with an `ErrorAnswer`. Any other form
    field (a model id, a path) is ignored: the model is the server's, chosen at start. `gate`: the server's one
    ModelGate, shared with the Gradio events."""
    router = APIRouter()
    time_limit = REST_TIME_LIMIT_S
    clients = ClientLimit(REST_MAX_PER_CLIENT)

    @router.post(REST_PATH, openapi_extra=_OPENAPI_BODY, responses=RESPONSES,
                 summary="Classify one image: REAL or FAKE (or no verdict without a face)")
    async def predict(request: Request):
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > REST_MAX_BODY:
            return error_response(413, f"file too large (limit {MAX_FILE_BYTES} bytes).")
        client = ClientLimit.client_of(request.headers, request.client.host if request.client else None)
        if not clients.try_enter(client):
            return error_response(429, f"too many requests at once from this client (limit "
                                       f"{REST_MAX_PER_CLIENT}); retry in a few seconds.")
        try:
            return await answer(request)
        finally:
            clients.leave(client)

    async def answer(request: Request):
        if not gate.try_enter():
            return error_response(503, "the server is busy; retry in a few seconds.")
        handed_over = False  # once the work is submitted, its end gives the place back
        work: Future | None = None
        job = None
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
        return {**pred.as_dict(filename), "model": model_name}

    return router


def _status_for(exc: FakefaceError) -> int:
    if isinstance(exc, TooLargeError):
        return 413
    return 415 if isinstance(exc, UnsupportedFormatError) else 400


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

    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("multipart/form-data", "application/x-www-form-urlencoded"):  # a form without a file: 422
        return error_response(415, "send the image as multipart/form-data in a field named 'file'.")
    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=8)
    except Exception:  # noqa: BLE001 - any parse failure is the client's body, not our bug
        return error_response(400, "send the image as multipart/form-data in a field named 'file'.")
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            return error_response(422, "missing form field 'file' (the image to classify).")
        try:
            threshold = checked_threshold(form.get("threshold"))
        except FakefaceError as exc:
            return error_response(422, str(exc))
        return printable(upload.filename or ""), await upload.read(), threshold
    finally:
        await form.close()  # spooled parts that went to disk are removed now, not at garbage collection
