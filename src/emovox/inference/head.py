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
    #: per-speaker (per-corpus) normalisation (``emovox.models.heads.GroupNormalizer``): "none", "speaker" or "corpus",
    #: the global statistics it shrinks towards, the shrinkage per dimension and the relative std floor
    normalize: str = "none"
    norm_mean: np.ndarray | None = None  # [L, W]
    norm_var: np.ndarray | None = None
    norm_shrink: np.ndarray | None = None
    std_floor: float = 0.1
    #: what clips without statistics of their group get (``emovox.models.heads.FallbackHead``): a head of its own
    fallback: Head | None = None

    #: tensor names in ``head.safetensors`` (a fallback's carry the prefix ``fallback.``)
    ARRAYS = ("weight", "bias", "mean", "std", "layer_weights", "hidden_weight", "hidden_bias", "norm_mean", "norm_var",
              "norm_shrink")

    def arrays(self) -> dict[str, np.ndarray]:
        out = {name: getattr(self, name) for name in self.ARRAYS if getattr(self, name) is not None}
        if self.fallback is not None:
            out.update({f"fallback.{k}": v for k, v in self.fallback.arrays().items()})
        return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}

    def settings(self) -> dict:
        out = {"combine": self.combine, "temperature": self.temperature}
        if self.normalize != "none":
            out.update(normalize=self.normalize, std_floor=self.std_floor)
        if self.fallback is not None:
            out["fallback"] = self.fallback.settings()
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], settings: dict) -> Head:
        own = {k: v for k, v in arrays.items() if not k.startswith("fallback.")}
        spare = {k.removeprefix("fallback."): v for k, v in arrays.items() if k.startswith("fallback.")}
        unknown = sorted(set(own) - set(cls.ARRAYS))
        if unknown or "weight" not in own or "bias" not in own:
            raise RecognizerError(f"the runtime's head holds {sorted(arrays)}; expected weight, bias and optional "
                                  f"{', '.join(cls.ARRAYS[2:])}: export the recognizer again")
        if settings.get("combine") not in ("concat", "weighted"):
            raise RecognizerError(
                f"the runtime's head combines layers by {settings.get('combine')!r}; expected concat or weighted"
            )
        normalize = settings.get("normalize", "none")
        if normalize not in ("none", "speaker", "corpus") or (
            normalize != "none" and not {"norm_mean", "norm_var", "norm_shrink"} <= set(own)
        ):
            raise RecognizerError(f"the runtime's head normalises by {normalize!r} without its statistics: export the "
                                  "recognizer again")
        if bool(spare) != ("fallback" in settings):
            raise RecognizerError("the runtime's fallback head is incomplete: export the recognizer again")
        fallback = cls.from_arrays(spare, settings["fallback"]) if spare else None
        as64 = {k: v.astype(np.float64) for k, v in own.items()}
        return cls(temperature=float(settings["temperature"]), combine=settings["combine"], normalize=normalize,
                   std_floor=float(settings.get("std_floor", 0.1)), fallback=fallback, **as64)


def probabilities(pooled: np.ndarray, head: Head, groups: list[str | None] | None = None) -> np.ndarray:
    """``[N, L, W]`` pooled states (the layers the encoder graph outputs, in its order) -> ``[N, C]``.

    ``groups``: each clip's speaker (corpus) for a head that normalises per speaker (corpus): the
    clips of a group of two or more are standardised with its statistics, the others go to the
    fallback head (or, without one, are standardised with the global statistics)."""
    x = np.asarray(pooled, dtype=np.float64)
    if head.normalize == "none":
        return _classify(x, head)
    keys = list(groups) if groups is not None else [None] * len(x)
    stats = group_statistics(x, keys, head)
    known = np.array([k is not None and k in stats for k in keys], dtype=bool)
    out = np.zeros((len(x), len(head.bias)), dtype=np.float32)
    if known.any():
        mean = np.stack([stats[k][0] for k, ok in zip(keys, known, strict=True) if ok])
        std = np.stack([stats[k][1] for k, ok in zip(keys, known, strict=True) if ok])
        out[known] = _classify((x[known] - mean) / std, head)
    if (~known).any():
        if head.fallback is not None:
            out[~known] = _classify(x[~known], head.fallback)
        else:
            out[~known] = _classify((x[~known] - head.norm_mean) / _floored(head.norm_var, head), head)
    return out


def _floored(var: np.ndarray, head: Head) -> np.ndarray:
    """A group's std floored like ``GroupNormalizer``: a fraction of the global std's median per layer."""
    floor = np.maximum(head.std_floor * np.median(np.sqrt(np.maximum(head.norm_var, 0)), axis=-1, keepdims=True), 1e-5)
    return np.maximum(np.sqrt(np.maximum(var, 0)), floor)


def group_statistics(x: np.ndarray, keys: list[str | None], head: Head) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Mean and floored std of every group of two or more clips, shrunk towards the global statistics
    (``emovox.models.heads.group_moments``)."""
    rows: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        if k is not None:
            rows.setdefault(k, []).append(i)
    out = {}
    for k, idx in rows.items():
        if len(idx) < 2:
            continue
        n = float(len(idx))
        w = n / (n + head.norm_shrink)
        mean = w * x[idx].mean(0) + (1 - w) * head.norm_mean
        var = w * x[idx].var(0) + (1 - w) * head.norm_var
        out[k] = (mean, _floored(var, head))
    return out


def _classify(x: np.ndarray, head: Head) -> np.ndarray:
    """Standardise, combine the layers, classify, calibrate, softmax."""
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
