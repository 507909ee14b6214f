"""Temperature scaling (Guo et al., 2017): probabilities that mean what they say.

A classifier trained to minimise cross-entropy on a few hundred clips ends up overconfident: it
reports p = 0.99+ for answers that are wrong a fifth of the time, and p = 1.000 for inputs unlike
anything it was trained on. One scalar T, fitted after training by minimising the negative
log-likelihood of the validation part (a held-out speaker group, never the test part), divides
the logits; the argmax, so every accuracy figure, is unchanged. T lives in the model's weights
(``ModelKind.temperature``) and travels with the recognizer into predict, serve and ONNX.
"""

from __future__ import annotations

import math

import numpy as np
import torch

#: T is searched in [1/T_RANGE, T_RANGE]: wide enough for any real model, bounded for degenerate ones.
T_RANGE = 100.0


def fit_temperature(logits: np.ndarray, targets: np.ndarray) -> float:
    """The T minimising the NLL of ``softmax(logits / T)`` on ``targets`` (1.0 without data)."""
    if len(targets) == 0:
        return 1.0
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(targets), dtype=torch.long)

    def nll(log_t: float) -> float:
        return float(torch.nn.functional.cross_entropy(z / math.exp(log_t), y))

    # the NLL is unimodal in log T: golden-section search, no gradients or learning rates to tune
    lo, hi = -math.log(T_RANGE), math.log(T_RANGE)
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = nll(a), nll(b)
    for _ in range(80):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = nll(b)
    return float(math.exp((lo + hi) / 2))


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


def calibrate(model, trainer, valid) -> dict:
    """Fit the model's temperature on ``valid`` (its logits at T = 1); returns what was fitted."""
    with torch.no_grad():
        model.temperature.fill_(1.0)
    if not valid:
        return {"temperature": 1.0, "fitted_on": 0}
    logits = trainer.predict_logits(valid)
    targets = np.array([e.target for e in valid])
    t = fit_temperature(logits, targets)
    with torch.no_grad():
        model.temperature.fill_(t)
    before = torch.softmax(torch.from_numpy(logits), -1).numpy()
    after = torch.softmax(torch.from_numpy(logits) / t, -1).numpy()
    return {
        "temperature": round(t, 6),
        "fitted_on": len(valid),
        "valid_ece_before": round(expected_calibration_error(before, targets), 6),
        "valid_ece_after": round(expected_calibration_error(after, targets), 6),
    }
