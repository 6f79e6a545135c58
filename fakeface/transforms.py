"""Image transforms (torchvision v2), in one place: training, evaluation and serving all come here."""

from __future__ import annotations

import io
import random

import torch
from PIL import Image, ImageFilter
from torchvision.transforms import v2


class RandomJpeg:
    """Re-encode as JPEG at a random quality: uploads arrive re-compressed, and the training set's own
    JPEG tables must not become a shortcut."""

    def __init__(self, quality=(50, 95), p=0.5):
        self.quality, self.p = quality, p

    def __call__(self, img: Image.Image) -> Image.Image:
        if random.random() >= self.p:
            return img
        buf = io.BytesIO()
        img.convert("RGB").save(buf, "JPEG", quality=random.randint(*self.quality))
        buf.seek(0)
        return Image.open(buf).convert("RGB")


class RandomRescale:
    """Down-scale then up-scale back (a re-sized upload keeps its size but loses detail)."""

    def __init__(self, scale=(0.5, 0.9), p=0.3):
        self.scale, self.p = scale, p

    def __call__(self, img: Image.Image) -> Image.Image:
        if random.random() >= self.p:
            return img
        s = random.uniform(*self.scale)
        w, h = img.size
        small = img.resize((max(1, int(w * s)), max(1, int(h * s))), Image.BILINEAR)
        return small.resize((w, h), Image.BILINEAR)


class RandomBlur:
    def __init__(self, radius=(0.1, 1.0), p=0.2):
        self.radius, self.p = radius, p

    def __call__(self, img: Image.Image) -> Image.Image:
        if random.random() >= self.p:
            return img
        return img.filter(ImageFilter.GaussianBlur(random.uniform(*self.radius)))


def robustness_augmentation() -> list:
    """PIL-level degradations that real uploads carry; switch on with `robust=True`."""
    return [RandomJpeg(), RandomRescale(), RandomBlur()]


def _to_tensor(mean, std) -> list:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]


def train_transform(size: int, mean, std, robust: bool = False) -> v2.Compose:
    """The seed's augmentation: Resize 256 (scaled with size), RandomResizedCrop 0.8-1, flip, ColorJitter."""
    resize = round(size * 256 / 224)
    steps = robustness_augmentation() if robust else []
    return v2.Compose(steps + [
        v2.Resize((resize, resize), antialias=True),
        v2.RandomResizedCrop(size, scale=(0.8, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.ColorJitter(0.2, 0.2, 0.1, 0.1),
    ] + _to_tensor(mean, std))


def eval_transform(size: int, mean, std) -> v2.Compose:
    """What serving uses: resize the (face-cropped) image to the model's square input."""
    return v2.Compose([v2.Resize((size, size), antialias=True)] + _to_tensor(mean, std))


def degrade(image: Image.Image, spec: str, key: str = "") -> Image.Image:
    """A named, deterministic degradation of a whole decoded image, as an upload might suffer:
    "jpeg:75" re-encodes at quality 75; "jpeg:random" at a quality in 60-95 fixed by `key` (e.g. the image's
    hash), so cached features stay valid; "resize:0.5" keeps a half-size copy."""
    kind, _, arg = spec.partition(":")
    if kind == "jpeg":
        quality = 60 + int(key[:8] or "0", 16) % 36 if arg == "random" else int(arg)
        buf = io.BytesIO()
        image.convert("RGB").save(buf, "JPEG", quality=quality)
        buf.seek(0)
        return Image.open(buf).convert("RGB")
    if kind == "resize":
        s = float(arg)
        return image.resize((max(1, round(image.width * s)), max(1, round(image.height * s))), Image.BICUBIC)
    raise ValueError(f"unknown degradation {spec!r}: use jpeg:Q, jpeg:random or resize:S")
