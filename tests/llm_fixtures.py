"""Shared set-up of the LLM tests: examples and a few-step training loop.

``train_steps`` does what the generic trainer does with a model kind (its parameter groups, its
``loss`` on shuffled batches), without epochs, validation or checkpoints, so that a test can
assert what a few dozen steps learn; ``tests/test_llm_kinds_trainer.py`` runs the real trainer.
"""

from __future__ import annotations

import random

import torch

from emovox.data.examples import Example


def example(id: str, target: int, **fields) -> Example:
    return Example(id=id, target=target, **fields)


def train_steps(model, examples, *, steps: int, lr: float, batch_size: int = 4, seed: int = 0,
                class_weight: torch.Tensor | None = None) -> list[float]:
    optimizer = torch.optim.Adam(model.param_groups(lr, None), lr=lr)
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
        loss, _ = model.loss(model.collate(batch, augment=True), targets, class_weight)
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
