"""The `fakeface` command: train, crossval, evaluate, predict. Each subcommand has --help."""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import sys
from pathlib import Path

from .errors import FakefaceError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}


def _add_train_options(p: argparse.ArgumentParser) -> None:
    from .models import ARCHITECTURES
    from .training import PRESETS

    p.add_argument("--data", required=True, help="image folder (real/ + fake/, Kaggle or train/test layouts) or Hub dataset id")
    p.add_argument("--revision", help="Hub dataset revision (branch, tag or commit)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="default", help="named hyper-parameter set")
    p.add_argument("--arch", choices=sorted(ARCHITECTURES), help="architecture (overrides the preset)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--image-size", type=int)
    p.add_argument("--loss", choices=["focal", "bce"])
    p.add_argument("--seed", type=int)
    p.add_argument("--workers", type=int, dest="num_workers", help="DataLoader worker processes")
    p.add_argument("--no-pretrained", action="store_true", help="train the backbone from scratch (no ImageNet weights)")
    p.add_argument("--max-steps-per-epoch", type=int, help="cap steps per epoch (smoke runs)")
    p.add_argument("--limit", type=int, help="use only N images (stratified sample; smoke runs)")
    p.add_argument("--cache-dir", help="where frozen-backbone features are cached")


def _train_config(args):
    from .training import make_config

    return make_config(args.preset, arch=args.arch, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                       image_size=args.image_size, loss=args.loss, seed=args.seed, num_workers=args.num_workers,
                       max_steps_per_epoch=args.max_steps_per_epoch,
                       pretrained=False if args.no_pretrained else None)


def cmd_train(args) -> int:
    from .pipeline import train_evaluate_save

    summary = train_evaluate_save(args.data, args.output_dir, _train_config(args), revision=args.revision,
                                  push_to_hub=args.push_to_hub, limit=args.limit, cache_dir=args.cache_dir)
    print(json.dumps(summary, indent=2))
    return 0


def cmd_crossval(args) -> int:
    from .pipeline import cross_validate

    summary = cross_validate(args.data, _train_config(args), folds=args.folds, output_dir=args.output_dir,
                             revision=args.revision, limit=args.limit, cache_dir=args.cache_dir)
    print(json.dumps(summary, indent=2))
    return 0


def cmd_evaluate(args) -> int:
    from .pipeline import evaluate_model

    summary = evaluate_model(args.data, args.model, args.output_dir, revision=args.revision, limit=args.limit,
                             threshold=args.threshold)
    print(json.dumps(summary, indent=2))
    return 0


def expand_inputs(items: list[str]) -> list[str]:
    """Files, folders (recursively, image suffixes) and glob patterns -> a sorted, de-duplicated list."""
    paths: list[str] = []
    for item in items:
        matches = glob.glob(item, recursive=True) if glob.has_magic(item) else [item]
        if not matches:
            paths.append(item)  # reported later as a missing file
        for m in matches:
            if os.path.isdir(m):
                paths += sorted(str(p) for p in Path(m).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            else:
                paths.append(m)
    return list(dict.fromkeys(paths))


def cmd_predict(args) -> int:
    from tqdm.auto import tqdm

    from .predictor import Predictor

    predictor = Predictor.load(args.model, detector=args.detector, threshold=args.threshold)
    paths = expand_inputs(args.paths)
    writer = _RowWriter(args.format, sys.stdout)
    failures = 0
    for path in tqdm(paths, desc="predict", unit="img", file=sys.stderr, disable=args.quiet):
        try:
            pred = predictor.predict_file(path)
            writer.write({"path": path, **pred.as_dict(), "faces": len(pred.faces)})
        except (FakefaceError, OSError) as exc:  # one bad file never stops the batch
            failures += 1
            writer.write({"path": path, "fake_prob": None, "real_prob": None, "label": None, "error": str(exc)})
    writer.close()
    if failures:
        print(f"{failures} of {len(paths)} files could not be classified (see the 'error' field).", file=sys.stderr)
    return 1 if failures or not paths else 0


class _RowWriter:
    COLUMNS = ["path", "fake_prob", "real_prob", "label", "uncertain", "faces", "error"]

    def __init__(self, fmt: str, stream):
        self.fmt, self.stream, self.rows = fmt, stream, []
        if fmt == "csv":
            self.csv = csv.DictWriter(stream, fieldnames=self.COLUMNS, extrasaction="ignore")
            self.csv.writeheader()

    def write(self, row: dict) -> None:
        if self.fmt == "jsonl":
            self.stream.write(json.dumps({k: v for k, v in row.items() if k not in ("verdict",)}) + "\n")
            self.stream.flush()  # streaming: each row is usable as soon as it is written
        elif self.fmt == "csv":
            self.csv.writerow(row)
        else:
            self.rows.append(row)

    def close(self) -> None:
        if self.fmt != "table":
            return
        for row in self.rows:
            if row.get("error"):
                self.stream.write(f"{row['path']}\tERROR\t{row['error']}\n")
            else:
                flag = " (uncertain)" if row.get("uncertain") else ""
                self.stream.write(f"{row['path']}\t{row['label']}{flag}\tfake_prob={row['fake_prob']:.4f}"
                                  f"\tfaces={row['faces']}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fakeface", description="Detect fake face images.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train, calibrate, evaluate on a held-out split, save (and push)")
    _add_train_options(p)
    p.add_argument("--output-dir", required=True, help="where the model, metrics and logs go")
    p.add_argument("--push-to-hub", metavar="REPO_ID", help="upload the saved model (token from HF_TOKEN)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("crossval", help="stratified k-fold cross-validation of a training recipe")
    _add_train_options(p)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--output-dir", required=True)
    p.set_defaults(func=cmd_crossval)

    p = sub.add_parser("evaluate", help="metrics.json and plots for a model on a labelled image set")
    p.add_argument("data", help="image folder or Hub dataset id")
    p.add_argument("--model", help="model folder or Hub id (default: the project's model)")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--revision")
    p.add_argument("--threshold", type=float, help="decision threshold (default: the model's)")
    p.add_argument("--limit", type=int)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="classify image files, folders and globs")
    p.add_argument("paths", nargs="+", help="files, folders or glob patterns")
    p.add_argument("--model", help="model folder or Hub id 'user/repo[@revision]' (default: the project's model)")
    p.add_argument("--threshold", type=float, help="decision threshold (default: the model's)")
    p.add_argument("--format", choices=["table", "csv", "jsonl"], default="table")
    p.add_argument("--detector", choices=["auto", "mtcnn", "haar", "none"], default="auto",
                   help="face detector ('none' classifies whole images)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_predict)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except FakefaceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
