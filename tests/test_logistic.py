"""The logistic head (a scikit-learn fit, no epochs) and temperature calibration."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import make_tone_manifest, tone
from sklearn.linear_model import LogisticRegression

from emovox.config import config_from_dict
from emovox.evaluation.metrics import expected_calibration_error
from emovox.models.logistic import fit_logistic
from emovox.models.temperature import fit_temperature


def blobs(n: int, classes: int = 4, dim: int = 20, seed: int = 0, noise: float = 0.5):
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(123).normal(0, 2, (classes, dim))
    y = np.arange(n) % classes
    return centers[y] + noise * rng.standard_normal((n, dim)), y


def test_logistic_separates_separable_data_and_stays_at_chance_on_shuffled_labels():
    x, y = blobs(200)
    xt, yt = blobs(200, seed=1)
    fit = fit_logistic(x, y, 4)
    assert np.mean((xt @ fit.coef.T + fit.intercept).argmax(1) == yt) > 0.98
    # labels that carry no information about the features: held-out accuracy stays at chance
    rng = np.random.default_rng(2)
    x, xt = rng.standard_normal((400, 20)), rng.standard_normal((2000, 20))
    y, yt = rng.integers(0, 4, 400), rng.integers(0, 4, 2000)
    fit = fit_logistic(x, y, 4)
    assert abs(np.mean((xt @ fit.coef.T + fit.intercept).argmax(1) == yt) - 0.25) < 0.05


def test_logistic_equals_scikit_learn_and_chooses_C_on_validation_only():
    x, y = blobs(120, classes=3, noise=2.0)
    xv, yv = blobs(60, classes=3, noise=2.0, seed=3)
    fit = fit_logistic(x, y, 3, Cs=[0.001, 0.02, 1.0], x_valid=xv, y_valid=yv)
    ref = LogisticRegression(C=fit.C, solver="newton-cg", max_iter=10000, tol=1e-10).fit(x, y)
    np.testing.assert_allclose(fit.coef, ref.coef_, atol=1e-6)
    assert set(fit.scores) == {"layers#0/C=0.001", "layers#0/C=0.02", "layers#0/C=1"}
    assert fit.scores[f"layers#0/C={fit.C:g}"] == max(fit.scores.values()) and fit.temperature > 0
    with pytest.raises(ValueError, match="validation"):
        fit_logistic(x, y, 3, Cs=[0.01, 0.1])


def test_rows_space_fits_equal_full_fits_and_inner_selection_uses_speakers_only():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((60, 400))  # more features than rows: fitted in the rows' span
    y = np.arange(60) % 3
    x[:, :5] += 2.0 * np.eye(3)[y] @ rng.standard_normal((3, 5))
    groups = [f"s{i % 6}" for i in range(60)]
    fit = fit_logistic(x, y, 3, Cs=[0.01, 0.1, 1.0], groups=groups, column_sets=[range(400), range(5)], select="inner-logloss")
    cols = list(range(400)) if fit.columns == 0 else list(range(5))
    ref = LogisticRegression(C=fit.C, solver="newton-cg", max_iter=10000, tol=1e-10).fit(x[:, cols], y)
    np.testing.assert_allclose(fit.coef[:, cols], ref.coef_, atol=1e-5)
    assert np.all(fit.coef[:, [c for c in range(400) if c not in cols]] == 0) and len(fit.scores) == 6
    # the five informative columns win: the 395 noise columns only add variance
    assert fit.columns == 1
    # refit: the chosen model is fitted on the given data instead
    more = rng.standard_normal((30, 400))
    refit = fit_logistic(x, y, 3, Cs=[0.1], groups=groups, select="inner-logloss", refit=(np.vstack([x, more]), np.r_[y, y[:30]]))
    assert not np.allclose(refit.coef, fit_logistic(x, y, 3, Cs=[0.1]).coef)
    with pytest.raises(ValueError, match="speaker"):
        fit_logistic(x, y, 3, Cs=[0.1, 1.0], select="inner-logloss")


def test_inner_scores_from_one_gram_matrix_equal_direct_fits_on_the_raw_columns():
    """The inner cross-validation takes each group's coordinates from one Gram matrix of all rows;
    its out-of-fold log-loss must be what scikit-learn fits on the raw d columns give."""
    from scipy.special import softmax
    from sklearn.metrics import log_loss

    from emovox.models.logistic import speaker_groups

    rng = np.random.default_rng(7)
    x = rng.standard_normal((80, 300))
    y = np.arange(80) % 4
    x[:, :6] += 1.5 * np.eye(4)[y] @ rng.standard_normal((4, 6))
    groups = [f"s{i // 10}" for i in range(80)]  # eight speakers, every class in each
    Cs = [0.05, 0.5]
    fit = fit_logistic(x, y, 4, Cs=Cs, groups=groups, select="inner-logloss")
    g = speaker_groups(groups, 4)
    for c in Cs:
        oof = np.zeros((80, 4))
        for name in set(g):
            out = g == name
            ref = LogisticRegression(C=c, solver="newton-cg", max_iter=10000, tol=1e-10).fit(x[~out], y[~out])
            oof[out] = ref.decision_function(x[out])
        assert fit.scores[f"layers#0/C={c:g}"] == pytest.approx(log_loss(y, softmax(oof, axis=1), labels=range(4)), abs=2e-4)


def test_two_classes_become_two_rows_with_the_same_probabilities():
    x, y = blobs(80, classes=2)
    fit = fit_logistic(x, y, 2)
    ref = LogisticRegression(C=fit.C, solver="newton-cg", max_iter=10000, tol=1e-10).fit(x, y)
    ours = torch.softmax(torch.from_numpy(x @ fit.coef.T + fit.intercept), -1).numpy()
    np.testing.assert_allclose(ours, ref.predict_proba(x), atol=1e-6)


def test_temperature_recovers_a_known_overconfidence_and_lowers_calibration_error():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 1.5, (4000, 5))
    p = np.exp(true_logits) / np.exp(true_logits).sum(1, keepdims=True)
    y = np.array([rng.choice(5, p=row) for row in p])
    t = fit_temperature(3.0 * true_logits, y)  # a model three times too sure of itself
    assert t == pytest.approx(3.0, rel=0.08)
    over = torch.softmax(torch.from_numpy(3.0 * true_logits), -1).numpy()
    fixed = torch.softmax(torch.from_numpy(3.0 * true_logits / t), -1).numpy()
    assert expected_calibration_error(fixed, y) < expected_calibration_error(over, y) / 3
    assert fit_temperature(np.zeros((0, 5)), np.zeros(0)) == 1.0


def test_a_logistic_recognizer_round_trips_through_save_load_and_onnx(tmp_path):
    from emovox.inference.recognizer import Recognizer
    from emovox.inference.runtime import Runtime
    from emovox.training.final import train_recognizer

    manifest = make_tone_manifest(tmp_path / "corpus")
    cfg = config_from_dict({
        "name": "logistic", "corpus": f"manifest:{manifest}", "protocol": "speaker-groups:4", "cache_dir": str(tmp_path / "cache"),
        "model": {"backbone": "wav2vec2-base", "tiny": True, "mode": "frozen", "layers": "all", "combine": "concat",
                  "head": "logistic", "C": [0.01, 0.1, 1.0]},
        "train": {"threads": 1},
    })
    trained = train_recognizer(cfg, tmp_path / "rec", progress=False)
    info = json.loads((tmp_path / "rec" / "emovox.json").read_text())
    assert info["training"]["choices"]["C"] in (0.01, 0.1, 1.0) and info["training"]["calibration"]["temperature"] > 0
    assert info["training"]["calibration"]["fitted_on"] == "held-out predictions of the chosen candidate"
    assert not list((tmp_path / "rec").rglob("*.pkl")) and not list((tmp_path / "rec").rglob("*.joblib"))
    rec = Recognizer.load(tmp_path / "rec")
    clips = [tone(520, 0.5), tone(180, 0.6), tone(300, 0.45)]
    from emovox.data.examples import Example

    examples = [Example(str(i), 0, audio=c, length=len(c) / 16000) for i, c in enumerate(clips)]
    with torch.inference_mode():
        before = torch.softmax(trained.model(trained.model.collate(examples)), -1).numpy()
    np.testing.assert_allclose(rec.predict_proba(clips), before, atol=1e-6)
    assert [p.label for p in rec.predict(clips[:2])] == ["high", "low"]
    assert info["runtime"]["check"]["fp32"]["max_abs_diff"] < 1e-4  # `train` wrote the runtime and checked it
    np.testing.assert_allclose(Runtime.load(tmp_path / "rec").predict_proba(clips), before, atol=1e-4)


def test_frozen_features_are_extracted_with_their_own_thread_count(tmp_path, monkeypatch):
    """``train.extract_threads`` applies while features are extracted; the head then trains on ``train.threads``."""
    import torch
    from helpers import make_tone_manifest, tiny_config

    from emovox.config import config_from_dict
    from emovox.corpora import load_corpus
    from emovox.models.classifier import ClassifierModel
    from emovox.training.data import ExperimentData

    seen = []
    prepare = ClassifierModel.prepare

    def recording(self, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return prepare(self, *args, **kwargs)

    monkeypatch.setattr(ClassifierModel, "prepare", recording)
    manifest = make_tone_manifest(tmp_path / "corpus", speakers=2, per_class=2)
    cfg = config_from_dict(tiny_config(manifest, tmp_path / "cache", model={"head": "logistic"},
                                       train={"threads": 1, "extract_threads": 2}))
    before = torch.get_num_threads()
    ExperimentData(cfg, load_corpus(cfg.corpus), progress=False)
    assert seen == [2] and torch.get_num_threads() == before


def test_emovox_train_reports_what_the_logistic_head_chose(tmp_path):
    """No epochs to report: the summary line names the chosen C and how it was chosen."""
    import yaml
    from helpers import make_tone_manifest, tiny_config
    from typer.testing import CliRunner

    from emovox.cli import app

    manifest = make_tone_manifest(tmp_path / "corpus", speakers=4, per_class=3)
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(tiny_config(manifest, tmp_path / "cache", model={"head": "logistic", "C": [0.1, 1.0],
                                                                                     "select": "inner-logloss"})))
    r = CliRunner().invoke(app, ["train", str(config), "--out", str(tmp_path / "rec"), "--quiet"])
    assert r.exit_code == 0, r.output
    assert "logistic head (C = " in r.stdout and "chosen by inner-logloss" in r.stdout and "best epoch" not in r.stdout


def test_a_refitted_head_writes_validation_predictions_it_was_not_fitted_on(tmp_path):
    """refit: true fits the final model on training + validation speakers; the run's validation
    predictions (what votes choose members by) must still come from a fit that did not see them:
    exactly those of the same run without the refit, while its test predictions differ."""
    from helpers import make_tone_manifest, tiny_config

    from emovox.config import config_from_dict
    from emovox.evaluation.predictions import read_predictions
    from emovox.training.runner import run_cv

    manifest = make_tone_manifest(tmp_path / "corpus", speakers=4, per_class=3)
    runs = {}
    for refit in (False, True):
        model = {"head": "logistic", "layers": "all", "combine": "concat", "C": [0.1, 1.0], "select": "inner-logloss",
                 "refit": refit}
        cfg = config_from_dict(tiny_config(manifest, tmp_path / "cache", model=model, folds=[1]))
        res = run_cv(cfg, tmp_path / f"refit-{refit}", progress=False)
        assert ("valid_predictions" in res["choices"][0]) == refit  # the mark `emovox vote` checks
        runs[refit] = {name: read_predictions(tmp_path / f"refit-{refit}" / "fold_1" / name, res["labels"])[2]
                       for name in ("valid_predictions.csv", "predictions.csv")}
    valid = [runs[r]["valid_predictions.csv"] for r in (False, True)]
    test = [runs[r]["predictions.csv"] for r in (False, True)]
    np.testing.assert_allclose(valid[1], valid[0], atol=1e-5)
    assert np.abs(test[1] - test[0]).max() > 1e-4  # the refit did change the model that was tested


def test_valid_weighted_f1_chooses_the_C_with_the_best_validation_weighted_f1():
    """MELD is reported by weighted-F1: the logistic head can choose C by it on the dev set."""
    from sklearn.metrics import f1_score

    x, y = blobs(150, classes=3, noise=3.0)
    xv, yv = blobs(90, classes=3, noise=3.0, seed=4)
    keep = np.r_[np.flatnonzero(yv == 0), np.flatnonzero(yv != 0)[:30]]  # an imbalanced dev set
    xv, yv = xv[keep], yv[keep]
    Cs = [1e-4, 1e-3, 0.01, 1.0]
    fit = fit_logistic(x, y, 3, Cs=Cs, x_valid=xv, y_valid=yv, select="valid-weighted-f1")
    for c in Cs:
        ref = LogisticRegression(C=c, solver="newton-cg", max_iter=10000, tol=1e-10).fit(x, y)
        want = f1_score(yv, ref.predict(xv), average="weighted")
        assert fit.scores[f"layers#0/C={c:g}"] == pytest.approx(want, abs=1e-6)
    assert fit.scores[f"layers#0/C={fit.C:g}"] == max(fit.scores.values())


def test_layer_set_candidates_name_the_right_columns_of_each_branch():
    """A fusion candidate keeps, per branch, some of its concatenated hidden states: the columns must
    be those states' blocks, offset by the branches before it."""
    from emovox.config import ConfigError
    from emovox.models.closed_form import column_sets

    parts = [([0, 2, 4], 2), ([0, 1], 3)]  # branch 1: states 0, 2, 4 of width 2; branch 2: states 0, 1 of width 3
    assert column_sets([[[4], [1]], [[0, 2], [0]]], parts) == [[4, 5, 9, 10, 11], [0, 1, 2, 3, 6, 7, 8]]
    assert column_sets(None, parts) is None
    with pytest.raises(ConfigError, match=r"layers \[3\] are not among"):
        column_sets([[[3], [0]]], parts)
    with pytest.raises(ConfigError, match="names 1 branches"):
        column_sets([[[0]]], parts)
