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
from .images import IMAGE_SUFFIXES
from .video import DEFAULT_FRAMES, MAX_FRAMES, VIDEO_SUFFIXES
from .provenance import PROVENANCE_COLUMNS


def _add_train_options(p: argparse.ArgumentParser) -> None:
    from .training import PRESETS

    p.add_argument("--data", required=True, action="append",
                   help="image folder (real/ + fake/, Kaggle or train/test layouts), Hub dataset id, or a "
                        "JSON/YAML mix file of sources with weights; repeat for several sources")
    p.add_argument("--revision", help="Hub dataset revision (branch, tag or commit)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="default",
                   help="named hyper-parameter set; the options below override its values")
    _add_config_options(p.add_argument_group("training settings (every TrainConfig field; default: the preset's)"))
    p.add_argument("--limit", type=int, help="use only N images (stratified sample; smoke runs)")
    p.add_argument("--cache-dir", help="where frozen-backbone features are cached")
    if p.prog.split()[-1] == "train":  # crossval trains every fold afresh in its own folder
        again = p.add_mutually_exclusive_group()
        again.add_argument("--resume", action="store_true",
                           help="continue the run in --output-dir from its checkpoint (same settings only)")
        again.add_argument("--overwrite", action="store_true",
                           help="replace the run in --output-dir: delete its run/, model/ and eval/ (refused "
                                "when the folder holds anything else)")


# ------------------------------------------------------------------------------- training settings
#
# One flag per TrainConfig field, made from the dataclass itself: its name (underscores as dashes, except the
# renames below), its type (bool: --x/--no-x; list: several values; dict: JSON) and the help and choices here.
# A new field gets a flag without touching this file. Flags left out keep the preset's value.

_FLAG_NAMES = {"num_workers": "--workers"}  # kept from before the flags were generated
_CONFIG_HELP = {
    "arch": "architecture",
    "epochs": "training epochs at most (early stopping may end sooner)",
    "batch_size": "images (or feature rows) per step, over all processes",
    "lr": "learning rate (AdamW)",
    "weight_decay": "AdamW weight decay",
    "loss": "focal (see --focal-alpha, --focal-gamma) or bce",
    "focal_alpha": "focal loss alpha",
    "focal_gamma": "focal loss gamma",
    "scheduler": "learning-rate schedule",
    "plateau_factor": "plateau schedule: multiply the lr by this when the validation loss stalls",
    "plateau_patience": "plateau schedule: epochs without improvement before the lr drops",
    "early_stopping_patience": "stop after this many epochs without a better validation loss",
    "image_size": "input side in pixels for image models ('none': the architecture's own)",
    "pretrained": "start image models from ImageNet weights (--no-pretrained: train the backbone from scratch)",
    "robust_augmentation": "degradation augmentation (image models: transforms.robustness_augmentation; "
                           "frozen-feature models: a JPEG copy of each image unless --feature-variants is given)",
    "val_fraction": "share of the training data held out for validation (sources without a validation split)",
    "test_fraction": "share of the data held out for the test report (sources without a test split)",
    "seed": "seed of splits, initialisation and sampling",
    "num_workers": "DataLoader worker processes",
    "max_steps_per_epoch": "cap steps per epoch (smoke runs; 'none': no cap)",
    "features": "frozen-feature recipe as JSON, e.g. '{\"views\": [[224, 1]], \"layers\": [5, 7, 9, 11], "
                "\"tokens\": [\"cls\", \"patch_mean\"]}'",
    "early_exit_band": "frozen-feature models: LOW HIGH, the P(fake) band outside which a first-view probe "
                       "answers alone; no values: no early exit",
    "early_exit_layers": "frozen-feature models: the early-exit probe reads the first N of the recipe's layers, so "
                         "serving stops the tower after that block when it answers ('none': all of them)",
    "precision": "auto: bf16 autocast for image models on CUDA or AMX CPUs, else fp32",
    "feature_variants": "frozen-feature models: cached variants of each training image (e.g. aug:1 jpeg:random); "
                        "no values: none; 'none': the ciplab default (one JPEG copy with robust augmentation)",
    "pseudo_fakes": "frozen-feature models: pseudo-fakes made from each training real (e.g. sbi:1); no values: none",
    "balanced_sampling": "draw every (source, class) cell equally often, times its source's weight",
    "threshold_rule": "how validation picks the threshold: balanced_accuracy_plateau, balanced_accuracy, eer or "
                      "real_fpr:F",
}
_CONFIG_CHOICES = {"loss": ["focal", "bce"], "scheduler": ["plateau", "cosine"], "precision": ["auto", "bf16", "fp32"]}
_NONE = "none"  # given for a field that may be None: sets it to None (make_config drops None overrides)


