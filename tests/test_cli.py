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
import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin

from fakeface.cli import main
from fakeface.images import load_image
from fakeface.models import create_model
from fakeface.predictor import Predictor
from fakeface.provenance import PROVENANCE_COLUMNS

from helpers import SigningCertificates, TinyNet, cue_image, encoded, tiny_set, write_folder


pytestmark = pytest.mark.usefixtures("one_torch_thread")


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
    assert broken["verdict"] is None and broken["fake_prob"] is None and broken["path"] in broken["error"]
    for row in rows.values():  # --detector none: each image is one face crop
        assert row["verdict"] in ("FAKE", "REAL") and row["real_prob"] == pytest.approx(1 - row["fake_prob"])
        assert "error" not in row and row["faces_found"] == 1
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
        assert row["verdict"] == expected[path]["verdict"] and row.get("error") == expected[path].get("error")
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
    assert list(rows[0]) == ["path", "verdict", "uncertain", "headline", "fake_prob", "real_prob", "faces_found",
                             "whole_image_fake_prob", "most_like", "most_like_prob", "error", "decided_by",
                             *PROVENANCE_COLUMNS]
    assert {row["verdict"] for row in rows} <= {"FAKE", "REAL", ""}


def test_csv_and_table_on_stdout(model_dir, images, capsys):
    paths = [str(images / "fake" / "fake_000.png"), str(images / "real" / "real_broken.png")]
    assert predict(model_dir, *paths, "--format", "csv") == 1
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [row["path"] for row in rows] == paths
    assert rows[0]["verdict"] in ("FAKE", "REAL") and rows[1]["error"] and not rows[1]["verdict"]
    assert predict(model_dir, *paths, "--format", "table") == 1
    captured = capsys.readouterr()
    good, bad = captured.out.splitlines()
    assert good.startswith(paths[0] + "\t") and "fake_prob=" in good
    assert bad.startswith(paths[1] + "\tERROR\t")
    assert "1 of 2 files could not be classified" in captured.err


def test_provenance_columns_from_the_files_own_bytes(model_dir, tmp_path, capsys):
    signed = tmp_path / "signed.jpg"
    signed.write_bytes(SigningCertificates().sign(encoded(cue_image(False, np.random.default_rng(0)), "JPEG"),
                                                  "image/jpeg"))
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a face\nSteps: 20, Sampler: Euler a, CFG scale: 7, Model: sd15")
    generated = tmp_path / "generated.png"
    generated.write_bytes(encoded(cue_image(False, np.random.default_rng(1)), "PNG", pnginfo=info))
    plain = tmp_path / "plain.png"
    plain.write_bytes(encoded(cue_image(False, np.random.default_rng(2)), "PNG"))
    paths = [str(signed), str(generated), str(plain)]
    assert predict(model_dir, *paths, "--format", "csv") == 0
    rows = {Path(row["path"]).name: row for row in csv.DictReader(io.StringIO(capsys.readouterr().out))}
    assert (rows["signed.jpg"]["c2pa"], rows["signed.jpg"]["provenance_evidence"]) == ("valid", "signed_ai")
    assert rows["signed.jpg"]["c2pa_signer"] == "Fakeface Test Signer"
    assert rows["signed.jpg"]["c2pa_declares"] == "AI-generated" and rows["signed.jpg"]["verdict"] == "FAKE"
    assert rows["generated.png"]["provenance_evidence"] == "unsigned_ai"
    assert "AUTOMATIC1111" in rows["generated.png"]["generator"]
    assert rows["plain.png"]["provenance_evidence"] == "none" and "strip" in rows["plain.png"]["provenance_summary"]
    out = tmp_path / "rows.jsonl"
    assert predict(model_dir, *paths, "--format", "jsonl", "--output", str(out), "--workers", "2") == 0
    by_name = {Path(row["path"]).name: row for row in read_jsonl(out)}  # read in the DataLoader workers
    assert by_name["signed.jpg"]["provenance"]["content_credentials"]["declares"] == "AI-generated"
    assert (by_name["signed.jpg"]["verdict"], by_name["signed.jpg"]["decided_by"]) == ("FAKE", "content credentials")
    assert "c2pa" not in by_name["signed.jpg"] and "provenance_columns" not in by_name["signed.jpg"]
    assert isinstance(by_name["plain.png"]["provenance"], dict)
    assert predict(model_dir, *paths, "--format", "table") == 0
    assert "provenance=signed: AI-generated" in capsys.readouterr().out
    assert predict(model_dir, *paths, "--trust-anchors", str(tmp_path / "missing.pem")) == 2
    assert "C2PA trust anchors" in capsys.readouterr().err


