"""What the Space's page and its API events do (single image, batch), with the page's texts and heat-map
picture; app.py lays the page out and wires these to its components."""

from __future__ import annotations

import logging
import re
from contextlib import nullcontext

import gradio as gr
import numpy as np
import pandas as pd
from PIL import Image

from ..errors import FakefaceError
from ..predictor import Prediction, Predictor
from ..provenance import Provenance
from .batch import BATCH_COLUMNS, BATCH_TIME_LIMIT_S, predict_batch_rows, read_batch, write_csv
from .guard import event_path
from .serving import ModelGate, checked_threshold
from .uploads import UploadRefused

log = logging.getLogger(__name__)


class Events:
    """The event functions app.py wires, for one demo, model and gate. Their parameter names are the API's
    keyword names. They take Gradio's raw file payloads (events run with preprocess=False: gr.Image's own
    preprocessing would open a text file with PIL and fail with a bare error instead of our message), checked
    again here by event_path after guard_file_inputs."""

    def __init__(self, demo: gr.Blocks, predictor: Predictor, gate: ModelGate):
        self.demo, self.predictor, self.gate = demo, predictor, gate

    def analyse(self, image, threshold):
        """/analyse: everything the page shows (label, summary, heat map, face gallery, provenance panel and
        the provenance object)."""
        try:
            path = event_path(self.demo, image)
        except UploadRefused as exc:
            return _failure(str(exc))
        return analyse(self.predictor, path, threshold, gate=self.gate)

    def predict(self, image, threshold):
        """/predict: the label alone (REAL or FAKE, confidences for both)."""
        try:
            path = event_path(self.demo, image)
        except UploadRefused as exc:
            raise gr.Error(str(exc)) from None
        return predict_label(self.predictor, path, threshold, gate=self.gate)

    def predict_batch(self, files, threshold, progress=gr.Progress()):
        """/predict_batch: (table, CSV file, summary) for images and zips."""
        try:
            paths = [event_path(self.demo, f) for f in files or []]
        except UploadRefused as exc:
            raise gr.Error(str(exc)) from None
        return analyse_batch(self.predictor, paths, threshold, progress=progress, gate=self.gate)


# ------------------------------------------------------------------------------------------- single image


def label_value(headline: str, pred: Prediction) -> dict:
    """What a components.VerdictLabel shows: `headline` over both classes' probabilities."""
    return {"label": headline, "confidences": {"FAKE": pred.fake_prob, "REAL": pred.real_prob}}


def classify_upload(predictor: Predictor, path: str, threshold, heatmap: bool, gate: ModelGate | None = None
                    ) -> Prediction:
    threshold = checked_threshold(threshold)
    # A file object makes load_image name the file by its base name in messages, not by its server path.
    try:
        f = open(path, "rb")
    except OSError:  # swept from the cache, or deleted after an identical upload was used
        raise UploadRefused() from None  # the same sentence as for a file the client may not name
    with f, gate.slot() if gate is not None else nullcontext():
        return predictor.predict_file(f, threshold=threshold, heatmap=heatmap)


def analyse(predictor: Predictor, path: str | None, threshold, gate: ModelGate | None = None):
    """Everything the page shows: (label, summary, heat map, face gallery, provenance panel, provenance object)."""
    if not path:
        return (None, "Upload, paste or capture an image to analyse it.", None, gr.update(value=None, visible=False),
                "", None)
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
    return (label_value(pred.verdict, pred), summary_markdown(pred), heat, gallery,
            provenance_markdown(pred.provenance), pred.provenance.as_dict() if pred.provenance else None)


def _failure(message: str):
    gr.Warning(message)
    return (None, f"**Could not analyse this image.** {message}", None, gr.update(value=None, visible=False), "",
            None)


