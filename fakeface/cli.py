"""The `fakeface` command: train, crossval, evaluate, predict, publish. Each subcommand has --help.

`train` and `crossval` run unchanged under `torchrun --nproc_per_node N` (see "Training at scale" in README.md).
"""

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

    p.add_argument("--data", required=True, action="append",
                   help="image folder (real/ + fake/, Kaggle or train/test layouts), Hub dataset id, or a "
                        "JSON/YAML mix file of sources with weights; repeat for several sources")
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
    p.add_argument("--no-early-exit", action="store_true",
                   help="frozen-feature models: no first-view probe; every image goes through all views")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"],
                   help="auto: bf16 autocast for image models on CUDA or AMX CPUs, else fp32")
    p.add_argument("--limit", type=int, help="use only N images (stratified sample; smoke runs)")
    p.add_argument("--cache-dir", help="where frozen-backbone features are cached")
    if p.prog.split()[-1] == "train":  # crossval trains every fold afresh in its own folder
        again = p.add_mutually_exclusive_group()
        again.add_argument("--resume", action="store_true",
                           help="continue the run in --output-dir from its checkpoint (same settings only)")
        again.add_argument("--overwrite", action="store_true",
                           help="replace the run in --output-dir: delete its run/, model/ and eval/ (refused "
                                "when the folder holds anything else)")


def _train_config(args):
    from .training import make_config

    return make_config(args.preset, arch=args.arch, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                       image_size=args.image_size, loss=args.loss, seed=args.seed, num_workers=args.num_workers,
                       max_steps_per_epoch=args.max_steps_per_epoch, precision=args.precision,
                       pretrained=False if args.no_pretrained else None,
                       early_exit_band=[] if args.no_early_exit else None)


def _in_process_group(work) -> int:
    """Run `work()` inside torchrun's process group when torchrun started us (RANK, WORLD_SIZE... set; gloo on
    CPU, nccl on CUDA), else plainly; rank 0 prints the summary it returns."""
    from . import distributed

    world = distributed.init_from_env()
    try:
        summary = work()
    finally:
        distributed.shutdown()
    if world.is_main:
        print(json.dumps(summary, indent=2))
    return 0


RUN_OUTPUTS = ("run", "model", "eval")  # what `fakeface train` writes in --output-dir


def _claim_output_dir(output_dir: Path, config, resume: bool, overwrite: bool) -> None:
    """Refuse to mix runs in one folder: a non-empty --output-dir needs --resume (a checkpoint there, saved with
    the same config) or --overwrite (which deletes RUN_OUTPUTS, and refuses when anything else is there)."""
    from .training import CHECKPOINT, check_resumable, read_checkpoint

    if output_dir.exists() and not output_dir.is_dir():
        raise FakefaceError(f"--output-dir {output_dir} is a file, not a folder.")
    entries = sorted(p.name for p in output_dir.iterdir()) if output_dir.is_dir() else []
    if not entries:
        return  # a fresh run (with --resume too: nothing to resume yet, so the same command can be rerun)
    checkpoint = output_dir / "run" / CHECKPOINT
    if resume:
        if not checkpoint.exists():
            raise FakefaceError(f"--resume: {output_dir} holds no checkpoint (run/{CHECKPOINT}) to continue; give "
                                f"--overwrite to replace what is there, or another --output-dir.")
        check_resumable(read_checkpoint(checkpoint)["config"], config, checkpoint)  # before minutes of data loading
        return
    if not overwrite:
        raise FakefaceError(f"{output_dir} is not empty: give --resume to continue the run it holds, --overwrite "
                            f"to replace it, or another --output-dir.")
    unknown = [name for name in entries if name not in RUN_OUTPUTS]
    if unknown:
        raise FakefaceError(f"--overwrite deletes only what `fakeface train` writes ({', '.join(RUN_OUTPUTS)}), but "
                            f"{output_dir} also holds {', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}: "
                            f"move them, or give another --output-dir.")
    import shutil

    for name in RUN_OUTPUTS:
        path = output_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def cmd_train(args) -> int:
    from . import distributed
    from .pipeline import train_evaluate_save

    def work():
        config = _train_config(args)
        refusal = None
        if distributed.world().is_main:  # rank 0's disk is the one written; every rank then stops alike
            try:
                _claim_output_dir(Path(args.output_dir), config, args.resume, args.overwrite)
            except FakefaceError as exc:
                refusal = str(exc)
        refusal = distributed.broadcast_object(refusal)
        if refusal:
            raise FakefaceError(refusal)
        return train_evaluate_save(args.data, args.output_dir, config, revision=args.revision,
                                   push_to_hub=args.push_to_hub, limit=args.limit, cache_dir=args.cache_dir,
                                   resume=args.resume)

    return _in_process_group(work)


def cmd_crossval(args) -> int:
    from .pipeline import cross_validate

    return _in_process_group(lambda: cross_validate(
        args.data, _train_config(args), folds=args.folds, output_dir=args.output_dir, revision=args.revision,
        limit=args.limit, cache_dir=args.cache_dir, leave_one_source_out=not args.no_leave_one_source_out))