def test_no_face_gets_no_verdict_in_every_format(model_dir, tmp_path, capsys):
    """With a face detector, a picture without a face has no verdict and 0 faces, whatever the format."""
    blank = tmp_path / "gradient.png"
    ramp = np.linspace(0, 255, 64, dtype=np.uint8)
    Image.fromarray(np.stack([np.tile(ramp, (64, 1))] * 3, axis=-1)).save(blank)
    args = ["predict", "--model", model_dir, "--quiet", "--workers", "0", str(blank)]
    assert main([*args, "--format", "jsonl"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert (row["verdict"], row["headline"], row["faces_found"], row["fake_prob"]) == (None, "NO FACE", 0, None)
    assert "no verdict" in row["message"] and 0 <= row["whole_image_fake_prob"] <= 1
    assert main([*args, "--format", "csv"]) == 0
    (got,) = csv.DictReader(io.StringIO(capsys.readouterr().out))
    assert (got["verdict"], got["headline"], got["faces_found"], got["fake_prob"]) == ("", "NO FACE", "0", "")
    assert main([*args, "--format", "table"]) == 0
    assert capsys.readouterr().out == f"{blank}\tNO FACE\tfake_prob=-\tfaces=0\tprovenance=none\n"


def test_evaluate_shows_its_progress(model_dir, tmp_path, capsys, monkeypatch):
    import tqdm.auto

    class Shown(tqdm.auto.tqdm):  # conftest's TQDM_DISABLE quiets every bar, read when tqdm is imported
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "disable": False})

    monkeypatch.setattr(tqdm.auto, "tqdm", Shown)
    data = write_folder(tmp_path / "data", n_per_class=3)
    assert main(["evaluate", str(data), "--model", model_dir, "--output-dir", str(tmp_path / "eval")]) == 0
    err = capsys.readouterr().err
    assert "evaluate" in err and "6/6" in err  # a tqdm bar on stderr, to the last image
    assert (tmp_path / "eval" / "metrics.json").is_file()


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
    assert rows[0]["verdict"] and "not an image" in rows[1]["error"] and rows[2]["verdict"]


def test_batched_prediction_matches_one_at_a_time(model_dir, images):
    predictor = Predictor.load(model_dir, detector="none")
    pictures = [load_image(p) for p in all_paths(images) if "broken" not in p]
    batched = predictor.predict_images(pictures)
    for picture, got in zip(pictures, batched):
        want = predictor.predict_image(picture)
        assert got.fake_prob == pytest.approx(want.fake_prob, abs=1e-5) and got.verdict == want.verdict
        assert got.faces[0].box == want.faces[0].box and got.face_found == want.face_found
    assert predictor.predict_images([]) == []


# --------------------------------------------------------------- `fakeface train` into a used folder (issue 12)
#
# The real CLI and training.fit, with the data/featurize/evaluate part of the pipeline replaced by a tiny net on
# tensors: what is under test is who may write into --output-dir, and when a checkpoint may be resumed.





@pytest.fixture
def pipeline_calls(monkeypatch):
    """Stands in for pipeline.train_evaluate_save: fits the tiny net into output_dir/run, saves output_dir/model."""
    from safetensors.torch import save_file

    from fakeface import pipeline
    from fakeface.training import fit

    calls = []

    def train_evaluate_save(source, output_dir, config, resume=False, **kwargs):
        calls.append({"config": config, "resume": resume})
        torch.manual_seed(config.seed)
        model = TinyNet()
        summary = fit(model, tiny_set(24, 0), tiny_set(8, 1), config, Path(output_dir) / "run", resume=resume)
        (Path(output_dir) / "model").mkdir(exist_ok=True)
        save_file(model.state_dict(), Path(output_dir) / "model" / "model.safetensors")
        return {"model_dir": str(Path(output_dir) / "model"), "training": summary}

    monkeypatch.setattr(pipeline, "train_evaluate_save", train_evaluate_save)
    return calls


