"""Metrics equal scikit-learn's on random data, including classes absent from truth or predictions."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

import emovox.evaluation.metrics
from emovox.evaluation.metrics import CVResult, LabelMismatchError, Metrics, aggregate, compute_metrics, headline_scores

LABELS = ("angry", "happy", "neutral", "sad", "fearful", "calm")


def random_case(rng: np.random.Generator) -> tuple[list[str], list[str], tuple[str, ...]]:
    """Random truth/predictions over a random label set; each side draws from a random subset,
    so classes regularly go missing from the truth, the predictions, or both."""
    labels = LABELS[: rng.integers(2, len(LABELS) + 1)]
    n = int(rng.integers(1, 40))
    true_pool = rng.choice(labels, size=rng.integers(1, len(labels) + 1), replace=False)
    pred_pool = rng.choice(labels, size=rng.integers(1, len(labels) + 1), replace=False)
    y_true = [str(x) for x in rng.choice(true_pool, size=n)]
    y_pred = [str(x) for x in rng.choice(pred_pool, size=n)]
    # make some predictions right so scores are not all near zero
    for i in range(n):
        if rng.random() < 0.4:
            y_pred[i] = y_true[i]
    return y_true, y_pred, labels


def test_metrics_equal_scikit_learn_on_random_data() -> None:
    rng = np.random.default_rng(0)
    absent_truth = absent_pred = 0
    for _ in range(200):
        y_true, y_pred, labels = random_case(rng)
        m = compute_metrics(y_true, y_pred, labels)
        absent_truth += len(set(labels) - set(y_true)) > 0
        absent_pred += len(set(labels) - set(y_pred)) > 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert m.wa == pytest.approx(accuracy_score(y_true, y_pred), abs=1e-12)
            assert m.ua == pytest.approx(balanced_accuracy_score(y_true, y_pred), abs=1e-12)
            assert m.macro_f1 == pytest.approx(f1_score(y_true, y_pred, average="macro"), abs=1e-12)
            assert m.weighted_f1 == pytest.approx(f1_score(y_true, y_pred, average="weighted"), abs=1e-12)
            p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=list(labels), zero_division=0)
            cm_norm = confusion_matrix(y_true, y_pred, labels=list(labels), normalize="true")
        assert m.n == len(y_true)
        assert m.labels == labels
        for i, label in enumerate(labels):
            c = m.per_class[label]
            assert (c.precision, c.recall, c.f1) == pytest.approx((p[i], r[i], f[i]), abs=1e-12)
            assert c.support == s[i]
        assert m.confusion == confusion_matrix(y_true, y_pred, labels=list(labels)).tolist()
        np.testing.assert_allclose(m.confusion_normalized, np.nan_to_num(cm_norm), atol=1e-12)
    # the loop really exercised the awkward cases
    assert absent_truth > 50 and absent_pred > 50


def test_definitions_on_a_hand_computed_case() -> None:
    # truth: a a b; pred: a c a.  a: TP1 FN1 FP1; b: TP0 FN1; c: FP1 (never true); d: nowhere.
    m = compute_metrics(["a", "a", "b"], ["a", "c", "a"], ["a", "b", "c", "d"])
    assert m.wa == pytest.approx(1 / 3)
    assert m.ua == pytest.approx((1 / 2 + 0) / 2)  # over classes in the truth: a, b
    assert m.macro_f1 == pytest.approx((1 / 2 + 0 + 0) / 3)  # over a, b, c (truth or prediction), not d
    assert m.weighted_f1 == pytest.approx((2 * 1 / 2 + 1 * 0) / 3)  # by true count: a twice, b once; c weighs 0
    assert m.per_class["d"].support == 0 and m.per_class["d"].f1 == 0.0
    assert m.confusion == [[1, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert m.confusion_normalized[0] == [0.5, 0.0, 0.5, 0.0]
    assert m.confusion_normalized[3] == [0.0, 0.0, 0.0, 0.0]


def test_class_indices_and_names_give_the_same_metrics() -> None:
    labels = ("x", "y", "z")
    names = compute_metrics(["x", "y", "z", "z"], ["x", "z", "z", "y"], labels)
    indices = compute_metrics(np.array([0, 1, 2, 2]), [0, 2, 2, 1], labels)
    assert names == indices


@pytest.mark.parametrize(
    "y_true, y_pred, match",
    [
        (["a", "b"], ["a", "q"], "prediction 'q' is not in the label set"),
        (["a", "b"], ["a"], "2 true labels but 1 predictions"),
        (["a"], [5], "out of range"),
        ([], [], "zero utterances"),
        (["a"], [1.5], "neither a label name nor a class index"),
    ],
)
def test_bad_inputs_are_clear_errors(y_true, y_pred, match) -> None:
    with pytest.raises(LabelMismatchError, match=match):
        compute_metrics(y_true, y_pred, ("a", "b"))


def test_aggregate_mean_std_and_pooled() -> None:
    rng = np.random.default_rng(1)
    labels = LABELS[:4]
    folds, all_true, all_pred = [], [], []
    for _ in range(5):
        y_true = [str(x) for x in rng.choice(labels, size=30)]
        y_pred = [t if rng.random() < 0.6 else str(rng.choice(labels)) for t in y_true]
        folds.append(compute_metrics(y_true, y_pred, labels))
        all_true += y_true
        all_pred += y_pred
    result = aggregate(folds, all_true, all_pred, labels, fold_names=[f"Session{k}" for k in range(1, 6)], protocol="loso")
    for key in ("wa", "ua", "macro_f1", "weighted_f1"):
        values = [getattr(m, key) for m in folds]
        assert getattr(result.mean, key) == pytest.approx(np.mean(values))
        assert getattr(result.std, key) == pytest.approx(np.std(values, ddof=0))
        assert getattr(result.std, key) != pytest.approx(np.std(values, ddof=1))
    assert result.pooled.wa == pytest.approx(accuracy_score(all_true, all_pred))
    assert result.pooled.ua == pytest.approx(balanced_accuracy_score(all_true, all_pred))
    assert result.pooled.macro_f1 == pytest.approx(f1_score(all_true, all_pred, average="macro"))
    assert result.pooled.weighted_f1 == pytest.approx(f1_score(all_true, all_pred, average="weighted"))
    # pooled UA is not the mean of fold UAs: both are reported because they differ
    assert result.pooled.ua != pytest.approx(result.mean.ua, abs=1e-9)
    # without the pooled lists, pooling sums the fold confusion matrices: same result
    assert aggregate(folds, fold_names=result.fold_names, protocol="loso") == result
    # JSON round trip
    again = CVResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again == result
    assert result.to_dict()["std_ddof"] == 0


def test_aggregate_refuses_inconsistent_inputs() -> None:
    labels = ("a", "b")
    f1 = compute_metrics(["a", "b"], ["a", "a"], labels)
    f2 = compute_metrics(["b", "b"], ["b", "a"], labels)
    with pytest.raises(ValueError, match="do not match"):
        aggregate([f1, f2], ["a", "b", "b", "b"], ["a", "a", "b", "b"], labels)
    with pytest.raises(LabelMismatchError, match="fold 2"):
        aggregate([f1, compute_metrics(["a"], ["a"], ("a", "c"))])
    with pytest.raises(ValueError, match="2 fold names for 1 folds"):
        aggregate([f1], fold_names=["x", "y"])
    single = aggregate([f1])
    assert single.std.wa == 0.0 and single.mean.wa == f1.wa and single.fold_names == ["fold 1"]


def test_headline_scores_of_a_stack_equal_each_matrix_alone() -> None:
    """The bootstrap scores thousands of confusion matrices at once; each equals scikit-learn's."""
    rng = np.random.default_rng(3)
    labels = LABELS[:4]
    cases = []
    for _ in range(20):
        y_true = [str(x) for x in rng.choice(labels[: rng.integers(1, 5)], size=25)]
        y_pred = [t if rng.random() < 0.5 else str(rng.choice(labels)) for t in y_true]
        cases.append((y_true, y_pred))
    stack = np.stack([confusion_matrix(t, p, labels=list(labels)) for t, p in cases])
    scores = headline_scores(stack)
    assert set(scores) == set(emovox.evaluation.metrics.HEADLINE)
    for i, (t, p) in enumerate(cases):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = {
                "wa": accuracy_score(t, p),
                "ua": balanced_accuracy_score(t, p),
                "macro_f1": f1_score(t, p, average="macro"),
                "weighted_f1": f1_score(t, p, average="weighted"),
            }
        for key, value in expected.items():
            assert scores[key][i] == pytest.approx(value, abs=1e-12), key


