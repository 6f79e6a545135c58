"""Tests for fakeface.evaluation: hand-worked metric values, calibration, thresholds, intervals, report."""

import json
import time
import warnings

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from fakeface.errors import FakefaceError
from fakeface.evaluation import (
    _resample_aucs,
    apply_temperature,
    bootstrap_auc_interval,
    choose_threshold,
    classification_metrics,
    evaluate_predictions,
    expected_calibration_error,
    fit_temperature,
    ranking_metrics,
    reliability_bins,
    wilson_interval,
    write_report,
)


def _split(fakes, reals):
    """(is_fake, fake_prob) arrays from a list of fake scores and a list of real scores."""
    is_fake = np.array([1] * len(fakes) + [0] * len(reals))
    return is_fake, np.array(list(fakes) + list(reals), dtype=float)


# 4 fakes / 6 reals. At threshold 0.5:
#   fakes 0.9 0.8 0.6 -> FAKE (tp = 3); fake 0.3 -> REAL (fn = 1)
#   real 0.7 -> FAKE (fp = 1); reals 0.4 0.2 0.1 0.05 0.02 -> REAL (tn = 5)
HAND_FAKES = [0.9, 0.8, 0.6, 0.3]
HAND_REALS = [0.7, 0.4, 0.2, 0.1, 0.05, 0.02]


def test_classification_metrics_hand_worked():
    m = classification_metrics(*_split(HAND_FAKES, HAND_REALS), threshold=0.5)
    assert m["confusion"] == {"tn": 5, "fp": 1, "fn": 1, "tp": 3}
    # rows = true [real, fake], columns = predicted [real, fake]
    assert m["confusion_matrix"]["matrix"] == [[5, 1], [1, 3]]
    assert m["confusion_matrix"]["labels"] == ["real", "fake"]
    assert m["accuracy"] == pytest.approx(8 / 10)  # (tp + tn) / n
    assert m["precision"] == pytest.approx(3 / 4)  # tp / (tp + fp)
    assert m["recall"] == pytest.approx(3 / 4)  # tp / (tp + fn)
    assert m["specificity"] == pytest.approx(5 / 6)  # tn / (tn + fp)
    assert m["f1"] == pytest.approx(0.75)  # 2 * 0.75 * 0.75 / 1.5
    assert m["balanced_accuracy"] == pytest.approx((3 / 4 + 5 / 6) / 2)
    assert (m["n"], m["n_fake"], m["n_real"]) == (10, 4, 6)


def test_threshold_is_inclusive():
    # fake_prob == threshold is a FAKE verdict
    m = classification_metrics([1, 0], [0.6, 0.59], threshold=0.6)
    assert m["confusion"] == {"tn": 1, "fp": 0, "fn": 0, "tp": 1}


def test_zero_division_gives_zero_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # no FAKE verdicts at all: precision and F1 undefined -> 0.0
        m = classification_metrics([1, 0, 0], [0.1, 0.2, 0.3], threshold=0.9)
        assert m["precision"] == 0.0 and m["f1"] == 0.0 and m["recall"] == 0.0
        # only fakes: specificity undefined -> 0.0; balanced accuracy = recall of the class present
        m = classification_metrics([1, 1, 1, 1], [0.9, 0.8, 0.7, 0.1], threshold=0.5)
        assert m["specificity"] == 0.0
        assert m["balanced_accuracy"] == pytest.approx(3 / 4)


def test_ranking_hand_worked_auc():
    # fakes 0.8, 0.4 vs reals 0.6, 0.2: 3 of 4 pairs ordered right (0.4 < 0.6 is the swap) -> 0.75
    r = ranking_metrics(*_split([0.8, 0.4], [0.6, 0.2]))
    assert r["roc_auc"] == pytest.approx(0.75)
    # reals below each fake: 6 + 6 + 5 + 4 = 21 of 24 pairs
    assert ranking_metrics(*_split(HAND_FAKES, HAND_REALS))["roc_auc"] == pytest.approx(21 / 24)


