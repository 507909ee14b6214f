"""Mixup on the head's embedding: what it computes, that it is seeded, that only training mixes,
and that a run asks for it only where a gradient-trained head exists."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import tiny_frozen_classifier, tone

from emovox.config import ExperimentConfig, TrainConfig
from emovox.data.augment import AugmentConfig
from emovox.data.examples import Example
from emovox.models.mixup import mix
from emovox.training.trainer import Trainer


def frozen_model(mixup: float):
    return tiny_frozen_classifier(AugmentConfig(length=False, variants=0, mixup=mixup), ("low", "high"))


def test_mix_is_a_convex_combination_with_a_seeded_partner():
    e = torch.arange(12, dtype=torch.float32).reshape(4, 3)
    mixed, perm, lam = mix(e, 0.4, np.random.RandomState(7))
    assert 0 < lam < 1 and sorted(perm.tolist()) == [0, 1, 2, 3]
    torch.testing.assert_close(mixed, lam * e + (1 - lam) * e[perm])
    again, perm2, lam2 = mix(e, 0.4, np.random.RandomState(7))
    assert lam2 == lam and torch.equal(perm2, perm) and torch.equal(again, mixed)


def _examples():
    return [Example(f"u{i}", i % 2, audio=tone(200 + 600 * (i % 2), 0.5), length=0.5) for i in range(16)]


def test_training_mixes_evaluation_does_not():
    model = frozen_model(mixup=0.4)
    prepared = model.prepare(_examples(), cache=None, progress=False)
    model.fit_statistics(prepared)
    inputs, targets = model.collate(prepared), torch.tensor([e.target for e in prepared])
    model.eval()
    plain = torch.nn.functional.cross_entropy(model(inputs), targets)
    model.train()
    np.random.seed(0)
    mixed_loss, _ = model.loss(inputs, targets, None)
    model.eval()
    eval_loss, logits = model.loss(inputs, targets, None)
    torch.testing.assert_close(eval_loss, plain)  # evaluation: the plain loss on the unmixed batch
    torch.testing.assert_close(logits, model(inputs))
    assert not torch.isclose(mixed_loss, plain)


def _fit(mixup: float, seed: int = 0):
    model = frozen_model(mixup)
    prepared = model.prepare(_examples(), cache=None, progress=False)
    trainer = Trainer(model, None, TrainConfig(max_epochs=6, batch_size=4, lr=0.05, threads=1, seed=seed), 2, progress=False)
    model.fit_statistics(prepared)
    fit = trainer.fit(prepared, prepared[:8])
    return fit, trainer.predict_proba(prepared)


def test_a_run_with_mixup_learns_and_is_reproducible():
    fit, probs = _fit(0.4)
    again, probs_again = _fit(0.4)
    plain, _ = _fit(0.0)
    assert fit.best_valid_ua == 1.0  # two tones an octave and more apart: mixing does not hide them
    np.testing.assert_array_equal(probs, probs_again)
    losses = [h["train_loss"] for h in fit.history]
    assert losses == [h["train_loss"] for h in again.history]
    assert losses != [h["train_loss"] for h in plain.history]  # mixup changed what was trained on


def test_mixup_needs_a_gradient_trained_head(tmp_path):
    from emovox.errors import ConfigError
    from emovox.training.data import ExperimentData

    cfg = ExperimentConfig.model_validate({
        "corpus": "emodb:/nowhere", "protocol": "leave-one-speaker-out",
        "model": {"backbone": "wav2vec2-base", "tiny": True, "mode": "frozen", "layers": "all", "combine": "concat",
                  "head": "logistic"},
        "train": {"augment": {"mixup": 0.4}},
    })
    data = ExperimentData.__new__(ExperimentData)  # only build_model is exercised: no corpus is read
    data.cfg, data.backbones = cfg, None
    data.corpus = type("C", (), {"labels": ("a", "b")})()
    with pytest.raises(ConfigError, match="mixup.*logistic"):
        data.build_model()
