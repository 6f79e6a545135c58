"""Find faces and crop them with the framing the model was trained on.

The training photos (ciplab) are already square, face-centred crops. Training, evaluation and serving all call
`crop_face` (usually through `face_crops`), so a ciplab photo comes back (almost always) as itself, while a face
in a wider photo gets the same framing: a square `MARGIN` times the face box, a little above the box centre.

Detectors: BlazeFace short range (fakeface/blazeface.py, ~1.5 ms) answers for portraits and face crops, where
the face fills the frame; everything else goes to MTCNN (facenet-pytorch, installed --no-deps, so not on a Space)
or, without it, OpenCV's Haar cascade. Boxes follow MTCNN's convention (brow-to-chin, narrower than tall);
BlazeFace and Haar boxes are rescaled to match it, so one margin serves every backend. Images should already be
upright (EXIF-transposed); `images.load_image` does that.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
import os
import sys
import threading
import types
from contextlib import contextmanager
from dataclasses import astuple, dataclass
from typing import Iterator

import numpy as np
from PIL import Image

from .errors import FakefaceError

log = logging.getLogger(__name__)

# Measured on 198 ciplab photos (99 real + 99 fake with an MTCNN face, of 100 + 100 sampled with seed 0):
# median(image side / max(MTCNN box w, h)) = 1.332 (5th-95th percentile 1.02-1.60).
MARGIN = 1.33
# Same photos: the image centre sits above the MTCNN box centre by a median 0.094 face sizes (the box stops at
# the chin but the photos keep some hair), so the crop centre is moved up by this many face sizes.
CENTRE_SHIFT_Y = -0.09
# A crop at least this share of the shorter image side is taken as "the face fills the frame": the crop grows to
# the whole shorter side, so ciplab photos stay whole (their side/face ratio varies from 1.0 to 1.6).
FILL_FRAME = 0.8
MAX_FACES = 8
DETECT_MAX_SIDE = 640  # detectors run on a copy this size at most: boxes at 640 px are precise enough to crop
MIN_FACE_SIZE = 32  # pixels in the original image; smaller faces carry too little detail to judge
# Faces under this share of the largest face's size are dropped: in close-ups they are spurious (MTCNN found a
# 40 px "face" in the hair of one ciplab fake), in photos they are distant people too small to judge.
MIN_RELATIVE_SIZE = 0.2
# Same ciplab photos, both detectors finding the face: median MTCNN size / Haar size = 1.115; the centres agree
# to within 1-2% of the face size, so only the size is corrected.
HAAR_TO_MTCNN_SCALE = 1.115
# BlazeFace boxes are tighter and sit lower than MTCNN's: fitted on 99 ciplab photos (outside the comparison
# sample of scripts/experiments/detector_levers.py --part blazeface), MTCNN's box = BlazeFace's scaled by 1.251
# about a centre 0.110 face sizes higher (the horizontal offset, -0.007, is left out as noise).
BLAZE_TO_MTCNN_SCALE = 1.251
BLAZE_CENTRE_SHIFT_Y = -0.110
HAAR_CASCADE = "haarcascade_frontalface_default.xml"  # found 86% of ciplab faces; alt2 found 78%
HAAR_MIN_NEIGHBORS = 5
DEFAULT_MIN_SCORE = {"blazeface": 0.5, "mtcnn": 0.9, "haar": 0.5}  # haar 0.5 = exactly HAAR_MIN_NEIGHBORS hits
BACKENDS = ("auto", "blazeface", "mtcnn", "haar", "none")
# PyTorch intra-op threads while MTCNN runs. MTCNN is many small convolutions, and idle OpenMP workers spin:
# with the backbone busy in another thread on a 2-core box, detection took 119 ms p50 with 1 thread and 2.0 s with
# 2 (benchmarks/bench_model.py, "detector" rows); alone on a quiet box 2 threads are faster (49 vs 78 ms), and in
# the served app the two were within run-to-run noise. 1 keeps the worst case bounded. The crops do not depend on
# it: on examples/ and 60 ciplab photos every crop region was the same with 1 and 2 threads (boxes within 6e-5 px,
# float summation order). $FAKEFACE_DETECTOR_THREADS overrides it; 0 leaves torch's setting alone (as does None).
_THREADS_ENV = os.environ.get("FAKEFACE_DETECTOR_THREADS", "").strip()
DETECT_TORCH_THREADS = (int(_THREADS_ENV) or None) if _THREADS_ENV.isdigit() else 1


@dataclass(frozen=True)
class FaceBox:
    """A face box in image pixels (may reach a little past the image edges) and the detector's confidence.

    MTCNN scores are probabilities; Haar scores are n / (n + HAAR_MIN_NEIGHBORS) for n merged detections.
    Iterates and indexes like the tuple (x0, y0, x1, y1, score).
    """

    x0: float
    y0: float
    x1: float
    y1: float
    score: float = 1.0

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def size(self) -> float:
        """The side the crop is scaled from: the longer of width and height."""
        return max(self.width, self.height)

    @property
    def centre(self) -> tuple[float, float]:
        return (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2

    def __iter__(self) -> Iterator[float]:
        return iter(astuple(self))

    def __getitem__(self, index):
        return astuple(self)[index]


@dataclass
class FaceCrop:
    """One crop to classify. `box` is None and `found` False when no face was found and `image` is the whole image."""

    image: Image.Image
    box: FaceBox | None
    found: bool


# ------------------------------------------------------------------------------------------------------ crops


def fills_frame(image_size: tuple[int, int], box: FaceBox, margin: float = MARGIN,
                fill_frame: float = FILL_FRAME) -> bool:
    """True when the face's crop would be at least `fill_frame` of the shorter side: the crop is then the
    largest square the image holds (a portrait or a face crop, like the training photos)."""
    return max(1, round(margin * box.size)) >= fill_frame * min(image_size)


def crop_region(image_size: tuple[int, int], box: FaceBox, margin: float = MARGIN,
                fill_frame: float | None = FILL_FRAME) -> tuple[int, int, int, int]:
    """The crop square (x0, y0, x1, y1) for `box` in an image of `image_size` (width, height)."""
    width, height = image_size
    cx, cy = box.centre
    cy += CENTRE_SHIFT_Y * box.size
    side = max(1, round(margin * box.size))
    shorter = min(width, height)
    if fill_frame is not None and fills_frame(image_size, box, margin, fill_frame):
        side = shorter  # the face fills the frame: keep as much of the photo as a square allows
    x0 = _shift_inside(round(cx - side / 2), side, width)
    y0 = _shift_inside(round(cy - side / 2), side, height)
    return x0, y0, x0 + side, y0 + side


def _shift_inside(start: int, side: int, limit: int) -> int:
    """Move a span [start, start + side) inside [0, limit) when it fits; otherwise leave it centred (to pad)."""
    if side <= limit:
        return min(max(start, 0), limit - side)
    return start


def crop_face(image: Image.Image, box: FaceBox, margin: float = MARGIN, output_size: int | None = None,
              fill_frame: float | None = FILL_FRAME) -> Image.Image:
    """The one crop function: a square of side `margin` x face size around the face, resized if asked.

    The square is moved inside the image where it fits. Padding (edge-replicated) is only needed when it cannot
    fit, which `fill_frame` prevents; pass fill_frame=None to always keep the measured framing.
    """
    image = _as_rgb(image)
    region = crop_region(image.size, box, margin, fill_frame)
    crop = _crop_padded(image, region)
    if output_size is not None and crop.size != (output_size, output_size):
        crop = crop.resize((output_size, output_size), Image.Resampling.BICUBIC)
    return crop


def _crop_padded(image: Image.Image, region: tuple[int, int, int, int]) -> Image.Image:
    """Crop `region`, replicating edge pixels where it leaves the image.

    Edge replication, not reflection: a mirror would copy eyes, ears or hair into the border, i.e. invent face
    parts and symmetric seams, the very kind of thing a composite detector looks for. Replicated edges add
    smooth streaks with no new structure.
    """
    x0, y0, x1, y1 = region
    width, height = image.size
    if x0 >= 0 and y0 >= 0 and x1 <= width and y1 <= height:
        return image.crop(region)
    # Clamped indices replicate the nearest edge pixel, also for a square lying wholly outside the image.
    cols = np.clip(np.arange(x0, x1), 0, width - 1)
    rows = np.clip(np.arange(y0, y1), 0, height - 1)
    return Image.fromarray(np.asarray(image)[rows[:, None], cols[None, :]])


def _as_rgb(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGB" else image.convert("RGB")


def face_crops(image: Image.Image, detector: "FaceDetector | None", max_faces: int = MAX_FACES,
               margin: float = MARGIN) -> list[FaceCrop]:
    """One crop per face found (largest first, at most `max_faces`), or the whole image when none is found.

    The one way from a decoded image to what a model reads, in training (largest face), evaluation and serving
    (every face; the image follows its most-fake face)."""
    image = _as_rgb(image)
    boxes = detector.detect(image)[:max_faces] if detector is not None else []
    if not boxes:
        return [FaceCrop(image=image, box=None, found=False)]
    return [FaceCrop(image=crop_face(image, box, margin), box=box, found=True) for box in boxes]


def crop_settings(detector: "FaceDetector | None") -> dict:
    """Every constant and setting that decides which pixels a face crop holds (keys the feature cache)."""
    settings = {"margin": MARGIN, "centre_shift_y": CENTRE_SHIFT_Y, "fill_frame": FILL_FRAME,
                "min_relative_size": MIN_RELATIVE_SIZE, "haar_scale": HAAR_TO_MTCNN_SCALE,
                "blaze_scale": BLAZE_TO_MTCNN_SCALE, "blaze_shift_y": BLAZE_CENTRE_SHIFT_Y}
    if detector is None or not detector.available:
        return {**settings, "detector": "none"}
    return {**settings, "detector": detector.backend, "fallback": detector.fallback or "none",
            "min_score": detector.min_score, "min_face_size": detector.min_face_size, "max_side": detector.max_side}


def detector_for(settings: dict | None, backend: str = "auto") -> "FaceDetector | None":
    """A detector that crops the way a model's training did, from its config's `crop` (crop_settings at training
    time): the same detection size, smallest face and, on the same backend, minimum score. None for backend
    "none". A mismatch this code cannot undo (other framing constants, another backend) is logged once."""
    if backend == "none":
        return None
    settings = settings or {}
    trained = settings.get("detector")
    kwargs = {k: settings[k] for k in ("min_face_size", "max_side") if k in settings}
    probe = FaceDetector(backend=backend, **kwargs)
    if trained and trained == probe.backend and "min_score" in settings:
        probe.min_score = float(settings["min_score"])
    now = crop_settings(probe)
    differs = sorted(k for k in settings if k in now and settings[k] != now[k])
    if differs:
        log.warning("Faces are cropped unlike this model's training (%s): expect somewhat different scores.",
                    ", ".join(f"{k} {settings[k]} -> {now[k]}" for k in differs))
    return probe


# -------------------------------------------------------------------------------------------------- detection


def _load_facenet_module():
    """facenet_pytorch's MTCNN module, or None.

    facenet-pytorch is installed with --no-deps (its pins clash with ours), and its package __init__ also imports
    InceptionResnetV1, which needs `requests`. MTCNN itself needs only torch and torchvision, so when the normal
    import fails we load just the MTCNN module, under a private package name so `facenet_pytorch` stays
    untouched for anyone else.
    """
    try:
        return importlib.import_module("facenet_pytorch.models.mtcnn")
    except Exception as err:  # noqa: BLE001 - any failure (missing dep, version clash) means "not usable"
        first_error = err
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    alias = "_fakeface_facenet_pytorch"
    if alias not in sys.modules:
        package = types.ModuleType(alias)
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules[alias] = package
    try:
        return importlib.import_module(alias + ".models.mtcnn")
    except Exception as err:  # noqa: BLE001
        log.info("MTCNN unavailable (%s; then %s)", first_error, err)
        return None


@functools.cache
def _mtcnn_class():
    module = _load_facenet_module()
    return getattr(module, "MTCNN", None)


@functools.cache
def _haar_path() -> str | None:
    try:
        import cv2
    except Exception:  # noqa: BLE001
        return None
    path = os.path.join(cv2.data.haarcascades, HAAR_CASCADE)
    return None if cv2.CascadeClassifier(path).empty() else path


def available_backends() -> list[str]:
    """The concrete backends usable here, best first."""
    from . import blazeface

    found = (("blazeface", blazeface.available()), ("mtcnn", _mtcnn_class() is not None),
             ("haar", _haar_path() is not None))
    return [name for name, ok in found if ok]


def _resolve_backend(backend: str) -> tuple[str, str]:
    """(backend actually used, a sentence saying why, or "" when it is what was asked)."""
    if backend not in BACKENDS:
        raise FakefaceError(f"Unknown face detector {backend!r}: choose one of {', '.join(BACKENDS)}.")
    usable = available_backends()
    if backend == "auto":
        if usable:
            note = "" if usable[0] != "haar" else "Neither ai-edge-litert nor facenet-pytorch is importable: " \
                                                 "using OpenCV's Haar cascade."
            return usable[0], note
        return "none", ("No face detector is available (install facenet-pytorch or opencv-python-headless): "
                        "whole images are classified.")
    if backend == "none":
        return "none", "Face detection is off: whole images are classified."
    if backend not in usable:
        hint = {"blazeface": "pip install ai-edge-litert", "mtcnn": "pip install --no-deps facenet-pytorch",
                "haar": "pip install opencv-python-headless"}[backend]
        raise FakefaceError(f"The {backend!r} face detector is not available here; install it ({hint}) "
                            "or use backend='auto'.")
    return backend, ""


def _downscaled(image: Image.Image, max_side: int) -> tuple[Image.Image, float]:
    """A copy whose longer side is at most `max_side`, and the scale from original to copy."""
    longer = max(image.size)
    if longer <= max_side:
        return image, 1.0
    scale = max_side / longer
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0), scale


def _drop_nested(boxes: list[FaceBox]) -> list[FaceBox]:
    """Drop boxes lying mostly inside a larger kept one: a face never contains another face (Haar often fires
    on an eye or mouth inside a close-up face). `boxes` must be sorted largest first."""
    kept: list[FaceBox] = []
    for box in boxes:
        area = max(box.width * box.height, 1e-9)
        if all(_intersection(box, k) / area <= 0.5 for k in kept):
            kept.append(box)
    return kept


def _intersection(a: FaceBox, b: FaceBox) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return max(w, 0.0) * max(h, 0.0)


class FaceDetector:
    """Finds faces in RGB PIL images; one instance can be shared by server threads.

    backend: "mtcnn" (facenet-pytorch, CPU), "haar" (OpenCV cascade), "auto" (mtcnn, else haar, else none) or
    "none". The model loads on first use. Detection runs on a copy at most `max_side` pixels long.
    """

    def __init__(self, backend: str = "auto", min_score: float | None = None, min_face_size: int = MIN_FACE_SIZE,
                 max_side: int = DETECT_MAX_SIDE, torch_threads: int | None = DETECT_TORCH_THREADS):
        self._backend, self._note = _resolve_backend(backend)
        # BlazeFace short range only sees faces that fill a good part of the frame: for every other image the next
        # detector installed looks (see detect).
        rest = [b for b in available_backends() if b != "blazeface"]
        self.fallback = rest[0] if self._backend == "blazeface" and rest else None
        self.torch_threads = torch_threads  # MTCNN only; not a crop setting (the boxes do not depend on it)
        self.min_score = DEFAULT_MIN_SCORE.get(self._backend, 0.0) if min_score is None else float(min_score)
        self.min_face_size = int(min_face_size)
        self.max_side = int(max_side)
        self._models = {}  # backend -> its loaded model
        self._lock = threading.Lock()  # none of the detectors is documented thread-safe: one call at a time
        if backend == "auto" and self._note:
            log.warning(self._note)

    @property
    def backend(self) -> str:
        """The backend in use: "blazeface", "mtcnn", "haar" or "none" (see also `fallback`)."""
        return self._backend

    @property
    def available(self) -> bool:
        """False when no detector runs (backend "none"): every image is then treated as having no face."""
        return self._backend != "none"

    @property
    def note(self) -> str:
        """Why the backend differs from the one asked for (or that detection is off); empty otherwise."""
        return self._note

    def detect(self, image: Image.Image) -> list[FaceBox]:
        """Faces in `image`, largest first: at least `min_face_size` pixels, `min_score` confident and a fifth of
        the largest face's size; boxes inside a larger face are dropped.

        BlazeFace (short range) answers for portraits and face crops, where its largest face fills the frame; the
        crop is then the largest square the image holds whichever detector found the face. Anything else (no
        face, or a face too small to fill the frame: group photos, wide shots) goes to the fallback detector,
        which finds smaller faces."""
        if not self.available:
            return []
        image = _as_rgb(image)
        boxes = self._detect_with(self._backend, self.min_score, image)
        if self.fallback and not (boxes and fills_frame(image.size, boxes[0])):
            boxes = self._detect_with(self.fallback, DEFAULT_MIN_SCORE[self.fallback], image)
        return boxes

    def _detect_with(self, backend: str, min_score: float, image: Image.Image) -> list[FaceBox]:
        small, scale = _downscaled(image, self.max_side)
        # Smallest face searched for in the downscaled copy: MTCNN's own default, 20 px (5% of a 640 px photo;
        # P-Net's 12 px cell would take ~1.5x as long, 32 px ~0.55x), and the cascade's 24 px training window.
        min_size = max(24 if backend == "haar" else 20, round(self.min_face_size * scale))
        if min(small.size) < min_size:
            return []  # too small to hold a face (and MTCNN's image pyramid would be empty)
        run = {"blazeface": self._run_blazeface, "mtcnn": self._run_mtcnn, "haar": self._run_haar}[backend]
        with self._lock:
            raw = run(small, min_size)
        to_mtcnn = {"haar": _haar_to_mtcnn, "blazeface": _blaze_to_mtcnn}.get(backend, lambda box: box)
        boxes = [to_mtcnn(FaceBox(*(float(v) / scale for v in b[:4]), float(b[4]))) for b in raw]
        boxes = [b for b in boxes if b.score >= min_score and b.size >= self.min_face_size]
        boxes = _drop_nested(sorted(boxes, key=lambda b: b.width * b.height, reverse=True))
        return [b for b in boxes if b.size >= MIN_RELATIVE_SIZE * boxes[0].size]

    def _model(self, backend: str, build):
        if backend not in self._models:
            self._models[backend] = build()
        return self._models[backend]

    def _run_blazeface(self, image: Image.Image, min_size: int) -> list[tuple[float, ...]]:
        from .blazeface import BlazeFaceShortRange

        return self._model("blazeface", BlazeFaceShortRange).detect(image, min_score=self.min_score)

    def _run_mtcnn(self, image: Image.Image, min_size: int) -> list[tuple[float, ...]]:
        model = self._model("mtcnn", lambda: _mtcnn_class()(keep_all=True, device="cpu"))
        model.min_face_size = min_size  # read on every call; safe under the lock
        with _torch_threads(self.torch_threads):
            boxes, probs = model.detect(image)
        if boxes is None:
            return []
        return [(*box, prob) for box, prob in zip(boxes, probs)]

    def _run_haar(self, image: Image.Image, min_size: int) -> list[tuple[float, ...]]:
        import cv2

        cascade = self._model("haar", lambda: cv2.CascadeClassifier(_haar_path()))
        gray = cv2.equalizeHist(cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2GRAY))
        rects, hits = cascade.detectMultiScale2(gray, scaleFactor=1.1, minNeighbors=HAAR_MIN_NEIGHBORS,
                                                    minSize=(min_size, min_size))
        return [(x, y, x + w, y + h, n / (n + HAAR_MIN_NEIGHBORS)) for (x, y, w, h), n in zip(rects, hits)]


@contextmanager
def _torch_threads(n: int | None):
    """PyTorch's intra-op thread count set to n for the block (in the calling thread), then restored."""
    import torch

    before = torch.get_num_threads()
    if not n or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _haar_to_mtcnn(box: FaceBox) -> FaceBox:
    """Rescale a Haar box about its centre to the size MTCNN gives the same face (measured on ciplab)."""
    cx, cy = box.centre
    half = box.size * HAAR_TO_MTCNN_SCALE / 2
    return FaceBox(cx - half, cy - half, cx + half, cy + half, box.score)


def _blaze_to_mtcnn(box: FaceBox) -> FaceBox:
    """Rescale and raise a BlazeFace box to the box MTCNN gives the same face (measured on ciplab)."""
    cx, cy = box.centre
    cy += BLAZE_CENTRE_SHIFT_Y * box.size
    half = box.size * BLAZE_TO_MTCNN_SCALE / 2
    return FaceBox(cx - half, cy - half, cx + half, cy + half, box.score)
