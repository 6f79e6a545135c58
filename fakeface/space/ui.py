"""What the Space's page and its API events do (single image, batch), with the page's texts and heat-map
picture; app.py lays the page out and wires these to its components."""

from __future__ import annotations

import logging
import re
from contextlib import nullcontext
from dataclasses import dataclass, replace

import gradio as gr
import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from ..errors import FakefaceError
from ..images import DECODE_SCALE
from ..predictor import FAKE, NO_FACE, NO_FACE_MESSAGE, REAL, UNCERTAIN, WHOLE_IMAGE_NOTE, Prediction, Predictor
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

    def analyse(self, image, threshold, kept=None):
        """/analyse: everything the page shows (see `render`; the provenance object among it), and the result
        kept for `rethreshold`."""
        try:
            path = event_path(self.demo, image)
        except UploadRefused as exc:
            return (*_failure(str(exc)), None)
        return analyse(self.predictor, path, threshold, gate=self.gate, kept=kept)

    @staticmethod
    def rethreshold(kept, threshold):
        """The page's answer for a new threshold, from the kept result: no model run (typing a threshold or
        moving the slider only re-reads the same scores)."""
        if kept is None:
            return tuple(gr.skip() for _ in PAGE_OUTPUTS)
        try:
            return render(kept, checked_threshold(threshold))
        except FakefaceError as exc:
            gr.Warning(str(exc))
            return tuple(gr.skip() for _ in PAGE_OUTPUTS)

    def predict(self, image, threshold):
        """/predict: the label alone (its headline REAL, UNCERTAIN, FAKE or NO FACE)."""
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

# What the page shows for one image, in the order of the /analyse outputs.
PAGE_OUTPUTS = ("label", "scale", "summary", "heatmap", "boxes", "faces", "provenance", "provenance_fields")
BOXES_SIDE = 720  # the input picture with the faces numbered is shown at most this big


@dataclass
class Kept:
    """One analysed image, kept in the page's session so a new threshold needs no model run."""

    path: str  # the upload it came from (its name holds a hash of its content)
    prediction: Prediction
    picture: Image.Image  # the upright input, scaled to BOXES_SIDE
    scale: float  # picture pixels per pixel of the uploaded file (the unit of face boxes)


def label_value(pred: Prediction) -> dict:
    """What a components.VerdictLabel shows: the headline over both classes' probabilities (none without a
    face: there is no verdict to weigh)."""
    confidences = {"FAKE": pred.fake_prob, "REAL": pred.real_prob} if pred.face_found else {}
    return {"label": pred.headline, "confidences": confidences}


def classify_upload(predictor: Predictor, path: str, threshold, heatmap: bool, gate: ModelGate | None = None,
                    picture: bool = False) -> tuple[Image.Image | None, Prediction]:
    """(the decoded image when `picture` is asked for, else None; its Prediction)."""
    threshold = checked_threshold(threshold)
    # A file object makes load_image name the file by its base name in messages, not by its server path.
    try:
        f = open(path, "rb")
    except OSError:  # swept from the cache, or deleted after an identical upload was used
        raise UploadRefused() from None  # the same sentence as for a file the client may not name
    with f, gate.slot() if gate is not None else nullcontext():
        if not picture:
            return None, predictor.predict_file(f, threshold=threshold, heatmap=heatmap)
        return predictor.predict_upload(f, threshold=threshold, heatmap=heatmap)


