"""Issue 24, lever (d): does a second scorer add to the CLIP probe? Both scorers' out-of-fold logits (files of
{"oof": {sha1: logit}, "lofo": {family: {sha1: logit}}}, from clip_levers.py / patch_heads.py / the low-level
scorer's CV) are fused by a logistic regression fitted on the other folds' out-of-fold logits (so no image is
scored by weights fitted on it), then reported like clip_levers.py. Left-out families are fused with the
weights fitted on the out-of-fold logits of every other image.
    python scripts/experiments/fuse_scores.py --data A --data B ... --scores runs/oof/ms.json runs/lowlevel/oof.json
"""
import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

from clip_levers import balanced_weights, digests, summarise
from fakeface.data import load_face_sources, source_family, split_strata, stratified_kfold
from fakeface.pipeline import _raw


def fusion(x_tr, y_tr, src_tr) -> LogisticRegression:
    return LogisticRegression(C=1.0).fit(x_tr, y_tr, sample_weight=balanced_weights(src_tr, y_tr))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", action="append", required=True)
    ap.add_argument("--scores", nargs="+", required=True)
    ap.add_argument("--name", default="fused")
    ap.add_argument("--oof-dir", default=None)
    args = ap.parse_args()
    ds = _raw(load_face_sources(args.data).train)
    keys, sources = digests(ds), np.array(ds["source"])
    y = 1 - np.array(ds["label"])
    families = np.array([source_family(s) if t else "real" for s, t in zip(sources, y)])
    # clip_levers.py / patch_heads.py write {"oof", "lofo"}; lowlevel_cv.py writes {"logits"} (its left-out
    # runs go to files of their own): read either
    files = [json.loads(Path(p).read_text()) for p in args.scores]
    files = [{"oof": f.get("oof", f.get("logits")), "lofo": f.get("lofo", {})} for f in files]
    x = np.array([[f["oof"][k] for f in files] for k in keys])
    folds = stratified_kfold(ds["label"], 5, 1, split_strata(ds), ds["group"])  # other folds than the scorers'
    oof = np.zeros(len(y))
    for tr, te in folds:
        oof[te] = fusion(x[tr], y[tr], sources[tr]).decision_function(x[te])
    left_out = {}
    for fam in sorted(set(families) - {"real"}):
        scored = [i for i, k in enumerate(keys) if all(k in f["lofo"].get(fam, {}) for f in files)]
        if not scored:
            continue
        s = np.full(len(y), np.nan)
        rest = families != fam
        model = fusion(x[rest], y[rest], sources[rest])
        s[scored] = model.decision_function(np.array([[f["lofo"][fam][keys[i]] for f in files] for i in scored]))
        left_out[fam] = s
    weights = fusion(x, y, sources)
    print("fusion weights (all images):", np.round(weights.coef_[0], 3).tolist(), round(float(weights.intercept_[0]), 3))
    summarise(args.name, oof, left_out, y, sources, keys, args.oof_dir)


if __name__ == "__main__":
    main()
