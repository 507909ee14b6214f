"""Which validation metric picks the epoch (train.select_on) and the linear learning-rate schedule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_trainer import Linear, collate

from emovox.config import TrainConfig
from emovox.data.examples import Example
from emovox.training.trainer import Trainer, linear_schedule


def imbalanced(n: int, seed: int, noise: float = 2.0) -> list[Example]:
    """70/20/10 overlapping classes: the epoch with the best UA is not the one with the best weighted-F1."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(3, 8, generator=torch.Generator().manual_seed(123))
    out = []
    for i in range(n):
        c = 0 if i % 10 < 7 else (1 if i % 10 < 9 else 2)
        out.append(Example(f"u{seed}_{i}", c, length=1.0, cached={"x": centers[c] + noise * torch.randn(8, generator=g)}))
    return out


def _fit(select_on: str):
    torch.manual_seed(0)
    cfg = TrainConfig(lr=0.01, batch_size=8, max_epochs=12, patience=12, seed=0, select_on=select_on)
    return Trainer(Linear(8, 3), collate, cfg, 3, progress=False).fit(imbalanced(80, 0), imbalanced(60, 100))


def test_select_on_picks_the_epoch_by_that_metric():
    by_ua, by_wf1 = _fit("ua"), _fit("weighted_f1")
    untimed = [[{k: v for k, v in h.items() if k != "seconds"} for h in f.history] for f in (by_ua, by_wf1)]
    assert untimed[0] == untimed[1]  # the same training; only the choice differs
    ua = [h["valid_ua"] for h in by_ua.history]
    wf1 = [h["valid_weighted_f1"] for h in by_ua.history]
    assert by_ua.best_epoch == int(np.argmax(ua)) + 1
    assert by_wf1.best_epoch == int(np.argmax(wf1)) + 1
    assert by_ua.best_epoch != by_wf1.best_epoch  # else this data could not tell the two apart
    assert by_wf1.best_valid_score == pytest.approx(max(wf1))
    assert by_wf1.best_valid_ua == pytest.approx(ua[by_wf1.best_epoch - 1])  # reports still print the chosen epoch's UA


def test_linear_schedule_matches_transformers():
    from transformers import get_linear_schedule_with_warmup

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    ref = get_linear_schedule_with_warmup(opt, num_warmup_steps=10, num_training_steps=100)
    expected = []
    for _ in range(100):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        ref.step()
    factor = linear_schedule(100, 0.1)
    # transformers starts its warm-up at 0 (step 0 trains nothing); ours at 1/warmup, one step earlier
    np.testing.assert_allclose([factor(s) for s in range(10, 100)], expected[10:], atol=1e-12)
    assert [factor(s) for s in range(9)] == pytest.approx(expected[1:10])


def test_trainer_decays_the_rate_to_zero_over_the_run():
    cfg = TrainConfig(lr=0.01, batch_size=8, max_epochs=4, patience=4, lr_schedule="linear", warmup_ratio=0.1)
    fit = Trainer(Linear(8, 3), collate, cfg, 3, progress=False).fit(imbalanced(80, 0), imbalanced(30, 1))
    rates = [h["lr"]["0"] for h in fit.history]  # the rate for the next step, at each epoch's end
    assert rates == sorted(rates, reverse=True)
    assert rates[-1] == pytest.approx(0.0, abs=1e-12)
    assert rates[0] == pytest.approx(0.01 * (40 - 10) / (40 - 4))  # 10 of 40 steps done, 4 of them warm-up
