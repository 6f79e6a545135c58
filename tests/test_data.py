"""fakeface.data: folder layouts, label mapping, skipped files, difficulty, and stratified splits."""

from __future__ import annotations

import io
import shutil
from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from fakeface.data import (
    LABEL_NAMES,
    difficulty_from_name,
    label_from_name,
    load_face_dataset,
    normalise_labels,
    stratified_kfold,
    stratified_split,
)
from fakeface.errors import FakefaceError

CIPLAB = Path("/work/shared/data/ciplab")
FAKE, REAL = 0, 1


def write_images(folder: Path, names: list[str], colour=(120, 80, 60)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        path = folder / name
        Image.new("RGB", (8, 8), colour).save(path)
        paths.append(path)
    return paths


def labels_by_file(ds: datasets.Dataset) -> dict[str, str]:
    names = ds.features["label"].names
    return {Path(p).name: names[lab] for p, lab in zip(ds["path"][:], ds["label"][:])}


def check_schema(ds: datasets.Dataset) -> None:
    assert isinstance(ds.features["image"], datasets.Image)
    assert ds.features["label"].names == list(LABEL_NAMES) == ["fake", "real"]
    assert ds.features["path"] == datasets.Value("string")
    assert ds.features["difficulty"] == datasets.Value("string")


# ---------------------------------------------------------------- names


@pytest.mark.parametrize(
    "name,label",
    [("fake", FAKE), ("Fake", FAKE), ("fakes", FAKE), ("training_fake", FAKE), ("FAKE-faces", FAKE),
     ("real", REAL), ("Real", REAL), ("training_real", REAL), ("reals", REAL),
     ("real_and_fake_face", None), ("faces", None), ("unreal", None), ("train", None)],
)
def test_label_from_name(name, label):
    assert label_from_name(name) == label


@pytest.mark.parametrize(
    "name,difficulty",
    [("easy_100_1111.jpg", "easy"), ("mid_5_0110.jpg", "mid"), ("hard_12_101.jpg", "hard"),
     ("/x/fake/HARD_3_0001.JPG", "hard"), ("real_00001.jpg", ""), ("easy.jpg", ""), ("medium_1_0101.jpg", "")],
)
def test_difficulty_from_name(name, difficulty):
    assert difficulty_from_name(name) == difficulty


# ---------------------------------------------------------------- local layouts


def test_real_fake_folders(tmp_path):
    write_images(tmp_path / "real", ["r1.jpg", "r2.png"])
    write_images(tmp_path / "fake", ["easy_1_1111.jpg", "hard_2_0101.jpg", "f3.webp"])
    (tmp_path / "real" / "notes.txt").write_text("not an image: ignored, not reported")
    data = load_face_dataset(str(tmp_path))
    assert list(data.splits) == ["train"] and data.skipped == []
    ds = data.train
    check_schema(ds)
    assert labels_by_file(ds) == {"r1.jpg": "real", "r2.png": "real", "easy_1_1111.jpg": "fake",
                                  "hard_2_0101.jpg": "fake", "f3.webp": "fake"}
    by_file = dict(zip([Path(p).name for p in ds["path"][:]], ds["difficulty"][:]))
    assert by_file == {"r1.jpg": "", "r2.png": "", "easy_1_1111.jpg": "easy", "hard_2_0101.jpg": "hard",
                       "f3.webp": ""}
    first = ds[0]
    assert first["image"].size == (8, 8) and Path(first["path"]).is_file()


def test_capitalised_and_plural_folder_names(tmp_path):
    write_images(tmp_path / "Real", ["a.jpg"])
    write_images(tmp_path / "Fakes", ["b.jpg"])
    write_images(tmp_path / "Fakes" / "more", ["c.jpg"])  # nested folders are searched too
    assert labels_by_file(load_face_dataset(str(tmp_path)).train) == {"a.jpg": "real", "b.jpg": "fake",
                                                                       "c.jpg": "fake"}


def make_kaggle(root: Path) -> Path:
    inner = root / "real_and_fake_face"
    write_images(inner / "training_real", ["real_00001.jpg", "real_00002.jpg"])
    write_images(inner / "training_fake", ["mid_5_0110.jpg"])
    # The Kaggle download also carries a second copy one level deeper; it must not be counted twice.
    write_images(root / "real_and_fake_face_detection" / "real_and_fake_face" / "training_real", ["dup.jpg"])
    return inner


@pytest.mark.parametrize("level", ["inner", "parent"])
def test_kaggle_layout(tmp_path, level):
    inner = make_kaggle(tmp_path)
    data = load_face_dataset(str(inner if level == "inner" else tmp_path))
    assert labels_by_file(data.train) == {"real_00001.jpg": "real", "real_00002.jpg": "real",
                                          "mid_5_0110.jpg": "fake"}
    assert data.train["difficulty"][:].count("mid") == 1


def test_split_folders(tmp_path):
    write_images(tmp_path / "train" / "real", ["tr_r1.jpg", "tr_r2.jpg"])
    write_images(tmp_path / "train" / "fake", ["tr_f1.jpg"])
    write_images(tmp_path / "val" / "real", ["va_r1.jpg"])
    write_images(tmp_path / "val" / "fake", ["va_f1.jpg"])
    write_images(tmp_path / "test" / "training_real", ["te_r1.jpg"])
    write_images(tmp_path / "test" / "training_fake", ["te_f1.jpg", "te_f2.jpg"])
    data = load_face_dataset(str(tmp_path))
    assert sorted(data.splits) == ["test", "train", "validation"]
    for ds in data.splits.values():
        check_schema(ds)
    assert labels_by_file(data.splits["train"]) == {"tr_r1.jpg": "real", "tr_r2.jpg": "real", "tr_f1.jpg": "fake"}
    assert labels_by_file(data.splits["validation"]) == {"va_r1.jpg": "real", "va_f1.jpg": "fake"}
    assert labels_by_file(data.splits["test"]) == {"te_r1.jpg": "real", "te_f1.jpg": "fake", "te_f2.jpg": "fake"}


def test_corrupt_file_is_skipped_and_reported(tmp_path, caplog):
    write_images(tmp_path / "real", ["good.jpg"])
    write_images(tmp_path / "fake", ["good_fake.jpg"])
    broken = tmp_path / "fake" / "broken.jpg"
    broken.write_bytes((tmp_path / "fake" / "good_fake.jpg").read_bytes()[:60])
    empty = tmp_path / "real" / "empty.png"
    empty.write_bytes(b"")
    with caplog.at_level("WARNING", logger="fakeface.data"):
        data = load_face_dataset(str(tmp_path))
    assert sorted(labels_by_file(data.train)) == ["good.jpg", "good_fake.jpg"]  # left out, not replaced
    reasons = dict(data.skipped)
    assert set(reasons) == {str(broken), str(empty)}
    assert "truncated or corrupt" in reasons[str(broken)] and "empty file" in reasons[str(empty)]
    assert str(broken) in caplog.text and str(empty) in caplog.text


def test_unvalidated_load_keeps_everything(tmp_path):
    write_images(tmp_path / "real", ["a.jpg"])
    write_images(tmp_path / "fake", ["b.jpg"])
    (tmp_path / "fake" / "bad.jpg").write_bytes(b"junk")
    data = load_face_dataset(str(tmp_path), validate=False)
    assert data.skipped == [] and data.train.num_rows == 3


@pytest.mark.parametrize(
    "layout,phrase",
    [({"cats": ["a.jpg"]}, "found no class folders"),
     ({"real": ["a.jpg"]}, "no readable fake"),
     ({"real": ["a.jpg"], "fake": ["b.jpg"], "test/real": ["c.jpg"]}, "both class folders and split folders"),
     ({"a/real": ["1.jpg"], "a/fake": ["2.jpg"], "b/real": ["3.jpg"], "b/fake": ["4.jpg"]}, "several face sets")],
)
def test_bad_layouts(tmp_path, layout, phrase):
    for folder, names in layout.items():
        write_images(tmp_path / folder, names)
    with pytest.raises(FakefaceError, match=phrase):
        load_face_dataset(str(tmp_path))


def test_missing_source(tmp_path):
    with pytest.raises(FakefaceError, match="no such folder"):
        load_face_dataset(str(tmp_path / "nowhere"))
    with pytest.raises(FakefaceError, match="revision only applies"):
        load_face_dataset(str(tmp_path), revision="main")


# ---------------------------------------------------------------- Hub-style datasets


def hub_like(names: list[str], labels: list[int], image_column: str = "image", label_column: str = "label"):
    pics = [Image.new("RGB", (4, 4), (i * 40, 0, 0)) for i in range(len(labels))]
    return datasets.Dataset.from_dict(
        {image_column: pics, label_column: labels, "extra": list(range(len(labels)))},
        features=datasets.Features({image_column: datasets.Image(), label_column: datasets.ClassLabel(names=names),
                                    "extra": datasets.Value("int64")}),
    )


def test_normalise_labels_swapped_names():
    ds = normalise_labels(hub_like(["Real", "Fake"], [0, 1, 1, 0]))  # Hub order: 0 = Real
    check_schema(ds)
    assert ds.column_names == ["image", "label", "path", "difficulty", "source", "group"]
    assert ds["label"][:] == [REAL, FAKE, FAKE, REAL]
    assert [np.asarray(im)[0, 0, 0] for im in ds["image"][:]] == [0, 40, 80, 120]  # rows keep their images


def test_normalise_labels_other_columns_and_several_fake_classes():
    ds = hub_like(["real", "fake_gan", "fake_swap"], [2, 0, 1], image_column="img", label_column="labels")
    ds = normalise_labels(ds)
    assert ds["label"][:] == [FAKE, REAL, FAKE]
    assert ds["path"][:] == ["", "", ""] and ds["difficulty"][:] == ["", "", ""]


def test_normalise_string_labels():
    ds = datasets.Dataset.from_dict(
        {"image": [Image.new("RGB", (2, 2))] * 3, "class": ["training_fake", "training_real", "training_fake"]},
        features=datasets.Features({"image": datasets.Image(), "class": datasets.Value("string")}),
    )
    assert normalise_labels(ds)["label"][:] == [FAKE, REAL, FAKE]


@pytest.mark.parametrize(
    "make,phrase",
    [(lambda: hub_like(["human", "ai"], [0, 1]), "'human', 'ai'"),
     (lambda: hub_like(["real", "fake"], [0, 1], label_column="target"), "no label column"),
     (lambda: datasets.Dataset.from_dict({"image": [Image.new("RGB", (2, 2))], "label": [1]},
                                         features=datasets.Features({"image": datasets.Image(),
                                                                     "label": datasets.Value("int64")})),
      "without class names")],
)
def test_normalise_labels_refuses_unmappable(make, phrase):
    with pytest.raises(FakefaceError, match=phrase):
        normalise_labels(make())


def png_bytes(colour) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), colour).save(buffer, "PNG")
    return buffer.getvalue()


