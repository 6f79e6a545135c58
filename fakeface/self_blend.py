"""Self-blended pseudo-fakes: a real face blended with a jittered copy of itself through a soft face mask.

After Shiohara & Yamasaki, "Detecting Deepfakes with Self-Blended Images" (CVPR 2022), written here from the
paper's description: the copy differs from the original only by colour, a small rescale and shift, and
sharpness, so the one thing that marks the result as fake is the blending boundary and the statistics mismatch
inside it, the traces every face swap and composite leaves. The copy is seeded by a key (the image's hash), so
the pseudo-fake of a given photo is always the same image and its features can be cached.
"""

from __future__ import annotations

import random

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from .faces import FaceBox


def self_blend(image: Image.Image, box: FaceBox | None, key: str) -> Image.Image:
    """The pseudo-fake of `image`, blended over `box` (the face; None: an ellipse over the image centre)."""
    rng = random.Random(key)
    image = image.convert("RGB")
    w, h = image.size
    if box is None:  # face-filling photos: the face is the middle of the frame
        box = FaceBox(0.2 * w, 0.15 * h, 0.8 * w, 0.9 * h, 1.0)
    source, valid = _jittered_copy(image, box, rng)
    mask = _soft_face_mask(image.size, box, rng) * valid  # never blend in the copy's empty borders
    out = np.asarray(image, np.float32) * (1 - mask) + np.asarray(source, np.float32) * mask
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))


def _jittered_copy(image: Image.Image, box: FaceBox, rng: random.Random) -> tuple[Image.Image, np.ndarray]:
    """Colour, contrast, sharpness and a small rescale + shift about the face centre; and where the shifted
    copy has pixels (h, w, 1)."""
    copy = ImageEnhance.Brightness(image).enhance(rng.uniform(0.9, 1.1))
    copy = ImageEnhance.Contrast(copy).enhance(rng.uniform(0.9, 1.1))
    copy = ImageEnhance.Color(copy).enhance(rng.uniform(0.85, 1.15))
    arr = np.asarray(copy, np.float32) * np.array([rng.uniform(0.95, 1.05) for _ in range(3)], np.float32)
    copy = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if rng.random() < 0.5:
        copy = copy.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    else:
        copy = copy.filter(ImageFilter.UnsharpMask(radius=2, percent=rng.randint(40, 120), threshold=2))
    scale = rng.uniform(0.95, 1.05)
    cx, cy = box.centre
    dx, dy = (rng.uniform(-0.03, 0.03) * box.size for _ in range(2))
    # affine map from output to input pixels: scale about the face centre, then shift
    inv = 1 / scale
    coeffs = (inv, 0, cx - inv * (cx + dx), 0, inv, cy - inv * (cy + dy))
    valid = Image.new("L", image.size, 255).transform(image.size, Image.AFFINE, coeffs, resample=Image.NEAREST)
    return (copy.transform(image.size, Image.AFFINE, coeffs, resample=Image.BILINEAR),
            (np.asarray(valid, np.float32) / 255)[..., None])


def _soft_face_mask(size: tuple[int, int], box: FaceBox, rng: random.Random) -> np.ndarray:
    """(h, w, 1) float mask in [0, 1]: an ellipse over the inner face, feathered, times a blend ratio."""
    w, h = size
    cx, cy = box.centre
    rx = box.width / 2 * rng.uniform(0.7, 1.0)
    ry = box.height / 2 * rng.uniform(0.75, 1.05)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    inside = (((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1).astype(np.uint8) * 255
    feather = max(1.0, rng.uniform(0.04, 0.12) * box.size)
    soft = np.asarray(Image.fromarray(inside).filter(ImageFilter.GaussianBlur(feather)), np.float32) / 255
    ratio = rng.choice([1.0, 1.0, rng.uniform(0.5, 1.0)])
    return (soft * ratio)[..., None]
