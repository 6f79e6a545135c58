"""One way from pixels to a verdict: the training feature path and the serving Predictor agree exactly.

The same image file goes (a) through `pipeline.featurize` the way training sees it (a folder loaded with
`data.load_face_sources`, images kept as bytes by `pipeline._raw`, largest face cropped) and (b) through
`Predictor` (its featurizer and its model), with a real face detector and the real CLIP ONNX backbone.
"""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from fakeface import faces, pipeline
from fakeface.data import load_face_sources
from fakeface.faces import FaceDetector
from fakeface.images import load_image
from fakeface.models import create_model, probabilities
from fakeface.predictor import Predictor

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
RECIPE = {"views": [[224, 1]], "layers": [5, 7, 9, 11], "tokens": ["cls", "patch_mean"]}


def test_training_features_and_serving_agree_on_one_image(clip_backbone, tmp_path):
    detector = FaceDetector()
    if not detector.available:
        pytest.skip("no face detector is installed")
    image_file = EXAMPLES / "astronaut.jpg"
    assert len(detector.detect(load_image(image_file))) == 1  # one face: training's largest = serving's only

    data = tmp_path / "data"
    (data / "fake").mkdir(parents=True)
    (data / "real").mkdir()
    shutil.copy(image_file, data / "fake" / "astronaut.jpg")
    shutil.copy(EXAMPLES / "grace_hopper.jpg", data / "real" / "grace_hopper.jpg")  # a set needs both labels
    full = pipeline._raw(load_face_sources(str(data)).train)
    one = full.select([i for i, p in enumerate(full["path"]) if p.endswith("astronaut.jpg")])
    assert len(one) == 1

    torch.manual_seed(0)
    model = create_model("clip-vit-b16-probe", features=RECIPE).eval()
    with torch.no_grad():  # a random probe, with non-trivial standardisation so every term matters
        model.net.feature_mean.normal_(0, 0.1)
        model.net.feature_std.uniform_(0.5, 2.0)
        model.net.linear.weight.mul_(100)  # a logit well away from 0, so a feature difference would show
    model.set_calibration(temperature=1.7, threshold=0.5)

    train_feats = pipeline.featurize(one, model, detector, cache_dir=tmp_path / "cache")
    assert train_feats.shape == (1, model.recipe.dim)
    # and again from the cache, which training reads on every later run
    np.testing.assert_array_equal(pipeline.featurize(one, model, detector, cache_dir=tmp_path / "cache"),
                                  train_feats)
    with torch.no_grad():
        train_prob = float(probabilities(model(torch.from_numpy(train_feats)), model.temperature)[0])

    predictor = Predictor(model, detector="auto")
    assert predictor.detector.backend == detector.backend
    crops = predictor.crops(load_image(image_file))
    assert len(crops) == 1 and crops[0].found
    serve_feats = predictor.featurizer(crops[0].image)
    served = predictor.predict_file(str(image_file))

    assert np.abs(serve_feats - train_feats[0]).max() <= 1e-6
    assert len(served.faces) == 1
    assert abs(served.fake_prob - train_prob) <= 1e-6
    assert abs(train_prob - 0.5) > 0.1  # the comparison is not between two coin flips


def test_evaluation_scores_every_face_as_serving_does(clip_backbone, tmp_path):
    """A two-face image: evaluation (the card's figures) gives the probability the Space gives, its most-fake
    face's, while training learns from its largest face only."""
    from fakeface.training import TrainConfig

    detector = FaceDetector()
    if not detector.available:
        pytest.skip("no face detector is installed")
    data = tmp_path / "data"
    (data / "fake").mkdir(parents=True)
    (data / "real").mkdir()
    shutil.copy(EXAMPLES / "two_faces.jpg", data / "fake" / "two_faces.jpg")
    shutil.copy(EXAMPLES / "grace_hopper.jpg", data / "real" / "grace_hopper.jpg")
    ds = pipeline._raw(load_face_sources(str(data)).train)

    torch.manual_seed(1)
    model = create_model("clip-vit-b16-probe", features=RECIPE).eval()
    with torch.no_grad():
        model.net.linear.weight.mul_(100)
    model.set_calibration(temperature=300.0, threshold=0.5)  # keeps both faces' probabilities off 0 and 1
    model.record_crop(faces.crop_settings(detector))
    inputs = pipeline.model_inputs(model, TrainConfig(), ds, False, detector, cache_dir=tmp_path / "cache")
    two = ds["path"].index(next(p for p in ds["path"] if p.endswith("two_faces.jpg")))
    assert sorted(inputs.image_index.tolist()).count(two) == 2  # both faces are rows
    evaluated = probabilities(pipeline.image_logits(model, inputs, len(ds)), model.temperature)

    predictor = Predictor(model, detector="auto")
    assert predictor.detector.max_side == detector.max_side  # serving crops from the model's own settings
    served = predictor.predict_file(str(EXAMPLES / "two_faces.jpg"))
    assert len(served.faces) == 2
    assert abs(served.fake_prob - float(evaluated[two])) <= 1e-6
    per_face = sorted(f.fake_prob for f in served.faces)
    assert per_face[1] - per_face[0] > 1e-3  # the max really chose between two different answers

    trained = pipeline.featurize(ds, model, detector, cache_dir=tmp_path / "cache")
    assert trained.shape == (len(ds), model.recipe.dim)  # one row per image: its largest face


