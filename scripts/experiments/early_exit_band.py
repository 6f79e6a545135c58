"""Which early-exit band to ship: exit rate, AUC, balanced accuracy and verdict changes per candidate band.

    python scripts/experiments/early_exit_band.py runs/default_ee/model

The model directory must hold a trained fast probe (any band: only its probe and temperature are used). The
band is chosen on the validation rows; the test rows (clean and JPEG q75) only confirm it. Features come from
the training cache (~/.cache/fakeface/features), so this takes seconds after a `train_space.py` run.
"""

import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fakeface.faces import FaceDetector  # noqa: E402
from fakeface.models import FakeFaceModel  # noqa: E402
from fakeface.pipeline import load_splits, model_inputs  # noqa: E402
from fakeface.training import make_config  # noqa: E402

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "ciplab"
BANDS = [(0.02, 0.9), (0.05, 0.95), (0.05, 0.8), (0.05, 0.7), (0.08, 0.8), (0.1, 0.8), (0.1, 0.7), (0.1, 0.6)]


def main(model_dir: str) -> None:
    config = make_config("default")
    model = FakeFaceModel.from_pretrained(model_dir)
    if model.early_exit is None:
        sys.exit(f"{model_dir} has no fast probe")
    _, val, test = load_splits(str(DATA), config)
    detector = FaceDetector()
    sets = [("validation", val, None), ("test", test, None), ("test, JPEG q75", test, "jpeg:75")]
    for name, ds, degradation in sets:
        features, fake = model_inputs(model, config, ds, False, detector, degradation=degradation).tensors
        with torch.no_grad():
            full = torch.sigmoid(model.net(features) / model.temperature).numpy()
            fast = torch.sigmoid(model.fast_logits(features[:, : model.fast_dim])
                                 / model.early_exit["temperature"]).numpy()
        fake, threshold = fake.numpy(), model.threshold
        print(f"{name} ({len(fake)} images): all views AUC {roc_auc_score(fake, full):.4f} balanced accuracy "
              f"{balanced_accuracy_score(fake, full >= threshold):.3f}; first view alone AUC "
              f"{roc_auc_score(fake, fast):.4f}")
        for low, high in BANDS:
            exits = (fast < low) | (fast > high)
            served = np.where(exits, fast, full)
            changed = int(((served >= threshold) != (full >= threshold)).sum())
            print(f"  band {low:.2f}-{high:.2f}: exit {exits.mean():.2f}  AUC {roc_auc_score(fake, served):.4f}  "
                  f"balanced accuracy {balanced_accuracy_score(fake, served >= threshold):.3f}  "
                  f"verdicts changed {changed}")


if __name__ == "__main__":
    main(sys.argv[1])
