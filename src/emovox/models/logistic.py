"""Multinomial logistic regression in closed form (scikit-learn), for the ``logistic`` head and the baseline.

A linear probe trained with Adam, dropout and early stopping is a noisy way to fit a convex
model; scikit-learn's L-BFGS fits it exactly. The regularisation strength ``C`` is the one choice
it needs, and it is made on the validation part of the fold (a held-out speaker group under the
strict protocol), never on the test part. The fit runs to convergence (``tol`` 1e-8): scikit-learn's
default tolerance stops early enough to cost a few tenths of a point of UA on EmoDB. The fitted
coefficients become an ordinary linear layer, so a ``logistic`` recognizer is saved as safetensors
and runs in predict/serve/ONNX unchanged.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

#: The standard baseline's regularisation (issue 11: concatenated per-layer means of a frozen
#: encoder, standardised, multinomial logistic regression with C = 0.02) and the grid searched around it.
DEFAULT_C = 0.02
C_GRID = (0.005, 0.01, 0.02, 0.05, 0.1)


@dataclass
class LogisticFit:
    coef: np.ndarray  # [C, D]
    intercept: np.ndarray  # [C]
    C: float
    valid_ua: dict[float, float] = field(default_factory=dict)  # C -> validation UA (empty without validation)


def _ua(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    from sklearn.metrics import balanced_accuracy_score

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a class absent from a small validation part
        return float(balanced_accuracy_score(y_true, y_pred))


def fit_logistic(
    x: np.ndarray,
    y: Sequence[int],
    num_classes: int,
    *,
    Cs: Sequence[float] = (DEFAULT_C,),
    x_valid: np.ndarray | None = None,
    y_valid: Sequence[int] | None = None,
    class_weight: str | None = None,
    max_iter: int = 10000,
    tol: float = 1e-8,
) -> LogisticFit:
    """Fit one model per ``C`` on ``x``; keep the one with the best validation UA (ties: the smaller C,
    i.e. the stronger regularisation). Without validation data only a single ``C`` is allowed."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    Cs = sorted(float(c) for c in Cs)
    if not Cs:
        raise ValueError("fit_logistic needs at least one C")
    y = np.asarray(y)
    has_valid = x_valid is not None and y_valid is not None and len(y_valid) > 0
    if len(Cs) > 1 and not has_valid:
        raise ValueError("choosing C needs validation data; give one C or validation examples")
    best: tuple[float, float, object] | None = None
    scores: dict[float, float] = {}
    for c in Cs:
        model = LogisticRegression(C=c, max_iter=max_iter, tol=tol, class_weight=class_weight)
        # one BLAS thread: a fit this small spends more time waking a second thread than using it, and on a
        # busy machine spin-waits for a descheduled one (measured 20x slower with two threads under load)
        with warnings.catch_warnings(), threadpool_limits(1):
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(x, y)
        score = _ua(np.asarray(y_valid), model.predict(x_valid)) if has_valid else 0.0
        if has_valid:
            scores[c] = score
        if best is None or score > best[0]:
            best = (score, c, model)
    _, c, model = best
    coef = np.zeros((num_classes, x.shape[1]), dtype=np.float32)
    intercept = np.full(num_classes, -1e4, dtype=np.float32)  # a class never seen in training is never predicted
    classes = [int(k) for k in model.classes_]
    if len(classes) == 2:  # scikit-learn keeps one row for two classes: logit(second) - logit(first)
        coef[classes[1]], intercept[classes[1]] = model.coef_[0] / 2, model.intercept_[0] / 2
        coef[classes[0]], intercept[classes[0]] = -model.coef_[0] / 2, -model.intercept_[0] / 2
    else:
        for row, k in enumerate(classes):
            coef[k], intercept[k] = model.coef_[row], model.intercept_[row]
    return LogisticFit(coef, intercept, float(c), scores)