# ------------------------------------------------------------- one list, one rule, one meaning (issue 12)


def test_one_list_of_image_suffixes(tmp_path):
    """Training data folders, `fakeface predict DIR` and the app's examples pick files by the same suffixes."""
    from fakeface import cli, data, images

    assert cli.IMAGE_SUFFIXES is images.IMAGE_SUFFIXES and data.IMAGE_SUFFIXES is images.IMAGE_SUFFIXES
    for name in ("a.jfif", "b.PNG", "c.mpo", "notes.txt"):
        for folder in (tmp_path / "real", tmp_path / "fake"):
            folder.mkdir(exist_ok=True)
            (folder / name).write_bytes(b"x")
    found = {Path(p).name for p in cli.expand_inputs([str(tmp_path / "real")])}
    listed = {Path(path).name for path, _ in data._list_files({1: [tmp_path / "real"]})}
    assert found == listed == {"a.jfif", "b.PNG", "c.mpo"}


def test_one_logit_to_probability_rule():
    from fakeface.evaluation import apply_temperature

    logits = torch.tensor([-30.0, -1.0, 0.0, 2.5, 30.0], requires_grad=True)  # a training-time tensor
    p = probabilities(logits, 2.0)
    assert p.dtype == np.float32
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-logits.detach().numpy() / 2.0)), rtol=1e-6)
    np.testing.assert_allclose(apply_temperature(logits.detach().numpy(), 2.0), p, rtol=1e-6)
    np.testing.assert_allclose(probabilities([0.0, 1.0]), [0.5, 1 / (1 + np.exp(-1.0))], rtol=1e-6)


# (fake_prob, face found) -> (verdict, uncertain, headline) at threshold 0.5, band 0.1
CASES = [(0.9, True, "FAKE", False, "FAKE"), (0.55, True, "FAKE", True, "UNCERTAIN"),
         (0.45, True, "REAL", True, "UNCERTAIN"), (0.1, True, "REAL", False, "REAL"),
         (0.9, False, None, False, "NO FACE")]


@pytest.mark.parametrize("fake_prob, face_found, verdict, uncertain, headline", CASES)
def test_verdict_means_one_thing_everywhere(fake_prob, face_found, verdict, uncertain, headline):
    """predictor.decide is the one rule: the page (label and scale), /predict's label, REST (as_dict), the batch
    table and CSV and every `fakeface predict` format read the same verdict from it."""
    import csv
    import io
    import json

    from fakeface.cli import _row, _RowWriter
    from fakeface.predictor import FaceResult, Prediction, decide
    from fakeface.space import batch, ui

    faces = [FaceResult(fake_prob, (0, 0, 8, 8), None)] if face_found else []
    pred = Prediction(fake_prob=fake_prob, threshold=0.5, uncertain_band=0.1, faces=faces, face_found=face_found)
    assert decide(fake_prob, 0.5, 0.1, face_found).headline == headline
    assert (pred.verdict, pred.uncertain, pred.headline) == (verdict, uncertain, headline)
    assert ui.label_value(pred)["label"] == headline  # /predict and /analyse
    assert f">{headline if face_found else 'NO FACE FOUND'}" in ui.verdict_scale(pred)  # the page's headline
    rest = pred.as_dict("face.png")
    assert (rest["verdict"], rest["headline"], rest["faces_found"]) == (verdict, headline, len(faces))
    assert rest["uncertain"] == (uncertain if face_found else None)
    assert (rest["fake_prob"] is None) == (not face_found) and ("message" in rest) == (not face_found)

    class OnePrediction:
        def predict_file(self, source, threshold=None, heatmap=False):
            return pred

    rows = batch.predict_batch_rows(OnePrediction(), [batch.BatchItem("face.png", data=b"image")])
    assert (rows[0]["verdict"], rows[0]["faces"]) == (headline, len(faces))
    assert list(csv.DictReader(open(batch.write_csv(rows))))[0]["verdict"] == headline

    for fmt in ("table", "jsonl", "csv"):
        out = io.StringIO()
        writer = _RowWriter(fmt, out)
        writer.write(_row("face.png", pred))
        writer.close()
        if fmt == "table":
            assert out.getvalue().strip().split("\t")[1:4:2] == [headline, f"faces={len(faces)}"]
        else:
            row = json.loads(out.getvalue()) if fmt == "jsonl" else list(csv.DictReader(io.StringIO(out.getvalue())))[0]
            assert (row["verdict"] or None, row["headline"], int(row["faces_found"])) == (verdict, headline, len(faces))
