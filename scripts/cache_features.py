"""Fill the feature cache for a training mix ahead of training and cross-validation (resumable: cached images
are skipped). Every image gets its clean features and each `--variants` copy; reals also get each
`--pseudo-fakes` copy. `--features` replaces the preset's recipe, as it does for training. `--split test` takes
only the held-out test split training will make (the preset's seed), e.g. for its robustness copies. Usage:
    python scripts/cache_features.py --data ../shared/data/ciplab --data ../shared/data/dfdc ... \
        --variants aug:1 --pseudo-fakes sbi:1
    python scripts/cache_features.py --data ... --split test --variants jpeg:75 jpeg:50 resize:0.5 mirror exif:6
"""
import argparse
import json
import time

from fakeface.faces import FaceDetector
from fakeface.models import create_model
from fakeface.pipeline import _raw, featurize, load_splits
from fakeface.data import load_face_sources
from fakeface.training import PRESETS, make_config


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", action="append", required=True)
    ap.add_argument("--variants", nargs="*", default=[])
    ap.add_argument("--pseudo-fakes", nargs="*", default=[])
    ap.add_argument("--preset", default="default")
    ap.add_argument("--features", type=json.loads, default=None, help="feature recipe as JSON (default: the preset's)")
    ap.add_argument("--cache-dir")
    ap.add_argument("--split", choices=["all", "test"], default="all")
    args = ap.parse_args()
    if args.split == "test":
        ds = load_splits(args.data, make_config(args.preset))[2]
    else:
        ds = _raw(load_face_sources(args.data).train)
    reals = ds.select([i for i, label in enumerate(ds["label"]) if label == 1])
    features = args.features if args.features is not None else PRESETS[args.preset].get("features") or {}
    model = create_model(PRESETS[args.preset]["arch"], features=features)
    detector = FaceDetector()
    for variant in [None] + list(args.variants):
        t0 = time.time()
        featurize(ds, model, detector, args.cache_dir, degradation=variant)
        print(f"{variant or 'clean'}: {len(ds)} images in {time.time() - t0:.0f} s", flush=True)
    for variant in args.pseudo_fakes:
        t0 = time.time()
        featurize(reals, model, detector, args.cache_dir, degradation=variant)
        print(f"{variant}: {len(reals)} reals in {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