def test_hub_path_with_a_stand_in_loader(monkeypatch):
    # The real Hub call is tested by the lead against a test hub; here load_dataset is replaced.
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["Real", "Fake"])})
    train = datasets.Dataset.from_dict(
        {"image": [{"bytes": png_bytes((1, 1, 1)), "path": "a/easy_1_1111.png"},
                   {"bytes": b"<html>oops</html>", "path": "a/broken.png"},
                   {"bytes": png_bytes((2, 2, 2)), "path": None}],
         "label": [1, 0, 0]}, features=features)
    val = datasets.Dataset.from_dict({"image": [{"bytes": png_bytes((3, 3, 3)), "path": None}] * 2,
                                      "label": [0, 1]}, features=features)
    calls = []

    def fake_load_dataset(repo_id, revision=None):
        calls.append((repo_id, revision))
        return datasets.DatasetDict({"train": train, "val": val})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    data = load_face_dataset("user/faces", revision="abc123")
    assert calls == [("user/faces", "abc123")]
    assert sorted(data.splits) == ["train", "validation"]
    assert data.train["label"][:] == [FAKE, REAL]
    assert data.train["path"][:] == ["a/easy_1_1111.png", ""]
    assert data.train["difficulty"][:] == ["easy", ""]
    assert [np.asarray(im)[0, 0, 0] for im in data.train["image"][:]] == [1, 2]
    assert [path for path, _ in data.skipped] == ["a/broken.png"] and "not an image" in data.skipped[0][1]
    assert data.splits["validation"]["label"][:] == [REAL, FAKE]