def cmd_publish(args) -> int:
    """The model repo in one commit, then (with --space) the Space that serves exactly that commit."""
    from huggingface_hub.errors import HfHubHTTPError

    from .publish import publish

    try:
        summary = publish(args.model_dir, args.repo, space_id=args.space, private=args.private,
                          set_variable=not args.no_space_variable, datasets=args.dataset)
    except HfHubHTTPError as exc:  # 401 bad token, 403 no write access to the namespace, ...
        status = getattr(getattr(exc, "response", None), "status_code", None)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FakefaceError(f"The Hub refused the publish (HTTP {status}): {first}") from None
    for part in summary.values():
        for note in part.pop("notes", []):
            print(f"note: {note}", file=sys.stderr)
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


# ------------------------------------------------------------------------------------------------- predict
#
# Inputs are (id, source) pairs: the id is the row's "path" (a file path, or "user/set:split[i]" for a Hub
# dataset); `read(source)` is what images.load_image decodes. Decoding runs in DataLoader workers, the model
# in batches in the main process, and every row is written as soon as its batch is done.


def cmd_predict(args) -> int:
    from .distributed import shard
    from .predictor import Predictor

    items, read = _dataset_items(args) if args.dataset else ([(p, p) for p in expand_inputs(args.paths)], None)
    n_inputs = len(items)
    if args.shard:  # a split every machine computes alike: every n-th item of the list sorted by path
        items = shard(sorted(items, key=lambda item: item[0]), *args.shard)
    done = _done_ids(args.output, args.format) if args.skip_existing else set()
    items = [item for item in items if item[0] not in done]
    predictor = Predictor.load(args.model, detector=args.detector, threshold=args.threshold)
    with _open_output(args.output, append=bool(done)) as stream:
        writer = _RowWriter(args.format, stream, header=not done)
        failures = _predict_rows(predictor, items, read, writer, args)
        writer.close()
    if failures:
        print(f"{failures} of {len(items)} files could not be classified (see the 'error' field).", file=sys.stderr)
    return 1 if failures or not n_inputs else 0


def _predict_rows(predictor, items: list, read, writer: "_RowWriter", args) -> int:
    """Classify `items` a batch at a time, writing each row as it comes; returns how many failed."""
    import torch
    from tqdm.auto import tqdm

    loader = torch.utils.data.DataLoader(_Decoded(items, read), batch_size=args.batch_size,
                                         num_workers=args.workers, collate_fn=list)
    failures = 0
    with tqdm(total=len(items), desc="predict", unit="img", file=sys.stderr, disable=args.quiet) as bar:
        for batch in loader:
            for path, result in _classify(predictor, batch):
                failures += isinstance(result, str)
                writer.write(_row(path, result))
            bar.update(len(batch))
    return failures


class _Decoded:
    """A map-style dataset of (id, image or None, error or None): decoding failures become values, so one
    bad file never stops a DataLoader worker."""

    def __init__(self, items: list, read=None):
        self.items, self.read = items, read

    def __len__(self):
        return len(self.items)

    def __getitem__(self, k):
        from .images import load_image

        name, source = self.items[k]
        try:
            return name, load_image(self.read(source) if self.read else source), None
        except (FakefaceError, OSError) as exc:
            return name, None, str(exc)


def _classify(predictor, batch: list) -> list:
    """(id, Prediction or error message) for each decoded item of a batch, in order."""
    images = [image for _, image, error in batch if error is None]
    try:
        predictions = iter(predictor.predict_images(images))
    except (FakefaceError, OSError):  # find the culprit: one image at a time
        predictions = iter([_predict_one(predictor, image) for image in images])
    return [(name, error if error is not None else next(predictions)) for name, _, error in batch]


def _predict_one(predictor, image):
    try:
        return predictor.predict_image(image)
    except (FakefaceError, OSError) as exc:
        return str(exc)


def _row(path: str, result) -> dict:
    if isinstance(result, str):
        return {"path": path, "fake_prob": None, "real_prob": None, "label": None, "error": result}
    return {"path": path, **result.as_dict(), "faces": len(result.faces)}


class _HubImages:
    """(split, row) of a Hub dataset -> that image's bytes (or path) for images.load_image."""

    def __init__(self, splits: dict, column: str):
        self.splits, self.column = splits, column

    def __call__(self, source):
        split, row = source
        image = self.splits[split][row][self.column] or {}
        return image.get("bytes") or image.get("path") or b""


def _dataset_items(args) -> tuple[list, _HubImages]:
    """Every image of a Hub dataset (all splits, or --split), as (id, (split, row)) items."""
    import datasets

    from .data import _image_column

    try:
        loaded = datasets.load_dataset(args.dataset, revision=args.revision, split=args.split)
    except (FileNotFoundError, ValueError) as exc:
        raise FakefaceError(f"{args.dataset}: Hub dataset not found or not accessible ({exc}).") from None
    if isinstance(loaded, datasets.Dataset):
        loaded = {args.split: loaded}
    column = _image_column(next(iter(loaded.values())))
    splits = {name: ds.cast_column(column, datasets.Image(decode=False)) for name, ds in loaded.items()}
    items = [(f"{args.dataset}:{name}[{row}]", (name, row)) for name, ds in splits.items() for row in range(len(ds))]
    return items, _HubImages(splits, column)


