"""Choices are made on validation only (search grid, logistic C), and every run reports the standard baseline."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import make_tone_manifest

from emovox.config import config_from_dict
from emovox.corpora import load_corpus
from emovox.corpora.base import Corpus
from emovox.errors import ConfigError, EmovoxError


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return make_tone_manifest(tmp_path_factory.mktemp("corpus"), per_class=4)


def config(manifest, tmp_path, **extra) -> dict:
    data = {
        "name": "tones",
        "corpus": f"manifest:{manifest}",
        "protocol": "speaker-groups:4",
        "cache_dir": str(tmp_path / "cache"),
        "model": {"backbone": "wav2vec2-base", "tiny": True, "mode": "frozen", "layers": "all"},
        "train": {"lr": 0.01, "batch_size": 8, "max_epochs": 6, "patience": 6, "threads": 1},
    }
    data.update(extra)
    return data


def test_every_run_reports_the_baseline_beside_the_recipe(manifest, tmp_path):
    from emovox.training.runner import run_cv

    res = run_cv(config_from_dict(config(manifest, tmp_path)), tmp_path / "run", progress=False)
    b = res["baseline"]
    assert b["model"]["head"] == "logistic" and b["model"]["combine"] == "concat" and b["model"]["mode"] == "frozen"
    assert len(b["folds"]) == 4 and all("C" in c for c in b["choices"])
    # two tones a factor 2.9 apart in pitch: the fixed-C logistic regression on the tiny random backbone's
    # pooled states tells them apart for speakers it never heard. Bound set before measuring: 90 % UA pooled
    # over the 32 clips (measured 2026-12-06: 0.906, 29 of 32; one 8-clip fold scores 5 of 8, too few clips
    # for a bound per fold)
    assert b["pooled"]["ua"] >= 0.9, b["pooled"]
    # and the figure is that of the baseline's own predictions (scikit-learn's balanced accuracy is UA)
    import csv

    from sklearn.metrics import balanced_accuracy_score

    rows = []
    for k in range(1, 5):
        with open(tmp_path / "run" / "baseline" / f"fold_{k}" / "predictions.csv", newline="") as fh:
            rows += list(csv.DictReader(fh))
    assert len(rows) == 32  # 4 speakers x 2 classes x 4 clips, each tested once
    assert b["pooled"]["ua"] == pytest.approx(balanced_accuracy_score([r["true"] for r in rows], [r["pred"] for r in rows]))
    report = (tmp_path / "run" / "report.md").read_text()
    assert "## Against the standard baseline" in report and "| baseline |" in report
    assert (tmp_path / "run" / "baseline" / "fold_1" / "predictions.csv").is_file()
    off = run_cv(config_from_dict(config(manifest, tmp_path, baseline=False)), tmp_path / "off", progress=False)
    assert off["baseline"] is None and "standard baseline" not in (tmp_path / "off" / "report.md").read_text()


def poisoned(corpus: Corpus, ids: set[str]) -> Corpus:
    """The same corpus with every label in ``ids`` swapped to another class."""
    from dataclasses import replace

    other = {corpus.labels[0]: corpus.labels[1], corpus.labels[1]: corpus.labels[0]}
    utts = [replace(u, label=other[u.label]) if u.id in ids else u for u in corpus]
    return Corpus(corpus.name, utts, corpus.labels, corpus.spec)


def test_search_and_logistic_choices_never_read_test_labels(manifest, tmp_path):
    from emovox.splits.protocols import make_folds
    from emovox.training.runner import run_cv

    search = {"model.head": ["linear", "logistic"], "model.layers": ["all", "last"], "model.C": [[0.001, 0.1, 10.0]]}
    cfg = config_from_dict(config(manifest, tmp_path, search=search, baseline=False))
    corpus = load_corpus(cfg.corpus)
    fold = make_folds(corpus, cfg.protocol, cfg.validation)[0]
    clean = run_cv(cfg.model_copy(update={"folds": [1]}), tmp_path / "clean", progress=False, corpus=corpus)
    dirty = run_cv(cfg.model_copy(update={"folds": [1]}), tmp_path / "dirty", progress=False, corpus=poisoned(corpus, set(fold.test)))
    assert clean["choices"][0]["search"]["chosen"] == dirty["choices"][0]["search"]["chosen"]
    assert clean["choices"][0]["search"]["valid_ua"] == dirty["choices"][0]["search"]["valid_ua"]
    assert len(clean["choices"][0]["search"]["valid_ua"]) == 4
    # the poisoned test labels are scored as given: the test metrics do change
    assert clean["pooled"]["ua"] != dirty["pooled"]["ua"]
    # the chosen point's predictions are what the fold reports
    ua = clean["choices"][0]["search"]["valid_ua"]
    assert clean["choices"][0]["search"]["chosen"] in ua and ua[clean["choices"][0]["search"]["chosen"]] == max(ua.values())


def test_a_search_is_refused_where_it_would_choose_on_test(manifest, tmp_path):
    from emovox.training.runner import run_cv

    cfg = config_from_dict(config(manifest, tmp_path, search={"model.C": [[0.1], [1.0]]}, validation="paper", baseline=False))
    with pytest.raises(EmovoxError, match="validation: paper"):
        run_cv(cfg, tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match="cannot be searched"):
        run_cv(config_from_dict(config(manifest, tmp_path, search={"corpus": ["x"]})), tmp_path / "r2", progress=False)


@pytest.mark.slow
def test_the_baseline_on_real_emodb_equals_a_direct_scikit_learn_fit(whisper_base_dir, emodb_dir, emodb_small, emodb_whisper_cache,
                                                                     tmp_path):
    """Three EmoDB speakers (each with all seven classes), leave-one-speaker-out: emovox's baseline probabilities
    equal StandardScaler + LogisticRegression (C = 0.02) fitted directly on the same cached features. The
    features land in the session's shared cache (tests/test_whisper_emodb.py reads them back)."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    from emovox.models.logistic import DEFAULT_C
    from emovox.splits.protocols import make_folds
    from emovox.training.data import ExperimentData
    from emovox.training.runner import run_cv

    corpus = emodb_small
    data = config(None, tmp_path, corpus=f"emodb:{emodb_dir}", protocol="leave-one-speaker-out", cache_dir=str(emodb_whisper_cache))
    data["model"] = {"backbone": str(whisper_base_dir), "mode": "frozen", "layers": "all", "head": "logistic", "combine": "concat"}
    data["train"]["augment"] = {"length": False}  # the recipe shares the baseline's cached features: one extraction
    data["train"]["extract_precision"] = "auto"  # as the main recipe: bf16 where native, the features test_whisper_emodb reads
    cfg = config_from_dict(data)
    res = run_cv(cfg, tmp_path / "run", progress=False, corpus=corpus)
    bcfg_dir = tmp_path / "run" / "baseline"
    ed = ExperimentData(cfg, corpus, progress=False)
    slot = ed.prototype.branch.slot
    feats = {uid: e.cached[slot]["pooled"].flatten().double().numpy() for uid, e in ed.examples.items()}
    labels = {u.id: corpus.labels.index(u.label) for u in corpus}
    with threadpool_limits(1):  # as emovox fits: a second BLAS thread only waits on a busy machine
        for fold, choice in zip(make_folds(corpus, cfg.protocol, cfg.validation), res["baseline"]["choices"], strict=True):
            x = np.stack([feats[i] for i in fold.train])
            mean, std = x.mean(0), x.std(0)
            z = lambda ids, mean=mean, std=std: (np.stack([feats[i] for i in ids]) - mean) / std  # noqa: E731
            assert choice["C"] == DEFAULT_C and choice["scores"] == {}  # nothing chosen: the fixed reference
            lr = LogisticRegression(C=DEFAULT_C, solver="newton-cg", max_iter=10000, tol=1e-10)
            lr.fit(z(fold.train), [labels[i] for i in fold.train])
            rows = {}
            with open(bcfg_dir / f"fold_{fold.index}" / "predictions.csv") as fh:
                header = fh.readline().strip().split(",")
                for line in fh:
                    cells = line.strip().split(",")
                    rows[cells[0]] = [float(v) for v in cells[4:]]
            ours = np.array([rows[i] for i in fold.test])
            # the baseline's probabilities are temperature-calibrated on the validation speaker: calibrate
            # scikit-learn's the same way, with its own temperature (SciPy minimising the validation NLL)
            temperature = independent_temperature(lr.decision_function(z(fold.valid)), [labels[i] for i in fold.valid])
            calibration = json.loads((bcfg_dir / f"fold_{fold.index}" / "done.json").read_text())["calibration"]
            assert calibration["fitted_on"] == len(fold.valid) > 0
            assert calibration["temperature"] == pytest.approx(temperature, rel=1e-3)
            logits = lr.decision_function(z(fold.test)) / temperature
            expected = np.exp(logits - logits.max(1, keepdims=True))
            expected /= expected.sum(1, keepdims=True)
            # float32 inference against float64 scikit-learn, probabilities stored with 6 decimals
            np.testing.assert_allclose(ours, expected, atol=2e-5)
            assert header[4:] == [f"p_{label}" for label in corpus.labels]


def independent_temperature(logits: np.ndarray, targets: list[int]) -> float:
    """The T minimising the NLL of softmax(logits / T), by SciPy's bounded scalar minimiser over log T
    (not emovox's golden-section search), in float64 from scikit-learn's own logits."""
    from scipy.optimize import minimize_scalar
    from scipy.special import log_softmax

    y = np.asarray(targets)

    def nll(log_t: float) -> float:
        return float(-log_softmax(logits / np.exp(log_t), axis=1)[np.arange(len(y)), y].mean())

    found = minimize_scalar(nll, bounds=(np.log(0.01), np.log(100.0)), method="bounded", options={"xatol": 1e-9})
    assert found.success
    return float(np.exp(found.x))