# ---------------------------------------------------------------- splits


def toy_labels(n_fake=60, n_real=80):
    labels = [FAKE] * n_fake + [REAL] * n_real
    difficulty = (["easy", "mid", "mid", "hard"] * n_fake)[:n_fake] + [""] * n_real
    return labels, difficulty


def test_stratified_split_is_stratified_disjoint_and_reproducible():
    labels, difficulty = toy_labels()
    train, val = stratified_split(labels, val_fraction=0.25, seed=3, strata=difficulty)
    assert len(set(train) & set(val)) == 0 and sorted([*train, *val]) == list(range(len(labels)))
    lab, diff = np.array(labels), np.array(difficulty)
    # 35 of 140 go to validation: a quarter of each label and of each difficulty, up to rounding
    expected = {"easy": 3.75, "mid": 7.5, "hard": 3.75, "": 20}
    got = Counter(diff[val])
    assert all(abs(got[key] - n) <= 1 for key, n in expected.items()), got
    assert abs(Counter(lab[val])[FAKE] - 15) <= 1
    again = stratified_split(labels, val_fraction=0.25, seed=3, strata=difficulty)
    assert np.array_equal(train, again[0]) and np.array_equal(val, again[1])
    other = stratified_split(labels, val_fraction=0.25, seed=4, strata=difficulty)
    assert not np.array_equal(val, other[1])


