"""Labelled face sets, local folders or Hub datasets, as Hugging Face `datasets` with one schema.

Every split has the columns
    image       datasets.Image()  (decoded lazily; for the exact serving decoder cast it to
                                   `Image(decode=False)` and pass the bytes or path to `images.load_image`)
    label       ClassLabel(names=["fake", "real"])   (0 = fake, 1 = real, whatever the source called them)
    path        str, the image file's path ("" when the source has none)
    difficulty  str, "easy" / "mid" / "hard" from ciplab file names, "" otherwise

Images that cannot be decoded are left out and listed in `FaceData.skipped`; they are never replaced.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import datasets
import numpy as np
import pyarrow.compute as pc

from .errors import FakefaceError
from .images import load_image

log = logging.getLogger(__name__)

LABEL_NAMES = ("fake", "real")
FEATURES = datasets.Features(
    {
        "image": datasets.Image(),
        "label": datasets.ClassLabel(names=list(LABEL_NAMES)),
        "path": datasets.Value("string"),
        "difficulty": datasets.Value("string"),
    }
)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".mpo"}
# Folder names that mean a split; anything else with "fake"/"real" in its name is a class folder.
SPLIT_NAMES = {"train": "train", "test": "test", "validation": "validation", "val": "validation", "valid": "validation"}
_FAKE_WORDS = {"fake", "fakes"}
_REAL_WORDS = {"real", "reals"}
_DIFFICULTY = re.compile(r"^(easy|mid|hard)_\d+_[01]+\.", re.IGNORECASE)
_LABEL_COLUMNS = ("label", "labels", "class")


@dataclass
class FaceData:
    """A loaded face set: its splits, and the images left out because they could not be read."""

    splits: datasets.DatasetDict  # always "train"; "validation" / "test" too when the source has them
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path or "split[index]", reason)

    @property
    def train(self) -> datasets.Dataset:
        return self.splits["train"]


# ---------------------------------------------------------------- names


def label_from_name(name: str) -> int | None:
    """0 for a fake-class name ("training_fake", "Fake"...), 1 for a real one, None if it is neither or both."""
    words = set(re.split(r"[^a-z]+", name.lower()))
    is_fake, is_real = bool(words & _FAKE_WORDS), bool(words & _REAL_WORDS)
    if is_fake == is_real:  # "real_and_fake_face" is a container, not a class
        return None
    return 0 if is_fake else 1


def difficulty_from_name(path: str) -> str:
    """The ciplab difficulty ("easy", "mid" or "hard") from a name like `mid_5_0110.jpg`; "" for other names."""
    match = _DIFFICULTY.match(Path(path).name)
    return match.group(1).lower() if match else ""


# ---------------------------------------------------------------- entry point


def load_face_dataset(source: str, revision: str | None = None, validate: bool = True) -> FaceData:
    """Load a local folder (real/ + fake/, Kaggle layout, or train/test splits) or a Hub dataset id.

    An existing local folder wins over a Hub id of the same spelling.

    With `validate`, every image is decoded once and the unreadable ones are skipped and reported.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        if revision is not None:
            raise FakefaceError(f"{source} is a local folder; --revision only applies to Hub datasets.")
        return _load_local(path, validate)
    if path.exists():
        raise FakefaceError(f"{source} is a file; give a folder with real/ and fake/ sub-folders, or a Hub id.")
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", source):
        raise FakefaceError(f"{source}: no such folder, and not a Hub dataset id like 'user/faces'.")
    return _load_hub(source, revision, validate)


# ---------------------------------------------------------------- local folders


def _load_local(root: Path, validate: bool) -> FaceData:
    layout = _find_layout(root)
    splits, skipped = {}, []
    for split, class_dirs in layout.items():
        files = _list_files(class_dirs)
        if validate:
            files, bad = _validate_files(files)
            skipped += bad
        splits[split] = _dataset_from_files(files)
    _check_both_labels(splits, str(root))
    return FaceData(datasets.DatasetDict(splits), skipped)


def _find_layout(root: Path) -> dict[str, dict[int, list[Path]]]:
    """Map split name -> label -> class folders, searching root and then one level below it."""
    layout = _layout_here(root)
    if layout:
        return layout
    found = [(child, _layout_here(child)) for child in _subdirs(root)]
    found = [(child, lay) for child, lay in found if lay]
    if len(found) == 1:  # e.g. the parent of Kaggle's real_and_fake_face/
        return found[0][1]
    if len(found) > 1:
        names = ", ".join(str(child) for child, _ in found)
        raise FakefaceError(f"{root}: several face sets inside ({names}); point to one of them.")
    raise FakefaceError(
        f"{root}: found no class folders. Expected real/ and fake/ (or training_real/ and training_fake/), "
        "possibly inside train/, validation/ and test/ folders."
    )


