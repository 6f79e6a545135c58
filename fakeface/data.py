"""Labelled face sets, local folders or Hub datasets, as Hugging Face `datasets` with one schema.

Every split has the columns
    image       datasets.Image()  (decoded lazily; for the exact serving decoder cast it to
                                   `Image(decode=False)` and pass the bytes or path to `images.load_image`)
    label       ClassLabel(names=["fake", "real"])   (0 = fake, 1 = real, whatever the source called them)
    path        str, the image file's path ("" when the source has none)
    difficulty  str, "easy" / "mid" / "hard" from ciplab file names, "" otherwise
    source      str, which source the image came from (the folder's name or the Hub id)
    group       str, images that must stay in one split and fold (a face swap and its original video, from a
                `pairs.csv` with columns fake,original); else the image's own path

Several sources load into one set with `load_face_sources` (folders, Hub ids, or a JSON/YAML mix file that
gives each a weight for balanced sampling).

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
from .images import IMAGE_SUFFIXES, load_image

log = logging.getLogger(__name__)

LABEL_NAMES = ("fake", "real")
FEATURES = datasets.Features(
    {
        "image": datasets.Image(),
        "label": datasets.ClassLabel(names=list(LABEL_NAMES)),
        "path": datasets.Value("string"),
        "difficulty": datasets.Value("string"),
        "source": datasets.Value("string"),
        "group": datasets.Value("string"),
    }
)
PAIRS_FILE = "pairs.csv"
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
    weights: dict[str, float] = field(default_factory=dict)  # source -> sampling weight (default 1)

    @property
    def train(self) -> datasets.Dataset:
        return self.splits["train"]


# ---------------------------------------------------------------- names

# The kind of fake each known training source holds: leave-one-family-out validation drops a whole family (both
# GAN sources, not one folder), and the "most like" head's classes are these. Other sources are their own family.
SOURCE_FAMILIES = {"ciplab": "composite", "dfdc": "face swap", "stylegan-boredhumans": "GAN", "gan-studio": "GAN",
                   "sd21-sdfd": "diffusion"}


def source_family(source: str) -> str:
    """The kind of fake a source's fakes are (SOURCE_FAMILIES), or the source's own name when it is not known."""
    return SOURCE_FAMILIES.get(source, source)


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


def load_face_dataset(source: str, revision: str | None = None, validate: bool = True,
                      both_labels: bool = True) -> FaceData:
    """Load a local folder (real/ + fake/, Kaggle layout, or train/test splits) or a Hub dataset id.

    An existing local folder wins over a Hub id of the same spelling.

    With `validate`, every image is decoded once and the unreadable ones are skipped and reported.
    With `both_labels` (the default), a set without fakes or without reals is refused; one source of a mix
    may hold a single class.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        if revision is not None:
            raise FakefaceError(f"{source} is a local folder; --revision only applies to Hub datasets.")
        return _load_local(path, validate, both_labels)
    if path.exists():
        raise FakefaceError(f"{source} is a file; give a folder with real/ and fake/ sub-folders, or a Hub id.")
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", source):
        raise FakefaceError(f"{source}: no such folder, and not a Hub dataset id like 'user/faces'.")
    return _load_hub(source, revision, validate, both_labels)


def load_face_sources(specs: Sequence[str] | str, revision: str | None = None, validate: bool = True) -> FaceData:
    """Several sources as one set: each spec is a folder, a Hub id, or a JSON/YAML mix file listing sources
    with weights (see `read_mix_file`). Every image keeps its `source`; splits of the same name are joined.
    One spec loads exactly as `load_face_dataset` does."""
    specs = [specs] if isinstance(specs, str) else list(specs)
    if not specs:
        raise FakefaceError("no training data given: pass --data with a folder, a Hub id or a mix file.")
    entries = []
    for spec in specs:
        if Path(spec).suffix.lower() in MIX_SUFFIXES and Path(spec).is_file():
            entries += read_mix_file(spec)
        else:
            entries.append({"data": spec, "weight": 1.0, "revision": revision})
    if len(entries) == 1:
        entry = entries[0]
        data = load_face_dataset(entry["data"], entry.get("revision"), validate)
        data.weights = {_only_source(data): float(entry["weight"])}
        return data
    parts = [(e, load_face_dataset(e["data"], e.get("revision"), validate, both_labels=False)) for e in entries]
    names = [sorted({s for split in d.splits.values() for s in split.unique("source")}) for _, d in parts]
    flat = [n for ns in names for n in ns]
    if len(flat) != len(set(flat)):
        raise FakefaceError(f"two sources share a name ({', '.join(sorted({n for n in flat if flat.count(n) > 1}))}): "
                            "rename a folder so each source has its own name.")
    split_sets = {tuple(sorted(d.splits)) for _, d in parts}
    if len(split_sets) > 1:
        raise FakefaceError("the sources have different splits ("
                            + "; ".join(f"{e['data']}: {', '.join(sorted(d.splits))}" for e, d in parts)
                            + "); give sources that all have the same train/validation/test folders, or none.")
    splits = {name: datasets.concatenate_datasets([d.splits[name].cast(FEATURES) for _, d in parts])
              for name in parts[0][1].splits}
    weights = {n: float(entry["weight"]) for (entry, _), ns in zip(parts, names) for n in ns}
    skipped = [item for _, d in parts for item in d.skipped]
    _check_both_labels(splits, " + ".join(e["data"] for e in entries))
    return FaceData(datasets.DatasetDict(splits), skipped, weights)


