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
    # The synthetic images hold no face: --detector none reads each as a face crop (as training did, having found
    # no face in them); with a detector they would get no verdict.
    status = main(["predict", str(data / "fake"), "--model", str(tmp_path / "out" / "model"), "--format", "jsonl",
                   "--quiet", "--detector", "none"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert status == 0 and len(rows) == 24
    assert sum(r["verdict"] == "FAKE" for r in rows) >= 18  # training images, so most must be right


@pytest.mark.slow
def test_smoke_run_on_a_ciplab_sample(ciplab_dir, tmp_path):
    config = make_config("default", epochs=10)
    summary = train_evaluate_save(str(ciplab_dir), tmp_path / "out", config, limit=40, cache_dir=tmp_path / "cache")
    assert summary["test"]["roc_auc"] is not None
    _check_saved(tmp_path / "out", min_auc=0.0)  # 6 test images: the numbers are noise, the run is the test


def _served_through_both_routes(model_dir, data, counted: str, calls_when_exited: int, calls_otherwise: int):
    """Serve 12 images with the band moved so that about half exit early: each answer must equal the model's
    forward on the whole feature vector (as evaluation computes it), and the encoder's `counted` method must run
    as often as that route needs."""
    import numpy as np
    import torch

    from fakeface.images import load_image
    from fakeface.predictor import Predictor

    predictor = Predictor.load(str(model_dir), detector="none")
    model = predictor.model
    images = [load_image(p) for p in sorted((data / "fake").iterdir())[:6] + sorted((data / "real").iterdir())[:6]]
    feats = [predictor.featurizer(image) for image in images]
    with torch.no_grad():
        fast_p = [float(torch.sigmoid(model.fast_logits(torch.from_numpy(f[None, : model.fast_dim]))[0]
                                      / model.early_exit["temperature"])) for f in feats]
    model.early_exit["band"] = [0.0, float(np.median(fast_p))]
    encoder, calls = predictor.featurizer.encoder, []
    original = getattr(encoder, counted)
    setattr(encoder, counted, lambda x: calls.append(1) or original(x))
    routes = set()
    for image, f in zip(images, feats):
        calls.clear()
        served = predictor.predict_image(image).fake_prob
        with torch.no_grad():
            exited = bool(model.exit_mask(torch.from_numpy(f[None]))[0])
            expected = float(torch.sigmoid(model(torch.from_numpy(f[None]))[0] / model.temperature))
        assert len(calls) == (calls_when_exited if exited else calls_otherwise)
        assert np.isclose(served, expected, atol=1e-5)
        routes.add(exited)
    assert routes == {True, False}  # both routes served, each agreeing with the model's forward
    return predictor


def test_early_exit_is_trained_evaluated_and_served_consistently(tmp_path):
    """The fast 1-group probe is trained and calibrated with the model; serving encodes the second group only
    when the fast probe is unsure, and gives the same probability as the model's forward on all features."""
    data = write_folder(tmp_path / "data", n_per_class=16, size=96)
    recipe = {"views": [[224, 1], [256, 1]], "layers": [11], "tokens": ["cls", "patch_mean"]}  # two distinct groups
    config = make_config("default", epochs=20, features=recipe, early_exit_band=[0.3, 0.7])
    train_evaluate_save(str(data), tmp_path / "out", config, cache_dir=tmp_path / "cache")
    metrics = _check_saved(tmp_path / "out", min_auc=0.0)
    saved = json.loads((tmp_path / "out" / "model" / "config.json").read_text())
    assert saved["early_exit"]["band"] == [0.3, 0.7] and saved["early_exit"]["temperature"] > 0
    assert metrics["early_exit"]["n"] == metrics["classification"]["n"]  # measured on every test image
    _served_through_both_routes(tmp_path / "out" / "model", data, "tokens", 1, 2)


def test_an_early_exit_inside_the_tower_is_served_like_the_models_forward(tmp_path):
    """One view, layers 5 and 11, the fast probe on layer 5: serving runs blocks 6-11 only when it is unsure."""
    data = write_folder(tmp_path / "data", n_per_class=16, size=96)
    recipe = {"views": [[224, 1]], "layers": [5, 11], "tokens": ["cls", "patch_mean"]}
    config = make_config("default", epochs=20, features=recipe, early_exit_band=[0.3, 0.7], early_exit_layers=1)
    train_evaluate_save(str(data), tmp_path / "out", config, cache_dir=tmp_path / "cache")
    metrics = _check_saved(tmp_path / "out", min_auc=0.0)
    assert metrics["early_exit"]["n"] == metrics["classification"]["n"]
    assert "stops after block 5 of 12" in (tmp_path / "out" / "model" / "README.md").read_text()
    predictor = _served_through_both_routes(tmp_path / "out" / "model", data, "last_blocks", 0, 1)
    assert predictor.model.exit_block == 5 and predictor.featurizer.encoder.split_after == 5