def analyse(predictor: Predictor, path: str | None, threshold, gate: ModelGate | None = None,
            kept: Kept | None = None):
    """Everything the page shows (PAGE_OUTPUTS), then the Kept result (None when there is none). The image
    `kept` came from is not run again: Gradio reports one new upload over an old one as two changes."""
    if not path:
        return (*_cleared("Upload, paste or capture an image, or pick an example, to analyse it."), None)
    if kept is not None and kept.path == path:
        try:
            return (*render(kept, checked_threshold(threshold)), kept)
        except FakefaceError as exc:
            return (*_failure(str(exc)), kept)
    try:
        image, pred = classify_upload(predictor, path, threshold, heatmap=True, gate=gate, picture=True)
    except FakefaceError as exc:
        return (*_failure(str(exc)), None)
    except Exception:  # a bug of ours: the user gets a sentence, the log gets the traceback
        log.exception("analysis failed")
        return (*_failure("Something went wrong while analysing this image; it has been logged. Try another "
                          "image."), None)
    scale = min(1.0, BOXES_SIDE / max(image.size))
    picture = image if scale == 1.0 else image.resize(
        (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.LANCZOS)
    # Boxes are in the file's pixels; a huge JPEG was decoded smaller (images.DECODE_SCALE).
    kept = Kept(path, pred, picture, scale / image.info.get(DECODE_SCALE, 1))
    return (*render(kept), kept)


def render(kept: Kept, threshold: float | None = None) -> tuple:
    """PAGE_OUTPUTS for a kept result, judged at `threshold` (None: the one it was analysed with)."""
    pred = kept.prediction if threshold is None else replace(kept.prediction, threshold=threshold)
    hidden = gr.update(value=None, visible=False)
    if not pred.face_found:
        return (label_value(pred), verdict_scale(pred), summary_markdown(pred), hidden, hidden, hidden,
                *provenance_outputs(pred))
    worst = _most_fake(pred)
    face = pred.faces[worst]
    heat = hidden
    if face.heatmap is not None:
        heat = gr.update(value=heatmap_overlay(face.crop, face.heatmap), visible=True,
                         label=f"Heat map of face {worst + 1}, the one that decides the verdict")
    boxed = any(face.box is not None for face in pred.faces)  # no boxes without a detector (--detector none)
    boxes = gr.update(value=numbered_faces(kept, pred), visible=True) if boxed else hidden
    gallery = gr.update(value=face_gallery(pred), visible=len(pred.faces) > 1)
    return (label_value(pred), verdict_scale(pred), summary_markdown(pred), heat, boxes, gallery,
            *provenance_outputs(pred))


def _cleared(message: str) -> tuple:
    hidden = gr.update(value=None, visible=False)
    return None, "", message, hidden, hidden, hidden, "", None


def _failure(message: str) -> tuple:
    gr.Warning(message)
    return _cleared(f"**Could not analyse this image.** {message}")


def predict_label(predictor: Predictor, path: str | None, threshold, gate: ModelGate | None = None) -> dict:
    """The /predict API: only the label (label_value), headed like the page.

    In the event, the upload is deleted after its last use (see guard.guard_file_inputs): an API call, unlike
    the page, never comes back for the same file. (/analyse keeps it; Gradio's delete_cache sweeps it later.)
    """
    if not path:
        raise gr.Error("No image was given.")
    try:
        _, pred = classify_upload(predictor, path, threshold, heatmap=False, gate=gate)
    except FakefaceError as exc:
        raise gr.Error(str(exc)) from None
    except Exception:
        log.exception("prediction failed")
        raise gr.Error("Something went wrong while analysing this image; it has been logged.") from None
    return label_value(pred)


def summary_markdown(pred: Prediction) -> str:
    """The headline in words: what decided it (the file's Content Credentials, or the score against the
    threshold and band), and the faces."""
    judged = pred.judged
    p, t, band = pred.fake_prob, pred.threshold, pred.uncertain_band
    if judged.decided_by == "content credentials":
        score = (f"The model's own fake probability, {p:.2f} (threshold {t:.2f}), is shown but does not overrule "
                 "a signed declaration." if pred.face_found else "No face was found for the model to score.")
        return f"**{pred.verdict}: the file's Content Credentials decide.** {judged.reason} {score}"
    if not pred.face_found:
        return (f"**No verdict.** {NO_FACE_MESSAGE}\n\nFor what it is worth, {pred.fake_prob:.2f} is "
                f"{WHOLE_IMAGE_NOTE}.")
    if judged.reason:  # the file's unsigned metadata made a sure answer uncertain
        lines = [f"**Uncertain (leans {pred.verdict}).** Fake probability {p:.2f} (threshold {t:.2f}). "
                 f"{judged.reason}"]
    elif pred.uncertain:
        lines = [f"**Uncertain (leans {pred.verdict}).** Fake probability {p:.2f} is within ±{band:.2f} of the "
                 f"threshold {t:.2f}: the model cannot tell reliably."]
    else:
        side = "at or above" if pred.verdict == FAKE else "below"
        lines = [f"**{pred.verdict}.** Fake probability {p:.2f} is {side} the threshold {t:.2f}, outside the "
                 f"uncertain band (±{band:.2f})."]
    if pred.kind:
        lines.append(f"Most like a **{pred.kind['most_like']}** fake ({pred.kind['probability']:.0%}): which of the "
                     "kinds the model was trained on (composite, face swap, GAN, diffusion) this face resembles "
                     "most, not proof of how it was made.")
    if len(pred.faces) > 1:
        lines.append(f"{len(pred.faces)} faces found, numbered left to right. The image's verdict follows face "
                     f"{_most_fake(pred) + 1}, the one most likely to be fake; each face's verdict is in the "
                     "gallery.")
    return "\n\n".join(lines)


def _most_fake(pred: Prediction) -> int:
    return max(range(len(pred.faces)), key=lambda i: pred.faces[i].fake_prob)


def face_gallery(pred: Prediction) -> list[tuple]:
    """(crop, caption) per face, left to right, judged with the image's threshold and uncertain band."""
    return [(face.crop, f"Face {i}: {pred.face_verdict(face).headline} · fake {face.fake_prob:.2f}")
            for i, face in enumerate(pred.faces, start=1)]


# Headline colours: the page's verdict scale and the face boxes use the same ones.
HEADLINE_COLOURS = {REAL: "#1a7f37", UNCERTAIN: "#b7791f", FAKE: "#c62828", NO_FACE: "#5f6368"}


def numbered_faces(kept: Kept, pred: Prediction) -> Image.Image:
    """The input picture with each face boxed and numbered as in the gallery (left to right), in its verdict's
    colour."""
    picture = kept.picture.copy()
    draw = ImageDraw.Draw(picture)
    width = max(2, round(max(picture.size) / 240))
    font = ImageFont.load_default(size=max(12, round(max(picture.size) / 30)))
    for number, face in enumerate(pred.faces, start=1):
        if face.box is None:
            continue
        colour = HEADLINE_COLOURS[pred.face_verdict(face).headline]
        x0, y0, x1, y1 = (round(v * kept.scale) for v in face.box)
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=width)
        left, top, right, bottom = draw.textbbox((x0, y0), str(number), font=font)
        tag = (x0, max(0, y0 - (bottom - top) - 2 * width), x0 + (right - left) + 2 * width, max(bottom - top + 2 * width, y0))
        draw.rectangle(tag, fill=colour)
        draw.text((tag[0] + width, tag[1] + width - (top - y0)), str(number), fill="white", font=font)
    return picture


