"""Bootstrap intervals equal a direct resampling with scikit-learn; ``compare`` tells noise from a real gain."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from run_fixtures import make_run, onehot
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score
from typer.testing import CliRunner

from emovox.cli import app
from emovox.errors import EmovoxError
from emovox.evaluation.metrics import HEADLINE
from emovox.evaluation.reporting import ci_markdown
from emovox.evaluation.stats import StatsError, add_confidence_intervals, compare_runs, confidence_intervals, paired_bootstrap
from emovox.splits.fold import natural_sorted

LABELS = ("angry", "happy", "neutral", "sad")
runner = CliRunner()


SKLEARN = {
    "wa": accuracy_score,
    "ua": balanced_accuracy_score,
    "macro_f1": lambda t, p: f1_score(t, p, average="macro"),
    "weighted_f1": lambda t, p: f1_score(t, p, average="weighted"),
}


def sklearn_scores(t: np.ndarray, p: np.ndarray, metrics=HEADLINE) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {k: SKLEARN[k](t, p) for k in metrics}


def random_predictions(seed: int, n: int = 150, accuracy: float = 0.6) -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    true = rng.integers(0, len(LABELS), size=n)
    pred = np.where(rng.random(n) < accuracy, true, rng.integers(0, len(LABELS), size=n))
    speakers = [f"spk{x}" for x in rng.integers(1, 12, size=n)]
    return true, pred, speakers


def direct_utterance_bootstrap(t, p, n_boot, seed, level=0.95):
    """The textbook procedure, one resample at a time, scored by scikit-learn."""
    rng = np.random.default_rng(seed)
    scores = {k: [] for k in HEADLINE}
    for _ in range(n_boot):
        idx = rng.integers(0, len(t), size=len(t))
        for k, v in sklearn_scores(t[idx], p[idx]).items():
            scores[k].append(v)
    q = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    return {k: np.percentile(v, q) for k, v in scores.items()}


def direct_speaker_bootstrap(t, p, speakers, n_boot, seed, level=0.95):
    rng = np.random.default_rng(seed)
    names = natural_sorted(set(speakers))
    members = {s: np.flatnonzero(np.asarray(speakers) == s) for s in names}
    scores = {k: [] for k in HEADLINE}
    for _ in range(n_boot):
        drawn = rng.integers(0, len(names), size=len(names))
        idx = np.concatenate([members[names[d]] for d in drawn])
        for k, v in sklearn_scores(t[idx], p[idx]).items():
            scores[k].append(v)
    q = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    return {k: np.percentile(v, q) for k, v in scores.items()}


def test_utterance_intervals_equal_a_direct_resampling() -> None:
    t, p, _ = random_predictions(0)
    ours = confidence_intervals(t, p, LABELS, n_boot=150, seed=7)
    direct = direct_utterance_bootstrap(t, p, 150, 7)
    full = sklearn_scores(t, p)
    for k in HEADLINE:
        assert ours[k].value == pytest.approx(full[k], abs=1e-12)
        assert (ours[k].low, ours[k].high) == pytest.approx(tuple(direct[k]), abs=1e-12)
        assert ours[k].low < ours[k].value < ours[k].high
    # the seed is the whole story: same seed same interval, another seed another one
    assert confidence_intervals(t, p, LABELS, n_boot=150, seed=7) == ours
    assert confidence_intervals(t, p, LABELS, n_boot=150, seed=8)["ua"] != ours["ua"]


def test_speaker_intervals_equal_a_direct_cluster_resampling_and_are_wider() -> None:
    t, p, speakers = random_predictions(1, n=200)
    # make speakers matter: two speakers are always wrong
    bad = np.isin(speakers, ["spk1", "spk2"])
    p = np.where(bad, (t + 1) % len(LABELS), p)
    ours = confidence_intervals(t, p, LABELS, groups=speakers, n_boot=150, level=0.9, seed=3)
    direct = direct_speaker_bootstrap(t, p, speakers, 150, 3, level=0.9)
    for k in HEADLINE:
        assert (ours[k].low, ours[k].high) == pytest.approx(tuple(direct[k]), abs=1e-12)
    flat = confidence_intervals(t, p, LABELS, n_boot=150, level=0.9, seed=3)
    assert ours["wa"].high - ours["wa"].low > flat["wa"].high - flat["wa"].low


def test_add_confidence_intervals_to_a_results_dict() -> None:
    t, p, speakers = random_predictions(2)
    results = {"label_set": list(LABELS), "pooled": {"ua": 0.5}}
    out = add_confidence_intervals(results, t, p, speakers=speakers, n_boot=50, seed=1)
    assert out is results
    block = results["confidence_intervals"]
    assert (block["level"], block["n_boot"], block["seed"]) == (0.95, 50, 1)
    assert block["utterance"]["n_units"] == 150 and block["speaker"]["n_units"] == len(set(speakers))
    for unit in ("utterance", "speaker"):
        for k in HEADLINE:
            iv = block[unit][k]
            assert iv["low"] <= iv["value"] <= iv["high"]
    assert block["utterance"]["ua"] == confidence_intervals(t, p, LABELS, n_boot=50, seed=1)["ua"].to_dict()
    json.dumps(results)  # plain JSON
    text = ci_markdown(block)
    assert "## Confidence intervals" in text and "95 % CI, speakers (n=11)" in text and "Weighted-F1" in text
    assert "speaker" not in add_confidence_intervals({"label_set": list(LABELS)}, t, p, n_boot=10)["confidence_intervals"]


def test_paired_bootstrap_identical_better_and_worse() -> None:
    t, p, _ = random_predictions(3, n=300, accuracy=0.55)
    same = paired_bootstrap(t, p, p.copy(), LABELS, n_boot=200)
    assert same.verdict == "no difference beyond noise"
    assert (same.difference.value, same.difference.low, same.difference.high) == (0.0, 0.0, 0.0)
    assert same.p_value == 1.0
    better = np.where(np.random.default_rng(4).random(300) < 0.9, t, p)  # 90 % right
    c = paired_bootstrap(t, better, p, LABELS, metric="weighted_f1", n_boot=200)
    assert c.verdict == "A better" and c.difference.low > 0 and c.p_value < 0.01
    assert c.a.value == pytest.approx(sklearn_scores(t, better)["weighted_f1"])
    assert paired_bootstrap(t, p, better, LABELS, n_boot=200).verdict == "B better"
    # a tiny difference (one utterance fixed) is noise
    nudged = p.copy()
    wrong = int(np.flatnonzero(p != t)[0])
    nudged[wrong] = t[wrong]
    assert paired_bootstrap(t, nudged, p, LABELS, n_boot=200).verdict == "no difference beyond noise"


def test_paired_difference_interval_equals_a_direct_paired_resampling() -> None:
    t, pa, _ = random_predictions(5)
    _, pb, _ = random_predictions(6)
    c = paired_bootstrap(t, pa, pb, LABELS, metric="macro_f1", n_boot=150, seed=11)
    rng = np.random.default_rng(11)
    diffs = []
    for _ in range(150):
        idx = rng.integers(0, len(t), size=len(t))
        diffs.append(
            sklearn_scores(t[idx], pa[idx], ["macro_f1"])["macro_f1"] - sklearn_scores(t[idx], pb[idx], ["macro_f1"])["macro_f1"]
        )
    assert (c.difference.low, c.difference.high) == pytest.approx(tuple(np.percentile(diffs, [2.5, 97.5])), abs=1e-12)
    d = np.asarray(diffs)
    assert c.p_value == pytest.approx(min(1.0, 2 * min(np.mean(d <= 0), np.mean(d >= 0))))


@pytest.mark.parametrize(
    "kwargs, match",
    [({"n_boot": 0}, "at least 1"), ({"level": 1.5}, "between 0 and 1"), ({"metric": "f1"}, "unknown metric")],
)
def test_bad_requests_are_clear_errors(kwargs, match) -> None:
    t, p, _ = random_predictions(7, n=20)
    with pytest.raises(StatsError, match=match):
        paired_bootstrap(t, p, p, LABELS, **kwargs)


# --- runs and the command line ----------------------------------------------------------------


def two_runs(tmp_path: Path, *, n: int = 120, gap: float = 0.35) -> tuple[Path, Path]:
    """Run A is right on ~85 % of the utterances, run B on ~85 % - gap; two folds of 3 speakers each."""
    rng = np.random.default_rng(0)
    folds: dict[str, dict] = {"a": {}, "b": {}}
    for k in (1, 2):
        for side, acc in (("a", 0.85), ("b", 0.85 - gap)):
            rows = []
            for i in range(n // 2):
                spk = f"s{(k - 1) * 3 + i % 3}"
                t = LABELS[(i * 7 + k) % 4]
                r = np.random.default_rng(1000 * k + i).random()  # the same draw for both runs: paired
                guess = t if r < acc else LABELS[(LABELS.index(t) + 1) % 4]
                rows.append((f"u{k}_{i}", spk, t, onehot(LABELS, guess)))
            folds[side][k] = {"test": rows}
    del rng
    return make_run(tmp_path / "A", LABELS, folds["a"]), make_run(tmp_path / "B", LABELS, folds["b"])


def test_compare_command(tmp_path: Path) -> None:
    a, b = two_runs(tmp_path)
    result = runner.invoke(app, ["compare", str(a), str(b), "--n-boot", "300"])
    assert result.exit_code == 0, result.output
    assert "verdict: A better" in result.output and "A - B: +" in result.output
    same = runner.invoke(app, ["compare", str(a), str(a), "--n-boot", "300", "--metric", "weighted_f1"])
    assert "verdict: no difference beyond noise" in same.output and "A - B: +0.00 points" in same.output
    data = json.loads(runner.invoke(app, ["compare", str(b), str(a), "--json", "--by", "speaker", "--n-boot", "200"]).output)
    assert data["verdict"] == "B better" and data["unit"] == "speaker" and data["n_units"] == 6 and data["n_utterances"] == 120
    assert data["run_a"] == str(b) and data["difference"]["high"] < 0
    ci = runner.invoke(app, ["ci", str(a), "--by", "speaker", "--n-boot", "100"])
    assert ci.exit_code == 0 and "95 % CI, utterances (n=120)" in ci.output and "95 % CI, speakers (n=6)" in ci.output


def test_compare_refuses_runs_over_different_utterances(tmp_path: Path) -> None:
    a, _ = two_runs(tmp_path)
    rows = [("u1_0", "s0", "angry", onehot(LABELS, "angry")), ("x9", "s0", "sad", onehot(LABELS, "sad"))]
    other = make_run(tmp_path / "C", LABELS, {1: {"test": rows}})
    with pytest.raises(StatsError, match=r"different utterances: 119 only in .*A \(e.g. .*\), 1 only in .*C \(e.g. \['x9'\]\)"):
        compare_runs(a, other)
    relabelled = make_run(tmp_path / "D", ("angry", "happy", "neutral", "calm"), {1: {"test": rows[:1]}})
    with pytest.raises(StatsError, match="different label sets"):
        compare_runs(a, relabelled)
    truth = make_run(tmp_path / "E", LABELS, {1: {"test": [("u1_0", "s0", "sad", onehot(LABELS, "sad"))]}})
    a_small = make_run(tmp_path / "F", LABELS, {1: {"test": [("u1_0", "s0", "happy", onehot(LABELS, "sad"))]}})
    with pytest.raises(StatsError, match="'u1_0' is 'sad' in .*E but 'happy' in .*F"):
        compare_runs(truth, a_small)
    result = runner.invoke(app, ["compare", str(a), str(tmp_path / "nowhere")])
    assert result.exit_code != 0 and isinstance(result.exception, EmovoxError) and "not a directory" in str(result.exception)