def _config_fields():
    """(field name, resolved type) for every TrainConfig field, in declaration order."""
    import dataclasses
    import typing

    from .training import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    return [(f.name, hints[f.name]) for f in dataclasses.fields(TrainConfig)]


def _unwrap_optional(kind):
    """(inner type, whether None is allowed) for `X | None`."""
    import types
    import typing

    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return kind, False


def _or_none(convert):
    def parse(text: str):
        return _NONE if text.lower() == _NONE else convert(text)

    parse.__name__ = getattr(convert, "__name__", "value")  # argparse names the type in its error message
    return parse


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("give a JSON object, e.g. '{\"views\": [[224, 1]]}'")
    return value


class _ListOrNone(argparse.Action):
    """Several values -> a list; no values -> []; the single value 'none' -> None (for `list | None`)."""

    def __call__(self, parser, namespace, values, option_string=None):
        if _NONE in values:
            if len(values) > 1:
                parser.error(f"{option_string}: 'none' stands alone")
            values = _NONE
        setattr(namespace, self.dest, values)


def _add_config_options(group) -> None:
    import typing

    from .models import ARCHITECTURES

    choices = {**_CONFIG_CHOICES, "arch": sorted(ARCHITECTURES)}
    for name, kind in _config_fields():
        flag = _FLAG_NAMES.get(name, "--" + name.replace("_", "-"))
        kind, optional = _unwrap_optional(kind)
        help_text = _CONFIG_HELP.get(name, f"TrainConfig.{name}")
        if kind is bool:
            group.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, help=help_text)
        elif typing.get_origin(kind) is list or kind is list:
            item = (typing.get_args(kind) or (str,))[0]
            group.add_argument(flag, dest=name, nargs="*", type=_or_none(item) if optional else item,
                               action=_ListOrNone if optional else "store", metavar=item.__name__.upper(),
                               help=help_text)
        elif kind is dict:
            group.add_argument(flag, dest=name, type=_json_object, metavar="JSON", help=help_text)
        else:
            group.add_argument(flag, dest=name, type=_or_none(kind) if optional else kind, choices=choices.get(name),
                               metavar=None if name in choices else kind.__name__.upper(), help=help_text)
        if name == "early_exit_band":  # kept from before: the same as --early-exit-band with no values
            group.add_argument("--no-early-exit", dest=name, action="store_const", const=[],
                               help="frozen-feature models: no first-view probe; every image goes through all views")


