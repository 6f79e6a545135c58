"""Issue 24's CLIP-side levers, compared by one protocol on the cached summaries (extract_views.py fills them):
5-fold CV stratified by source, class and difficulty (face-swap pairs in one fold), a class- and source-balanced
logistic regression on standardised features, and per fold a leave-one-FAMILY-out run (the family's fakes
dropped from training, scored against the fold's held-out reals). Every image is scored by its largest face.

Reports per variant: pooled out-of-fold AUC, each source's fakes vs all held-out reals, TPR at 1/2/5% FPR,
the threshold that flags 5% of all held-out reals and, at it, each source's fakes caught / reals flagged
(polished reals: pixabay-real, studio-real), and each family's left-out AUC.
    python scripts/experiments/clip_levers.py --data A --data B ... --variants ms ms+mirror all12 ... \
        [--aug] [--out runs/levers.json] [--oof-dir runs/oof]
"""
import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.preprocessing import StandardScaler

from fakeface.clip_backbone import DEFAULT_CACHE
from fakeface.clip_features import ClipFeaturizer, FeatureRecipe
from fakeface.data import load_face_sources, source_family, split_strata, stratified_kfold
from fakeface.faces import FaceDetector
from fakeface.pipeline import _image_source, _raw, feature_fingerprint
from fakeface.training import PRESETS

POLISHED = ("pixabay-real", "studio-real")
LAYER_SETS = {"ms": ([5, 7, 9, 11], [0, 1]), "all12": (list(range(12)), [0, 1]), "cls12": (list(range(12)), [0]),
              "mid": ([3, 4, 5, 6, 7, 8], [0, 1]), "last": ([11], [0, 1])}


def digests(ds) -> list[str]:
    out = []
    for item in ds:
        source = _image_source(item)
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        out.append(hashlib.sha1(data).hexdigest())
    return out


def load_summaries(keys, mirror: bool, variant=None) -> np.ndarray:
    """(images, 12, 2, 768): each image's largest face, from the library's feature cache."""
    base = {**PRESETS["multisource"]["features"], "mirror": mirror}
    cache = Path(DEFAULT_CACHE) / "features" / feature_fingerprint(
        ClipFeaturizer(FeatureRecipe.from_config(base)), FaceDetector(), variant)
    return np.stack([np.load(cache / f"{k}.npy")[0, 0] for k in keys])


def select(summaries: np.ndarray, name: str) -> np.ndarray:
    layers, tokens = LAYER_SETS[name]
    return summaries[:, layers][:, :, tokens].reshape(len(summaries), -1)


def balanced_weights(sources, y) -> np.ndarray:
    cells = [f"{s}|{t}" for s, t in zip(sources, y)]
    counts = {c: cells.count(c) for c in set(cells)}
    w = np.array([1.0 / counts[c] for c in cells])
    return w * len(w) / w.sum()


def fit_predict(x_tr, y_tr, src_tr, x_te, c: float) -> np.ndarray:
    scaler = StandardScaler().fit(x_tr)
    clf = LogisticRegression(C=c, max_iter=3000)
    clf.fit(scaler.transform(x_tr), y_tr, sample_weight=balanced_weights(src_tr, y_tr))
    return clf.decision_function(scaler.transform(x_te))


def report(scores, y, sources) -> dict:
    y, sources = np.asarray(y), np.asarray(sources)
    reals = y == 0
    out = {"auc": roc_auc_score(y, scores)}
    fpr, tpr, thr = roc_curve(y, scores)
    out["tpr_at_fpr"] = {str(f): float(np.interp(f, fpr, tpr)) for f in (0.01, 0.02, 0.05)}
    t = np.quantile(scores[reals], 0.95)  # flags 5% of all held-out reals
    out["per_source"] = {}
    for s in sorted(set(sources)):
        m = sources == s
        entry = {}
        if (y[m] == 1).any():
            mm = m & (y == 1)
            entry["auc_vs_all_reals"] = float(roc_auc_score(np.r_[np.ones(mm.sum()), np.zeros(reals.sum())],
                                                            np.r_[scores[mm], scores[reals]]))
            entry["caught"] = float((scores[mm] >= t).mean())
        if (y[m] == 0).any():
            entry["reals_flagged"] = float((scores[m & reals] >= t).mean())
        out["per_source"][s] = entry
    return out


