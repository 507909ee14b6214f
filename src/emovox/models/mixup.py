"""Mixup (Zhang et al. 2018) on the embedding a model's head reads.

Why the embedding and not the input: emovox models read raw audio, cached frozen features,
cached frames under a fine-tuned top, token ids and several branches at once; token ids cannot
be mixed, and mixing padded audio of two lengths mixes one clip with the other's silence. The
pooled embedding exists for every kind and every modality mix, and mixing there (manifold
mixup, Verma et al. 2019) keeps mixup's regularising effect on the head and on everything that
trains below it, since the gradient of both mixed rows flows back through their branches.

The mixing weight ``lam ~ Beta(alpha, alpha)`` and the partner permutation come from numpy's
global generator, which the trainer seeds from ``train.seed`` and saves in every resume
checkpoint, so a run with mixup is reproducible and resumes to the same numbers.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def mix(embedding: torch.Tensor, alpha: float, rng=np.random) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``(lam * e + (1 - lam) * e[perm], perm, lam)`` for one batch."""
    lam = float(rng.beta(alpha, alpha))
    perm = torch.as_tensor(rng.permutation(embedding.shape[0]), device=embedding.device)
    return lam * embedding + (1.0 - lam) * embedding[perm], perm, lam


def mixup_loss(model, inputs: dict, targets: torch.Tensor, weight: torch.Tensor | None, alpha: float):
    """``(loss, logits)``: the class-weighted cross-entropy of the mixed rows against both labels,
    weighted ``lam`` and ``1 - lam``."""
    mixed, perm, lam = mix(model.embed(inputs), alpha)
    logits = model.from_embedding(mixed) / model.temperature
    ce = nn.functional.cross_entropy
    loss = lam * ce(logits.float(), targets, weight=weight) + (1.0 - lam) * ce(logits.float(), targets[perm], weight=weight)
    return loss, logits