def predict_label(predictor: Predictor, path: str | None, threshold, gate: ModelGate | None = None) -> dict:
    """The /predict API: only the label, headed by the bare decision (Prediction.label).

    In the event, the upload is deleted after its last use (see guard.guard_file_inputs): an API call, unlike
    the page, never comes back for the same file. (/analyse keeps it: the page re-analyses it when the
    threshold moves; Gradio's delete_cache sweeps it later.)
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
    return label_value(pred.label, pred)


def summary_markdown(pred: Prediction) -> str:
    judged = pred.judged
    if judged.decided_by == "content credentials":
        return (f"**{pred.label}: the file's Content Credentials decide.** {judged.reason} The model's own fake "
                f"probability, {pred.fake_prob:.2f} (threshold {pred.threshold:.2f}), is shown but does not "
                "overrule a signed declaration.")
    lines = []
    if judged.reason:  # the file's metadata made a sure answer uncertain
        lines.append(f"**Uncertain, leans {pred.label}.** Fake probability {pred.fake_prob:.2f} (threshold "
                     f"{pred.threshold:.2f}). {judged.reason}")
    elif pred.uncertain:
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


_TOWARDS_FAKE = np.array([220, 40, 40], dtype=np.float32)
_TOWARDS_REAL = np.array([40, 90, 220], dtype=np.float32)
_HEAT_STRENGTH = 0.65  # opacity of the colour where the map is strongest


def heatmap_overlay(crop: Image.Image, heatmap: np.ndarray, side: int = 384) -> Image.Image:
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
    alpha = _HEAT_STRENGTH * np.abs(scaled)[..., None]
    pixels = np.asarray(base, dtype=np.float32)
    return Image.fromarray(np.clip(pixels * (1 - alpha) + colour * alpha, 0, 255).astype(np.uint8))


# --------------------------------------------------------------------------------------------------- batch


def analyse_batch(predictor: Predictor, paths: list[str] | None, threshold, progress=None,
                  gate: ModelGate | None = None):
    """(table, CSV file, summary) for uploaded images and zips (in the event, the uploads are deleted after
    their last use, see guard.guard_file_inputs)."""
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


def batch_summary(rows: list[dict]) -> str:
    """Counts by verdict (Prediction.verdict: the label, or the label with " (uncertain)")."""
    counts = {}
    for row in rows:
        key = "uncertain" if row["verdict"].endswith(" (uncertain)") else row["verdict"]
        counts[key] = counts.get(key, 0) + 1
    parts = [f"{counts[k]} {k}" for k in ("FAKE", "REAL", "uncertain", "error") if counts.get(k)]
    return f"Analysed {len(rows)} file(s): " + ", ".join(parts) + "."


# ------------------------------------------------------------------------------------------------- texts


ABOUT = (
    "The score is the model's calibrated probability that the face was edited or generated. It is evidence, "
    "not proof: expect mistakes on kinds of images the model was not trained on (see the model card)."
)
HEATMAP_NOTE = (
    "**What the heat map shows:** where in this face crop the model found the evidence for its score: red "
    "areas pushed the score towards FAKE, blue areas towards REAL. It is the model's view, not proof, and not "
    "an outline of edited regions: the model was taught whether a face is edited or generated, never where."
)


def model_description(predictor: Predictor) -> str:
    source = predictor.source.describe() if predictor.source else "in-memory model"
    detector = predictor.detector.backend if predictor.detector else "none"
    m = predictor.model
    return (f"**Model:** `{source}` · architecture `{m.arch}` · default threshold {predictor.threshold:.2f} "
            f"(uncertain within ±{m.uncertain_band:.2f}) · face detector `{detector}`")


# -------------------------------------------------------------------------------------------- provenance

PROVENANCE_NOTE = (
    "Read from the file as uploaded, not from the pixels. Valid signed Content Credentials that declare AI "
    "generation decide the verdict; unsigned metadata is a hint (anyone can write it); most platforms strip "
    "metadata on upload, so its absence says nothing.")
_MARKDOWN_SPECIALS = re.compile(r"([\\`*_\[\]<>|~])")  # what formats text inside a line


def provenance_markdown(provenance: Provenance | None) -> str:
    """The page's Provenance panel: each finding, the Content Credentials' details, what could not be read."""
    if provenance is None:
        return ""
    lines = [f"**{_md(provenance.short[:1].upper() + provenance.short[1:])}**", ""]
    lines += [f"- {_md(f)}" for f in provenance.findings]
    c = provenance.credentials
    if c.state in ("valid", "trusted", "invalid"):
        details = [("Validation", c.state + (f" ({', '.join(c.failures)})" if c.failures else "")),
                   ("Signer", " / ".join(v for v in (c.issuer, c.common_name) if v) or None),
                   ("Trust", c.trust), ("Signed at", c.signing_time or "no time-stamp"),
                   ("Written by", c.claim_generator), ("Ingredients", str(c.ingredients)),
                   ("Actions", "; ".join(f"{a['action']}" + (f" ({a['digital_source_type']})"
                                                               if a["digital_source_type"] else "")
                                         for a in c.actions) or None)]
        lines += ["", "Content Credentials:"] + [f"- {name}: {_md(value)}" for name, value in details if value]
    if provenance.generator and provenance.generator.get("prompt"):
        lines += ["", f"Prompt in the file: {_md(provenance.generator['prompt'])}"]
    if provenance.notes:
        lines += ["", "Not read:"] + [f"- {_md(note)}" for note in provenance.notes]
    return "\n".join(lines + ["", f"_{PROVENANCE_NOTE}_"])


def _md(text) -> str:
    """Text from a file, shown literally (a claim generator or a prompt may hold Markdown or HTML)."""
    return _MARKDOWN_SPECIALS.sub(r"\\\1", " ".join(str(text).split()))
