"""Temperature scaling (Guo et al., 2017): probabilities that mean what they say.

A classifier trained to minimise cross-entropy on a few hundred clips ends up overconfident: it
reports p = 0.99+ for answers that are wrong a fifth of the time, and p = 1.000 for inputs unlike
anything it was trained on. One scalar T, fitted after training by minimising the negative
log-likelihood of the validation part (a held-out speaker group, never the test part), divides
the logits; the argmax, so every accuracy figure, is unchanged. T lives in the model's weights
(``ModelKind.temperature``) and travels with the recognizer into predict, serve and ONNX.
"""

from __future__ import annotations

import numpy as np
import torch

from emovox.evaluation.metrics import expected_calibration_error
from emovox.models.temperature import fit_temperature


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
