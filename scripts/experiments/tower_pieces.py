"""What stopping the CLIP tower early saves: ms per view for the whole tower, for its first k blocks, and for
the two pieces of a tower cut after block k (ClipOnnxEncoder(blocks=..., split_after=...)), alternating
settings view by view over the same real face crops.

    python scripts/experiments/tower_pieces.py --stops 5,7,9 --n-images 30 --data ../shared/data/ciplab
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fakeface.clip_backbone import NUM_LAYERS, ClipOnnxEncoder, to_clip_pixels  # noqa: E402


def crops(data_dirs, n: int):
    from fakeface.faces import FaceDetector
    from fakeface.images import load_image
    from fakeface.pipeline import _image_source, load_splits, training_crop
    from fakeface.training import make_config

    train, _, _, _ = load_splits(data_dirs, make_config("multisource"))
    detector = FaceDetector()
    picked = np.random.default_rng(0).choice(len(train), size=min(n, len(train)), replace=False)
    return [training_crop(load_image(_image_source(train[int(i)])), detector) for i in picked]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stops", default="5,7,9", help="blocks after which the tower stops or is cut")
    parser.add_argument("--n-images", type=int, default=30)
    parser.add_argument("--data", action="append", required=True)
    args = parser.parse_args()
    stops = [int(s) for s in args.stops.split(",")]
    pixels = [to_clip_pixels(c) for c in crops(args.data, args.n_images)]
    whole = ClipOnnxEncoder()
    runs = {"whole tower (12 blocks)": whole.tokens}
    for k in stops:
        runs[f"blocks 0-{k} only"] = ClipOnnxEncoder(blocks=k + 1).tokens
        cut = ClipOnnxEncoder(split_after=k)
        runs[f"cut after {k}: first piece"] = cut.first_blocks
        runs[f"cut after {k}: both pieces"] = cut.tokens
    times = {name: [] for name in runs}
    for fn in runs.values():
        fn(pixels[0])  # warm-up
    for x in pixels:
        for name, fn in runs.items():
            t = time.perf_counter()
            fn(x)
            times[name].append(time.perf_counter() - t)
    base = np.median(times["whole tower (12 blocks)"])
    print(f"{len(pixels)} face crops, {whole.threads} ONNX Runtime threads; ms per view (median) and share of the "
          f"whole tower; {NUM_LAYERS} blocks in all")
    for name, ts in times.items():
        print(f"  {name:32s} {np.median(ts) * 1000:6.1f} ms  {np.median(ts) / base:.2f}")


if __name__ == "__main__":
    main()
