"""Several training sources: loading and mixing, pairs kept together, shortcut-control variants, pseudo-fakes,
balanced sampling, per-source reports and the feature cache's fingerprint."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from fakeface.data import load_face_sources, split_strata, stratified_kfold, stratified_split
from fakeface.errors import FakefaceError
from fakeface.evaluation import per_source_report
from fakeface.faces import FaceBox
from fakeface.self_blend import self_blend
from fakeface.transforms import AUG_LONG_SIDE, degrade
from helpers import cue_image, write_folder


def one_class_folder(root, name: str, n: int, fake: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    folder = root / ("fake" if fake else "real")
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cue_image(fake, rng, 32).save(folder / f"{name}_{i:03d}.png")
    return root


@pytest.fixture()
def sources(tmp_path):
    """Three sources: a two-class set, a fake-only set, and a paired set (each fake made from one real)."""
    both = write_folder(tmp_path / "both", n_per_class=10, size=32)
    gan = one_class_folder(tmp_path / "gan", "gan", 10, fake=True, seed=1)
    swaps = one_class_folder(tmp_path / "swaps", "orig", 10, fake=False, seed=2)
    one_class_folder(swaps, "swap", 10, fake=True, seed=3)
    rows = ["fake,original"] + [f"fake/swap_{i:03d}.png,real/orig_{i:03d}.png" for i in range(10)]
    (swaps / "pairs.csv").write_text("\n".join(rows) + "\n")
    return both, gan, swaps


def test_sources_load_into_one_set_with_their_names_and_groups(sources):
    both, gan, swaps = sources
    data = load_face_sources([str(both), str(gan), str(swaps)])
    ds = data.train
    assert Counter(zip(ds["source"], ds["label"])) == {("both", 0): 10, ("both", 1): 10, ("gan", 0): 10,
                                                      ("swaps", 0): 10, ("swaps", 1): 10}
    groups = dict(zip(ds["path"], ds["group"]))
    swap, orig = str(swaps / "fake" / "swap_003.png"), str(swaps / "real" / "orig_003.png")
    assert groups[swap] == groups[orig]  # a face swap travels with its original
    assert len(set(ds["group"])) == 40  # 50 images, 10 pairs
    assert data.weights == {"both": 1.0, "gan": 1.0, "swaps": 1.0}


def test_one_class_source_alone_is_refused_but_fine_in_a_mix(sources):
    _, gan, _ = sources
    with pytest.raises(FakefaceError, match="no readable real"):
        load_face_sources([str(gan)])


def test_mix_file_gives_weights_and_relative_paths(sources, tmp_path):
    both, gan, _ = sources
    mix = tmp_path / "mix.yaml"
    mix.write_text("sources:\n  - data: both\n  - {data: gan, weight: 2.5}\n")
    data = load_face_sources([str(mix)])
    assert data.weights == {"both": 1.0, "gan": 2.5}
    (tmp_path / "mix.json").write_text(json.dumps([str(both), {"data": str(gan), "weight": 0}]))
    with pytest.raises(FakefaceError, match="positive number"):
        load_face_sources([str(tmp_path / "mix.json")])


def test_two_sources_with_one_name_are_refused(tmp_path):
    a = write_folder(tmp_path / "a" / "faces", n_per_class=3, size=16)
    b = write_folder(tmp_path / "b" / "faces", n_per_class=3, size=16, seed=1)
    with pytest.raises(FakefaceError, match="share a name"):
        load_face_sources([str(a), str(b)])


def test_splits_and_folds_keep_pairs_together_and_cover_every_source(sources):
    ds = load_face_sources([str(p) for p in sources]).train
    groups = np.array(ds["group"])
    for train, held in stratified_kfold(ds["label"], 5, 0, split_strata(ds), ds["group"]):
        assert not set(groups[train]) & set(groups[held])
        assert {"both", "gan", "swaps"} <= set(np.array(ds["source"])[held])
    train, val = stratified_split(ds["label"], 0.2, 0, split_strata(ds), ds["group"])
    assert not set(groups[train]) & set(groups[val]) and len(train) + len(val) == len(ds)


def test_single_source_splits_exactly_as_before(tmp_path):
    """One source: strata are the difficulty alone and every image is its own group, as before sources."""
    ds = load_face_sources([str(write_folder(tmp_path / "faces", n_per_class=20, size=16))]).train
    assert split_strata(ds) == list(ds["difficulty"])
    before = stratified_split(ds["label"], 0.15, 0, ds["difficulty"])
    after = stratified_split(ds["label"], 0.15, 0, split_strata(ds), ds["group"])
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


def test_common_range_copy_is_seeded_and_resizes_every_source_into_one_range():
    rng = np.random.default_rng(0)
    small, large = cue_image(True, rng, 96), cue_image(False, rng, 900)
    for image in (small, large):
        a, b = degrade(image, "aug:1", "key"), degrade(image, "aug:1", "key")
        assert np.array_equal(np.asarray(a), np.asarray(b))  # cacheable: same key, same copy
        assert AUG_LONG_SIDE[0] <= max(a.size) <= AUG_LONG_SIDE[1]
    sides = {max(degrade(large, "aug:1", f"k{i}").size) for i in range(8)}
    assert len(sides) > 1  # the size is drawn, not fixed


def test_self_blend_changes_only_the_face_region_and_is_seeded():
    rng = np.random.default_rng(0)
    image = cue_image(False, rng, 128)
    box = FaceBox(40, 40, 90, 100, 0.99)
    a, b = self_blend(image, box, "k"), self_blend(image, box, "k")
    assert np.array_equal(np.asarray(a), np.asarray(b))
    diff = np.abs(np.asarray(a, np.int16) - np.asarray(image, np.int16)).sum(-1)
    assert diff[60:80, 55:75].mean() > 1  # blended inside the face
    assert diff[:15].max() == 0 and diff[:, :15].max() == 0  # untouched far outside it
    assert self_blend(image, None, "k").size == image.size  # no face found: an ellipse over the centre


def test_balanced_sampler_draws_every_source_and_class_alike():
    from fakeface.pipeline import balanced_sampler

    cells = ["big|0"] * 900 + ["big|1"] * 60 + ["small|0"] * 40
    factory = balanced_sampler(cells, {"small": 1.0}, seed=0)
    drawn = Counter(cells[i] for i in factory(None, 0))
    assert all(250 < drawn[c] < 420 for c in ("big|0", "big|1", "small|0")), drawn
    assert factory(None, 1) != factory(None, 0) and factory(None, 0) == factory(None, 0)
    weighted = Counter(cells[i] for i in balanced_sampler(cells, {"small": 2.0}, seed=0)(None, 0))
    assert weighted["small|0"] > 1.5 * weighted["big|1"]


def test_per_source_report_counts_flagged_reals_by_source():
    is_fake = np.array([1, 1, 0, 0, 0, 1, 0])
    prob = np.array([0.9, 0.4, 0.6, 0.1, 0.2, 0.8, 0.7])
    sources = ["gan", "gan", "photos", "photos", "photos", "swaps", "swaps"]
    report = per_source_report(is_fake, prob, sources, threshold=0.5)
    assert report["sources"]["gan"]["tpr"] == 0.5 and "fpr" not in report["sources"]["gan"]
    assert report["sources"]["photos"]["fpr"] == pytest.approx(1 / 3)
    assert report["reals"]["by_source"] == {"photos": {"flagged": 1, "of": 3}, "swaps": {"flagged": 1, "of": 1}}
    assert report["reals"]["fpr"] == 0.5


class CountingFeaturizer:
    """Stands in for CLIP: the summary is the image's mean red level; counts computations."""

    def __init__(self, views=((224, 1),), backbone="a"):
        self.calls, self.views, self.backbone = 0, views, backbone

    def fingerprint(self):
        return {"backbone_sha256": self.backbone, "views": [list(v) for v in self.views]}

    def summary(self, image):
        self.calls += 1
        return np.full((len(self.views), 12, 2, 768), float(np.asarray(image)[..., 0].mean()), np.float32)


