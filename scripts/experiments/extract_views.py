"""One pass over a training mix that fills everything issue 24's experiments read (resumable; a restart skips
what is on disk):

- the library's feature cache for the multi-source recipe with and without test-time mirroring (`mirror`), for
  the clean image and each `--variants` copy, exactly as `pipeline.featurize` would write them (same
  fingerprints, same layout), so `fakeface crossval` / `train` read them afterwards;
- the largest face crop's pixels, unresized (uint8 .npy), for the low-level scorer (fakeface/lowlevel.py);
- the largest face's patch tokens at two blocks (float16), for the patch-level heads.

Each crop is encoded once per direction: the mirror-free summary is the first half of the mirrored one.
    python scripts/experiments/extract_views.py --data A --data B ... --out runs/views [--variants aug:1]
"""
import argparse
import hashlib
import os
import time
from pathlib import Path

import numpy as np

from fakeface.clip_backbone import DEFAULT_CACHE, to_clip_pixels
from fakeface.clip_features import ClipFeaturizer, FeatureRecipe, summarise_all
from fakeface.data import load_face_sources
from fakeface.faces import FaceDetector, face_crops
from fakeface.images import load_image
from fakeface.pipeline import _image_source, _raw, feature_fingerprint, image_variant
from fakeface.training import PRESETS

PATCH_BLOCKS = (6, 11)


def save(path: Path, array: np.ndarray) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", action="append", required=True)
    ap.add_argument("--variants", nargs="*", default=[])
    ap.add_argument("--out", default="runs/views")
    ap.add_argument("--cache-dir", default=None)
    args = ap.parse_args()
    ds = _raw(load_face_sources(args.data).train)
    base = {**PRESETS["multisource"]["features"], "mirror": False}
    plain = ClipFeaturizer(FeatureRecipe.from_config(base))
    mirrored = ClipFeaturizer(FeatureRecipe.from_config({**base, "mirror": True}), encoder=plain.encoder)
    detector = FaceDetector()
    out = Path(args.out)
    (out / "crops").mkdir(parents=True, exist_ok=True)
    (out / "patches").mkdir(parents=True, exist_ok=True)
    root = Path(args.cache_dir or DEFAULT_CACHE) / "features"
    for variant in [None] + list(args.variants):
        caches = [root / feature_fingerprint(f, detector, variant) for f in (plain, mirrored)]
        for c in caches:
            c.mkdir(parents=True, exist_ok=True)
        t0, done = time.time(), 0
        for i, item in enumerate(ds):
            source = _image_source(item)
            data = source if isinstance(source, bytes) else Path(source).read_bytes()
            digest = hashlib.sha1(data).hexdigest()
            tag = "" if variant is None else "-" + variant.replace(":", "")
            crop_path, patch_path = out / "crops" / f"{digest}{tag}.npy", out / "patches" / f"{digest}{tag}.npy"
            targets = [c / (digest + ".npy") for c in caches]
            if all(p.exists() for p in targets) and crop_path.exists() and (variant or patch_path.exists()):
                continue
            image = image_variant(load_image(data), variant, digest, detector)
            plain_rows, mirror_rows = [], []
            for k, crop in enumerate(face_crops(image, detector)):
                views = mirrored.recipe.group_views(crop.image, 0)  # [view, mirrored view]
                tokens = [plain.encoder.tokens(to_clip_pixels(v)) for v in views]
                s = [summarise_all(t) for t in tokens]
                plain_rows.append(s[0][None])
                mirror_rows.append(np.mean(s, axis=0)[None])
                if k == 0:
                    save(crop_path, np.asarray(crop.image.convert("RGB"), dtype=np.uint8))
                    if variant is None:
                        save(patch_path, tokens[0][list(PATCH_BLOCKS), 1:].astype(np.float16))
            save(targets[0], np.stack(plain_rows).astype(np.float32))
            save(targets[1], np.stack(mirror_rows).astype(np.float32))
            done += 1
            if done % 200 == 0:
                print(f"{variant or 'clean'}: {i + 1}/{len(ds)} ({done} computed, {time.time() - t0:.0f} s)", flush=True)
        print(f"{variant or 'clean'}: {len(ds)} images, {done} computed in {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
