# Multi-source recipe choice on cached CLIP summaries (fill the cache first: scripts/cache_features.py with
# --preset multisource --variants aug:1 --pseudo-fakes sbi:1). Logistic / small-MLP heads stand in for the
# shipped probe so that many recipes fit in minutes. For each recipe: k-fold (stratified by source, class and
# difficulty, DFDC pairs together) per-source AUC / TPR / real FPR at a threshold chosen on an inner validation
# split, and leave-one-source-out (train without a fake source, score it against held-out reals of the others).
# Usage: python multisource_recipes.py '[{"layers": [5,7,9,11], "tokens": ["cls","patch_mean"], "aug": true}]'
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from fakeface.data import load_face_sources, split_strata, stratified_kfold, stratified_split  # noqa: E402
from fakeface.evaluation import choose_threshold, per_source_report  # noqa: E402
from fakeface.faces import FaceDetector  # noqa: E402
from fakeface.models import create_model  # noqa: E402
from fakeface.pipeline import _raw, featurize  # noqa: E402
from fakeface.training import PRESETS  # noqa: E402

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
SOURCES = ["ciplab", "dfdc", "ffhq-real", "stylegan-boredhumans", "sd21-sdfd"]
FOLDS = 3

ds = _raw(load_face_sources([str(DATA / s) for s in SOURCES]).train)
src = np.array(ds["source"])
y = 1 - np.array(ds["label"])  # is_fake
real_idx = np.flatnonzero(y == 0)
detector = FaceDetector()
everything = create_model("clip-vit-b16-probe", features={**PRESETS["multisource"]["features"],
                                                          "layers": list(range(12)), "tokens": ["cls", "patch_mean"]})


class Variants(dict):
    """Feature matrices by variant, read from the cache on first use (None: the clean images)."""

    def __missing__(self, variant):
        if variant and variant.startswith("sbi"):  # pseudo-fakes exist for the reals only
            self[variant] = np.zeros_like(self[None])
            self[variant][real_idx] = featurize(ds.select(real_idx.tolist()), everything, detector, degradation=variant)
        else:
            self[variant] = featurize(ds, everything, detector, degradation=variant)
        return self[variant]


X = Variants()
folds = stratified_kfold(ds["label"], FOLDS, 0, split_strata(ds), ds["group"])


def columns(layers, tokens):
    idx = np.arange(12 * 2 * 768).reshape(12, 2, 768)
    return idx[layers][:, [("cls", "patch_mean").index(t) for t in tokens]].reshape(-1)


def fit_predict(train, test, cols, r):
    rows, labels, cells = [X[None][train][:, cols]], [y[train]], list(src[train])
    for k in range(1, 1 + (int(r.get("aug", True)) and r.get("copies", 1))):  # "copies": augmented copies per image
        rows.append(X[f"aug:{k}"][train][:, cols]); labels.append(y[train]); cells += list(src[train])
    if r.get("sbi", False):
        reals = train[y[train] == 0]
        rows.append(X["sbi:1"][reals][:, cols]); labels.append(np.ones(len(reals))); cells += ["sbi"] * len(reals)
    A, t = np.concatenate(rows), np.concatenate(labels)
    keys = [f"{c}|{int(v)}" for c, v in zip(cells, t)]
    counts = Counter(keys)
    weights = r.get("weights", {})
    w = (np.array([weights.get(k.split("|")[0], 1.0) / counts[k] for k in keys]) if r.get("balanced", True)
         else np.ones(len(keys)))
    w *= len(w) / w.sum()
    scaler = StandardScaler().fit(A)
    if r.get("head", "linear") == "mlp":
        clf = MLPClassifier((256,), alpha=r.get("alpha", 1e-2), max_iter=200, early_stopping=False, random_state=0)
    else:
        clf = LogisticRegression(C=r.get("C", 0.01), max_iter=2000)
    clf.fit(scaler.transform(A), t, sample_weight=w)
    return [clf.predict_proba(scaler.transform(X[None][i][:, cols]))[:, 1] for i in test]


def inner_split(train):
    tr, va = stratified_split(y[train], 0.15, 0, [s for s in src[train]], np.array(ds["group"])[train])
    return train[tr], train[va]


def run(r):
    t0 = time.time()
    cols = columns(r.get("layers", [5, 7, 9, 11]), r.get("tokens", ["cls", "patch_mean"]))
    per_fold = []
    for train, test in folds:
        tr, va = inner_split(train)
        p_va, p_te = fit_predict(tr, [va, test], cols, r)
        thr = choose_threshold(y[va], p_va, r.get("rule", "balanced_accuracy_plateau"))
        per_fold.append(per_source_report(y[test], p_te, src[test], thr))
    out = {"recipe": r}
    for name in SOURCES:
        out[name] = {k: round(float(np.mean([f["sources"][name][k] for f in per_fold])), 3)
                     for k in ("roc_auc", "tpr", "fpr") if k in per_fold[0]["sources"][name]}
    out["real_fpr"] = round(float(np.mean([f["reals"]["fpr"] for f in per_fold])), 3)
    out["worst_auc"] = min(out[n]["roc_auc"] for n in SOURCES)
    if r.get("loso", True):
        train, test = folds[0]
        out["loso"] = {}
        for held in ["ciplab", "dfdc", "stylegan-boredhumans", "sd21-sdfd"]:
            keep = train[src[train] != held]
            tr, va = inner_split(keep)
            held_items = np.flatnonzero(src == held)
            others = test[(src[test] != held) & (y[test] == 0)]
            evaluation = np.concatenate([held_items, others])
            p_va, p_ev = fit_predict(tr, [va, evaluation], cols, r)
            thr = choose_threshold(y[va], p_va, r.get("rule", "balanced_accuracy_plateau"))
            rep = per_source_report(y[evaluation], p_ev, src[evaluation], thr)
            out["loso"][held] = {"auc": round(rep["sources"][held]["roc_auc"], 3),
                                 "tpr": round(rep["sources"][held]["tpr"], 3)}
    out["seconds"] = round(time.time() - t0)
    print(json.dumps(out), flush=True)


for recipe in json.loads(sys.argv[1]):
    run(recipe)