MIX_SUFFIXES = {".json", ".yaml", ".yml"}


def read_mix_file(path: str | Path) -> list[dict]:
    """A mix file: a list of sources, each a string or {data, weight (default 1), revision (optional)},
    either at the top level or under "sources". Relative folders are relative to the file.

        sources:
          - data: ciplab
          - {data: ffhq-real, weight: 2}
    """
    import yaml  # a dependency of huggingface_hub; safe_load reads JSON too

    path = Path(path)
    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise FakefaceError(f"{path}: cannot read the mix file ({exc}).") from None
    items = loaded.get("sources") if isinstance(loaded, dict) else loaded
    if not isinstance(items, list) or not items:
        raise FakefaceError(f"{path}: a mix file lists sources, e.g. sources: [{{data: folder, weight: 1}}].")
    entries = []
    for item in items:
        item = {"data": item} if isinstance(item, str) else item
        if not isinstance(item, dict) or "data" not in item or set(item) - {"data", "weight", "revision"}:
            raise FakefaceError(f"{path}: each source is a folder/Hub id or {{data, weight, revision}}, not {item!r}.")
        weight = item.get("weight", 1.0)
        if not isinstance(weight, (int, float)) or weight <= 0:
            raise FakefaceError(f"{path}: the weight of {item['data']} must be a positive number, not {weight!r}.")
        data = str(item["data"])
        local = (path.parent / data).expanduser()
        entries.append({"data": str(local) if local.is_dir() else data, "weight": float(weight),
                        "revision": item.get("revision")})
    return entries


def _only_source(data: FaceData) -> str:
    return data.train["source"][0] if len(data.train) else ""  # the column alone: no image is decoded


# ---------------------------------------------------------------- local folders


def _load_local(root: Path, validate: bool, both_labels: bool = True) -> FaceData:
    layout = _find_layout(root)
    groups = _pair_groups(root)
    splits, skipped = {}, []
    for split, class_dirs in layout.items():
        files = _list_files(class_dirs)
        if validate:
            files, bad = _validate_files(files)
            skipped += bad
        splits[split] = _dataset_from_files(files, root.resolve().name, groups)
    if both_labels:
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


def _pair_groups(root: Path) -> dict[str, str]:
    """Resolved path -> group id from `root/pairs.csv` (columns fake,original; paths relative to root): a fake
    and the real it was made from share the original's path as their group."""
    import csv

    pairs = root / PAIRS_FILE
    if not pairs.is_file():
        return {}
    groups = {}
    with open(pairs, newline="") as f:
        reader = csv.DictReader(f)
        if not {"fake", "original"} <= set(reader.fieldnames or []):
            raise FakefaceError(f"{pairs}: expected the columns fake,original (paths relative to {root}).")
        for row in reader:
            original = str((root / row["original"]).resolve())
            groups[str((root / row["fake"]).resolve())] = original
            groups.setdefault(original, original)
    return groups


def _dataset_from_files(files: list[tuple[str, int]], source: str = "", groups: dict[str, str] | None = None
                        ) -> datasets.Dataset:
    paths = [path for path, _ in files]
    groups = groups or {}
    columns = {
        "image": paths,  # stored as paths: the files are read when used, never copied
        "label": [label for _, label in files],
        "path": paths,
        "difficulty": [difficulty_from_name(p) for p in paths],
        "source": [source] * len(paths),
        "group": [groups.get(str(Path(p).resolve()), p) for p in paths],
    }
    return datasets.Dataset.from_dict(columns, features=FEATURES)


def _check_both_labels(splits: dict[str, datasets.Dataset], where: str) -> None:
    counts = Counter(splits["train"]["label"][:])
    missing = [LABEL_NAMES[i] for i in (0, 1) if counts[i] == 0]
    if missing:
        raise FakefaceError(f"{where}: the training data has no readable {' or '.join(missing)} images.")


# ---------------------------------------------------------------- Hub datasets


