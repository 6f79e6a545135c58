"""Gradio's side of the upload rules (uploads.py): every file an event names is admitted, or refused
with one message, before Gradio or the app opens it; uploads are deleted after the request that used them."""

from __future__ import annotations

import inspect
import logging
from pathlib import Path

import gradio as gr
from gradio.utils import get_upload_folder

from .uploads import UploadRefused, UploadTracker, checked_path, payload_path

log = logging.getLogger(__name__)


def files_to_keep(demo: gr.Blocks) -> set[str]:
    """The cached files Gradio itself keeps (examples, default values): never deleted as uploads."""
    return set().union(*(getattr(block, "keep_in_cache", set()) for block in demo.blocks.values()))


def event_path(demo: gr.Blocks, payload) -> str | None:
    """The checked real path of an event's raw file payload (None for no file), else UploadRefused.

    A second, stateless check behind guard_file_inputs: the file must lie in the upload folder (symlinks
    resolved) or be one of the app's cached examples, whatever way the payload reached the event.
    """
    if payload is None:
        return None
    return checked_path(payload_path(payload), get_upload_folder(), files_to_keep(demo))


def guard_file_inputs(demo: gr.Blocks, file_inputs: list, tracker: UploadTracker, releasing: tuple[str, ...]
                      ) -> None:
    """Check every file an event names before Gradio or the app opens it, and delete uploads only after the
    request that used them.

    Gradio's own check (only files from its upload folder in an event's input) does not run when the app is
    mounted on FastAPI (mount_gradio_app never sets `has_launched`), and before an event function runs Gradio
    copies a named file into its cache, or downloads a URL. So the demo's process_api, which every route
    (queue, /call, /run) goes through, is wrapped: for each input of `file_inputs` it admits the named files
    through `tracker` (inside the upload folder after resolving symlinks, an upload handed out and not yet
    bound to another session, or a cached example) and hands Gradio a clean FileData with the real path;
    anything else gets one message, UPLOAD_AGAIN, before anything is opened. Events whose api_name is in
    `releasing` give their uploads back (deleting them after their last use) when the call ends.
    """
    ids = {block._id for block in file_inputs}
    original = demo.process_api
    signature = inspect.signature(original)

    async def process_api(*args, **kwargs):
        call = signature.bind(*args, **kwargs)
        block_fn = call.arguments["block_fn"]
        if isinstance(block_fn, int):
            block_fn = demo.fns[block_fn]
        positions = [i for i, block in enumerate(block_fn.inputs) if block._id in ids]
        if not positions or call.arguments.get("explicit_call"):
            return await original(*args, **kwargs)
        session = call.arguments.get("session_hash") or ""
        releases = block_fn.api_name in releasing
        root, keep = get_upload_folder(), files_to_keep(demo)
        admitted: list[str] = []

        def admit(payload):
            real = tracker.admit(payload_path(payload), session, root, keep, releasing=releases)
            admitted.append(real)
            name = payload.get("orig_name") if isinstance(payload, dict) else None
            return {"path": real, "orig_name": name if isinstance(name, str) else Path(real).name,
                    "meta": {"_type": "gradio.FileData"}}

        def release():
            if releases and admitted:
                tracker.release(admitted, root, keep, session=session)

        try:
            inputs = list(call.arguments["inputs"])
            for i in positions:
                value = inputs[i]
                if value is None:
                    continue
                if isinstance(value, list) and block_fn.inputs[i].__class__ is gr.File:
                    inputs[i] = [admit(item) for item in value]
                else:
                    inputs[i] = admit(value)
            call.arguments["inputs"] = inputs
        except UploadRefused as exc:
            log.info("refused a file reference from session %.8s", session)
            release()
            raise gr.Error(str(exc)) from None
        try:
            return await original(*call.args, **call.kwargs)
        finally:
            release()

    demo.process_api = process_api
