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

from emovox.corpora.spec import known_speaker
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


Normalize = Literal["none", "corpus", "speaker"]

#: Bounds of the estimated shrinkage (clips of weight of the global statistics, per dimension).
SHRINK_RANGE = (0.5, 1000.0)


def group_moments(states: torch.Tensor, mean0: torch.Tensor, var0: torch.Tensor, shrink: torch.Tensor | float
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of one group's ``[n, L, W]`` states, each shrunk towards the global
    ``mean0``/``var0`` as if ``shrink`` clips of the global population were added to the group's
    ``n``: ``(n m + k m0) / (n + k)``, ``(n v + k v0) / (n + k)``. A speaker with three clips is
    mostly described by everyone; one with sixty by itself."""
    states = states.double()
    n = float(len(states))
    if n == 0:
        return mean0.double().clone(), var0.double().clone()
    w = n / (n + torch.as_tensor(shrink, dtype=torch.float64))
    mean = states.mean(0)
    var = states.var(0, unbiased=False)
    return w * mean + (1 - w) * mean0.double(), w * var + (1 - w) * var0.double()


def estimate_shrink(states: torch.Tensor, keys: list[str | None]) -> torch.Tensor:
    """Per dimension, how many clips of everyone a group's own clips are worth (empirical Bayes):
    ``k = within-group variance / between-group variance of the true group means``, the latter
    estimated by moments from the spread of the groups' means. Where speakers differ little
    against the spread of their own clips (EmoDB's actors: k ~ 20), a speaker needs many clips
    before its own average is trusted; where they differ a lot (RAVDESS, ASED: k ~ 3-5), a few do.
    Chosen from the training groups alone, so no choice of it ever looks at a test clip."""
    groups: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        if k is not None:
            groups.setdefault(k, []).append(i)
    groups = {k: rows for k, rows in groups.items() if len(rows) >= 2}
    shape = states.shape[1:]
    if len(groups) < 2:
        return torch.full(shape, SHRINK_RANGE[1])  # one group: nothing tells a group from everyone
    x = states.double()
    means = torch.stack([x[rows].mean(0) for rows in groups.values()])
    within = torch.stack([x[rows].var(0, unbiased=True) for rows in groups.values()]).mean(0)
    sizes = torch.tensor([len(rows) for rows in groups.values()], dtype=torch.float64)
    between = means.var(0, unbiased=True) - within * (1.0 / sizes).mean()
    k = within / between.clamp_min(1e-12)
    return k.clamp(*SHRINK_RANGE).float()


class GroupNormalizer(nn.Module):
    """Standardise each clip's pooled states ``[L, W]`` with statistics of its own group: its speaker
    (``speaker``), its corpus (``corpus``), or nobody (``none``: the identity, today's recognizer).

    Why: what a frozen encoder hears of a speaker (voice, microphone, language) is a larger part of
    its states than the emotion; subtracting each speaker's own average and scale leaves the
    emotion. On EmoDB -> RAVDESS it lifted a probe from 0.41 to 0.65 UA. It costs something where a
    speaker's clips share their emotion (natural speech: one or two emotions per speaker), because it
    then subtracts the emotion too. Two guards: a group's statistics are shrunk towards the global
    ones by its clip count (``group_moments``; how much a clip counts is estimated per dimension from
    the training groups, ``estimate_shrink``), and the mode is a head candidate chosen on held-out
    speakers (``emovox.models.closed_form``), so validation switches it off where it hurts.

    The statistics are taken from unlabelled states only: a training speaker's from its training
    clips, a test speaker's from its own test clips (that is the price: prediction needs several
    clips of the speaker, ``observe``). A group that has no statistics (a lone clip, no speaker given)
    is standardised with the global ones.

    ``mode`` is a buffer (0 none, 1 corpus, 2 speaker) saved with the weights: the one chosen per fold.
    """

    MODES: tuple[Normalize, ...] = ("none", "corpus", "speaker")

    def __init__(self, num_layers: int, width: int, *, shrink: float | None = None, std_floor: float = STD_FLOOR):
        super().__init__()
        self.std_floor = float(std_floor)
        #: a fixed number of clips for every dimension, or None: estimated from the training groups (``estimate_shrink``)
        self.fixed_shrink = shrink
        self.register_buffer("mode_index", torch.zeros((), dtype=torch.long))
        self.register_buffer("shrink", torch.full((num_layers, width), float(shrink if shrink is not None else 1.0)))
        self.register_buffer("mean", torch.zeros(num_layers, width))
        self.register_buffer("var", torch.ones(num_layers, width))
        #: group key -> (mean, std) of the groups seen by ``observe`` (not saved: they belong to the data)
        self.table: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def mode(self) -> Normalize:
        return self.MODES[int(self.mode_index)]

    @mode.setter
    def mode(self, value: Normalize) -> None:
        if value not in self.MODES:
            raise ValueError(f"normalize must be one of {self.MODES}, not {value!r}")
        self.mode_index.fill_(self.MODES.index(value))
        self.table = {}

    def key(self, example) -> str | None:
        """The group an example belongs to under the current mode (None: no group, also for the placeholder
        speaker of a corpus that does not say who spoke, which must not pool every clip as one speaker)."""
        if self.mode == "speaker":
            return known_speaker(getattr(example, "speaker", None))
        if self.mode == "corpus":
            return getattr(example, "corpus", None)
        return None

    @torch.no_grad()
    def fit(self, states: torch.Tensor, keys: list[str | None] | None = None) -> None:
        """Global statistics of ``[N, L, W]``, the training part's clips (the shrinkage target), and,
        unless it is fixed, the shrinkage estimated from their groups ``keys`` under the current mode."""
        if len(states):
            self.mean.copy_(states.double().mean(0).float())
            self.var.copy_(states.double().var(0, unbiased=False).float())
            if self.fixed_shrink is None and keys is not None and self.mode != "none":
                self.shrink.copy_(estimate_shrink(states, keys))

    def _floor(self, var: torch.Tensor) -> torch.Tensor:
        """A group's std, floored like ``Standardize``'s: a dimension almost constant within one speaker
        must not become a 1000-sigma feature."""
        std = var.clamp_min(0).sqrt()
        floor = (self.std_floor * self.var.double().clamp_min(0).sqrt().median(dim=-1, keepdim=True).values).clamp_min(1e-5)
        return torch.maximum(std, floor)

    @torch.no_grad()
    def observe(self, states: torch.Tensor, keys: list[str | None]) -> None:
        """Statistics of every group among ``keys`` from its rows of ``states`` ``[N, L, W]`` (unlabelled)."""
        self.table = {}
        if self.mode == "none":
            return
        groups: dict[str, list[int]] = {}
        for i, k in enumerate(keys):
            if k is not None:
                groups.setdefault(k, []).append(i)
        for k, rows in groups.items():
            if len(rows) < 2:
                continue  # a lone clip has no scale of its own: global statistics
            mean, var = group_moments(states[rows], self.mean, self.var, self.shrink)
            self.table[k] = (mean.float(), self._floor(var).float())

    def forward(self, states: torch.Tensor, keys: list[str | None] | None) -> torch.Tensor:
        if self.mode == "none":
            return states
        mean0, std0 = self.mean, self._floor(self.var.double()).float()
        means, stds = [], []
        for k in keys or [None] * len(states):
            mean, std = self.table.get(k, (mean0, std0)) if k is not None else (mean0, std0)
            means.append(mean)
            stds.append(std)
        return (states - torch.stack(means).to(states.dtype)) / torch.stack(stds).to(states.dtype)


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


class FallbackHead(nn.Module):
    """What a classifier that normalises per speaker answers for a clip it has no speaker statistics
    for (a lone clip, no speaker given): the best candidate *without* normalisation, fitted on the
    same data (``emovox.models.logistic.fit_logistic``'s ``fallback_view``), with its own layer
    standardisation and temperature. A recognizer used one clip at a time (a service, a single file)
    then answers as well as one trained without normalisation, instead of reading globally
    standardised states with a head that learned per-speaker ones."""

    def __init__(self, num_layers: int, width: int, num_classes: int, *, combine: Combine, std_floor: float = STD_FLOOR):
        super().__init__()
        self.reducer = LayerReducer(num_layers, width, combine=combine, standardize=True, std_floor=std_floor)
        self.linear = nn.Linear(self.reducer.out_width, num_classes)
        self.register_buffer("temperature", torch.ones(()))

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """Calibrated logits of raw pooled states ``[B, L, W]``."""
        return self.linear(self.reducer(states)) / self.temperature


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