def _train_config(args):
    """The preset's TrainConfig with every flag given on the command line put over it."""
    import dataclasses

    from .training import make_config

    given = {name: getattr(args, name) for name, _ in _config_fields()}
    config = make_config(args.preset, **{k: v for k, v in given.items() if v is not None and v is not _NONE})
    cleared = {k: None for k, v in given.items() if v is _NONE}
    return dataclasses.replace(config, **cleared) if cleared else config


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
        limit=args.limit, cache_dir=args.cache_dir, leave_one_family_out=not args.no_leave_one_family_out))


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
    """Files, folders (recursively, image and video suffixes) and glob patterns -> a sorted, de-duplicated list."""
    paths: list[str] = []
    for item in items:
        matches = glob.glob(item, recursive=True) if glob.has_magic(item) else [item]
        if not matches:
            paths.append(item)  # reported later as a missing file
        for m in matches:
            if os.path.isdir(m):
                paths += sorted(str(p) for p in Path(m).rglob("*")
                                if p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
            else:
                paths.append(m)
    return list(dict.fromkeys(paths))


# ------------------------------------------------------------------------------------------------- predict
#
# Inputs are (id, source) pairs: the id is the row's "path" (a file path, or "user/set:split[i]" for a Hub
# dataset); `read(source)` is what images.load_image decodes. Decoding runs in DataLoader workers, the model
# in batches in the main process, and every row is written as soon as its batch is done. Video files (known by
# their content) are sampled and scored one at a time after the images, one row per clip.


def cmd_predict(args) -> int:
    from .distributed import shard
    from .predictor import Predictor
    from .provenance import load_trust_anchors

    items, read = _dataset_items(args) if args.dataset else ([(p, p) for p in expand_inputs(args.paths)], None)
    n_inputs = len(items)
    if args.shard:  # a split every machine computes alike: every n-th item of the list sorted by path
        items = shard(sorted(items, key=lambda item: item[0]), *args.shard)
    done = _done_ids(args.output, args.format) if args.skip_existing else set()
    items = [item for item in items if item[0] not in done]
    load_trust_anchors(args.trust_anchors)  # a bad file is one error now, not one per image
    predictor = Predictor.load(args.model, detector=args.detector, threshold=args.threshold,
                               trust_anchors=args.trust_anchors)
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

    items, videos = _split_videos(items, read)
    loader = torch.utils.data.DataLoader(_Decoded(items, read, args.trust_anchors), batch_size=args.batch_size,
                                         num_workers=args.workers, collate_fn=list)
    failures = 0
    with tqdm(total=len(items) + len(videos), desc="predict", unit="file", file=sys.stderr,
              disable=args.quiet) as bar:
        for batch in loader:
            for path, result in _classify(predictor, batch):
                failures += isinstance(result, str)
                writer.write(_row(path, result))
            bar.update(len(batch))
        for path in videos:
            result = _analyse_video(predictor, path, args.frames)
            failures += isinstance(result, str)
            writer.write(_video_row(path, result))
            bar.update(1)
    return failures


def _split_videos(items: list, read) -> tuple[list, list[str]]:
    """(image items, video paths): a file is a video by its content (or a video suffix on unreadable content)."""
    from .video import is_video

    if read is not None:  # Hub datasets hold images
        return items, []
    videos = {path for path, _ in items if is_video(path)}
    return [item for item in items if item[0] not in videos], [path for path, _ in items if path in videos]


def _analyse_video(predictor, path: str, frames: int):
    from .video import analyse_video

    try:
        return analyse_video(predictor, path, frames=frames)
    except (FakefaceError, OSError) as exc:
        return str(exc)


class _Decoded:
    """A map-style dataset of (id, image, provenance, error): decoding failures become values, so one bad file
    never stops a DataLoader worker. Provenance is read here, from the file's own bytes."""

    def __init__(self, items: list, read=None, trust_anchors: str | None = None):
        self.items, self.read, self.trust_anchors = items, read, trust_anchors

    def __len__(self):
        return len(self.items)

    def __getitem__(self, k):
        from .predictor import load_with_provenance

        name, source = self.items[k]
        try:
            return name, *load_with_provenance(self.read(source) if self.read else source, self.trust_anchors), None
        except (FakefaceError, OSError) as exc:
            return name, None, None, str(exc)


def _classify(predictor, batch: list) -> list:
    """(id, Prediction or error message) for each decoded item of a batch, in order."""
    images = [image for _, image, _, error in batch if error is None]
    try:
        predictions = iter(predictor.predict_images(images))
    except (FakefaceError, OSError):  # find the culprit: one image at a time
        predictions = iter([_predict_one(predictor, image) for image in images])
    results = []
    for name, _, provenance, error in batch:
        result = error if error is not None else next(predictions)
        if not isinstance(result, str):
            result.provenance = provenance
        results.append((name, result))
    return results


def _predict_one(predictor, image):
    try:
        return predictor.predict_image(image)
    except (FakefaceError, OSError) as exc:
        return str(exc)


def _row(path: str, result) -> dict:
    """One output row: Prediction.as_dict (the REST answer's fields) under the input's path, or its error."""
    if isinstance(result, str):
        return {"path": path, "verdict": None, "uncertain": None, "headline": "ERROR", "fake_prob": None,
                "real_prob": None, "faces_found": None, "error": result}
    # The JSON row carries the provenance object (as_dict); a CSV row its flat columns instead.
    columns = result.provenance.columns() if result.provenance else {}  # none when only pixels were given
    return {"path": path, **result.as_dict(), "provenance_columns": columns}


def _video_row(path: str, result) -> dict:
    """A clip's row: the image row's columns (faces_found = face tracks, one per person), what was sampled and
    each track's score (the frames are in the REST and gradio_client answers)."""
    if isinstance(result, str):
        return _row(path, result)
    clip = result.as_dict()
    del clip["filename"], clip["frames"]
    return {"path": path, "media": "video", **clip}


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
    COLUMNS = ["path", "verdict", "uncertain", "headline", "fake_prob", "real_prob", "faces_found",
               "whole_image_fake_prob", "most_like", "most_like_prob", "error", "decided_by", *PROVENANCE_COLUMNS]

    def __init__(self, fmt: str, stream, header: bool = True):
        self.fmt, self.stream, self.rows = fmt, stream, []
        if fmt == "csv":
            self.csv = csv.DictWriter(stream, fieldnames=self.COLUMNS, extrasaction="ignore")
            if header:  # not when appending to a file that has one
                self.csv.writeheader()

    def write(self, row: dict) -> None:
        if self.fmt == "jsonl":
            self.stream.write(json.dumps({k: v for k, v in row.items() if k != "provenance_columns"}) + "\n")
            self.stream.flush()  # streaming: each row is usable as soon as it is written
        elif self.fmt == "csv":
            kind = row.get("kind") or {}
            self.csv.writerow({**row, **row.get("provenance_columns", {}), "most_like": kind.get("most_like"),
                               "most_like_prob": kind.get("probability")})
            self.stream.flush()
        else:
            self.rows.append(row)  # a table is printed at the end, so it does not mix with the progress bar

    def close(self) -> None:
        if self.fmt != "table":
            return
        for row in self.rows:
            if row.get("error"):
                self.stream.write(f"{row['path']}\tERROR\t{row['error']}\n")
            else:  # without a face there is no face score to show: "-"; clips carry no file provenance: "-"
                prob = "-" if row["fake_prob"] is None else f"{row['fake_prob']:.4f}"
                provenance = row.get("provenance_columns", {}).get("provenance", "-")
                self.stream.write(f"{row['path']}\t{row['headline']}\tfake_prob={prob}\tfaces={row['faces_found']}"
                                  f"\tprovenance={provenance}\n")


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
    p.add_argument("--no-leave-one-family-out", action="store_true",
                   help="with several sources: skip the runs that leave one kind of fake (all its sources) out of "
                        "training")
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

    p = sub.add_parser("predict", help="classify image and video files, folders and globs, or a Hub dataset")
    p.add_argument("paths", nargs="*", help="files, folders or glob patterns (images and videos, told apart by "
                                            "their content)")
    p.add_argument("--dataset", metavar="REPO_ID", help="classify every image of this Hub dataset instead")
    p.add_argument("--split", help="with --dataset: only this split (default: all)")
    p.add_argument("--revision", help="with --dataset: branch, tag or commit")
    p.add_argument("--model", help="model folder or Hub id 'user/repo[@revision]' (default: the project's model)")
    p.add_argument("--threshold", type=float, help="decision threshold (default: the model's)")
    p.add_argument("--format", choices=["table", "csv", "jsonl"], default="table")
    p.add_argument("--detector", choices=["auto", "mtcnn", "haar", "none"], default="auto",
                   help="face detector ('none': every image is read as one face crop, e.g. pre-cropped faces)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--output", metavar="FILE", help="write rows to FILE (default: standard output)")
    p.add_argument("--skip-existing", action="store_true",
                   help="resume: keep the rows already in --output FILE and do only the paths it lacks")
    p.add_argument("--shard", type=_shard_arg, metavar="I/N",
                   help="do only shard I of N (every N-th path of the sorted list, from the I-th; 0-based)")
    p.add_argument("--frames", type=_frames_arg, default=DEFAULT_FRAMES,
                   help=f"videos: frames sampled evenly over each clip (1 to {MAX_FRAMES}; default {DEFAULT_FRAMES})")
    p.add_argument("--trust-anchors", metavar="PEM",
                   help="C2PA trust anchors: Content Credentials signed under these CAs read as 'trusted issuer' "
                        "(default: $FAKEFACE_C2PA_TRUST_ANCHORS; without: signers are not checked against a list)")
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


def _frames_arg(text: str) -> int:
    from .video import check_frame_count

    try:
        return check_frame_count(text)
    except FakefaceError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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
