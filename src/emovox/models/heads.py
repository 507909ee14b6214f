"""From per-layer pooled states to class logits: standardise, combine layers, classify. Written once.

Every kind that ends in a classifier (probe, fine-tuned classifier, top-layer fine-tuning, each
branch of a fusion model) reads ``[B, L, W]``: L hidden states of a backbone (embeddings first),
each pooled over time to width W. Two steps make that one vector, then a classifier reads it:

- ``LayerReducer``: z-score every (layer, dimension) with statistics of the training part, then
  either a learned softmax-weighted sum of the layers (s3prl's Featurizer) or their
  concatenation (what a linear probe over all layers does; issue 11's standard baseline).
- ``ClassifierHead``: dropout and one linear layer (the papers' head), or a small MLP.

Why the standardisation has a floor: speech encoders have dimensions that barely vary across a
training set (a corpus cut to one clip length makes some of Whisper's layer-0 dimensions nearly
constant, std < 1e-3). Dividing by such a std turns any input that differs slightly (another
length, another microphone) into a 1000-sigma feature that decides the prediction alone: a
recognizer that answers one class at p = 1.000 for every clip. The std of each dimension is
therefore floored at a fraction (``std_floor``) of the median std of its layer, so no dimension
can be amplified much more than a typical one.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from emovox.models.pooling import WeightedLayerSum

Combine = Literal["weighted", "concat"]

#: Default relative floor: a dimension's std counts as at least this fraction of its layer's median std.
STD_FLOOR = 0.1


class Standardize(nn.Module):
    """Per-(layer, dimension) z-scores with training-part statistics, kept as buffers in the weights."""

    def __init__(self, num_layers: int, width: int, *, enabled: bool = True, std_floor: float = STD_FLOOR):
        super().__init__()
        self.enabled = enabled
        self.std_floor = float(std_floor)
        self.register_buffer("mean", torch.zeros(num_layers, width))
        self.register_buffer("std", torch.ones(num_layers, width))

    @torch.no_grad()
    def fit(self, features: torch.Tensor) -> None:
        """``features``: ``[N, L, W]`` of the training part only (never validation or test)."""
        if not self.enabled or not len(features):  # no example has this input (e.g. no context anywhere): identity
            return
        features = features.float()
        std = features.std(dim=0, unbiased=False)
        floor = (self.std_floor * std.median(dim=-1, keepdim=True).values).clamp_min(1e-5)
        self.mean.copy_(features.mean(dim=0))
        self.std.copy_(torch.maximum(std, floor))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std if self.enabled else x


class LayerReducer(nn.Module):
    """``[B, L, W]`` -> ``[B, W]`` (weighted sum of standardised layers) or ``[B, L*W]`` (concatenation)."""

    def __init__(
        self,
        num_layers: int,
        width: int,
        *,
        combine: Combine = "weighted",
        standardize: bool = True,
        std_floor: float = STD_FLOOR,
    ):
        super().__init__()
        if combine not in ("weighted", "concat"):
            raise ValueError(f"combine must be 'weighted' or 'concat', not {combine!r}")
        self.num_layers = num_layers
        self.combine = combine
        self.standardize = Standardize(num_layers, width, enabled=standardize, std_floor=std_floor)
        self.weights = WeightedLayerSum(num_layers) if combine == "weighted" and num_layers > 1 else None
        self.out_width = width * num_layers if combine == "concat" else width

    def fit_statistics(self, features: torch.Tensor) -> None:
        self.standardize.fit(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.standardize(x)
        if self.combine == "concat":
            return x.flatten(1)
        if self.weights is not None:
            return self.weights(x.transpose(0, 1))  # WeightedLayerSum takes [L, B, W]
        return x[:, 0]


class ClassifierHead(nn.Module):
    """Dropout and one linear layer (the papers' head), or with ``hidden`` a one-hidden-layer MLP."""

    def __init__(self, width: int, num_classes: int, *, dropout: float = 0.1, hidden: int | None = None):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        if hidden:
            self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout))
            self.linear = nn.Linear(hidden, num_classes)
        else:
            self.mlp = None
            self.linear = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(x)
        if self.mlp is not None:
            x = self.mlp(x)
        return self.linear(x)