def held_out_groups(sources, y) -> dict[str, np.ndarray]:
    """What the left-out runs drop from training: each kind of fake (data.source_family), and each source of a
    family that has several (a generator never seen, of a family that was)."""
    fake_sources = sorted(set(sources[y == 1]))
    families = {source_family(s) for s in fake_sources}
    groups = {f: (y == 1) & np.isin(sources, [s for s in fake_sources if source_family(s) == f]) for f in families}
    for s in fake_sources:
        if sum(source_family(t) == source_family(s) for t in fake_sources) > 1:
            groups[f"source {s}"] = (y == 1) & (sources == s)
    return dict(sorted(groups.items()))


def run_folds(fit_predict_rows, folds, y, held: dict) -> tuple[np.ndarray, dict]:
    """Out-of-fold logits, and per held-out group (held_out_groups) the logits of a run trained without its
    fakes, on its fakes and the fold's reals (NaN elsewhere). `fit_predict_rows(train_idx, test_idx)` trains
    on the rows train_idx and scores test_idx."""
    oof = np.zeros(len(y))
    left_out = {name: np.full(len(y), np.nan) for name in held}
    for tr, te in folds:
        oof[te] = fit_predict_rows(tr, te)
        for name, mask in held.items():
            scored = te[mask[te] | (y[te] == 0)]
            left_out[name][scored] = fit_predict_rows(tr[~mask[tr]], scored)
    return oof, left_out


def summarise(name, oof, left_out, y, sources, keys, oof_dir=None) -> dict:
    """The report of one variant (printed as one line), its out-of-fold logits written to oof_dir."""
    rep = report(oof, y, sources)
    rep["leave_one_family_out"] = {f: float(roc_auc_score(y[~np.isnan(s)], s[~np.isnan(s)]))
                                   for f, s in left_out.items()}
    lofo = " ".join(f"{f}={v:.3f}" for f, v in rep["leave_one_family_out"].items())
    polished = " ".join(f"{s}={rep['per_source'][s].get('reals_flagged', 0):.3f}" for s in POLISHED
                        if s in rep["per_source"])
    caught = " ".join(f"{s}={e['caught']:.2f}" for s, e in rep["per_source"].items() if "caught" in e)
    print(f"{name}: AUC {rep['auc']:.4f} TPR@1/2/5% " + "/".join(f"{v:.3f}" for v in rep["tpr_at_fpr"].values())
          + f" | LOFO {lofo} | polished flagged {polished} | caught {caught}", flush=True)
    if oof_dir:
        Path(oof_dir).mkdir(parents=True, exist_ok=True)
        (Path(oof_dir) / f"{name.replace('|', '_')}.json").write_text(json.dumps(
            {"oof": dict(zip(keys, oof.tolist())),
             "lofo": {f: {k: v for k, v in zip(keys, s.tolist()) if not np.isnan(v)} for f, s in left_out.items()}}))
    return rep


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", action="append", required=True)
    ap.add_argument("--variants", nargs="+", default=["ms", "ms+mirror"])
    ap.add_argument("--exclude", nargs="*", default=[], help="sources left out of the mix entirely")
    ap.add_argument("--aug", action="store_true", help="add each training image's aug:1 copy")
    ap.add_argument("--c", type=float, nargs="+", default=[0.05])
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--out", default="runs/levers.json")
    ap.add_argument("--oof-dir", default=None, help="write each variant's out-of-fold logits {sha1: logit} here")
    args = ap.parse_args()
    ds = _raw(load_face_sources(args.data).train)
    ds = ds.select([i for i, s in enumerate(ds["source"]) if s not in args.exclude])
    keys, sources = digests(ds), np.array(ds["source"])
    y = 1 - np.array(ds["label"])  # is_fake
    held = held_out_groups(sources, y)
    folds = stratified_kfold(ds["label"], args.folds, 0, split_strata(ds), ds["group"])
    results = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
    cache = {}
    for variant in args.variants:
        name, _, opt = variant.partition("+")
        mirror = opt == "mirror"
        if mirror not in cache:
            cache[mirror] = (load_summaries(keys, mirror), load_summaries(keys, mirror, "aug:1") if args.aug else None)
        clean, aug = cache[mirror]
        x = select(clean, name)
        xa = select(aug, name) if aug is not None else None
        for c in args.c:
            def fit_rows(tr, te):
                xs, ys, ss = [x[tr]], [y[tr]], [sources[tr]]
                if xa is not None:  # each training image's augmented copy
                    xs.append(xa[tr]); ys.append(y[tr]); ss.append(sources[tr])
                return fit_predict(np.concatenate(xs), np.concatenate(ys), np.concatenate(ss), x[te], c)

            key = f"{variant}{'+aug' if args.aug else ''}|C={c}|{'-'.join(args.exclude) or 'all'}"
            results[key] = summarise(key, *run_folds(fit_rows, folds, y, held), y, sources, keys, args.oof_dir)
            Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