def test_feature_cache_is_keyed_by_backbone_crop_and_variant(tmp_path, monkeypatch):
    from fakeface import faces
    from fakeface.models import create_model
    from fakeface.pipeline import _raw, featurize

    ds = _raw(load_face_sources([str(write_folder(tmp_path / "faces", n_per_class=2, size=16))]).train)
    model = create_model("clip-vit-b16-probe", features={"views": [[224, 1]], "layers": [11], "tokens": ["cls"]})
    cache = tmp_path / "cache"
    run = lambda f, variant=None: featurize(ds, model, None, cache, featurizer=f, degradation=variant)  # noqa: E731
    first = CountingFeaturizer()
    run(first)
    run(first)
    assert first.calls == 4  # the second pass read the cache
    other_backbone = CountingFeaturizer(backbone="b")
    run(other_backbone)
    assert other_backbone.calls == 4
    variant = CountingFeaturizer()
    run(variant, "aug:1")
    assert variant.calls == 4
    monkeypatch.setattr(faces, "MARGIN", faces.MARGIN + 0.1)  # another crop: not the cached features
    cropped = CountingFeaturizer()
    run(cropped)
    assert cropped.calls == 4


def test_crossval_leaves_out_a_whole_family_and_each_of_its_sources(tmp_path, clip_backbone):
    """Both GAN sources leave together ("GAN"), and each alone (an unseen generator of a seen family); a family
    of one source (composites here) leaves once."""
    from fakeface.pipeline import cross_validate
    from fakeface.training import make_config

    data = [str(one_class_folder(tmp_path / name, name, 16, fake=True, seed=i))
            for i, name in enumerate(("stylegan-boredhumans", "gan-studio"))]
    data.append(str(write_folder(tmp_path / "ciplab", n_per_class=16, size=48)))
    data.append(str(one_class_folder(tmp_path / "ffhq-real", "ffhq", 24, fake=False, seed=5)))
    config = make_config("default", epochs=3, features={"views": [[224, 1]], "layers": [11], "tokens": ["cls"]},
                         feature_variants=[])
    summary = cross_validate(data, config, folds=2, output_dir=tmp_path / "cv", cache_dir=tmp_path / "cache")
    lofo = summary["leave_one_family_out"]
    assert set(lofo) == {"GAN", "composite", "source stylegan-boredhumans", "source gan-studio"}
    assert lofo["GAN"]["sources"] == ["gan-studio", "stylegan-boredhumans"] and lofo["GAN"]["n_fake"] == 32
    assert lofo["source gan-studio"]["n_fake"] == 16
