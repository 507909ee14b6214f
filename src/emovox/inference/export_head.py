"""A torch recognizer's head as the runtime's numpy ``Head``: which pooled states it reads (``read_positions``: a
concatenating head whose columns of a layer are all zero does not read that layer, so the exported graph can stop
below it) and its arrays at those states (``head_of``: standardisation, layer weights, the linear layers, the
temperature, and the per-speaker normalisation and fallback head when it has them), in float64 for numpy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from emovox.inference.head import Head


def read_positions(model) -> list[int]:
    """Positions in ``branch.layer_index`` the head reads: all of them for a weighted layer sum; for a
    concatenation, those whose columns of the head's first layer are not all zero (of its fallback
    head's too, for a recognizer that normalises per speaker)."""
    reducer = model.reducer
    if reducer.combine != "concat":
        return list(range(reducer.num_layers))
    firsts = [model.head.mlp[0] if model.head.mlp is not None else model.head.linear]
    if _normalizing(model) and model.fallback is not None:
        firsts.append(model.fallback.linear)
    used = set()
    for first in firsts:
        w = first.weight.detach().reshape(first.weight.shape[0], reducer.num_layers, -1)
        used |= {j for j in range(reducer.num_layers) if bool(w[:, j].abs().amax() > 0)}
    return sorted(used) or [0]  # a head that reads nothing (all-zero weights) still needs an input


def _normalizing(model) -> bool:
    norm = getattr(model, "normalizer", None)
    return norm is not None and norm.mode != "none"


def head_of(model, positions: Sequence[int]) -> Head:
    """The head's arrays restricted to ``positions`` (float64 for numpy), with its per-speaker
    normalisation and fallback head when it has them."""
    reducer, head = model.reducer, model.head
    pos = list(positions)
    first = head.mlp[0] if head.mlp is not None else head.linear
    arrays = _linear_arrays(reducer, first, pos)
    if head.mlp is not None:
        arrays["hidden_weight"], arrays["hidden_bias"] = arrays.pop("weight"), arrays.pop("bias")
        arrays.update(weight=_arr(head.linear.weight), bias=_arr(head.linear.bias))
    extra = {}
    if _normalizing(model):
        norm = model.normalizer
        extra = {"normalize": norm.mode, "norm_mean": _arr(norm.mean[pos]), "norm_var": _arr(norm.var[pos]),
                 "norm_shrink": _arr(norm.shrink[pos]), "std_floor": norm.std_floor}
        if model.fallback is not None:
            spare = model.fallback
            extra["fallback"] = Head(temperature=float(spare.temperature), combine=spare.reducer.combine,
                                     **_linear_arrays(spare.reducer, spare.linear, pos))
    return Head(temperature=float(model.temperature), combine=reducer.combine, **arrays, **extra)


def _arr(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().cpu().numpy()


def _linear_arrays(reducer, first: nn.Linear, pos: list[int]) -> dict:
    """Standardisation, layer weights and the first linear layer of ``reducer`` + ``first``, at ``pos``."""
    w = first.weight
    if reducer.combine == "concat":
        w = w.reshape(w.shape[0], reducer.num_layers, -1)[:, pos].reshape(w.shape[0], -1)
    std = reducer.standardize
    return {
        "mean": _arr(std.mean[pos]) if std.enabled else None,
        "std": _arr(std.std[pos]) if std.enabled else None,
        "layer_weights": _arr(reducer.weights.weights[pos]) if reducer.weights is not None else None,
        "weight": _arr(w),
        "bias": _arr(first.bias),
    }