def verdict_scale(pred: Prediction) -> str:
    """The page's headline and one probability scale from 0 (real) to 1 (fake), with the threshold and the
    uncertain band marked, so the verdict and the numbers behind it read together and cannot disagree."""
    colour = HEADLINE_COLOURS[pred.headline]
    by_credentials = pred.judged.decided_by == "content credentials"
    decided = ('<div class="ff-line">Decided by the file\'s signed Content Credentials (see Provenance), not by '
               "the model's score.</div>") if by_credentials else ""
    if not pred.face_found:
        if by_credentials:
            return (f'<div class="ff-verdict"><div class="ff-headline" style="color:{colour}">{pred.headline}'
                    f'</div>{decided}<div class="ff-line">No face found for the model to score.</div></div>')
        return (f'<div class="ff-verdict"><div class="ff-headline" style="color:{colour}">NO FACE FOUND</div>'
                '<div class="ff-line">No verdict: the model judges faces only.</div></div>')
    t, band, p = pred.threshold, pred.uncertain_band, pred.fake_prob
    low, high = max(0.0, t - band), min(1.0, t + band)
    lean = f" (leans {pred.verdict})" if pred.uncertain else ""
    return (
        f'<div class="ff-verdict"><div class="ff-headline" style="color:{colour}">{pred.headline}{lean}</div>'
        f'{decided}<div class="ff-line">Fake probability <b>{p:.2f}</b> · threshold {t:.2f} · uncertain from {low:.2f} '
        f'to {high:.2f}</div>'
        '<div class="ff-scale">'
        f'<div class="ff-band" style="left:{low:.1%};width:{high - low:.1%}" title="uncertain band"></div>'
        f'<div class="ff-threshold" style="left:{t:.1%}" title="threshold {t:.2f}"></div>'
        f'<div class="ff-marker" style="left:{p:.1%};background:{colour}" title="fake probability {p:.2f}"></div>'
        '</div><div class="ff-ends"><span>0 · REAL</span><span>threshold and uncertain band</span>'
        '<span>FAKE · 1</span></div></div>')


