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
        return jpeg_reencode(img, random.randint(*self.quality))


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


# Shortcut control for every training source alike: sources differ in size (224 px video crops, 384 px
# portraits, 600 px composites) and compression, so each augmented copy is re-sized to a longer side drawn
# from one common range, sometimes blurred, and re-encoded at a random JPEG quality.
AUG_LONG_SIDE = (160, 512)
AUG_JPEG_QUALITY = (50, 95)
AUG_BLUR = (0.3, 1.2)
AUG_BLUR_P = 0.3


def jpeg_reencode(image: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, "JPEG", quality=int(quality))
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def common_range_copy(image: Image.Image, rng: random.Random) -> Image.Image:
    """One augmented copy: longer side in AUG_LONG_SIDE (down or up), mild blur sometimes, JPEG re-encode."""
    side = rng.randint(*AUG_LONG_SIDE)
    s = side / max(image.size)
    resample = rng.choice([Image.BILINEAR, Image.BICUBIC, Image.LANCZOS])
    image = image.resize((max(1, round(image.width * s)), max(1, round(image.height * s))), resample)
    if rng.random() < AUG_BLUR_P:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(*AUG_BLUR)))
    return jpeg_reencode(image, rng.randint(*AUG_JPEG_QUALITY))


# EXIF orientation tag -> the transpose that stores an upright image so that a viewer honouring the tag shows it
# upright again (the inverse of what the tag asks a viewer to do)
_STORED_FOR_ORIENTATION = {3: Image.ROTATE_180, 6: Image.ROTATE_90, 8: Image.ROTATE_270}


def exif_rotated_copy(image: Image.Image, orientation: int, quality: int = 95) -> bytes:
    """JPEG bytes of `image` stored sideways with the EXIF orientation tag that turns it upright again: how a
    phone delivers a photo taken in another orientation."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    image.convert("RGB").transpose(_STORED_FOR_ORIENTATION[orientation]).save(buf, "JPEG", quality=quality,
                                                                             exif=exif.tobytes())
    return buf.getvalue()


def degrade(image: Image.Image, spec: str, key: str = "") -> Image.Image:
    """A named, deterministic degradation of a whole decoded image, as an upload might suffer:
    "jpeg:75" re-encodes at quality 75; "jpeg:random" at a quality in 60-95 fixed by `key` (e.g. the image's
    hash), so cached features stay valid; "resize:0.5" keeps a half-size copy; "mirror" its mirror image;
    "exif:6" a copy stored sideways with EXIF orientation 6 (3, 8) and read back upright by the project's
    loader (JPEG q95); "aug:N" is the N-th `common_range_copy`, seeded by (key, N)."""
    kind, _, arg = spec.partition(":")
    if kind == "mirror":
        return image.transpose(Image.FLIP_LEFT_RIGHT)
    if kind == "exif":
        from .images import load_image  # the loader every upload goes through turns it upright

        return load_image(exif_rotated_copy(image, int(arg)))
    if kind == "jpeg":
        return jpeg_reencode(image, 60 + int(key[:8] or "0", 16) % 36 if arg == "random" else int(arg))
    if kind == "resize":
        s = float(arg)
        return image.resize((max(1, round(image.width * s)), max(1, round(image.height * s))), Image.BICUBIC)
    if kind == "aug":
        return common_range_copy(image.convert("RGB"), random.Random(f"{key}|{spec}"))
    raise ValueError(f"unknown degradation {spec!r}: use jpeg:Q, jpeg:random, resize:S, mirror, exif:N or aug:N")
