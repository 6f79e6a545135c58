"""Issue 24's delivery check, small: the shipped model's P(fake) for the public-domain example photos barely
moves when the same photo arrives mirrored, at half size, re-saved as JPEG q75 or stored sideways with an EXIF
rotation (the full measurement runs on the held-out test split: the card's robustness table)."""

from pathlib import Path

import numpy as np

from fakeface.images import load_image
from fakeface.pipeline import DELIVERY_CHECKS
from fakeface.predictor import Predictor
from fakeface.transforms import degrade

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.jpg"))


def test_the_default_model_answers_the_same_however_a_photo_arrives(clip_backbone):
    predictor = Predictor.load()
    assert predictor.model.recipe.mirror  # test-time mirroring: a mirrored face gives the same features
    moved, flips = {}, 0
    for path in EXAMPLES:
        image = load_image(path)
        clean = predictor.predict_image(image)
        for spec in DELIVERY_CHECKS:
            copy = predictor.predict_image(degrade(image, spec, key=path.name))
            moved.setdefault(spec, []).append(abs(copy.fake_prob - clean.fake_prob))
            flips += copy.verdict != clean.verdict
    assert max(moved["mirror"]) < 0.02, moved["mirror"]  # only the face box may differ by a pixel
    assert np.mean(np.concatenate(list(moved.values()))) < 0.05, moved
    assert flips <= 1, moved
