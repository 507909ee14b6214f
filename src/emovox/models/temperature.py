"""Temperature scaling (Guo et al., 2017): the one scalar that makes a classifier's probabilities honest.

A classifier trained to minimise cross-entropy on a few hundred clips ends up overconfident: it
reports p = 0.99+ for answers that are wrong a fifth of the time. Dividing its logits by one
scalar T, fitted by minimising the negative log-likelihood of held-out predictions, fixes that
without changing any argmax (so no accuracy figure). Fitted here; applied by
``ModelKind.forward`` through the ``temperature`` buffer saved with the weights.
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