def test_eer_exact():
    # At t = 0.6: fakes caught 0.9 0.8 0.7 (FNR = 1/4) and real 0.6 flagged (FPR = 1/4): FNR == FPR
    r = ranking_metrics(*_split([0.9, 0.8, 0.7, 0.3], [0.6, 0.2, 0.1, 0.05]))
    assert r["eer"] == pytest.approx(0.25)
    assert r["eer_threshold"] == pytest.approx(0.6)


def test_tpr_at_fpr():
    # 20 reals: FPR <= 1 % allows no real above t, FPR <= 5 % allows one (the real at 0.85).
    reals = [0.85] + [i / 100 for i in range(1, 20)]
    r = ranking_metrics(*_split([0.95, 0.9, 0.8, 0.7, 0.6], reals))
    assert r["tpr_at_fpr_1pct"] == pytest.approx(2 / 5)  # only 0.95 and 0.9 are above the real at 0.85
    assert r["threshold_at_fpr_1pct"] == pytest.approx(0.9)
    assert r["tpr_at_fpr_5pct"] == pytest.approx(1.0)  # t = 0.6 catches every fake, flags one real
    assert r["threshold_at_fpr_5pct"] == pytest.approx(0.6)


def test_single_class_does_not_crash():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = ranking_metrics([1, 1, 1], [0.2, 0.5, 0.9])
        assert all(v is None for v in r.values())
        assert bootstrap_auc_interval([0, 0], [0.2, 0.3]) == (None, None)
        report = evaluate_predictions([0, 0, 0], [0.1, 0.6, 0.3], 0.5)
    assert report["classification"]["specificity"] == pytest.approx(2 / 3)
    assert report["ranking"]["roc_auc"] is None
    with pytest.raises(FakefaceError):
        choose_threshold([1, 1], [0.3, 0.8])


def test_bad_inputs_rejected():
    with pytest.raises(ValueError):
        classification_metrics([1, 0], [0.5], 0.5)
    with pytest.raises(ValueError):
        classification_metrics([1, 2], [0.5, 0.5], 0.5)
    with pytest.raises(ValueError):
        ranking_metrics([1, 0], [0.5, 1.5])


def test_ece_hand_worked_two_filled_bins():
    # 4 bins: (0, .25] (.25, .5] (.5, .75] (.75, 1]; confidence = max(p, 1 - p), prediction = p >= 0.5
    #   fake p=.9 conf .9 right | real p=.2 conf .8 right | real p=.1 conf .9 right    -> bin 4
    #   fake p=.7 conf .7 right | real p=.6 conf .6 wrong | fake p=.4 conf .6 wrong    -> bin 3
    # bin 4: |1 - .8667| = .1333; bin 3: |1/3 - .6333| = .3; ECE = .5 * .1333 + .5 * .3 = .21667
    is_fake = [1, 0, 0, 1, 0, 1]
    fake_prob = [0.9, 0.2, 0.1, 0.7, 0.6, 0.4]
    assert expected_calibration_error(is_fake, fake_prob, n_bins=4) == pytest.approx(0.5 * 0.4 / 3 + 0.5 * 0.3)
    bins = reliability_bins(is_fake, fake_prob, n_bins=4)
    assert bins["count"].tolist() == [0, 0, 3, 3]
    assert bins["accuracy"][2:] == pytest.approx([1 / 3, 1.0])
    assert bins["mean_confidence"][2:] == pytest.approx([1.9 / 3, 2.6 / 3])
    assert np.isnan(bins["accuracy"][:2]).all()


def test_ece_zero_when_perfectly_calibrated():
    # every item at confidence 1 and right
    assert expected_calibration_error([1, 0], [1.0, 0.0]) == 0.0


def test_temperature_recovers_two():
    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 4.0, size=20_000)
    is_fake = (rng.random(logits.size) < 1 / (1 + np.exp(-logits / 2.0))).astype(int)
    assert fit_temperature(logits, is_fake) == pytest.approx(2.0, rel=0.06)
    assert fit_temperature(logits, is_fake) == fit_temperature(logits, is_fake)  # deterministic


