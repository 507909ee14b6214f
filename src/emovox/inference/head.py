"""The head in numpy: pooled states ``[N, L, W]`` -> class probabilities ``[N, C]``, in one function.

This is ``emovox.models.heads`` (standardise with the training statistics, combine the layers,
classify) followed by the recognizer's temperature and a softmax, for the layers the encoder graph
outputs (the ones the head reads; the others have no weight). It is one function on purpose: a
transform of the pooled states that depends on who speaks (per-speaker normalisation: a per-row
affine map from a speaker's statistics) belongs right before the standardisation, in one place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from emovox.errors import RecognizerError


@dataclass(frozen=True)
class Head:
    """The arrays of a classifier head, restricted to the layers the encoder graph outputs."""

    weight: np.ndarray  # [C, D]: the classifier (the MLP's output layer when ``hidden_weight`` is set)
    bias: np.ndarray  # [C]
    temperature: float
    combine: str  # "concat" ([N, L*W]) or "weighted" (softmax-weighted sum of the layers, [N, W])
    mean: np.ndarray | None = None  # [L, W] standardisation (None: the head reads raw pooled states)
    std: np.ndarray | None = None
    layer_weights: np.ndarray | None = None  # [L] learned logits of the weighted sum (softmax taken here)
    hidden_weight: np.ndarray | None = None  # [H, D]: a one-hidden-layer MLP head (GELU)
    hidden_bias: np.ndarray | None = None

    #: tensor names in ``head.safetensors``
    ARRAYS = ("weight", "bias", "mean", "std", "layer_weights", "hidden_weight", "hidden_bias")

    def arrays(self) -> dict[str, np.ndarray]:
        out = {name: getattr(self, name) for name in self.ARRAYS if getattr(self, name) is not None}
        return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}

    def settings(self) -> dict:
        return {"combine": self.combine, "temperature": self.temperature}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], settings: dict) -> Head:
        unknown = sorted(set(arrays) - set(cls.ARRAYS))
        if unknown or "weight" not in arrays or "bias" not in arrays:
            raise RecognizerError(f"the runtime's head holds {sorted(arrays)}; expected weight, bias and optional "
                                  f"{', '.join(cls.ARRAYS[2:])}: export the recognizer again")
        if settings.get("combine") not in ("concat", "weighted"):
            raise RecognizerError(
                f"the runtime's head combines layers by {settings.get('combine')!r}; expected concat or weighted"
            )
        as64 = {k: v.astype(np.float64) for k, v in arrays.items()}
        return cls(temperature=float(settings["temperature"]), combine=settings["combine"], **as64)


def probabilities(pooled: np.ndarray, head: Head) -> np.ndarray:
    """``[N, L, W]`` pooled states (the layers the encoder graph outputs, in its order) -> ``[N, C]``."""
    x = np.asarray(pooled, dtype=np.float64)
    # A per-speaker normalisation of the pooled states goes here, before the training statistics.
    if head.mean is not None:
        x = (x - head.mean) / head.std
    if head.combine == "concat":
        x = x.reshape(len(x), -1)
    elif head.layer_weights is not None:
        w = np.exp(head.layer_weights - head.layer_weights.max())
        x = np.einsum("l,nlw->nw", w / w.sum(), x)
    else:
        x = x[:, 0]
    if head.hidden_weight is not None:
        x = gelu(x @ head.hidden_weight.T + head.hidden_bias)
    logits = (x @ head.weight.T + head.bias) / head.temperature
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


_erf = np.frompyfunc(math.erf, 1, 1)


def gelu(x: np.ndarray) -> np.ndarray:
    """The exact GELU of ``torch.nn.GELU()``: ``x * Phi(x)`` (numpy has no erf; the head is small)."""
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))
