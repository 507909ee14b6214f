"""Shared set-up of the LLM tests: examples in the model-kind shape and a few-step training loop.

The kinds read ``Example.text`` / ``Example.audio`` (the model-kind interface of issue 10). Until
that ``Example`` lands in ``emovox.data.examples``, ``example`` builds a stand-in with the same
fields; once it has landed the real class is used.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import torch

from emovox.data import examples as _examples

_REAL = {f.name for f in dataclasses.fields(_examples.Example)} >= {"text", "audio"}


@dataclass(frozen=True)
class _KindExample:
    id: str
    target: int
    audio: np.ndarray | None = None
    text: str | None = None
    context_audio: np.ndarray | None = None
    context_text: str | None = None
    length: float = 0.0
    cached: Mapping[str, Any] = field(default_factory=dict)


def example(id: str, target: int, **fields):
    cls = _examples.Example if _REAL else _KindExample
    return cls(id=id, target=target, **fields)


def train_steps(model, examples, *, steps: int, lr: float, batch_size: int = 4, seed: int = 0,
                class_weight: torch.Tensor | None = None) -> list[float]:
    """Adam on ``model.param_groups``, ``model.loss`` on shuffled batches: what the generic trainer does."""
    groups = model.param_groups(None)
    for g in groups:
        g["lr"] = lr
    optimizer = torch.optim.Adam(groups)
    rng = random.Random(seed)
    order: list[int] = []
    losses = []
    model.train()
    for _ in range(steps):
        if len(order) < batch_size:
            order = list(range(len(examples)))
            rng.shuffle(order)
        batch = [examples[order.pop()] for _ in range(batch_size)]
        targets = torch.tensor([e.target for e in batch])
        loss, _ = model.loss(model.collate(batch), targets, class_weight)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    return losses


@torch.inference_mode()
def class_logits(model, examples, batch_size: int = 8) -> torch.Tensor:
    model.eval()
    return torch.cat([model(model.collate(examples[i:i + batch_size])) for i in range(0, len(examples), batch_size)])


def accuracy(model, examples) -> float:
    predictions = class_logits(model, examples).argmax(-1)
    return float((predictions == torch.tensor([e.target for e in examples])).float().mean())
