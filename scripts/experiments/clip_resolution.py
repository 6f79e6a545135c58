"""Would a smaller input make the CLIP view cheaper at the same quality? (issue 15 lever: fewer tokens)

ViT-B/16 costs about linearly in its tokens: 224 px is 14x14 patches + 1, 192 px is 12x12 + 1 (26% fewer), 160 px
10x10 + 1 (49% fewer). The int8 ONNX file takes any input side; only its position embedding is fixed at 197
rows, so a variant for side s gets the 14x14 grid of embeddings resized bicubically to (s/16)^2 (the class
token's row kept) and the position ids to match. Nothing else in the graph depends on the side.
A variant "224c4" keeps 224 px but drops the patches of the crop's four corners (the i + j < 4 triangle at each
corner, 40 of 196: background and hair around the face) right after the embeddings, so every block runs on
fewer tokens at full resolution.

    python scripts/experiments/clip_resolution.py --part speed --sides 224,192,160,224c4
    python scripts/experiments/clip_resolution.py --part quality --sides 224,192,160,224c4 --data DIR --data DIR ...

speed: ms per view for each side, alternating sides over real face crops (same encoder settings as serving).
quality: face-crop features (blocks 5/7/9/11, class token + patch mean, as the shipped recipe) of every
train + validation image of the given folders (never the test split) at each side, then the same 5-fold
stratified (source x class) logistic-regression CV for every side: ROC AUC overall and per source, paired
folds. Features are cached per side under runs/clip_resolution/ so a rerun only scores.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fakeface.clip_backbone import CLIP_MEAN, CLIP_STD, ClipOnnxEncoder, kept_patches, locate_clip_onnx  # noqa: E402
from fakeface.clip_features import summarise_all  # noqa: E402

LAYERS, OUT = [5, 7, 9, 11], Path("runs/clip_resolution")


def parse_variant(variant: str) -> tuple[int, int]:
    """"224" -> (224, 0); "224c4" -> (224, 4): input side and corner triangle size (0: keep every patch)."""
    side, _, corner = variant.partition("c")
    return int(side), int(corner or 0)


def encoder_for(variant: str) -> ClipOnnxEncoder:
    """The encoder of a variant: the file resized for its side, dropping its corners with the library's own
    option (`ClipOnnxEncoder(corners=K)`, as a recipe with "corners" would)."""
    side, corner = parse_variant(variant)
    if corner and side != 224:
        sys.exit("corners are dropped on the 224 px grid only")
    return ClipOnnxEncoder(onnx_for_side(side), corners=corner)


def onnx_for_side(side: int) -> Path:
    """The int8 file with its position embedding resized for a side x side input (224: the file itself)."""
    source = locate_clip_onnx()
    if side == 224:
        return source
    target = OUT / f"clip_{side}.onnx"
    if target.exists():
        return target
    import onnx
    import torch
    from onnx import numpy_helper

    model = onnx.load(str(source))
    grid = side // 16
    for init in model.graph.initializer:
        if init.name == "vision_model.embeddings.position_embedding.weight":
            table = numpy_helper.to_array(init)  # (197, 768)
            patches = torch.from_numpy(table[1:].reshape(1, 14, 14, -1)).permute(0, 3, 1, 2)
            resized = torch.nn.functional.interpolate(patches, size=(grid, grid), mode="bicubic",
                                                      align_corners=False)
            new = np.concatenate([table[:1], resized.permute(0, 2, 3, 1).reshape(grid * grid, -1).numpy()])
            init.CopyFrom(numpy_helper.from_array(new.astype(np.float32), init.name))
    for node in model.graph.node:
        if node.name == "/vision_model/embeddings/position_embedding/Constant":
            ids = np.arange(grid * grid + 1, dtype=np.int64)[None]
            node.attribute[0].t.CopyFrom(numpy_helper.from_array(ids))
    del model.graph.value_info[:]  # recorded shapes say 197 tokens; ONNX Runtime infers the new ones
    for dim in model.graph.input[0].type.tensor_type.shape.dim[2:]:
        dim.dim_value = side
    for out in model.graph.output:  # the embeddings' recorded shapes are stale too
        out.type.tensor_type.ClearField("shape")
    OUT.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(target))
    return target


def n_tokens(variant: str) -> int:
    side, corner = parse_variant(variant)
    return len(kept_patches(corner, side // 16)) + 1


def pixels(crop: Image.Image, side: int) -> np.ndarray:
    arr = np.asarray(crop.convert("RGB").resize((side, side), Image.BICUBIC), dtype=np.float32) / 255.0
    return np.ascontiguousarray(((arr - np.array(CLIP_MEAN, np.float32)) / np.array(CLIP_STD, np.float32))
                                .transpose(2, 0, 1))


def face_crops(data_dirs, limit=None):
    """(crop, is_fake, source) of every train + validation image, largest face, as training crops."""
    from fakeface.faces import FaceDetector
    from fakeface.images import load_image
    from fakeface.pipeline import _image_source, is_fake, load_splits, training_crop
    from fakeface.training import make_config

    train, val, _, _ = load_splits(data_dirs, make_config("multisource"))
    detector = FaceDetector()
    for ds in (train, val):
        fake = is_fake(ds)
        for i in range(len(ds) if limit is None else min(limit, len(ds))):
            item = ds[i]
            yield training_crop(load_image(_image_source(item)), detector), bool(fake[i]), item["source"]


def speed(sides, n_images: int, data_dirs) -> None:
    encoders = {s: encoder_for(s) for s in sides}
    side_of = {s: parse_variant(s)[0] for s in sides}
    crops = [c for c, _, _ in face_crops(data_dirs, limit=n_images)][:n_images]
    times = {s: [] for s in sides}
    for s, enc in encoders.items():
        enc.tokens(pixels(crops[0], side_of[s]))  # warm-up
    for crop in crops:
        for s, enc in encoders.items():
            x = pixels(crop, side_of[s])
            t = time.perf_counter()
            enc.tokens(x)
            times[s].append(time.perf_counter() - t)
    base = np.median(times["224"]) if "224" in times else None
    for s in sides:
        med = np.median(times[s]) * 1000
        rel = f", {np.median(times[s]) / base:.2f}x of 224 px" if base else ""
        print(f"input {s}: {n_tokens(s)} tokens, median {med:.1f} ms per view over {len(crops)} crops{rel}")


def features(side: str, data_dirs):
    cache = OUT / f"features_{side}.npz"
    if cache.exists():
        z = np.load(cache)
        return z["x"], z["y"], z["source"]
    enc = encoder_for(side)
    xs, ys, srcs = [], [], []
    for k, (crop, fake, source) in enumerate(face_crops(data_dirs)):
        summary = summarise_all(enc.tokens(pixels(crop, parse_variant(side)[0])))  # (12, 2, 768)
        xs.append(summary[LAYERS].reshape(-1))
        ys.append(fake)
        srcs.append(source)
        if k % 500 == 0:
            print(f"  side {side}: {k} crops", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez(cache, x=np.array(xs, np.float32), y=np.array(ys), source=np.array(srcs))
    return np.array(xs, np.float32), np.array(ys), np.array(srcs)


def quality(sides, data_dirs) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    for side in sides:
        x, y, source = features(side, data_dirs)
        strata = np.array([f"{s}/{int(f)}" for s, f in zip(source, y)])
        scores = np.zeros(len(y))
        aucs = []
        for train, test in StratifiedKFold(5, shuffle=True, random_state=0).split(x, strata):
            clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.002, max_iter=2000))
            clf.fit(x[train], y[train])
            scores[test] = clf.predict_proba(x[test])[:, 1]
            aucs.append(roc_auc_score(y[test], scores[test]))
        real = ~y.astype(bool)
        per_source = {}
        for s in sorted(set(source)):
            fakes = (source == s) & y.astype(bool)
            if fakes.any():  # this source's fakes against every real photo
                keep = fakes | real
                per_source[str(s)] = round(roc_auc_score(y[keep], scores[keep]), 4)
        print(f"input {side}: {len(y)} crops, AUC {np.mean(aucs):.4f} +- {np.std(aucs, ddof=1):.4f} over 5 folds; "
              f"per source (its fakes vs all reals) {per_source}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["speed", "quality"], required=True)
    parser.add_argument("--sides", default="224,192,160", help="input variants: SIDE or SIDEcK (corners dropped)")
    parser.add_argument("--data", action="append", required=True, help="a data folder (repeat for several)")
    parser.add_argument("--n-images", type=int, default=30, help="speed: face crops to time")
    args = parser.parse_args()
    sides = args.sides.split(",")
    if any(parse_variant(s)[0] % 16 for s in sides):
        sys.exit("sides must be multiples of 16 (the patch size)")
    speed(sides, args.n_images, args.data) if args.part == "speed" else quality(sides, args.data)


if __name__ == "__main__":
    main()