def train(out, *args) -> int:
    return main(["train", "--data", "unused", "--output-dir", str(out), "--epochs", "2", "--batch-size", "8",
                 "--precision", "fp32", *args])


def checkpoint_config(out) -> dict:
    return torch.load(Path(out) / "run" / "checkpoint.pt", weights_only=True)["config"]


def test_train_refuses_a_used_output_dir_unless_resume_or_overwrite(pipeline_calls, tmp_path, capsys):
    out = tmp_path / "out"
    assert train(out, "--lr", "0.01") == 0
    weights = (out / "model" / "model.safetensors").read_bytes()
    capsys.readouterr()
    # issue 12: a second run with another lr and seed used to resume, train 0 epochs and ship run 1's weights
    assert train(out, "--lr", "0.003", "--seed", "1") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {out} is not empty: give --resume") and "--overwrite" in err
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert len(pipeline_calls) == 1 and (out / "model" / "model.safetensors").read_bytes() == weights


def test_train_resume_continues_only_with_the_same_config(pipeline_calls, tmp_path, capsys):
    out = tmp_path / "out"
    assert train(out, "--lr", "0.01") == 0
    capsys.readouterr()
    assert train(out, "--lr", "0.003", "--seed", "1", "--resume") == 2
    err = capsys.readouterr().err
    assert "error: Cannot resume" in err and "lr: 0.01 there, 0.003 now; seed: 0 there, 1 now" in err
    assert len(pipeline_calls) == 1  # refused before any data is loaded
    # same settings (a different worker count is allowed): resumes the finished run, trains nothing more
    assert train(out, "--lr", "0.01", "--workers", "0", "--resume") == 0
    assert pipeline_calls[-1]["resume"] is True
    printed = capsys.readouterr().out
    assert "Resuming from" in printed
    summary = json.loads(printed[printed.index("{"):])["training"]
    assert summary["epochs_run"] == 2 and summary["images_per_s"] is None  # nothing left to train
    assert checkpoint_config(out)["lr"] == 0.01
    assert [json.loads(line)["epoch"] for line in (out / "run" / "train_log.jsonl").read_text().splitlines()] == [1, 2]


def test_train_resume_into_an_empty_folder_starts_and_a_folder_without_checkpoint_is_refused(
        pipeline_calls, tmp_path, capsys):
    assert train(tmp_path / "new", "--resume") == 0  # nothing to resume yet: the same command can be rerun
    assert pipeline_calls[-1]["resume"] is True and (tmp_path / "new" / "run" / "checkpoint.pt").exists()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert train(tmp_path / "other", "--resume") == 2
    assert "holds no checkpoint (run/checkpoint.pt)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train(tmp_path / "new", "--resume", "--overwrite")  # one or the other


