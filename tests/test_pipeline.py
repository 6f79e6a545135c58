"""The whole recipe end to end: data folder -> train -> calibrate -> evaluate -> save -> predict."""

import json

import pytest

from fakeface.cli import main
from fakeface.training import make_config
from fakeface.pipeline import train_evaluate_save

from helpers import write_folder

SMALL_RECIPE = {"views": [[224, 1]], "layers": [11], "tokens": ["cls", "patch_mean"]}


def _check_saved(out, min_auc):
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["ranking"]["roc_auc"] >= min_auc
    assert set(metrics["robustness"]) == {"jpeg:75", "jpeg:50", "resize:0.5"}
    config = json.loads((out / "model" / "config.json").read_text())
    assert 0 < config["threshold"] < 1 and config["temperature"] > 0
    assert "model-index" in (out / "model" / "README.md").read_text()
    for plot in ("roc.png", "reliability.png", "confusion_matrix.png"):
        assert (out / "eval" / plot).stat().st_size > 0
    return metrics


def test_clip_probe_learns_a_cue_end_to_end(tmp_path, capsys):
    data = write_folder(tmp_path / "data", n_per_class=24, size=96)
    config = make_config("default", epochs=30, features=SMALL_RECIPE)
    train_evaluate_save(str(data), tmp_path / "out", config, cache_dir=tmp_path / "cache")
    _check_saved(tmp_path / "out", min_auc=0.9)
    capsys.readouterr()
    status = main(["predict", str(data / "fake"), "--model", str(tmp_path / "out" / "model"), "--format", "jsonl",
                   "--quiet"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert status == 0 and len(rows) == 24
    assert sum(r["label"] == "FAKE" for r in rows) >= 18  # training images, so most must be right


@pytest.mark.slow
def test_smoke_run_on_a_ciplab_sample(ciplab_dir, tmp_path):
    config = make_config("default", epochs=10)
    summary = train_evaluate_save(str(ciplab_dir), tmp_path / "out", config, limit=40, cache_dir=tmp_path / "cache")
    assert summary["test"]["roc_auc"] is not None
    _check_saved(tmp_path / "out", min_auc=0.0)  # 6 test images: the numbers are noise, the run is the test
