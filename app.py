"""The fakeface Space: a Gradio page, its API endpoints and a plain REST route, all on one FastAPI app.

`python app.py` loads the model once, in main() ($FAKEFACE_MODEL, else the `user/repo@commit` that `fakeface
publish` pinned in pinned_model.txt, else the bundled copy), and serves on $GRADIO_SERVER_NAME:$GRADIO_SERVER_PORT;
when no model (or its backbone) can be had, it exits with one sentence saying what to set or install. Tests
build the same app around their own Predictor with `create_app(predictor)`.

Gradio API endpoints (gradio_client): /predict (image -> a label headed REAL, UNCERTAIN, FAKE or NO FACE),
/analyse (everything the page shows), /predict_batch (files or .zip -> table and CSV), /predict_video (clip ->
verdict, tracks and frames as JSON), /analyse_video (everything the Video tab shows). REST: POST /api/v1/predict
and /api/v1/predict_video (fakeface/space/rest.py). This file is layout and wiring: what the events do is in
fakeface/space/ui.py and video_ui.py, which files they may name in
fakeface/space/guard.py and uploads.py, the one ModelGate for every route in fakeface/space/serving.py.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import gradio as gr
from fastapi import FastAPI

from fakeface.images import IMAGE_SUFFIXES
from fakeface.predictor import Predictor
from fakeface.publish import PIN_FILE
from fakeface.video import DEFAULT_FRAMES, MAX_FRAMES, VIDEO_SUFFIXES
from fakeface.space import serving, startup, ui, video_ui
from fakeface.space.batch import BATCH_COLUMNS, MAX_BATCH_BYTES, MAX_BATCH_FILES
from fakeface.space.components import VerdictLabel
from fakeface.space.guard import guard_file_inputs
from fakeface.space.rest import REST_MAX_BODY, REST_PATH, REST_VIDEO_MAX_BODY, REST_VIDEO_PATH, rest_router
from fakeface.space.serving import BodyLimit, ModelGate
from fakeface.space.uploads import UploadClaims, UploadTracker

log = logging.getLogger("fakeface.app")

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
PINNED_MODEL_FILE = Path(__file__).resolve().parent / PIN_FILE  # written by `fakeface publish --space`
QUEUE_MAX_SIZE = 16  # waiting events beyond this get an immediate "queue full" answer
MAX_UPLOAD = MAX_BATCH_BYTES  # a zip may be this big; single images are held to images.MAX_FILE_BYTES
# Whole request bodies: an upload request may carry many files, so their sum is capped too (see BodyLimit).
UPLOAD_PATHS = ("/gradio_api/upload", "/gradio_api/process_recording")
MAX_UPLOAD_REQUEST = MAX_UPLOAD + 1024 * 1024  # one batch's worth plus multipart overhead
MAX_OTHER_BODY = 16 * 1024 * 1024  # JSON event payloads carry file references, never the files
# One per process, like Gradio's upload folder: which session may use an upload, and when it is deleted.
UPLOADS = UploadTracker()
# Events that delete their uploads when done: an API call, unlike the page, never comes back for the same file.
RELEASING_EVENTS = ("predict", "predict_batch", "predict_video")
StartupError = startup.StartupError  # what start_predictor raises


def model_spec() -> str | None:
    """The model this server is told to serve: $FAKEFACE_MODEL, else the id `fakeface publish` pinned in the
    Space repo (PIN_FILE beside app.py), else None (the library's default: the bundled copy)."""
    spec = os.environ.get("FAKEFACE_MODEL", "").strip()
    if not spec and PINNED_MODEL_FILE.is_file():
        spec = PINNED_MODEL_FILE.read_text(encoding="utf-8").strip()
    return spec or None


def start_predictor() -> Predictor:
    """The one model load of the process (see model_spec), warmed up; else StartupError with one sentence."""
    return startup.start_predictor(model_spec())


def example_files(suffixes=IMAGE_SUFFIXES) -> list[str]:
    """Whatever example images (or, given VIDEO_SUFFIXES, clips) are in examples/ when the app starts."""
    if not EXAMPLES_DIR.is_dir():
        return []
    return [str(p) for p in sorted(EXAMPLES_DIR.iterdir()) if p.suffix.lower() in suffixes]


def add_examples(component, paths: list[str], label: str, elem_id: str) -> None:
    """A gr.Examples row of thumbnails for `component` (nothing when there are no files)."""
    if paths:
        gr.Examples(examples=[[p] for p in paths], inputs=[component], label=label, elem_id=elem_id)


def build_demo(predictor: Predictor, gate: ModelGate) -> gr.Blocks:
    """The page and its API events; their model calls go through `gate`, the server's one ModelGate."""
    default = round(predictor.threshold, 2)
    band = predictor.model.uncertain_band

    def threshold_slider(elem_id: str | None = None):
        return gr.Slider(0.0, 1.0, value=default, step=0.01, label="Threshold on the fake probability",
                         elem_id=elem_id, info=f"Default {default:.2f} from the model's calibration; scores within ±{band:.2f} of "
                              "it are UNCERTAIN. Drag, or type a value.")

    # delete_cache sweeps, by age, what no event deletes: the page's own image (kept to re-analyse it).
    with gr.Blocks(title="fakeface: fake face detector", delete_cache=(1800, 3600)) as demo:
        gr.Markdown("# fakeface: is this face real or fake?\n\n" + ui.ABOUT)
        gr.Markdown(ui.model_description(predictor), elem_id="model-source")
        with gr.Accordion("Model details", open=False, elem_id="model-details-box"):
            gr.Markdown(ui.model_details(predictor), elem_id="model-details")
        with gr.Tab("Single image"):
            with gr.Row():
                with gr.Column():
                    image = gr.Image(type="filepath", sources=["upload", "clipboard", "webcam"],
                                     label="Image (upload, drop, paste or webcam)", elem_id="image-input")
                    threshold = threshold_slider()
                    button = gr.Button("Analyse", variant="primary", elem_id="analyse-button")
                    add_examples(image, example_files(), "Examples", "examples")
                with gr.Column():
                    # The verdict: hidden on the page (the scale below shows it with its numbers), sent to API
                    # clients of /analyse as a label they can test.
                    label = VerdictLabel(label="Verdict", visible=False)
                    scale = gr.HTML(css_template=ui.VERDICT_CSS, elem_id="verdict")
                    summary = gr.Markdown(label="Summary", elem_id="summary")
                    boxes = gr.Image(type="pil", label="Faces found, numbered left to right", height=320,
                                     interactive=False, visible=False, elem_id="face-boxes")
                    faces = gr.Gallery(label="Each face's verdict", columns=4, visible=False, elem_id="faces")
                    heat = gr.Image(type="pil", label="Heat map", height=320, interactive=False, visible=False,
                                    elem_id="heatmap")
                    with gr.Accordion("What the heat map shows", open=False):
                        gr.Markdown(ui.HEATMAP_NOTE)
                    with gr.Accordion("Provenance: what the file says about itself", elem_id="provenance-box"):
                        provenance = gr.Markdown(elem_id="provenance")
                        with gr.Accordion("Every provenance field", open=False):
                            provenance_fields = gr.JSON(label="provenance", elem_id="provenance-fields")
            kept = gr.State(None)  # the last result, so a new threshold re-reads it without a model run
        with gr.Tab("Batch"):
            gr.Markdown(f"Up to {MAX_BATCH_FILES} images, or .zip archives of images, "
                        f"{MAX_BATCH_BYTES // (1024 * 1024)} MB in all once unzipped. Uploads are deleted after "
                        "analysis.")
            files = gr.File(file_count="multiple", label="Images or .zip", elem_id="batch-files")
            batch_threshold = threshold_slider()
            batch_button = gr.Button("Analyse batch", variant="primary", elem_id="batch-button")
            batch_summary = gr.Markdown(label="Batch summary", elem_id="batch-summary")
            table = gr.Dataframe(headers=BATCH_COLUMNS, interactive=False, label="Results", elem_id="batch-table")
            csv_file = gr.File(label="Results as CSV")
        with gr.Tab("Video"):
            gr.Markdown(video_ui.VIDEO_ABOUT)
            with gr.Row():
                with gr.Column():
                    video = gr.Video(sources=["upload"], label="Video clip", elem_id="video-input")
                    video_threshold = threshold_slider("video-threshold")
                    video_frames = gr.Slider(1, MAX_FRAMES, value=DEFAULT_FRAMES, step=1, label="Frames to sample",
                                             info=video_ui.FRAMES_INFO)
                    video_button = gr.Button("Analyse clip", variant="primary", elem_id="video-button")
                    add_examples(video, example_files(VIDEO_SUFFIXES), "Example clips", "video-examples")
                with gr.Column():
                    video_label = VerdictLabel(label="Verdict", visible=False)  # for /analyse_video clients
                    video_scale = gr.HTML(css_template=ui.VERDICT_CSS, elem_id="video-verdict")
                    video_summary = gr.Markdown(label="Summary", elem_id="video-summary")
                    timeline = gr.Plot(label="Fake probability over time, per face track", elem_id="video-timeline")
            suspicious = gr.Gallery(label="Most suspicious frames (faces boxed, then their heat maps)", columns=4,
                                    object_fit="contain", visible=False, elem_id="video-frames")
            kept_clip = gr.State(None)  # the last clip's scores, so a new threshold re-reads them

        events = ui.Events(demo, predictor, gate)
        # preprocess=False: inputs arrive as Gradio's raw payloads, never decoded by Gradio (see ui.Events);
        # guard_file_inputs checks them first. concurrency_limit: Gradio need not start more model events than
        # the gate has slots; the gate itself (gate.slot(), shared with REST) is what bounds the model calls.
        model_events = dict(concurrency_id="model", concurrency_limit=gate.slots, preprocess=False)
        page = [label, scale, summary, heat, boxes, faces, provenance, provenance_fields]
        # One model run per new image (an upload, an example, the button); while one run is going, further
        # triggers collapse into one final run with the latest inputs.
        gr.on([button.click, image.change], events.analyse, inputs=[image, threshold, kept], outputs=[*page, kept],
              api_name="analyse", trigger_mode="always_last", **model_events)
        # A new threshold (typed or dragged) re-reads the kept scores: no model run, so no waiting.
        threshold.change(events.rethreshold, inputs=[kept, threshold], outputs=page, trigger_mode="always_last",
                         api_visibility="private", queue=False)
        # API only (no trigger on the page): the label alone, so a client gets a plain answer to test.
        gr.on([], events.predict, inputs=[image, threshold], outputs=[VerdictLabel(label="Verdict", visible=False)],
              api_name="predict", **model_events)
        batch_button.click(events.predict_batch, inputs=[files, batch_threshold],
                           outputs=[table, csv_file, batch_summary], api_name="predict_batch",
                           **model_events).then(lambda: None, outputs=[files], api_visibility="private")
        clip_events = video_ui.VideoEvents(demo, predictor, gate)
        clip_view = [video_label, video_scale, video_summary, timeline]
        # One model run per new clip (or frame count); a new threshold re-reads the kept scores, as for images.
        gr.on([video_button.click, video.change], clip_events.analyse_video,
              inputs=[video, video_threshold, video_frames, kept_clip], outputs=[*clip_view, suspicious, kept_clip],
              api_name="analyse_video", trigger_mode="always_last", **model_events)
        video_threshold.change(clip_events.rethreshold, inputs=[kept_clip, video_threshold], outputs=clip_view,
                               trigger_mode="always_last", api_visibility="private", queue=False)
        gr.on([], clip_events.predict_video, inputs=[video, video_threshold, video_frames],
              outputs=[gr.JSON(visible=False)], api_name="predict_video", **model_events)
    demo.queue(max_size=QUEUE_MAX_SIZE, default_concurrency_limit=gate.slots)
    guard_file_inputs(demo, [image, files, video], UPLOADS, RELEASING_EVENTS)
    return demo


def create_app(predictor: Predictor) -> FastAPI:
    """One FastAPI app: the REST route first (so the page mounted at / cannot shadow it), then the page; one
    ModelGate for both."""
    gate = serving.new_gate()
    demo = build_demo(predictor, gate)
    app = FastAPI(title="fakeface", docs_url="/api/v1/docs", redoc_url=None, openapi_url="/api/v1/openapi.json")
    source = predictor.source.describe() if predictor.source else "in-memory model"
    app.include_router(rest_router(predictor, model_name=source, gate=gate))
    # The REST route counts a chunked body itself; every other body must declare its size.
    limits = {REST_PATH: REST_MAX_BODY, REST_VIDEO_PATH: REST_VIDEO_MAX_BODY,
              **{path: MAX_UPLOAD_REQUEST for path in UPLOAD_PATHS}}
    app.add_middleware(BodyLimit, limits=limits, default=MAX_OTHER_BODY, counted=(REST_PATH, REST_VIDEO_PATH))
    app.add_middleware(UploadClaims, path=UPLOAD_PATHS[0], tracker=UPLOADS)
    app = gr.mount_gradio_app(app, demo, path="/", max_file_size=MAX_UPLOAD, footer_links=["api", "gradio"],
                              server_name=_host(), server_port=_port())
    # Gradio checks the files named in an event's inputs (only its upload folder) and in its outputs only once
    # `launch()` has set this; a mounted app never calls launch(). guard_file_inputs checks first; this keeps
    # Gradio's own check on behind it.
    demo.has_launched = True
    return app


@contextmanager
def served_in_thread(predictor: Predictor, start_timeout_s: float = 60):
    """create_app(predictor) served by uvicorn in a thread on a free local port, for tests and scripts (such as
    scripts/make_screenshot.py); yields the base URL, and stops the server on exit."""
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(predictor), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the app server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _host() -> str:
    return os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1")


def _port() -> int:
    return int(os.environ.get("GRADIO_SERVER_PORT", "7860"))


def main() -> None:
    import uvicorn

    def start() -> Predictor:
        startup.check_port(_host(), os.environ.get("GRADIO_SERVER_PORT", "7860"))  # before the model's load
        return start_predictor()

    predictor = startup.start_or_exit(start)
    log.info("serving %s; REST route POST %s", predictor.source.describe(), REST_PATH)
    uvicorn.run(create_app(predictor), host=_host(), port=_port())


if __name__ == "__main__":
    main()