def test_apply_temperature():
    assert apply_temperature([0.0, 2.0, -4.0], 2.0) == pytest.approx(1 / (1 + np.exp(-np.array([0, 1, -2]))))
    with pytest.raises(ValueError):
        apply_temperature([1.0], 0.0)


def test_choose_threshold_separable_and_ties():
    # every t in (0.3, 0.7] separates perfectly; the tie goes to the one nearest 0.5
    assert choose_threshold(*_split([0.7, 0.8, 0.9], [0.1, 0.2, 0.3])) == 0.5
    # perfect range (0.2, 0.3] excludes 0.5: its nearest point is 0.3 (inclusive: p >= 0.3 is FAKE)
    assert choose_threshold(*_split([0.3, 0.35], [0.1, 0.2])) == pytest.approx(0.3)


def test_choose_threshold_maximises_balanced_accuracy():
    # (0.5, 0.6]: (2/3 + 1) / 2 = .833; (0.4, 0.5]: (2/3 + 3/4) / 2 = .708; (0.3, 0.4]: (1 + 3/4) / 2 = .875
    is_fake, fake_prob = _split([0.9, 0.6, 0.4], [0.5, 0.3, 0.2, 0.1])
    assert choose_threshold(is_fake, fake_prob) == pytest.approx(0.4)
    assert choose_threshold(*_split([0.9, 0.8, 0.7, 0.3], [0.6, 0.2, 0.1, 0.05]), "eer") == pytest.approx(0.6)
    with pytest.raises(ValueError):
        choose_threshold(is_fake, fake_prob, criterion="accuracy")


def test_plateau_criterion_prefers_a_broad_optimum_to_a_narrow_spike():
    # exact argmax: t in (0.1, 0.15] catches every fake at the cost of one real (.917), a 0.05-wide spike;
    # every t in (0.2, 0.45] gives .9. The +-0.1 windows lying wholly inside that stretch are centred on
    # 0.31-0.35, and the tie goes to the one nearest 0.5
    is_fake, fake_prob = _split([0.15] + [0.45] * 4, [0.1] * 5 + [0.2])
    assert choose_threshold(is_fake, fake_prob) == pytest.approx(0.15)
    assert choose_threshold(is_fake, fake_prob, "balanced_accuracy_plateau") == pytest.approx(0.35)


def test_choose_threshold_uses_only_its_inputs():
    val_y, val_p = _split([0.9, 0.6, 0.4], [0.5, 0.3, 0.2, 0.1])
    before = (val_y.copy(), val_p.copy())
    first = choose_threshold(val_y, val_p)
    # a "test set" with a different optimum, evaluated in between, must not influence the validation choice
    choose_threshold(*_split([0.95, 0.9], [0.85, 0.1]))
    assert choose_threshold(val_y, val_p) == first
    np.testing.assert_array_equal(val_y, before[0])  # inputs untouched
    np.testing.assert_array_equal(val_p, before[1])


def test_wilson_interval_known_value():
    lo, hi = wilson_interval(8, 10)
    assert (lo, hi) == pytest.approx((0.4902, 0.9433), abs=1e-3)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and 0 < hi < 0.35


def test_resample_aucs_match_weighted_sklearn():
    # a resample is a count per original item; sklearn's sample_weight gives the same AUC
    rng = np.random.default_rng(1)
    fakes = rng.choice([0.2, 0.5, 0.7, 0.9], size=7)  # repeated values exercise ties
    reals = rng.choice([0.1, 0.5, 0.6, 0.7], size=9)
    fake_counts = rng.integers(0, 3, size=(5, 7)) + np.eye(5, 7, dtype=int)
    real_counts = rng.integers(0, 3, size=(5, 9)) + np.eye(5, 9, dtype=int)
    got = _resample_aucs(fakes, reals, fake_counts, real_counts)
    is_fake, fake_prob = _split(fakes, reals)
    expected = [
        roc_auc_score(is_fake, fake_prob, sample_weight=np.concatenate([fc, rc]))
        for fc, rc in zip(fake_counts, real_counts)
    ]
    assert got == pytest.approx(expected)


