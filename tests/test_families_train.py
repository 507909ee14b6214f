"""Every backbone family's tiny model, in the paper's classifier, learns: its loss falls.

One representative registry name per architecture family keeps this under a minute while still
covering every class the registry can build.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emovox.backbones.loader import load_backbone
from emovox.backbones.registry import FAMILIES, REGISTRY
from emovox.data.examples import Example
from emovox.models.classifier import ClassifierConfig, ClassifierModel


def one_per_family() -> list[str]:
    """(openSMILE functionals have no model to learn: tests/test_opensmile.py trains a head on them)"""
    seen: dict[str, str] = {}
    for name, spec in REGISTRY.items():
        if FAMILIES[spec.family].learned:
            seen.setdefault(spec.family, name)
    return sorted(seen.values())


def batch_for(modality: str, n: int = 4):
    if modality == "text":
        return ["I am so happy today", "this is terrible news", "okay fine", "what a wonderful day"][:n], [0, 1, 1, 0][:n]
    rng = np.random.default_rng(0)
    t = np.arange(8000) / 16000
    items = [(0.3 * np.sin(2 * np.pi * (150 if i % 2 else 450) * t[: 6000 + 500 * i]) + 0.01 * rng.standard_normal(6000 + 500 * i)).astype(np.float32) for i in range(n)]
    return items, [i % 2 for i in range(n)]


@pytest.mark.parametrize("name", one_per_family())
def test_tiny_family_trains_and_loss_falls(name):
    torch.manual_seed(0)
    backbone = load_backbone(name, tiny=True)
    model = ClassifierModel(ClassifierConfig(backbone=name, tiny=True, dropout=0.0), ["a", "b"], backbone)
    items, targets = batch_for(backbone.modality)
    inputs = model.collate([Example(str(i), t, **{backbone.modality: x}) for i, (x, t) in enumerate(zip(items, targets, strict=True))])
    y = torch.tensor(targets)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(8):
        loss = torch.nn.functional.cross_entropy(model(inputs), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses))
    assert losses[-1] < losses[0], f"{name}: loss did not fall: {losses}"