def test_metrics_from_dict_recomputes_from_counts() -> None:
    m = compute_metrics(["a", "b", "b"], ["a", "b", "a"], ("a", "b"))
    assert Metrics.from_dict(json.loads(json.dumps(m.to_dict()))) == m


def test_docstring_quotes_the_ravdess_paper_verbatim() -> None:
    paper = Path(__file__).resolve().parents[2] / "shared" / "papers" / "ssl-voting-ravdess.txt"
    if not paper.is_file():
        pytest.skip("papers not found beside the repository")
    text = " ".join(paper.read_text(encoding="utf-8").split())
    doc = " ".join(emovox.evaluation.metrics.__doc__.split())
    quotes = [
        "Unweighted accuracy (UA) represents the proportion of correctly predicted instances, calculated by "
        "dividing the total number of correct predictions by the total number of instances",
        "The computation of weighted accuracy involves taking the average of the fraction of correct "
        "predictions within each emotion category",
    ]
    for q in quotes:
        assert f'"{q}' in doc
        assert q in text


def test_expected_calibration_error_equals_a_direct_computation() -> None:
    """ECE (15 equal-width confidence bins by default, right-closed) against numpy written out here."""
    import inspect

    from emovox.evaluation.metrics import expected_calibration_error

    assert inspect.signature(expected_calibration_error).parameters["bins"].default == 15
    rng = np.random.default_rng(7)
    for n, classes, bins in ((200, 5, 15), (37, 2, 15), (500, 8, 10)):
        probs = rng.dirichlet(np.full(classes, 0.5), size=n)
        y = np.where(rng.random(n) < 0.6, probs.argmax(1), rng.integers(0, classes, n))
        conf, right = probs.max(1), probs.argmax(1) == y
        edges = np.linspace(0, 1, bins + 1)
        which = np.digitize(conf, edges[1:-1], right=True)  # bin b holds (edges[b], edges[b + 1]]
        direct = sum((which == b).sum() / n * abs(right[which == b].mean() - conf[which == b].mean())
                     for b in range(bins) if (which == b).any())  # fmt: skip
        assert expected_calibration_error(probs, y, bins) == pytest.approx(direct, abs=1e-12)
    sure = np.eye(3)[[0, 1, 2, 0]]  # confident and right: perfectly calibrated
    assert expected_calibration_error(sure, np.array([0, 1, 2, 0])) == 0.0
    assert expected_calibration_error(sure, np.array([1, 2, 0, 1])) == 1.0  # confident and always wrong
