"""Issue 23 item 4: which kind of fake a face most resembles (composite / face swap / GAN / diffusion), from a
multinomial logistic regression on the same CLIP features, trained on the fakes with their source's family
(data.source_family) as the class. Reports the 5-fold confusion matrix (rows: true family, normalised) and, per
fake source, what a head trained without that source calls its images (an unseen generator of a seen family
should still read as that family).
    python scripts/experiments/kind_head.py --data A --data B ... [--out runs/kind_head.json]
"""
import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix
from sklearn.preprocessing import StandardScaler

from clip_levers import digests, load_summaries, select
from fakeface.data import load_face_sources, source_family, stratified_kfold
from fakeface.pipeline import _raw


def fit_predict(x_tr, k_tr, x_te, c: float) -> np.ndarray:
    scaler = StandardScaler().fit(x_tr)
    clf = LogisticRegression(C=c, max_iter=3000, class_weight="balanced").fit(scaler.transform(x_tr), k_tr)
    return clf.classes_[clf.predict_proba(scaler.transform(x_te)).argmax(1)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", action="append", required=True)
    ap.add_argument("--c", type=float, default=0.05)
    ap.add_argument("--out", default="runs/kind_head.json")
    args = ap.parse_args()
    ds = _raw(load_face_sources(args.data).train)
    fakes = [i for i, label in enumerate(ds["label"]) if label == 0]
    ds = ds.select(fakes)
    keys, sources = digests(ds), np.array(ds["source"])
    kinds = np.array([source_family(s) for s in sources])
    x = select(load_summaries(keys, mirror=True), "ms")
    labels = sorted(set(kinds))
    pred = np.empty(len(kinds), dtype=object)
    for tr, te in stratified_kfold([0] * len(kinds), 5, 0, list(sources)):  # by source (so by kind too)
        pred[te] = fit_predict(x[tr], kinds[tr], x[te], args.c)
    cm = confusion_matrix(kinds, pred.astype(str), labels=labels, normalize="true")
    out = {"labels": labels, "confusion_5fold": cm.round(3).tolist(), "accuracy_5fold": float((pred == kinds).mean())}
    print("5-fold, rows = true kind:", labels)
    for name, row in zip(labels, cm):
        print(f"  {name:10s} " + " ".join(f"{v:.2f}" for v in row))
    out["leave_one_source_out"] = {}
    for held in sorted(set(sources)):
        rest = sources != held
        if len(set(kinds[rest])) < 2:
            continue
        p = fit_predict(x[rest], kinds[rest], x[~rest], args.c)
        share = {k: float((p == k).mean()) for k in labels}
        out["leave_one_source_out"][held] = {"family": source_family(held), "called": share}
        print(f"without {held} ({source_family(held)}): " + " ".join(f"{k}={v:.2f}" for k, v in share.items()))
    Path(args.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
