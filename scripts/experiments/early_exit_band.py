"""Which early-exit band to ship: exit rate, AUC, balanced accuracy, real photos called FAKE and verdict changes
per candidate band, per image as serving answers (each face served by the fast or the full probe, the image
by its most-fake face).

    python scripts/experiments/early_exit_band.py runs/ee_l1/model --data ../shared/data/ciplab --data ...

The model directory must hold a trained fast probe (any band: only its probe, temperature and threshold are
used). The band is chosen on the validation rows; the test rows (clean and JPEG q75) only confirm it. Features
come from the training cache (~/.cache/fakeface/features), so this takes seconds after a `train_space.py` run
with the same data and preset.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fakeface.faces import FaceDetector  # noqa: E402
from fakeface.models import FakeFaceModel  # noqa: E402
from fakeface.pipeline import image_max, is_fake, load_splits, model_inputs  # noqa: E402
from fakeface.training import make_config  # noqa: E402

BANDS = [(0.02, 0.95), (0.05, 0.95), (0.05, 0.9), (0.05, 0.8), (0.1, 0.9), (0.2, 0.95), (0.3, 0.95), (0.4, 0.95),
         (0.3, 0.9), (0.5, 0.95)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("--data", action="append", required=True, help="a data folder (repeat for several)")
    parser.add_argument("--preset", default="multisource", help="the preset the model was trained with")
    args = parser.parse_args()
    config = make_config(args.preset)
    model = FakeFaceModel.from_pretrained(args.model_dir)
    if model.early_exit is None:
        sys.exit(f"{args.model_dir} has no fast probe")
    _, val, test, _ = load_splits(args.data, config)
    detector = FaceDetector()
    threshold = model.threshold
    print(f"fast probe reads {model.early_exit['layers']} of layers {list(model.recipe.layers)} "
          f"(tower stops after block {model.exit_block}); threshold {threshold}")
    for name, ds, degradation in [("validation", val, None), ("test", test, None), ("test, JPEG q75", test, "jpeg:75")]:
        inputs = model_inputs(model, config, ds, False, detector, degradation=degradation)
        features = inputs.tensors[0]
        with torch.no_grad():
            full = torch.sigmoid(model.net(features) / model.temperature).numpy()
            fast = torch.sigmoid(model.fast_logits(features[:, : model.fast_dim])
                                 / model.early_exit["temperature"]).numpy()
        fake, real = is_fake(ds), ~is_fake(ds).astype(bool)
        per_image = lambda faces: image_max(faces, inputs.image_index, len(ds))  # noqa: E731
        full_img = per_image(full)
        print(f"{name} ({len(ds)} images, {len(full)} faces): full probe AUC {roc_auc_score(fake, full_img):.4f}, "
              f"real photos FAKE {np.mean(full_img[real] >= threshold):.3f}; fast probe alone AUC "
              f"{roc_auc_score(fake, per_image(fast)):.4f}")
        for low, high in BANDS:
            exits = (fast < low) | (fast > high)
            served = per_image(np.where(exits, fast, full))
            changed = int(((served >= threshold) != (full_img >= threshold)).sum())
            print(f"  band {low:.2f}-{high:.2f}: exit {exits.mean():.2f}  AUC {roc_auc_score(fake, served):.4f}  "
                  f"balanced accuracy {balanced_accuracy_score(fake, served >= threshold):.3f}  "
                  f"reals FAKE {np.mean(served[real] >= threshold):.3f}  verdicts changed {changed}")


if __name__ == "__main__":
    main()