# ------------------------------------------------------------------------------------- output and resuming


def _done_ids(output: str | None, fmt: str) -> set[str]:
    """The "path" of every row already in the output file (empty when it does not exist yet)."""
    if not output:
        raise FakefaceError("--skip-existing resumes the file given by --output FILE; add --output.")
    if fmt == "table":
        raise FakefaceError("--skip-existing reads the output back: use --format jsonl or csv.")
    path = Path(output)
    if not path.exists():
        return set()
    _drop_partial_line(path)
    with open(path, newline="", encoding="utf-8") as f:
        try:
            if fmt == "csv":
                return {row["path"] for row in csv.DictReader(f)}
            return {json.loads(line)["path"] for line in f if line.strip()}
        except (ValueError, KeyError) as exc:
            raise FakefaceError(f"{output}: cannot resume, a row is not {fmt} with a path ({exc}).") from None


def _drop_partial_line(path: Path) -> None:
    """A run killed mid-write can leave a last line without its newline: cut it, so that image is redone."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def _open_output(output: str | None, append: bool):
    from contextlib import nullcontext

    if not output:
        return nullcontext(sys.stdout)
    return open(output, "a" if append else "w", newline="", encoding="utf-8")


class _RowWriter:
    COLUMNS = ["path", "fake_prob", "real_prob", "label", "uncertain", "faces", "error"]

    def __init__(self, fmt: str, stream, header: bool = True):
        self.fmt, self.stream, self.rows = fmt, stream, []
        if fmt == "csv":
            self.csv = csv.DictWriter(stream, fieldnames=self.COLUMNS, extrasaction="ignore")
            if header:  # not when appending to a file that has one
                self.csv.writeheader()

    def write(self, row: dict) -> None:
        if self.fmt == "jsonl":
            self.stream.write(json.dumps({k: v for k, v in row.items() if k not in ("verdict",)}) + "\n")
            self.stream.flush()  # streaming: each row is usable as soon as it is written
        elif self.fmt == "csv":
            self.csv.writerow(row)
            self.stream.flush()
        else:
            self.rows.append(row)  # a table is printed at the end, so it does not mix with the progress bar

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

    p = sub.add_parser("predict", help="classify image files, folders and globs, or a Hub dataset")
    p.add_argument("paths", nargs="*", help="files, folders or glob patterns")
    p.add_argument("--dataset", metavar="REPO_ID", help="classify every image of this Hub dataset instead")
    p.add_argument("--split", help="with --dataset: only this split (default: all)")
    p.add_argument("--revision", help="with --dataset: branch, tag or commit")
    p.add_argument("--model", help="model folder or Hub id 'user/repo[@revision]' (default: the project's model)")
    p.add_argument("--threshold", type=float, help="decision threshold (default: the model's)")
    p.add_argument("--format", choices=["table", "csv", "jsonl"], default="table")
    p.add_argument("--detector", choices=["auto", "mtcnn", "haar", "none"], default="auto",
                   help="face detector ('none' classifies whole images)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--output", metavar="FILE", help="write rows to FILE (default: standard output)")
    p.add_argument("--skip-existing", action="store_true",
                   help="resume: keep the rows already in --output FILE and do only the paths it lacks")
    p.add_argument("--shard", type=_shard_arg, metavar="I/N",
                   help="do only shard I of N (every N-th path of the sorted list, from the I-th; 0-based)")
    p.add_argument("--batch-size", type=int, default=16, help="images per forward pass")
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes decoding images")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("publish", help="push a trained model folder to the Hub in one commit (and the Space "
                                       "that serves it); token from HF_TOKEN")
    p.add_argument("model_dir", help="the model/ folder `fakeface train` wrote (e.g. runs/default/model)")
    p.add_argument("--repo", required=True, metavar="USER/NAME", help="the Hub model repo (created if missing)")
    p.add_argument("--space", metavar="USER/NAME",
                   help="also create or update this Space so it serves the pushed commit")
    p.add_argument("--private", action="store_true", help="create the repos private (the Space then needs an "
                                                          "HF_TOKEN secret to read the model)")
    p.add_argument("--dataset", action="append", metavar="HUB_ID",
                   help="a Hub dataset id for the Space's `datasets:` metadata (repeat for several)")
    p.add_argument("--no-space-variable", action="store_true",
                   help="do not set the Space variable FAKEFACE_MODEL (the Space still reads its pinned_model.txt)")
    p.set_defaults(func=cmd_publish)
    return parser


def _shard_arg(text: str) -> tuple[int, int]:
    from .distributed import parse_shard

    try:
        return parse_shard(text)
    except FakefaceError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "predict" and bool(args.paths) == bool(args.dataset):
        parser.error("predict: give image paths, or --dataset REPO_ID (not both)")
    try:
        return args.func(args)
    except FakefaceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
