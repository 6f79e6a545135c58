# Ablation step 2: 5-fold stratified CV of logistic probes over the cached summaries. Usage:
#   python ablation_cv.py '[{"views": ["224"], "layers": [11], "tokens": [0]}]' [runs/exp/feats_q75.npy]
import json, os, sys
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler
from sklearn.metrics import roc_auc_score
from pathlib import Path
EXP = os.environ.get("EXP_DIR", "runs/exp")
X = np.load(EXP + "/feats_q0.npy", mmap_mode="r")
Xq = np.load(sys.argv[2], mmap_mode="r") if len(sys.argv) > 2 else None
y = 1 - np.load(EXP + "/labels.npy")  # is_fake
paths = Path(EXP + "/paths.txt").read_text().split("\n")
diff = np.array([Path(p).name.split("_")[0] if "/fake/" in p else "real" for p in paths])
GROUPS = {"224": [0], "448x2": [1,2,3,4], "600x3": list(range(5,14))}
def feats(A, views, layers, tokens):
    parts = []
    for g in views:
        v = np.asarray(A[:, GROUPS[g]][:, :, tokens][:, :, :, layers], dtype=np.float32).mean(1)
        parts.append(v.reshape(len(A), -1))
    return np.concatenate(parts, 1)
def run(views, layers, tokens, C=0.05, aug=False):
    F = feats(X, views, layers, tokens); Fq = feats(Xq, views, layers, tokens) if Xq is not None else None
    aucs, aucq, per = [], [], {k: [] for k in ("easy","mid","hard")}
    for tr, te in StratifiedKFold(5, shuffle=True, random_state=0).split(F, [f"{a}{b}" for a,b in zip(y, diff)]):
        Ftr, ytr = (np.concatenate([F[tr], Fq[tr]]), np.concatenate([y[tr], y[tr]])) if aug else (F[tr], y[tr])
        sc = StandardScaler().fit(Ftr); clf = LogisticRegression(C=C, max_iter=3000).fit(sc.transform(Ftr), ytr)
        p = clf.predict_proba(sc.transform(F[te]))[:, 1]; aucs.append(roc_auc_score(y[te], p))
        for k in per:
            m = (diff[te] == k) | (diff[te] == "real"); per[k].append(roc_auc_score(y[te][m], p[m]))
        if Fq is not None: aucq.append(roc_auc_score(y[te], clf.predict_proba(sc.transform(Fq[te]))[:, 1]))
    r = dict(aug=aug, views=views, layers=layers, tokens=tokens, C=C, auc=round(np.mean(aucs),4), std=round(np.std(aucs),4),
             **{k: round(np.mean(v),3) for k,v in per.items()})
    if aucq: r["auc_q75"] = round(np.mean(aucq), 4)
    print(json.dumps(r), flush=True)
exps = json.loads(sys.argv[1])
for e in exps: run(**e)
