"""finetune-top: the cached frozen bottom + trainable top equals the whole encoder, and only the top learns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emovox.backbones import load_backbone
from emovox.data.examples import Example
from emovox.errors import ConfigError
from emovox.models.branch import pool_all_layers
from emovox.models.classifier import ClassifierConfig, ClassifierModel


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
