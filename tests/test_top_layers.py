"""finetune-top: the cached frozen bottom + trainable top equals the whole encoder, and only the top learns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emovox.backbones.loader import load_backbone
from emovox.data.examples import Example
from emovox.errors import ConfigError
from emovox.models.classifier import ClassifierConfig, ClassifierModel
from emovox.models.extraction import pool_all_layers


def clips(n=3):
    rng = np.random.default_rng(0)
    return [(0.2 * rng.standard_normal(4000 + 1500 * i)).astype(np.float32) for i in range(n)]


def top_model(classes=3, **cfg) -> ClassifierModel:
    config = ClassifierConfig(backbone="whisper-base", tiny=True, mode="finetune-top", top_layers=1, layers="all", **cfg)
    return ClassifierModel(config, [str(i) for i in range(classes)], load_backbone("whisper-base", tiny=True))


def test_cached_bottom_then_top_equals_the_whole_encoder():
    torch.manual_seed(0)
    model = top_model(dropout=0.0).eval()
    items = clips()
    examples = [Example(str(i), 0, audio=x, length=len(x) / 16000) for i, x in enumerate(items)]
    cached = model.prepare(examples, cache=None, progress=False)
    assert all(e.cached[model.branch.slot]["frames"].shape[1] == model.branch.backbone.hidden_size for e in cached)
    model.fit_statistics(cached)
    with torch.inference_mode():
        whole = pool_all_layers(model.branch.backbone, model.branch.backbone.preprocess(items), "mean")  # all layers run
        split = model.branch(model.collate(cached)[model.branch.name])
        raw_logits = model(model.collate(examples))  # no cache: the deployable path runs the whole encoder
        cached_logits = model(model.collate(cached))
    torch.testing.assert_close(split, whole, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(cached_logits, raw_logits, atol=1e-4, rtol=1e-4)
    # standardisation statistics came from the training examples
    torch.testing.assert_close(model.reducer.standardize.mean, whole.mean(0), atol=1e-4, rtol=1e-4)


def test_only_the_top_layers_and_head_train():
    model = top_model(classes=2)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    n_layers = len(model.branch.backbone.model.encoder.layers)
    assert any(f"layers.{n_layers - 1}." in n for n in trainable)
    assert not any(f"layers.{n_layers - 2}." in n or "conv1" in n or "embed_positions" in n for n in trainable)
    assert {"head.linear.weight", "head.linear.bias", "reducer.weights.weights"} <= trainable
    # pretrained top layers at lr, everything new at head_lr
    groups = model.param_groups(1e-5, 1e-3)
    assert [g["lr"] for g in groups] == [1e-5, 1e-3]
    assert all(any(p is q for q in model.branch.backbone.parameters()) for p in groups[0]["params"])


def test_other_families_are_refused_clearly():
    with pytest.raises(ConfigError, match="Whisper"):
        ClassifierModel(
            ClassifierConfig(backbone="wav2vec2-base", tiny=True, mode="finetune-top"), ["a", "b"],
            load_backbone("wav2vec2-base", tiny=True),
        )


def lpft_run(tmp_path, name: str, *, mode: str, lr: float, **model):
    from helpers import make_tone_manifest, tiny_config

    from emovox.config import config_from_dict
    from emovox.training.runner import run_cv

    manifest = make_tone_manifest(tmp_path / "corpus")
    head = {"backbone": "whisper-base", "tiny": True, "mode": mode, "top_layers": 1, "layers": "all", "combine": "concat",
            "head": "logistic", "C": [0.1, 1.0], "select": "valid-logloss", "dropout": 0.0, **model}
    train = {"lr": lr, "head_lr": lr, "max_epochs": 2, "patience": 2, "class_weights": "none", "augment": {"length": False}}
    cfg = config_from_dict(tiny_config(manifest, tmp_path / "cache", model=head, train=train))
    results = run_cv(cfg, tmp_path / name, progress=False)
    rows = (tmp_path / name / "predictions.csv").read_text().splitlines()[1:]
    return results, {r.split(",")[0]: r.split(",")[3] for r in rows}


def test_lp_ft_starts_from_the_closed_form_probe_and_keeps_it_unless_fine_tuning_does_better_on_validation(tmp_path):
    """head: logistic over a trainable top: the closed-form probe is fitted first and is epoch 0. With
    a learning rate too small to move anything (1e-12) every fold keeps it, and predicts what the frozen probe predicts;
    with a real lr the epoch is chosen on validation, never below the probe there."""
    import json

    frozen, frozen_pred = lpft_run(tmp_path, "frozen", mode="frozen", lr=1e-12)
    still, still_pred = lpft_run(tmp_path, "still", mode="finetune-top", lr=1e-12)
    assert still_pred == frozen_pred and len(still_pred) == 24
    done = [json.loads((tmp_path / "still" / f"fold_{k}" / "done.json").read_text()) for k in range(1, 5)]
    assert all(d["best_epoch"] == 0 and d["choices"]["then"] == "fine-tuned" and d["choices"]["epoch"] == 0 for d in done)
    frozen_done = [json.loads((tmp_path / "frozen" / f"fold_{k}" / "done.json").read_text()) for k in range(1, 5)]
    assert [d["choices"]["C"] for d in done] == [d["choices"]["C"] for d in frozen_done]

    moved, moved_pred = lpft_run(tmp_path, "moved", mode="finetune-top", lr=3e-3)
    done = [json.loads((tmp_path / "moved" / f"fold_{k}" / "done.json").read_text()) for k in range(1, 5)]
    kept = [k for k, d in enumerate(done, 1) if d["best_epoch"] == 0]
    assert kept  # here the probe is already perfect on validation: no trained epoch can beat it
    for k in kept:  # a fold that kept epoch 0 tests with the probe's weights, not its last epoch's
        ids = [json.loads(line)["id"] for line in (tmp_path / "moved" / "splits" / f"fold_{k}" / "test.jsonl").read_text().splitlines()]
        assert [moved_pred[i] for i in ids] == [frozen_pred[i] for i in ids]
    for d in done:
        chosen = d["choices"]["valid_before_fine_tuning"] if d["best_epoch"] == 0 else d["history"][d["best_epoch"] - 1]["valid_ua"]
        assert chosen >= d["choices"]["valid_before_fine_tuning"]  # select_on: ua (the default)
        assert len(d["history"]) == 2  # both fine-tuning epochs ran and were scored


def test_lp_ft_refuses_a_refit():
    model = top_model(classes=2, head="logistic", refit=True)
    with pytest.raises(ConfigError, match="set refit: false"):
        model.fit_direct([], [])
