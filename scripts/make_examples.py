"""Regenerate examples/: two public-domain portraits and composites made from them.

    python scripts/make_examples.py [--out examples] [--backend mtcnn]

Sources (both public domain): scikit-image's `data.astronaut()` (Eileen Collins, NASA) and matplotlib's
`sample_data/grace_hopper.jpg` (US Navy photograph). scikit-image is needed only here: `pip install scikit-image`.
The composites imitate the training fakes: the eyes and mouth of one face, colour-matched and pasted through a
soft feathered mask onto the other. Output is deterministic for a given detector backend (MTCNN by default).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from fakeface.faces import FaceBox, FaceDetector  # noqa: E402

JPEG_QUALITY = 90
# Feature regions as fractions (left, top, right, bottom) of an MTCNN face box (brow to chin).
REGIONS = {"eyes": (0.06, 0.20, 0.94, 0.52), "mouth": (0.24, 0.64, 0.76, 0.92)}
FEATHER = 0.15  # blur radius of the mask edge, as a share of the region's shorter side
PAIR_HEIGHT = 300  # the two-face image: both photos at this height, side by side


def load_sources() -> dict[str, Image.Image]:
    import matplotlib.cbook
    from skimage import data

    hopper = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    return {"astronaut": Image.fromarray(data.astronaut()).convert("RGB"), "grace_hopper": hopper}


def largest_face(detector: FaceDetector, image: Image.Image, name: str) -> FaceBox:
    boxes = detector.detect(image)
    if not boxes:
        raise SystemExit(f"No face found in {name} with the {detector.backend!r} detector.")
    return boxes[0]


def region_rect(box: FaceBox, fractions: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
    """A feature region of the face box in whole pixels."""
    left, top, right, bottom = fractions
    return (round(box.x0 + left * box.width), round(box.y0 + top * box.height),
            round(box.x0 + right * box.width), round(box.y0 + bottom * box.height))


def match_colours(patch: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Give `patch` the per-channel mean and spread of `target`, as a retoucher would before blending."""
    src = patch.reshape(-1, 3)
    dst = target.reshape(-1, 3)
    scaled = (patch - src.mean(0)) / (src.std(0) + 1e-6) * dst.std(0) + dst.mean(0)
    return np.clip(scaled, 0, 255)


def feathered_mask(size: tuple[int, int]) -> Image.Image:
    """An ellipse filling `size`, its edge blurred so the paste has no visible seam."""
    width, height = size
    radius = FEATHER * min(width, height)
    inset = radius  # keep the blur inside the region so nothing outside it changes
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).ellipse((inset, inset, width - 1 - inset, height - 1 - inset), fill=255)
    return mask.filter(ImageFilter.GaussianBlur(radius / 2))


def paste_feature(target: Image.Image, target_box: FaceBox, donor: Image.Image, donor_box: FaceBox,
                  fractions: tuple[float, float, float, float]) -> None:
    """Paste the donor's feature region over the target's same region, in place."""
    dst_rect = region_rect(target_box, fractions)
    size = (dst_rect[2] - dst_rect[0], dst_rect[3] - dst_rect[1])
    patch = donor.crop(region_rect(donor_box, fractions)).resize(size, Image.Resampling.LANCZOS)
    under = target.crop(dst_rect)
    matched = match_colours(np.asarray(patch, np.float64), np.asarray(under, np.float64))
    blended = Image.composite(Image.fromarray(matched.round().astype(np.uint8)), under, feathered_mask(size))
    target.paste(blended, dst_rect[:2])


def composite(target: Image.Image, target_box: FaceBox, donor: Image.Image, donor_box: FaceBox) -> Image.Image:
    out = target.copy()
    for fractions in REGIONS.values():
        paste_feature(out, target_box, donor, donor_box, fractions)
    return out


def side_by_side(images: list[Image.Image], height: int) -> Image.Image:
    resized = [im.resize((round(im.width * height / im.height), height), Image.Resampling.LANCZOS) for im in images]
    canvas = Image.new("RGB", (sum(im.width for im in resized), height))
    x = 0
    for im in resized:
        canvas.paste(im, (x, 0))
        x += im.width
    return canvas


# The astronaut photo's right-hand part (the shuttle, a flag): no face, so the model gives no verdict.
NO_FACE_REGION = (300, 0, 512, 300)


def make_examples(out_dir: Path, backend: str = "mtcnn") -> dict[str, Image.Image]:
    detector = FaceDetector(backend)
    src = load_sources()
    boxes = {name: largest_face(detector, im, name) for name, im in src.items()}
    astro, hopper = src["astronaut"], src["grace_hopper"]
    images = {
        "astronaut.jpg": astro,
        "grace_hopper.jpg": hopper,
        "composite_hopper_with_astronaut_features.jpg": composite(hopper, boxes["grace_hopper"], astro,
                                                                  boxes["astronaut"]),
        "composite_astronaut_with_hopper_features.jpg": composite(astro, boxes["astronaut"], hopper,
                                                                  boxes["grace_hopper"]),
        "two_faces.jpg": side_by_side([astro, hopper], PAIR_HEIGHT),
        "no_face.jpg": astro.crop(NO_FACE_REGION),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, image in images.items():
        image.save(out_dir / name, quality=JPEG_QUALITY, optimize=True)
    return images


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "examples")
    parser.add_argument("--backend", default="mtcnn", choices=["mtcnn", "haar"],
                        help="face detector placing the pasted regions (the committed files used mtcnn)")
    args = parser.parse_args(argv)
    for name, image in make_examples(args.out, args.backend).items():
        print(f"{args.out / name}  {image.width}x{image.height}")


if __name__ == "__main__":
    main()
