"""The trainer on synthetic features: class weights, learning, early stopping, exact resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.utils.class_weight import compute_class_weight
from torch import nn

from emovox.config import TrainConfig
from emovox.data.examples import Example
from emovox.errors import EmovoxError
from emovox.training.trainer import Trainer, inverse_frequency_weights


class Linear(nn.Module):
    def __init__(self, dim: int, classes: int):
        super().__init__()
        self.lin = nn.Linear(dim, classes)

    def forward(self, inputs):
        return self.lin(inputs["x"])


def collate(batch):
    return {"x": torch.stack([e.cached["x"] for e in batch])}


def blobs(n: int, classes: int = 3, dim: int = 8, seed: int = 0, noise: float = 0.3):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, dim, generator=torch.Generator().manual_seed(123)) * 3
    out = []
    for i in range(n):
        c = i % classes
        out.append(Example(f"u{seed}_{i}", c, length=float(i % 7), cached={"x": centers[c] + noise * torch.randn(dim, generator=g)}))
    return out


def test_inverse_frequency_weights_match_sklearn():
    y = [0] * 10 + [1] * 3 + [2] * 7
    ours = inverse_frequency_weights(y, 3).numpy()
    ref = compute_class_weight("balanced", classes=np.arange(3), y=np.array(y))
    np.testing.assert_allclose(ours, ref, rtol=1e-6)


def test_class_absent_from_training_is_a_clear_error():
    with pytest.raises(EmovoxError, match="no training examples"):
        inverse_frequency_weights([0, 0, 2], 3)


def test_training_learns_separable_data():
    torch.manual_seed(0)
    cfg = TrainConfig(lr=0.05, batch_size=8, max_epochs=15, patience=5)
    trainer = Trainer(Linear(8, 3), collate, cfg, 3, progress=False)
    fit = trainer.fit(blobs(60), blobs(30, seed=1))
    losses = [h["train_loss"] for h in fit.history]
    assert losses[-1] < losses[0] * 0.5
    assert fit.best_valid_ua == 1.0
    probs = trainer.predict_proba(blobs(30, seed=2))
    assert probs.shape == (30, 3)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    assert (probs.argmax(1) == np.arange(30) % 3).mean() == 1.0


def test_early_stopping_after_patience_epochs_without_gain():
    # A learning rate this small cannot change any prediction: UA never improves after epoch 1.
    cfg = TrainConfig(lr=1e-12, batch_size=8, max_epochs=20, patience=3)
    fit = Trainer(Linear(8, 3), collate, cfg, 3, progress=False).fit(blobs(30), blobs(15, seed=1))
    assert fit.best_epoch == 1
    assert len(fit.history) == 1 + 3
    assert fit.stopped_early


def nearest_centre_linear() -> Linear:
    """A linear layer that already classifies ``blobs`` perfectly: logits -|x - centre_c|^2 / 2, up to a constant."""
    centers = torch.randn(3, 8, generator=torch.Generator().manual_seed(123)) * 3  # blobs' centres
    model = Linear(8, 3)
    with torch.no_grad():
        model.lin.weight.copy_(centers)
        model.lin.bias.copy_(-(centers**2).sum(1) / 2)
    return model


def swapped(examples: list[Example], a: int = 0, b: int = 1) -> list[Example]:
    from dataclasses import replace

    other = {a: b, b: a}
    return [replace(e, target=other.get(e.target, e.target)) for e in examples]


@pytest.mark.parametrize("where", ["run_dir", "memory"])
def test_best_epoch_weights_are_restored(tmp_path, where):
    """Data whose best epoch is the first, not the last: the model starts right on validation, and the
    training labels of classes 0 and 1 are swapped, so training unlearns what validation rewards. The
    weights the trainer ends with must be the first epoch's (from best_model.safetensors, or from memory
    without a run directory), not the last epoch's."""
    cfg = TrainConfig(lr=0.1, batch_size=8, max_epochs=8, patience=8)
    run_dir = tmp_path if where == "run_dir" else None
    trainer = Trainer(nearest_centre_linear(), collate, cfg, 3, run_dir=run_dir, progress=False)
    valid = blobs(30, seed=1)
    fit = trainer.fit(swapped(blobs(60)), valid)
    uas = [h["valid_ua"] for h in fit.history]
    # the premise: all epochs ran, the best is an early one, and the last has learnt the swap (UA 1/3)
    assert len(uas) == 8 and fit.best_epoch < 8 and fit.best_valid_ua == max(uas) == 1.0 and uas[-1] < 0.5, uas
    assert (tmp_path / "best_model.safetensors").is_file() == (where == "run_dir")
    ua = (trainer.predict_logits(valid).argmax(1) == np.array([e.target for e in valid])).mean()
    assert ua == pytest.approx(fit.best_valid_ua)


class Boom(RuntimeError):
    pass


def test_interrupted_fit_resumes_to_identical_result(tmp_path):
    cfg = TrainConfig(lr=0.02, batch_size=4, max_epochs=5, patience=5, seed=3)
    train, valid = blobs(40, noise=1.5), blobs(20, seed=1, noise=1.5)

    torch.manual_seed(0)
    ref = Trainer(Linear(8, 3), collate, cfg, 3, run_dir=tmp_path / "ref", progress=False)
    ref_fit = ref.fit(train, valid)
    ref_logits = ref.predict_logits(valid)

    calls = {"n": 0}

    def dying_collate(batch):
        calls["n"] += 1
        if calls["n"] == 38:  # in the middle of epoch 3 (10 train batches + 5 valid batches per epoch)
            raise Boom("killed")
        return collate(batch)

    torch.manual_seed(0)
    with pytest.raises(Boom):
        Trainer(Linear(8, 3), dying_collate, cfg, 3, run_dir=tmp_path / "run", progress=False).fit(train, valid)
    torch.manual_seed(0)
    resumed = Trainer(Linear(8, 3), collate, cfg, 3, run_dir=tmp_path / "run", progress=False)
    fit = resumed.fit(train, valid)
    assert fit.resumed_from_epoch == 2
    assert [h["train_loss"] for h in fit.history] == [h["train_loss"] for h in ref_fit.history]
    np.testing.assert_array_equal(resumed.predict_logits(valid), ref_logits)
