"""Which rule picks the decision threshold: held-out balanced accuracy of each rule, 5-fold CV.

    python scripts/experiments/threshold_rule.py [--q75]

Every fold trains the default preset exactly as `fakeface crossval` does (same folds, same validation split,
same temperature), then each rule picks a threshold from that fold's validation probabilities only, and the
held-out fifth scores it (clean, and with --q75 also re-saved as JPEG quality 75: features for all 1633 images
at q75 take ~6 min the first time, then come from the cache).
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fakeface.data import load_face_dataset, stratified_kfold, stratified_split  # noqa: E402
from fakeface.evaluation import choose_threshold  # noqa: E402
from fakeface.faces import FaceDetector  # noqa: E402
from fakeface.models import probabilities  # noqa: E402
from fakeface.pipeline import _raw, model_inputs, train_model  # noqa: E402
from fakeface.training import make_config, predict_logits  # noqa: E402

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "ciplab"


RULES = {
    "argmax on validation": lambda y, p, prior: choose_threshold(y, p),
    "plateau centre, +-0.1 (shipped)": lambda y, p, prior: choose_threshold(y, p, "balanced_accuracy_plateau"),
    "equal error rate on validation": lambda y, p, prior: choose_threshold(y, p, criterion="eer"),
    "training prior of fakes (calibrated p)": lambda y, p, prior: prior,
    "0.5": lambda y, p, prior: 0.5,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--q75", action="store_true", help="also score the held-out folds re-saved at JPEG q75")
    args = parser.parse_args()
    config = make_config("default")
    detector = FaceDetector()
    full = _raw(load_face_dataset(str(DATA)).train)
    scored = {(rule, kind): [] for rule in RULES for kind in (["clean", "q75"] if args.q75 else ["clean"])}
    chosen = {rule: [] for rule in RULES}
    for k, (train_idx, test_idx) in enumerate(stratified_kfold(full["label"], 5, config.seed, full["difficulty"])):
        part = full.select(train_idx)
        tr, va = stratified_split(part["label"], config.val_fraction, config.seed, part["difficulty"])
        model, _ = train_model(config, part.select(tr), part.select(va), f"/tmp/threshold_rule/fold{k}", detector,
                               resume=False)

        def probs(ds, degradation=None):
            inputs = model_inputs(model, config, ds, False, detector, degradation=degradation)
            logits, fake = predict_logits(model, torch.utils.data.DataLoader(inputs, batch_size=64))
            return fake, np.asarray(probabilities(logits, model.temperature))

        val_y, val_p = probs(part.select(va))
        prior = 1.0 - float(np.mean(part.select(tr)["label"]))  # label 0 = fake
        held = {"clean": probs(full.select(test_idx))}
        if args.q75:
            held["q75"] = probs(full.select(test_idx), "jpeg:75")
        for rule, pick in RULES.items():
            t = pick(val_y, val_p, prior)
            chosen[rule].append(t)
            for kind, (y, p) in held.items():
                scored[(rule, kind)].append(balanced_accuracy_score(y, p >= t))
        print(f"fold {k} done", flush=True)
    print("\nheld-out balanced accuracy, mean ± std over 5 folds (thresholds chosen per fold)")
    for rule in RULES:
        cells = "  ".join(f"{kind} {np.mean(v):.3f} ± {np.std(v, ddof=1):.3f}"
                          for (r, kind), v in scored.items() if r == rule)
        print(f"  {rule:40s} {cells}   thresholds {np.round(chosen[rule], 3).tolist()}")


if __name__ == "__main__":
    main()