def test_stratified_split_without_strata_and_rare_stratum():
    labels, difficulty = toy_labels(20, 20)
    difficulty[0] = "unique"  # a stratum of one falls back to its label instead of failing
    train, val = stratified_split(labels, 0.5, seed=0, strata=difficulty)
    assert Counter(np.array(labels)[val]) == {FAKE: 10, REAL: 10}
    train, val = stratified_split(labels, 0.5, seed=0)
    assert Counter(np.array(labels)[val]) == {FAKE: 10, REAL: 10}


def test_stratified_split_refuses_impossible():
    with pytest.raises(FakefaceError, match="cannot split"):
        stratified_split([FAKE, REAL, REAL], 0.3)
    with pytest.raises(FakefaceError, match="val_fraction"):
        stratified_split([FAKE, REAL], 1.5)


def test_stratified_kfold():
    labels, difficulty = toy_labels()
    folds = stratified_kfold(labels, k=5, seed=1, strata=difficulty)
    assert len(folds) == 5
    lab, diff = np.array(labels), np.array(difficulty)
    all_val = np.concatenate([val for _, val in folds])
    assert sorted(all_val) == list(range(len(labels)))  # every item is validated exactly once
    for train, val in folds:
        assert len(set(train) & set(val)) == 0 and len(train) + len(val) == len(labels)
        assert Counter(lab[val]) == {FAKE: 12, REAL: 16}
        assert Counter(diff[val][lab[val] == FAKE]) == {"easy": 3, "mid": 6, "hard": 3}
    again = stratified_kfold(labels, k=5, seed=1, strata=difficulty)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again))
    other = stratified_kfold(labels, k=5, seed=2, strata=difficulty)
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(folds, other))


# ---------------------------------------------------------------- real data smoke test


@pytest.mark.skipif(not (CIPLAB / "fake").is_dir(), reason="ciplab data not present")
def test_ciplab_sample(tmp_path):
    fakes = sorted((CIPLAB / "fake").glob("*.jpg"))[:20]
    reals = sorted((CIPLAB / "real").glob("*.jpg"))[:20]
    for folder, files in (("fake", fakes), ("real", reals)):
        (tmp_path / folder).mkdir()
        for f in files:
            shutil.copy(f, tmp_path / folder / f.name)
    data = load_face_dataset(str(tmp_path))
    ds = data.train
    assert data.skipped == [] and ds.num_rows == 40
    assert Counter(ds["label"][:]) == {FAKE: 20, REAL: 20}
    assert labels_by_file(ds) == {**{f.name: "fake" for f in fakes}, **{f.name: "real" for f in reals}}
    assert all(d in ("easy", "mid", "hard") for d, lab in zip(ds["difficulty"][:], ds["label"][:]) if lab == FAKE)
    assert ds[0]["image"].size == (600, 600)
    train, val = stratified_split(ds["label"][:], 0.25, seed=0, strata=ds["difficulty"][:])
    assert len(val) == 10 and Counter(np.array(ds["label"][:])[val]) == {FAKE: 5, REAL: 5}
