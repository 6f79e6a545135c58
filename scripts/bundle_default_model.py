"""Copy a finished training run into fakeface/default_model/ and write its full model card.

    python scripts/bundle_default_model.py RUN_DIR --crossval NAME=runs/cv/crossval.json [...]

RUN_DIR is a `train_space.py --output-dir` (model/ and eval/ inside). Each --crossval adds a row of
mean ± std over folds to the card's cross-validation table.
"""

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fakeface.hub import BUNDLED_MODEL_DIR, DEFAULT_HUB_REPO  # noqa: E402
from fakeface.model_card import crossval_table, write_model_card  # noqa: E402
from fakeface.models import FakeFaceModel  # noqa: E402
from fakeface.training import TrainConfig  # noqa: E402

DATA_TEXT = """The ciplab "Real and Fake Face Detection" set (Kaggle, Yonsei University): 600x600 face photos; the fakes
are expert Photoshop composites (eyes, nose, mouth pasted from other faces), labelled easy / mid / hard by their
makers. We trained on the 80% of it we have (865 real, 768 fake), split by label and difficulty with seed 0 into
train / validation (early stopping, temperature, threshold) / test (the figures below). No licence accompanies
the copies we used: the images are research data under the dataset's own terms and are not redistributed."""

LIMITS = """## What this model does not do

- **GAN and diffusion faces.** It learnt one kind of fake: composites of real photos. Faces made whole by
  StyleGAN or a diffusion model contain no pasted regions. The project's earlier check on StyleGAN2 faces found
  every ciplab-trained model it tried (frozen CLIP and EfficientNet probes, fine-tuned EfficientNet) near chance;
  this model was not re-measured there and should be expected to do no better. A REAL verdict does not mean
  "not AI-generated".
- **Face swaps and retouching** other than region pasting were not in the training data.
- The figures come from one dataset's held-out part; other cameras, compressions and framings will do worse.
- Heat maps show where the linear probe's patch-level evidence lies (exact for the patch-mean terms of the
  logit), not an outline of edited regions."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--crossval", action="append", default=[], metavar="NAME=PATH")
    parser.add_argument("--notes", default="", help="markdown appended to the card (e.g. speed figures)")
    args = parser.parse_args()

    src = args.run_dir / "model"
    BUNDLED_MODEL_DIR.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "model.safetensors", "train_log.jsonl"):
        shutil.copy2(src / name, BUNDLED_MODEL_DIR / name)
    metrics = json.loads((args.run_dir / "eval" / "metrics.json").read_text())
    shutil.copy2(args.run_dir / "eval" / "metrics.json", BUNDLED_MODEL_DIR / "metrics.json")

    rows = {name: json.loads(Path(path).read_text()) for name, path in (a.split("=", 1) for a in args.crossval)}
    extra = ""
    if rows:
        extra += ("## Cross-validation (5 stratified folds of all 1633 images, seed 0)\n\n"
                  "Each fold trains on 4/5 (15% of it for early stopping and calibration) and is scored on the "
                  "held-out fifth; mean ± std over folds. Difficulty columns: that difficulty's fakes against "
                  "the fold's reals.\n\n" + crossval_table(rows) + "\n\nHow the recipe was chosen (blocks, "
                  "tokens, views, JPEG copies): `scripts/experiments/README.md`.\n")
    extra += "\n" + LIMITS + "\n" + (("\n" + args.notes + "\n") if args.notes else "")

    model = FakeFaceModel.from_pretrained(str(BUNDLED_MODEL_DIR))
    config = TrainConfig(**metrics["training"]["config"])
    (BUNDLED_MODEL_DIR / "README.md").unlink(missing_ok=True)
    write_model_card(BUNDLED_MODEL_DIR, model, metrics, config, "ciplab/real-and-fake-face-detection",
                     model_id=DEFAULT_HUB_REPO, extra_sections=extra, data_text=DATA_TEXT)
    print(f"bundled {src} into {BUNDLED_MODEL_DIR}")


if __name__ == "__main__":
    main()