def _layout_here(folder: Path) -> dict[str, dict[int, list[Path]]]:
    classes = _class_dirs(folder)
    split_dirs = {SPLIT_NAMES[d.name.lower()]: d for d in _subdirs(folder) if d.name.lower() in SPLIT_NAMES}
    if classes and split_dirs:
        raise FakefaceError(f"{folder}: has both class folders and split folders ({', '.join(split_dirs)}); "
                            "keep one layout.")
    if classes:
        return {"train": classes}
    layout = {split: _class_dirs(d) for split, d in split_dirs.items()}
    empty = [split for split, classes in layout.items() if not classes]
    if layout and empty:
        raise FakefaceError(f"{folder}: split folder(s) {', '.join(empty)} hold no real/ or fake/ folder.")
    if layout and "train" not in layout:
        raise FakefaceError(f"{folder}: has {', '.join(layout)} split folders but no train/ folder.")
    return layout


def _class_dirs(folder: Path) -> dict[int, list[Path]]:
    classes: dict[int, list[Path]] = {}
    for child in _subdirs(folder):
        label = label_from_name(child.name)
        if label is not None:
            classes.setdefault(label, []).append(child)
    return classes


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _list_files(class_dirs: dict[int, list[Path]]) -> list[tuple[str, int]]:
    """(path, label) for every image file under the class folders, in a fixed order."""
    files = []
    for label in sorted(class_dirs):
        for folder in class_dirs[label]:
            for p in sorted(folder.rglob("*")):
                if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES:
                    files.append((str(p), label))
    return files


def _validate_files(files: list[tuple[str, int]]) -> tuple[list[tuple[str, int]], list[tuple[str, str]]]:
    good, bad = [], []
    for path, label in files:
        reason = image_problem(path)
        if reason is None:
            good.append((path, label))
        else:
            bad.append((path, reason))
    return good, bad


def image_problem(image) -> str | None:
    """Why `load_image` refuses this path/bytes (the reason is logged as a warning), or None if it loads."""
    try:
        load_image(image)
    except FakefaceError as exc:
        log.warning("skipping unreadable image: %s", exc)
        return str(exc)
    return None


def _dataset_from_files(files: list[tuple[str, int]]) -> datasets.Dataset:
    paths = [path for path, _ in files]
    columns = {
        "image": paths,  # stored as paths: the files are read when used, never copied
        "label": [label for _, label in files],
        "path": paths,
        "difficulty": [difficulty_from_name(p) for p in paths],
    }
    return datasets.Dataset.from_dict(columns, features=FEATURES)


def _check_both_labels(splits: dict[str, datasets.Dataset], where: str) -> None:
    counts = Counter(splits["train"]["label"][:])
    missing = [LABEL_NAMES[i] for i in (0, 1) if counts[i] == 0]
    if missing:
        raise FakefaceError(f"{where}: the training data has no readable {' or '.join(missing)} images.")


# ---------------------------------------------------------------- Hub datasets


def _load_hub(repo_id: str, revision: str | None, validate: bool) -> FaceData:
    try:
        loaded = datasets.load_dataset(repo_id, revision=revision)
    except FileNotFoundError as exc:
        raise FakefaceError(f"{repo_id}: Hub dataset not found or not accessible ({exc}).") from None
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({"train": loaded})
    splits, skipped = {}, []
    for name, ds in loaded.items():
        ds = normalise_labels(ds)
        if validate:
            ds, bad = _drop_unreadable(ds, name)
            skipped += bad
        splits[SPLIT_NAMES.get(name.lower(), name)] = ds
    if "train" not in splits:
        raise FakefaceError(f"{repo_id}: has splits {', '.join(splits)} but no 'train' split.")
    _check_both_labels(splits, repo_id)
    return FaceData(datasets.DatasetDict(splits), skipped)


def normalise_labels(ds: datasets.Dataset) -> datasets.Dataset:
    """Give a dataset the project schema: image, label (ClassLabel fake/real), path, difficulty.

    The label column may be called label/labels/class and hold ClassLabel ids or strings; its names are
    mapped to fake/real by `label_from_name`. Raises FakefaceError when they cannot be mapped.
    """
    image_col = _image_column(ds)
    label_col = _label_column(ds)
    labels = _mapped_labels(ds, label_col)
    paths = _image_paths(ds, image_col)
    ds = ds.select_columns([image_col])
    if image_col != "image":
        ds = ds.rename_column(image_col, "image")
    ds = ds.cast_column("image", datasets.Image())
    ds = ds.add_column("label", labels, feature=FEATURES["label"])
    ds = ds.add_column("path", paths, feature=FEATURES["path"])
    ds = ds.add_column("difficulty", [difficulty_from_name(p) for p in paths], feature=FEATURES["difficulty"])
    return ds


def _image_column(ds: datasets.Dataset) -> str:
    names = [name for name, feat in ds.features.items() if isinstance(feat, datasets.Image)]
    if "image" in names:
        return "image"
    if not names:
        raise FakefaceError(f"the dataset has no image column (columns: {', '.join(ds.column_names)}).")
    return names[0]