def _load_hub(repo_id: str, revision: str | None, validate: bool, both_labels: bool = True) -> FaceData:
    try:
        loaded = datasets.load_dataset(repo_id, revision=revision)
    except FileNotFoundError as exc:
        raise FakefaceError(f"{repo_id}: Hub dataset not found or not accessible ({exc}).") from None
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({"train": loaded})
    splits, skipped = {}, []
    for name, ds in loaded.items():
        ds = normalise_labels(ds, source=repo_id)
        if validate:
            ds, bad = _drop_unreadable(ds, name)
            skipped += bad
        splits[SPLIT_NAMES.get(name.lower(), name)] = ds
    if "train" not in splits:
        raise FakefaceError(f"{repo_id}: has splits {', '.join(splits)} but no 'train' split.")
    if both_labels:
        _check_both_labels(splits, repo_id)
    return FaceData(datasets.DatasetDict(splits), skipped)


def normalise_labels(ds: datasets.Dataset, source: str = "") -> datasets.Dataset:
    """Give a dataset the project schema: image, label (ClassLabel fake/real), path, difficulty, source, group.

    A `source` or `group` string column in the dataset is kept; else source is `source` and each image is
    its own group.

    The label column may be called label/labels/class and hold ClassLabel ids or strings; its names are
    mapped to fake/real by `label_from_name`. Raises FakefaceError when they cannot be mapped.
    """
    image_col = _image_column(ds)
    label_col = _label_column(ds)
    labels = _mapped_labels(ds, label_col)
    paths = _image_paths(ds, image_col)
    sources = [str(v) for v in ds["source"]] if "source" in ds.column_names else [source] * len(ds)
    groups = ([str(v) for v in ds["group"]] if "group" in ds.column_names
              else [p or f"{source}[{i}]" for i, p in enumerate(paths)])
    ds = ds.select_columns([image_col])
    if image_col != "image":
        ds = ds.rename_column(image_col, "image")
    ds = ds.cast_column("image", datasets.Image())
    ds = ds.add_column("label", labels, feature=FEATURES["label"])
    ds = ds.add_column("path", paths, feature=FEATURES["path"])
    ds = ds.add_column("difficulty", [difficulty_from_name(p) for p in paths], feature=FEATURES["difficulty"])
    ds = ds.add_column("source", sources, feature=FEATURES["source"])
    ds = ds.add_column("group", groups, feature=FEATURES["group"])
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
    labels: Sequence[int], val_fraction: float = 0.15, seed: int = 0, strata: Sequence[str] | None = None,
    groups: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, val_idx): a seeded split stratified by label, and by `strata` (e.g. source and difficulty) if
    given. Items sharing a `groups` value (a face swap and its original) land on the same side."""
    from sklearn.model_selection import StratifiedShuffleSplit

    if not 0 < val_fraction < 1:
        raise FakefaceError(f"val_fraction must be between 0 and 1, not {val_fraction}.")
    if _has_shared_groups(groups):
        # the first of round(1 / fraction) group-respecting stratified folds is the held-out part
        folds = stratified_kfold(labels, max(2, round(1 / val_fraction)), seed, strata, groups)
        return folds[0]
    keys = _strata_keys(labels, strata, min_count=2)
    splitter = StratifiedShuffleSplit(n_splits=1, test_size=val_fraction, random_state=seed)
    try:
        train_idx, val_idx = next(splitter.split(np.zeros(len(keys)), keys))
    except ValueError as exc:
        raise FakefaceError(f"cannot split {len(keys)} images stratified by label: {exc}") from None
    return np.sort(train_idx), np.sort(val_idx)


def stratified_kfold(
    labels: Sequence[int], k: int = 5, seed: int = 0, strata: Sequence[str] | None = None,
    groups: Sequence[str] | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """k (train_idx, val_idx) folds, seeded, stratified by label and `strata`; the val parts partition all.
    Items sharing a `groups` value stay in one fold (sklearn's StratifiedGroupKFold)."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    keys = _strata_keys(labels, strata, min_count=k)
    if _has_shared_groups(groups):
        folds = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        split = folds.split(np.zeros(len(keys)), keys, groups=np.asarray(groups))
    else:
        split = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(keys)), keys)
    try:
        return [(np.sort(tr), np.sort(va)) for tr, va in split]
    except ValueError as exc:
        raise FakefaceError(f"cannot make {k} folds from {len(keys)} images: {exc}") from None


def _has_shared_groups(groups: Sequence[str] | None) -> bool:
    return groups is not None and len(set(groups)) < len(groups)


def split_strata(ds: datasets.Dataset) -> list[str]:
    """What splits and folds are stratified by, besides the label: source (when there are several) and
    difficulty."""
    sources, difficulty = ds["source"], ds["difficulty"]
    if len(set(sources)) <= 1:
        return list(difficulty)
    return [f"{s}|{d}" for s, d in zip(sources, difficulty)]


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