def test_bootstrap_auc_interval_fast_and_sensible():
    rng = np.random.default_rng(2)
    is_fake, fake_prob = _split(rng.beta(4, 2, 200), rng.beta(2, 4, 200))
    start = time.perf_counter()
    lo, hi = bootstrap_auc_interval(is_fake, fake_prob, n_boot=1000, seed=0)
    assert time.perf_counter() - start < 2.0
    assert lo < roc_auc_score(is_fake, fake_prob) < hi
    assert bootstrap_auc_interval(is_fake, fake_prob, n_boot=1000, seed=0) == (lo, hi)  # seeded
    # separable data: every stratified resample is separable too
    assert bootstrap_auc_interval(*_split([0.8, 0.9], [0.1, 0.2]), n_boot=50) == (1.0, 1.0)


def test_evaluate_predictions_with_groups_and_temperature():
    fakes, reals = HAND_FAKES, HAND_REALS
    is_fake, fake_prob = _split(fakes, reals)
    groups = ["easy", "easy", "hard", "hard"] + ["real"] * len(reals)
    logits = np.log(fake_prob / (1 - fake_prob))
    report = evaluate_predictions(is_fake, fake_prob, 0.5, logits=logits, temperature=2.0, groups=groups)
    assert report["classification"]["wilson_95"]["accuracy"] == pytest.approx(list(wilson_interval(8, 10)))
    lo, hi = report["ranking"]["roc_auc_bootstrap_95"]
    assert lo <= report["ranking"]["roc_auc"] <= hi
    calib = report["calibration"]
    assert calib["ece"] == pytest.approx(expected_calibration_error(is_fake, fake_prob, 15))
    assert calib["ece_raw_logits"] == pytest.approx(calib["ece"])  # same probabilities
    assert calib["temperature"] == 2.0 and "ece_temperature_scaled" in calib
    # fake-only group "hard" (0.6, 0.3) is scored against all 6 reals: 5 + 4 of 12 pairs
    hard = report["groups"]["hard"]
    assert hard["scored_on"] == "group fakes + all reals"
    assert hard["n_in_group"] == 2 and hard["classification"]["n"] == 8
    assert hard["ranking"]["roc_auc"] == pytest.approx(9 / 12)
    assert report["groups"]["easy"]["ranking"]["roc_auc"] == pytest.approx(1.0)
    assert report["groups"]["real"]["scored_on"] == "group reals + all fakes"


def test_write_report_files(tmp_path):
    is_fake, fake_prob = _split(HAND_FAKES, HAND_REALS)
    metrics = evaluate_predictions(is_fake, fake_prob, 0.5)
    metrics["extra"] = {"numpy_int": np.int64(3), "nan": float("nan"), "array": np.array([0.5, 1.0])}
    paths = write_report(metrics, tmp_path / "report", is_fake=is_fake, fake_prob=fake_prob, threshold=0.5)
    assert set(paths) == {"metrics", "confusion_matrix", "roc", "reliability"}
    for key in ("confusion_matrix", "roc", "reliability"):
        assert paths[key].name == f"{key}.png"
        with Image.open(paths[key]) as img:
            assert img.format == "PNG" and img.size[0] > 100
            img.verify()
    loaded = json.loads(paths["metrics"].read_text())
    assert loaded["classification"]["accuracy"] == pytest.approx(0.8)
    assert loaded["classification"]["confusion_matrix"]["matrix"] == [[5, 1], [1, 3]]
    assert loaded["extra"] == {"numpy_int": 3, "nan": None, "array": [0.5, 1.0]}
    assert json.loads(json.dumps(loaded)) == loaded


def test_write_report_single_class(tmp_path):
    paths = write_report({}, tmp_path, is_fake=[1, 1], fake_prob=[0.4, 0.9], threshold=0.5)
    with Image.open(paths["roc"]) as img:
        img.verify()
