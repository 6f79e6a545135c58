"""The plain REST route, `POST /api/v1/predict`: one image as multipart form data in, JSON out, through the
server's one ModelGate. Gradio-free, so the REST contract tests without a browser."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Future

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile

from ..errors import FakefaceError, TooLargeError
from ..images import MAX_FILE_BYTES, check_file_size
from ..predictor import Predictor
from .serving import ModelGate, checked_threshold, error_response, face_count, printable

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


def rest_router(predictor: Predictor, model_name: str, gate: ModelGate) -> APIRouter:
    """`POST /api/v1/predict`: multipart `file` (+ optional `threshold`) -> JSON (Prediction.as_dict with
    `filename`, plus `faces_found` and `model`); 4xx JSON for bad input, 503 + Retry-After when busy, 504 past
    the time limit. Any other form field (a model id, a path) is ignored: the model is the server's, chosen at
    start. `gate`: the server's one ModelGate, shared with the Gradio events."""
    router = APIRouter()
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
        return {**pred.as_dict(filename), "faces_found": face_count(pred), "model": model_name}

    return router


def _status_for(exc: FakefaceError) -> int:
    return 413 if isinstance(exc, TooLargeError) else 400


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
        try:
            threshold = checked_threshold(form.get("threshold"))
        except FakefaceError as exc:
            return error_response(422, str(exc))
        return printable(upload.filename or ""), await upload.read(), threshold
    finally:
        await form.close()  # spooled parts that went to disk are removed now, not at garbage collection