def _label_column(ds: datasets.Dataset) -> str:
    for name in _LABEL_COLUMNS:
        if name in ds.features:
            return name
    raise FakefaceError(
        f"the dataset has no label column: expected one of {', '.join(_LABEL_COLUMNS)}, "
        f"found {', '.join(ds.column_names)}."
    )


def _mapped_labels(ds: datasets.Dataset, column: str) -> list[int]:
    feature = ds.features[column]
    values = ds[column][:]
    if isinstance(feature, datasets.ClassLabel):
        table = [label_from_name(name) for name in feature.names]
        _require_mapped(feature.names, table, column)
        return [table[v] for v in values]
    if feature == datasets.Value("string"):
        names = sorted({str(v) for v in values})
        table = {name: label_from_name(name) for name in names}
        _require_mapped(names, list(table.values()), column)
        return [table[str(v)] for v in values]
    raise FakefaceError(
        f"label column '{column}' has type {feature} without class names, so fake and real cannot be told "
        "apart; give it ClassLabel names or string values containing 'fake' / 'real'."
    )


def _require_mapped(names: Sequence[str], mapped: Sequence[int | None], column: str) -> None:
    unknown = [n for n, m in zip(names, mapped) if m is None]
    if unknown:
        raise FakefaceError(
            f"label column '{column}': cannot tell whether {', '.join(map(repr, unknown))} means fake or real; "
            "rename the classes so each contains 'fake' or 'real'."
        )


def _image_paths(ds: datasets.Dataset, image_col: str) -> list[str]:
    # Read only the "path" field through Arrow: going through Python rows would copy every image's bytes.
    table = ds.select_columns([image_col]).with_format("arrow")[:]
    paths = pc.struct_field(table.column(image_col), "path").to_pylist()
    return [p or "" for p in paths]


def _drop_unreadable(ds: datasets.Dataset, split: str) -> tuple[datasets.Dataset, list[tuple[str, str]]]:
    raw = ds.cast_column("image", datasets.Image(decode=False))["image"]
    keep, bad = [], []
    for i, item in enumerate(raw):
        item = item or {}
        reason = image_problem(item.get("bytes") or item.get("path") or b"")
        if reason is None:
            keep.append(i)
        else:
            bad.append((item.get("path") or f"{split}[{i}]", reason))
    return (ds.select(keep) if bad else ds), bad


# ---------------------------------------------------------------- splits


def stratified_split(
    labels: Sequence[int], val_fraction: float = 0.15, seed: int = 0, strata: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, val_idx): a seeded split stratified by label, and by `strata` (e.g. difficulty) if given."""
    from sklearn.model_selection import StratifiedShuffleSplit

    if not 0 < val_fraction < 1:
        raise FakefaceError(f"val_fraction must be between 0 and 1, not {val_fraction}.")
    keys = _strata_keys(labels, strata, min_count=2)
    splitter = StratifiedShuffleSplit(n_splits=1, test_size=val_fraction, random_state=seed)
    try:
        train_idx, val_idx = next(splitter.split(np.zeros(len(keys)), keys))
    except ValueError as exc:
        raise FakefaceError(f"cannot split {len(keys)} images stratified by label: {exc}") from None
    return np.sort(train_idx), np.sort(val_idx)


def stratified_kfold(
    labels: Sequence[int], k: int = 5, seed: int = 0, strata: Sequence[str] | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """k (train_idx, val_idx) folds, seeded, stratified by label and `strata`; the val parts partition all."""
    from sklearn.model_selection import StratifiedKFold

    keys = _strata_keys(labels, strata, min_count=k)
    folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    try:
        return [(np.sort(tr), np.sort(va)) for tr, va in folds.split(np.zeros(len(keys)), keys)]
    except ValueError as exc:
        raise FakefaceError(f"cannot make {k} folds from {len(keys)} images: {exc}") from None


def _strata_keys(labels: Sequence[int], strata: Sequence[str] | None, min_count: int) -> np.ndarray:
    """One key per item: "label|stratum", falling back to the label alone where a stratum is too rare."""
    labels = [str(int(v)) for v in labels]
    if strata is None:
        return np.array(labels)
    if len(strata) != len(labels):
        raise ValueError(f"strata has {len(strata)} entries for {len(labels)} labels")
    keys = [f"{lab}|{s}" for lab, s in zip(labels, strata)]
    # sklearn refuses a stratum with fewer members than splits: pool the rare ones per label, and if the pool
    # is still too small, put it with that label's largest stratum.
    counts = Counter(keys)
    keys = [key if counts[key] >= min_count else f"{lab}|<rare>" for key, lab in zip(keys, labels)]
    counts = Counter(keys)
    largest = {}
    for key, n in counts.most_common():
        largest.setdefault(key.split("|")[0], key)
    return np.array([key if counts[key] >= min_count else largest[lab] for key, lab in zip(keys, labels)])
