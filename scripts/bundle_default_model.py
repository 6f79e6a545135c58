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
from fakeface.model_card import crossval_table, source_crossval_table, write_model_card  # noqa: E402
from fakeface.models import FakeFaceModel  # noqa: E402
from fakeface.training import TrainConfig  # noqa: E402

DATA_TEXT = """Eight sources, in `real/` + `fake/` folders (`../shared/data`, see its README; the last three built with its
`build_extra_sources.py` from the GitHub repositories named), each with its own terms.
**The weights were trained on research and non-commercial data**: whoever uses them must check that their use
fits every source's terms below; we read them as allowing research and non-commercial use at most (FFHQ's
CC BY-NC-SA licence is explicitly non-commercial, DFDC's terms are research-only). No training image is
redistributed with the model or the project.

| source | what | fake | real | origin | terms |
|---|---|---|---|---|---|
| ciplab | expert Photoshop composites (eyes, nose, mouth pasted from other faces), 600 px, labelled easy / mid / hard | 768 | 865 | Kaggle "Real and Fake Face Detection" (ciplab, Yonsei University), 80% of it | no licence file; research data under the dataset's own terms |
| stylegan-boredhumans | StyleGAN faces from a "this person does not exist"-style site | 600 | | GitHub BaseMax/FakeFaces | repository GPL-3.0; generated images |
| sd21-sdfd | Stable Diffusion 2.1 portraits from diverse prompts (SDFD, FG 2024) | 500 | | GitHub gebaltso/SDFD | no licence file; research dataset, cite the paper |
| ffhq-real | FFHQ photos (Flickr-Faces-HQ) | | 400 | GitHub dinablachman/realorfake | CC BY-NC-SA 4.0 (non-commercial), images under their Flickr licences |
| dfdc | 224 px face crops of DFDC video frames: each fake a face swap of the real video beside it | 600 | 600 | GitHub i-Shreyansh/DeepFake-Detection | DFDC: research use under the DFDC dataset terms |
| gan-studio | GAN studio portraits (StyleGAN family, generated.photos style: even light, plain backgrounds) | 1121 | | GitHub hmdghoul/generated-faces | no licence file; generated images, research use |
| pixabay-real | retouched, studio, beauty and press-style portraits: the glossy real photos a detector wrongly accuses | | 810 | GitHub Hossein88-eng/gender-classification-doe (Pixabay ids before text-to-image images were common there) | repository MIT; images under the Pixabay Content License |
| studio-real | professional studio portraits, neutral and smiling | | 244 | GitHub debruine/webmorphR.stim (Face Research Lab London Set, Canada set) | CC BY 4.0 |

The generated sets, FFHQ and the three extra sources were downscaled to at most 384 px and saved as JPEG q90,
so no class carries a processing history of its own; every training image also contributes one augmented copy
re-sized to a longer side of 160-512 px, sometimes blurred, and re-encoded at JPEG quality 50-95, and every
source and class is drawn equally often. Self-blended pseudo-fakes (`fakeface/self_blend.py`) were measured
and left out of this model: they accused more real photos (see the project's scripts/experiments/README.md).
Splits are stratified by source, class and difficulty with seed 0,
each DFDC swap in the same split as its original: train / validation (early stopping, temperature, threshold) /
test (the figures below)."""

LIMITS = """## What this model does not do

- **Generator families it never saw.** It was trained on one GAN family (StyleGAN: two sources), one diffusion
  model (Stable Diffusion 2.1), one face-swap method set (DFDC) and one kind of composite (ciplab). Leaving a
  whole family out of training and testing on it (cross-validation, below) finds it at chance: a family never
  seen is not detected. Recent text-to-image models (Flux, SDXL, DALL-E 3, ...) differ from SD 2.1 and may pass
  as REAL. A REAL verdict means "no trace this model knows was found", not "authentic" and not "not
  AI-generated".
- **Real photos it accuses.** The real-photo rates above come from five kinds of real photos (ciplab's
  portraits, FFHQ, DFDC video frames, retouched Pixabay portraits, studio portraits); heavily compressed video
  frames are accused most. Other cameras, filters and compressions will do differently.
- **"Most like"** names which of the four trained kinds of fake a FAKE face resembles; for a generator of an
  unseen family it still names one of the four.
- The figures come from held-out parts of the training sources, not from independent data.
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
        n_folds = len(next(iter(rows.values()))["folds"])
        extra += (f"## Cross-validation ({n_folds} folds stratified by source, class and difficulty, DFDC pairs kept "
                  "together, seed 0)\n\n"
                  f"Each fold trains on {n_folds - 1}/{n_folds} (15% of it for early stopping and calibration) and is "
                  "scored on the held-out part; mean ± std over folds. Difficulty columns: that difficulty's "
                  "fakes against the fold's reals.\n\n" + crossval_table(rows) + "\n")
        for name, cv in rows.items():
            table = source_crossval_table(cv)
            if table:
                extra += f"\n### {name}: per source\n\n" + table + "\n"
        extra += ("\nHow the recipe was chosen (blocks, tokens, views, augmentation, pseudo-fakes, head, threshold "
                  "rule): `scripts/experiments/README.md`.\n")
    extra += "\n" + LIMITS + "\n" + (("\n" + args.notes + "\n") if args.notes else "")

    model = FakeFaceModel.from_pretrained(str(BUNDLED_MODEL_DIR))
    config = TrainConfig(**metrics["training"]["config"])
    (BUNDLED_MODEL_DIR / "README.md").unlink(missing_ok=True)
    data = metrics["training"]["data"]
    names = [Path(d).name for d in ([data] if isinstance(data, str) else data)]  # source names, not local paths
    write_model_card(BUNDLED_MODEL_DIR, model, metrics, config, names,
                     model_id=DEFAULT_HUB_REPO, extra_sections=extra, data_text=DATA_TEXT,
                     kinds="Photoshop composites, face swaps, GAN and diffusion faces")
    print(f"bundled {src} into {BUNDLED_MODEL_DIR}")


if __name__ == "__main__":
    main()