# Scoped to the verdict component (gr.HTML's css_template).
VERDICT_CSS = """
.ff-headline { font-size: 2rem; font-weight: 700; line-height: 1.2; }
.ff-line { margin: 0.25rem 0 0.6rem; }
.ff-scale { position: relative; height: 14px; border-radius: 7px;
            background: linear-gradient(to right, #1a7f37, #e0e0e0 50%, #c62828); }
.ff-band { position: absolute; top: -3px; bottom: -3px; background: rgba(183, 121, 31, 0.45);
           border: 1px dashed #b7791f; }
.ff-threshold { position: absolute; top: -6px; bottom: -6px; width: 3px; margin-left: -1px; background: #202124; }
.ff-marker { position: absolute; top: -5px; width: 24px; height: 24px; margin-left: -12px; border-radius: 50%;
             border: 3px solid white; box-shadow: 0 0 0 1px #202124; }
.ff-ends { display: flex; justify-content: space-between; font-size: 0.8rem; margin-top: 0.5rem; opacity: 0.8; }
"""


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
    """Counts by the rows' verdict column (Prediction.headline, or "error")."""
    counts = {}
    for row in rows:
        counts[row["verdict"]] = counts.get(row["verdict"], 0) + 1
    parts = [f"{counts[k]} {k}" for k in (FAKE, REAL, UNCERTAIN, NO_FACE, "error") if counts.get(k)]
    return f"Analysed {len(rows)} file(s): " + ", ".join(parts) + "."


# ------------------------------------------------------------------------------------------------- texts


ABOUT = (
    "Upload a photo with a face. The answer is REAL, FAKE or UNCERTAIN (too close to call), from the model's "
    "calibrated probability that the face was edited or generated; with no face in the picture there is no "
    "verdict. It is evidence, not proof: expect mistakes on kinds of images the model was not trained on (see "
    "the model card)."
)
HEATMAP_NOTE = (
    "Where in the face crop the model found the evidence for its score: red areas pushed the score towards "
    "FAKE, blue areas towards REAL. It is the model's view, not proof, and not an outline of edited regions: "
    "the model was taught whether a face is edited or generated, never where."
)
_FAMILY_WORDS = {"features": "a small classifier on the features of CLIP, a large pretrained image model",
                 "pixels": "a convolutional network trained on face crops"}
_DETECTOR_WORDS = {"blazeface": "Google's BlazeFace", "mtcnn": "MTCNN", "haar": "OpenCV's Haar cascade"}


def model_description(predictor: Predictor) -> str:
    """The model in plain words, for the page's first lines (details: model_details)."""
    m, source = predictor.model, predictor.source
    if source is None:
        where = "a model loaded in memory"
    elif source.kind == "bundled":
        where = "the model that comes with fakeface"
    elif source.kind == "hub":
        where = f"the model {source.location} from the Hugging Face Hub"
    else:
        where = "a model from a local folder"
    return (f"**Model:** {where}, {_FAMILY_WORDS.get(m.family, m.family)}. It calls a face FAKE from a fake "
            f"probability of {predictor.threshold:.2f}, and UNCERTAIN within ±{m.uncertain_band:.2f} of that.")


def model_details(predictor: Predictor) -> str:
    """Everything that pins the model down, behind a click on the page."""
    m = predictor.model
    source = predictor.source.describe() if predictor.source else "in-memory model"
    detector = predictor.detector.backend if predictor.detector else "none (each image is read as one face crop)"
    return (f"- Model: `{source}`\n- Architecture: `{m.arch}`\n- Default threshold: {predictor.threshold:.2f}, "
            f"uncertain band ±{m.uncertain_band:.2f}\n- Face detector: "
            f"{_DETECTOR_WORDS.get(detector, detector)} (`{detector}`)")


# -------------------------------------------------------------------------------------------- provenance

PROVENANCE_NOTE = (
    "Read from the file as uploaded, not from the pixels. Valid signed Content Credentials that declare AI "
    "generation decide the verdict; unsigned metadata is a hint (anyone can write it); most platforms strip "
    "metadata on upload, so its absence says nothing.")
_MARKDOWN_SPECIALS = re.compile(r"([\\`*_\[\]<>|~])")  # what formats text inside a line


def provenance_outputs(pred: Prediction) -> tuple[str, dict | None]:
    """The page's Provenance panel and the provenance object (PAGE_OUTPUTS' last two)."""
    return provenance_markdown(pred.provenance), pred.provenance.as_dict() if pred.provenance else None


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
