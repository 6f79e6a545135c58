"""`fakeface predict` at scale, run in-process through `fakeface.cli.main`: sharding, resuming, error rows,
output formats, DataLoader workers and Hub datasets.

A tiny EfficientNet-Lite0 (64 px, its ImageNet backbone so that different images get different scores) stands in
for the real model; no face detector, for speed.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import datasets
import pytest
import torch
from PIL import Image

from fakeface.cli import main
from fakeface.images import load_image
from fakeface.models import create_model
from fakeface.predictor import Predictor

from helpers import write_folder


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny forwards: extra intra-op threads only fight over a busy CPU (100x slower on a loaded 2-core box).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("model")
    create_model("efficientnet-lite0", pretrained=True, input_size=64).save_pretrained(str(path))
    return str(path)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = write_folder(tmp_path_factory.mktemp("images"), n_per_class=4)
    (root / "real" / "real_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root


def predict(model_dir, *args) -> int:
    return main(["predict", "--model", model_dir, "--detector", "none", "--quiet", "--workers", "0", *args])


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def all_paths(images) -> list[str]:
    return sorted(str(p) for p in Path(images).rglob("*.png"))


def test_rows_and_error_row_for_a_corrupt_file(model_dir, images, tmp_path):
    out = tmp_path / "out.jsonl"
    assert predict(model_dir, str(images), "--format", "jsonl", "--output", str(out)) == 1  # one file failed
    rows = {row["path"]: row for row in read_jsonl(out)}
    assert sorted(rows) == all_paths(images)
    broken = rows.pop(str(images / "real" / "real_broken.png"))
    assert broken["label"] is None and broken["fake_prob"] is None and broken["path"] in broken["error"]
    for row in rows.values():
        assert row["label"] in ("FAKE", "REAL") and row["real_prob"] == pytest.approx(1 - row["fake_prob"])
        assert "error" not in row and row["faces"] == 1
    assert len({row["fake_prob"] for row in rows.values()}) > 1  # a real model, not a constant


def test_two_shards_together_equal_the_whole_job(model_dir, images, tmp_path):
    whole = tmp_path / "whole.jsonl"
    # the whole job decodes in 2 DataLoader workers, the shards in this process: same rows either way
    predict(model_dir, str(images), "--format", "jsonl", "--output", str(whole), "--workers", "2",
            "--batch-size", "3")
    parts = []
    for i in (0, 1):
        out = tmp_path / f"shard{i}.jsonl"
        predict(model_dir, str(images), "--format", "jsonl", "--output", str(out), "--shard", f"{i}/2")
        parts.append(read_jsonl(out))
    assert [row["path"] for row in parts[0]] == all_paths(images)[0::2]  # every 2nd path of the sorted list
    assert [row["path"] for row in parts[1]] == all_paths(images)[1::2]
    expected = {row["path"]: row for row in read_jsonl(whole)}
    got = {row["path"]: row for row in parts[0] + parts[1]}
    assert sorted(got) == sorted(expected)
    for path, row in got.items():  # batches differ, so the scores may differ in the last float bits
        assert row["label"] == expected[path]["label"] and row.get("error") == expected[path].get("error")
        if row["fake_prob"] is not None:
            assert row["fake_prob"] == pytest.approx(expected[path]["fake_prob"], abs=1e-5)


def test_skip_existing_resumes_without_duplicates(model_dir, images, tmp_path):
    out = tmp_path / "out.jsonl"
    predict(model_dir, str(images), "--format", "jsonl", "--output", str(out))
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:3]) + lines[3][:20])  # killed after 3 rows, halfway through the 4th
    predict(model_dir, str(images), "--format", "jsonl", "--output", str(out), "--skip-existing")
    rows = read_jsonl(out)
    assert sorted(row["path"] for row in rows) == all_paths(images)  # each path exactly once
    assert "".join(out.read_text().splitlines(keepends=True)[:3]) == "".join(lines[:3])  # kept as they were
    # nothing left to do: no new rows, and success
    assert predict(model_dir, str(images), "--format", "jsonl", "--output", str(out), "--skip-existing") == 0
    assert len(read_jsonl(out)) == len(rows)


def test_csv_streams_to_a_file_and_resumes_without_a_second_header(model_dir, images, tmp_path):
    out = tmp_path / "out.csv"
    first = [str(p) for p in sorted((images / "fake").glob("*.png"))]
    assert predict(model_dir, *first, "--format", "csv", "--output", str(out)) == 0
    assert predict(model_dir, str(images), "--format", "csv", "--output", str(out), "--skip-existing") == 1
    rows = list(csv.DictReader(out.open(newline="")))
    assert sorted(row["path"] for row in rows) == all_paths(images)
    assert list(rows[0]) == ["path", "fake_prob", "real_prob", "label", "uncertain", "faces", "error"]
    assert {row["label"] for row in rows} <= {"FAKE", "REAL", ""}


def test_csv_and_table_on_stdout(model_dir, images, capsys):
    paths = [str(images / "fake" / "fake_000.png"), str(images / "real" / "real_broken.png")]
    assert predict(model_dir, *paths, "--format", "csv") == 1
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [row["path"] for row in rows] == paths
    assert rows[0]["label"] in ("FAKE", "REAL") and rows[1]["error"] and not rows[1]["label"]
    assert predict(model_dir, *paths, "--format", "table") == 1
    captured = capsys.readouterr()
    good, bad = captured.out.splitlines()
    assert good.startswith(paths[0] + "\t") and "fake_prob=" in good
    assert bad.startswith(paths[1] + "\tERROR\t")
    assert "1 of 2 files could not be classified" in captured.err


def test_refusals(model_dir, images, capsys):
    assert predict(model_dir, str(images), "--skip-existing") == 2  # nothing to resume from
    assert "--output" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        predict(model_dir, str(images), "--shard", "2/2")
    with pytest.raises(SystemExit):
        predict(model_dir)  # neither paths nor --dataset


def png_bytes(colour) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(buffer, "PNG")
    return buffer.getvalue()


def test_hub_dataset(model_dir, tmp_path, monkeypatch):
    features = datasets.Features({"img": datasets.Image()})
    ds = datasets.Dataset.from_dict({"img": [{"bytes": png_bytes((200, 10, 10)), "path": None},
                                             {"bytes": b"<html>oops</html>", "path": "x.png"},
                                             {"bytes": png_bytes((10, 10, 200)), "path": None}]}, features=features)
    calls = []

    def fake_load_dataset(repo_id, revision=None, split=None):
        calls.append((repo_id, revision, split))
        return datasets.DatasetDict({"test": ds})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    out = tmp_path / "out.jsonl"
    assert predict(model_dir, "--dataset", "user/faces", "--revision", "v1", "--format", "jsonl",
                   "--output", str(out), "--shard", "0/1") == 1
    assert calls == [("user/faces", "v1", None)]
    rows = read_jsonl(out)
    assert [row["path"] for row in rows] == ["user/faces:test[0]", "user/faces:test[1]", "user/faces:test[2]"]
    assert rows[0]["label"] and "not an image" in rows[1]["error"] and rows[2]["label"]


def test_batched_prediction_matches_one_at_a_time(model_dir, images):
    predictor = Predictor.load(model_dir, detector="none")
    pictures = [load_image(p) for p in all_paths(images) if "broken" not in p]
    batched = predictor.predict_images(pictures)
    for picture, got in zip(pictures, batched):
        want = predictor.predict_image(picture)
        assert got.fake_prob == pytest.approx(want.fake_prob, abs=1e-5) and got.label == want.label
        assert got.faces[0].box == want.faces[0].box and got.face_found == want.face_found
    assert predictor.predict_images([]) == []
