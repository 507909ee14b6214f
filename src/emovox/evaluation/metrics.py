"""The one definition of every number emovox reports.

SER papers disagree on what "WA" and "UA" mean, so results are only comparable when the
definitions are written down. All metrics derive from the confusion matrix ``C`` over the
ordered label set ``L`` (rows = truth, columns = prediction, ``n = sum(C)``):

- ``support_i = sum_j C[i, j]`` (true count), ``predicted_i = sum_j C[j, i]``.
- **WA** (weighted accuracy) ``= trace(C) / n``: plain accuracy, each *utterance* weighs the
  same. Equals ``sklearn.metrics.accuracy_score``.
- **UA** (unweighted accuracy) ``= mean_i C[i, i] / support_i`` over the classes *present in
  the truth* (``support_i > 0``): mean per-class recall, each *class* weighs the same. A class
  absent from the truth has no recall and is left out rather than counted as 0. Equals
  ``sklearn.metrics.balanced_accuracy_score``. UA selects models and stops training early.
- per-class **precision** ``= C[i, i] / predicted_i``, **recall** ``= C[i, i] / support_i``,
  **F1** ``= 2 C[i, i] / (support_i + predicted_i)``, each 0 when its denominator is 0; reported
  for every label of ``L``. Equals ``precision_recall_fscore_support(labels=L, zero_division=0)``.
- **macro-F1** ``= mean_i F1_i`` over the classes present in the truth *or* the predictions:
  exactly ``sklearn.metrics.f1_score(y_true, y_pred, average="macro")`` with its default labels.
  A class that is predicted but never true counts as F1 = 0 (it only produced errors); a class
  in neither is left out (nothing to score). This is the EmoSPeech challenge's figure of merit.
- **weighted-F1** ``= sum_i support_i F1_i / n``: per-class F1 weighted by the true count, so a
  class absent from the truth weighs nothing. Exactly ``sklearn.metrics.f1_score(y_true, y_pred,
  average="weighted")``. The MELD literature's figure of merit: on an imbalanced corpus (MELD is
  47 % neutral) it is dominated by the frequent classes, which is why UA and macro-F1 stay beside it.
- **confusion**: ``C`` as counts, and row-normalised (``C[i, :] / support_i``, a zero row for an
  absent class), as the papers' normalised confusion matrices.

Across folds (``aggregate``) each metric is reported two ways, both named in every report:

- **mean ± std** of the per-fold values. ``std`` is the *population* standard deviation
  (``numpy.std(ddof=0)``, ``STD_DDOF``): the K folds are the whole protocol, not a sample of
  folds, and it is what the usual ``cross_val_score(...).std()`` idiom prints. The papers do
  not say which they used.
- **pooled**: the metric of all folds' predictions concatenated (the sum of the fold confusion
  matrices), as the IEMOCAP ensemble paper's "confusion matrix combined from the 5 folds".

Naming trap: the RAVDESS voting paper (ssl-voting-ravdess) swaps the two names. Its section
5.4.1 says "Unweighted accuracy (UA) represents the proportion of correctly predicted
instances, calculated by dividing the total number of correct predictions by the total number
of instances", and 5.4.2 "The computation of weighted accuracy involves taking the average of
the fraction of correct predictions within each emotion category". So its "UA" is our WA and
its "WA" is our UA. emovox follows the IEMOCAP ensemble paper (slm-ensembles-iemocap): "WA is
considered as the percentage of correct predictions, while UA is defined as the average of the
recall metric for each class".
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from emovox.errors import EmovoxError

#: ``ddof`` of the across-fold standard deviation: 0 = population std (see module docstring).
STD_DDOF = 0

#: The headline metrics, in report column order.
HEADLINE = ("wa", "ua", "macro_f1", "weighted_f1")


class LabelMismatchError(EmovoxError):
    """A truth or prediction is not in the label set the metrics are computed over."""


@dataclass(frozen=True)
class ClassScores:
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class Scores:
    """The headline metrics of one evaluation, or their mean/std across folds."""

    wa: float
    ua: float
    macro_f1: float
    weighted_f1: float

    def to_dict(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in HEADLINE}


@dataclass(frozen=True)
class Metrics:
    """Every metric of one set of predictions, all derived from ``confusion`` (counts)."""

    labels: tuple[str, ...]
    n: int
    wa: float
    ua: float
    macro_f1: float
    weighted_f1: float
    per_class: dict[str, ClassScores]
    confusion: list[list[int]]

    @property
    def scores(self) -> Scores:
        return Scores(**{k: getattr(self, k) for k in HEADLINE})

    @property
    def confusion_normalized(self) -> list[list[float]]:
        """Rows divided by their true count (a zero row for a class absent from the truth)."""
        c = np.asarray(self.confusion, dtype=float)
        rows = c.sum(axis=1, keepdims=True)
        return np.divide(c, rows, out=np.zeros_like(c), where=rows > 0).tolist()

    @classmethod
    def from_confusion(cls, confusion: Any, labels: Sequence[str]) -> Metrics:
        """All metrics of one confusion matrix (the formulas live in ``headline_scores``)."""
        c = np.asarray(confusion, dtype=np.int64)
        labels = tuple(labels)
        if c.shape != (len(labels), len(labels)):
            raise ValueError(f"confusion matrix of shape {c.shape} does not match {len(labels)} labels")
        n = int(c.sum())
        if n == 0:
            raise LabelMismatchError("cannot compute metrics on zero utterances; the evaluated set is empty")
        precision, recall, f1, support = _per_class(c)
        per_class = {
            label: ClassScores(float(precision[i]), float(recall[i]), float(f1[i]), int(support[i]))
            for i, label in enumerate(labels)
        }
        headline = headline_scores(c)
        return cls(labels=labels, n=n, **{k: float(v) for k, v in headline.items()}, per_class=per_class, confusion=c.tolist())

    def to_dict(self) -> dict:
        return {
            "labels": list(self.labels),
            "n": self.n,
            "wa": self.wa,
            "ua": self.ua,
            "macro_f1": self.macro_f1,
            "weighted_f1": self.weighted_f1,
            "per_class": {k: vars(v).copy() for k, v in self.per_class.items()},
            "confusion": self.confusion,
            "confusion_normalized": self.confusion_normalized,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Metrics:
        """Rebuild from ``to_dict`` output; everything is recomputed from the stored counts."""
        return cls.from_confusion(d["confusion"], d["labels"])


@dataclass(frozen=True)
class CVResult:
    """Per-fold metrics, their mean and std, and the pooled metrics of one cross-validation.

    ``speaker_independent`` is the protocol's promise (None when unknown); reports flag
    ``False`` visibly.
    """

    labels: tuple[str, ...]
    folds: list[Metrics]
    mean: Scores
    std: Scores
    pooled: Metrics
    fold_names: list[str] = field(default_factory=list)
    protocol: str = ""
    speaker_independent: bool | None = None

    def to_dict(self) -> dict:
        return {
            "labels": list(self.labels),
            "protocol": self.protocol,
            "speaker_independent": self.speaker_independent,
            "std_ddof": STD_DDOF,
            "fold_names": list(self.fold_names),
            "folds": [m.to_dict() for m in self.folds],
            "mean": self.mean.to_dict(),
            "std": self.std.to_dict(),
            "pooled": self.pooled.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> CVResult:
        """Rebuild from ``to_dict`` output (e.g. a ``results.json``); metrics are recomputed."""
        folds = [Metrics.from_dict(f) for f in d["folds"]]
        return aggregate(
            folds,
            labels=d["labels"],
            fold_names=d.get("fold_names") or None,
            protocol=d.get("protocol", ""),
            speaker_independent=d.get("speaker_independent"),
        )


def compute_metrics(y_true: Sequence[str | int], y_pred: Sequence[str | int], labels: Sequence[str]) -> Metrics:
    """Metrics of one set of predictions over the ordered label set ``labels``.

    Items may be label names or integer class indices into ``labels`` (as a model's argmax).
    """
    labels = tuple(labels)
    if not labels or len(set(labels)) != len(labels):
        raise LabelMismatchError(f"the label set must be non-empty and without repeats, got {list(labels)}")
    if len(y_true) != len(y_pred):
        raise LabelMismatchError(f"{len(y_true)} true labels but {len(y_pred)} predictions; they must pair up")
    index = {label: i for i, label in enumerate(labels)}
    t = np.fromiter((_to_index(v, index, labels, "truth") for v in y_true), dtype=np.int64, count=len(y_true))
    p = np.fromiter((_to_index(v, index, labels, "prediction") for v in y_pred), dtype=np.int64, count=len(y_pred))
    confusion = np.zeros((len(labels), len(labels)), dtype=np.int64)
    np.add.at(confusion, (t, p), 1)
    return Metrics.from_confusion(confusion, labels)


def aggregate(
    per_fold: Sequence[Metrics],
    pooled_true: Sequence[str | int] | None = None,
    pooled_pred: Sequence[str | int] | None = None,
    labels: Sequence[str] | None = None,
    *,
    fold_names: Sequence[str] | None = None,
    protocol: str = "",
    speaker_independent: bool | None = None,
) -> CVResult:
    """Mean ± std of the per-fold metrics and the pooled metrics (see the module docstring).

    The pooled metrics are those of the summed fold confusion matrices. When ``pooled_true`` /
    ``pooled_pred`` are given they are computed from them and must agree with the folds — a
    guard against pooling predictions that are not the folds' predictions.
    """
    if not per_fold:
        raise ValueError("aggregate needs the metrics of at least one fold")
    labels = tuple(labels) if labels is not None else per_fold[0].labels
    for i, m in enumerate(per_fold):
        if m.labels != labels:
            raise LabelMismatchError(f"fold {i + 1} was scored over labels {list(m.labels)}, not {list(labels)}")
    summed = np.sum([np.asarray(m.confusion) for m in per_fold], axis=0)
    if pooled_true is not None or pooled_pred is not None:
        if pooled_true is None or pooled_pred is None:
            raise ValueError("give both pooled_true and pooled_pred, or neither")
        pooled = compute_metrics(pooled_true, pooled_pred, labels)
        if not np.array_equal(np.asarray(pooled.confusion), summed):
            raise ValueError("the pooled predictions do not match the per-fold metrics (different confusion counts)")
    else:
        pooled = Metrics.from_confusion(summed, labels)
    names = list(fold_names) if fold_names is not None else [f"fold {i}" for i in range(1, len(per_fold) + 1)]
    if len(names) != len(per_fold):
        raise ValueError(f"{len(names)} fold names for {len(per_fold)} folds")
    values = {k: np.array([getattr(m, k) for m in per_fold]) for k in HEADLINE}
    return CVResult(
        labels=labels,
        folds=list(per_fold),
        mean=Scores(**{k: float(v.mean()) for k, v in values.items()}),
        std=Scores(**{k: float(v.std(ddof=STD_DDOF)) for k, v in values.items()}),
        pooled=pooled,
        fold_names=names,
        protocol=protocol,
        speaker_independent=speaker_independent,
    )


def headline_scores(confusions: Any) -> dict[str, np.ndarray]:
    """WA, UA, macro-F1 and weighted-F1 of one confusion matrix ``[C, C]`` or a stack ``[..., C, C]``.

    The single implementation of the headline definitions (module docstring): ``Metrics`` and the
    bootstrap (thousands of resampled confusion matrices at once, ``emovox.evaluation.stats``) both call it,
    so a confidence interval is always an interval of the very number that is reported. Every
    matrix must hold at least one utterance.
    """
    c = np.asarray(confusions, dtype=np.float64)
    precision, recall, f1, support = _per_class(c)
    del precision
    n = support.sum(axis=-1)
    in_truth = support > 0
    in_either = in_truth | (c.sum(axis=-2) > 0)
    return {
        "wa": np.trace(c, axis1=-2, axis2=-1) / n,
        "ua": (recall * in_truth).sum(axis=-1) / in_truth.sum(axis=-1),
        "macro_f1": (f1 * in_either).sum(axis=-1) / in_either.sum(axis=-1),
        "weighted_f1": (f1 * support).sum(axis=-1) / n,
    }


def _per_class(c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall, F1 and support per class (last axis) of ``[..., C, C]`` confusion counts."""
    tp = np.diagonal(c, axis1=-2, axis2=-1).astype(float)
    support = c.sum(axis=-1)
    predicted = c.sum(axis=-2)
    return _safe_div(tp, predicted), _safe_div(tp, support), _safe_div(2 * tp, support + predicted), support


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, dtype=float)
    return np.divide(num, den, out=np.zeros_like(num), where=np.asarray(den) > 0)


def _to_index(value: str | int, index: dict[str, int], labels: tuple[str, ...], what: str) -> int:
    if isinstance(value, str):
        try:
            return index[value]
        except KeyError:
            raise LabelMismatchError(f"{what} {value!r} is not in the label set {list(labels)}") from None
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        if 0 <= int(value) < len(labels):
            return int(value)
        raise LabelMismatchError(f"{what} class index {value} is out of range for {len(labels)} labels {list(labels)}")
    raise LabelMismatchError(f"{what} {value!r} is neither a label name nor a class index")


def expected_calibration_error(probs: np.ndarray, targets: np.ndarray, bins: int = 15) -> float:
    """ECE with equal-width confidence bins: sum over bins of |accuracy - confidence| weighted by size."""
    probs = np.asarray(probs)
    if len(probs) == 0:
        return float("nan")
    confidence = probs.max(1)
    correct = probs.argmax(1) == np.asarray(targets)
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (confidence > lo) & (confidence <= hi)
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(ece)