def test_train_overwrite_replaces_only_the_runs_own_outputs(pipeline_calls, tmp_path, capsys):
    out = tmp_path / "out"
    assert train(out, "--lr", "0.01") == 0
    (out / "eval").mkdir()
    (out / "eval" / "metrics.json").write_text("{}")
    (out / "run" / "best.safetensors.tmp").write_bytes(b"left by a kill")
    assert train(out, "--lr", "0.003", "--seed", "1", "--overwrite") == 0
    assert pipeline_calls[-1]["resume"] is False
    assert checkpoint_config(out)["lr"] == 0.003 and checkpoint_config(out)["seed"] == 1
    assert not (out / "eval").exists() and not (out / "run" / "best.safetensors.tmp").exists()
    # anything else in the folder: --overwrite deletes nothing and says what is in the way
    (out / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert train(out, "--lr", "0.001", "--overwrite") == 2
    assert "also holds notes.txt" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "mine" and checkpoint_config(out)["lr"] == 0.003


def test_train_space_forwards_to_train_and_refuses_a_used_folder(pipeline_calls, tmp_path, monkeypatch, capsys):
    import runpy
    import sys

    out = tmp_path / "out"
    assert train(out) == 0
    script = Path(__file__).resolve().parents[1] / "train_space.py"
    monkeypatch.setattr(sys, "argv", ["train_space.py", "--data", "unused", "--output-dir", str(out),
                                      "--epochs", "2", "--batch-size", "8", "--lr", "0.003"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(script), run_name="__main__")
    assert exit_.value.code == 2 and "is not empty" in capsys.readouterr().err
    assert len(pipeline_calls) == 1


def test_crossval_has_no_resume_option():
    from fakeface.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["crossval", "--data", "x", "--output-dir", "y", "--resume"])


# ------------------------------------------------------------------ training flags, made from TrainConfig


def _config_from(*args, command="train"):
    from fakeface.cli import _train_config, build_parser

    return _train_config(build_parser().parse_args([command, "--data", "x", "--output-dir", "y", *args]))


def test_every_kind_of_train_config_field_is_settable_from_the_command_line():
    from fakeface.training import PRESETS

    config = _config_from("--lr", "0.01", "--epochs", "3", "--loss", "focal", "--arch", "efficientnet-lite0",
                          "--feature-variants", "aug:1", "jpeg:random", "--pseudo-fakes", "sbi:1",
                          "--no-balanced-sampling", "--early-exit-band", "0.1", "0.8", "--threshold-rule", "eer",
                          "--features", '{"views": [[224, 1]], "layers": [11]}', "--no-robust-augmentation",
                          "--image-size", "128", "--max-steps-per-epoch", "none")
    assert (config.lr, config.epochs, config.loss, config.arch) == (0.01, 3, "focal", "efficientnet-lite0")
    assert config.feature_variants == ["aug:1", "jpeg:random"] and config.pseudo_fakes == ["sbi:1"]
    assert config.balanced_sampling is False and config.robust_augmentation is False  # presets' True overridden
    assert config.early_exit_band == [0.1, 0.8] and config.threshold_rule == "eer"
    assert config.features == {"views": [[224, 1]], "layers": [11]} and config.image_size == 128
    assert config.max_steps_per_epoch is None
    preset = PRESETS["default"]
    assert config.weight_decay == preset["weight_decay"] and config.scheduler == preset["scheduler"]  # not given

    # the preset supplies what is not given; 'none' clears a field the preset sets; no values empties a list
    assert _config_from("--preset", "ciplab").early_exit_band == PRESETS["ciplab"]["early_exit_band"]
    assert _config_from("--feature-variants", "none").feature_variants is None
    assert _config_from("--feature-variants").feature_variants == []
    assert _config_from("--balanced-sampling", "--preset", "ciplab", command="crossval").balanced_sampling is True


def test_flags_that_existed_before_keep_their_names_and_meaning():
    config = _config_from("--preset", "ciplab", "--no-pretrained", "--no-early-exit", "--workers", "3",
                          "--image-size", "96", "--batch-size", "8", "--seed", "4", "--precision", "fp32")
    assert config.pretrained is False and config.early_exit_band == [] and config.num_workers == 3
    assert (config.image_size, config.batch_size, config.seed, config.precision) == (96, 8, 4, "fp32")
    assert _config_from().pretrained is True  # no flag: the dataclass / preset value


def test_help_lists_one_flag_per_train_config_field(capsys):
    import dataclasses

    from fakeface.cli import _FLAG_NAMES, build_parser
    from fakeface.training import TrainConfig

    for command in ("train", "crossval"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([command, "--help"])
        text = capsys.readouterr().out
        names = [f.name for f in dataclasses.fields(TrainConfig)]
        for name in names:
            flag = _FLAG_NAMES.get(name, "--" + name.replace("_", "-"))
            assert text.count(f"  {flag} ") + text.count(f"  {flag},") == 1, flag  # listed once, in the table
        assert "--no-pretrained" in text and "--no-early-exit" in text and "--workers" in text
    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    flags = [s for action in train._actions for s in action.option_strings]
    assert len(flags) == len(set(flags))
    dests = {a.dest for a in train._actions if a.dest in names}
    assert dests == set(names)


def test_bad_training_flags_are_refused(capsys):
    for bad in (["--features", "[1, 2]"], ["--features", "{nope"], ["--loss", "hinge"], ["--lr", "fast"],
                ["--feature-variants", "none", "aug:1"]):
        with pytest.raises(SystemExit):
            _config_from(*bad)
    assert "--features" in capsys.readouterr().err
