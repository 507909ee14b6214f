"""finetune-top: the frozen bottom + trainable top equals the whole encoder, and only the top learns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emovox.backbones import load_backbone
from emovox.data.examples import Example
from emovox.errors import ConfigError
from emovox.features import pool_all_layers
from emovox.models.top_layers import TopLayersClassifier, extract_bottom, frames_collate


def clips(n=3):
    rng = np.random.default_rng(0)
    return [(0.2 * rng.standard_normal(4000 + 1500 * i)).astype(np.float32) for i in range(n)]


def test_cached_bottom_then_top_equals_the_whole_encoder():
    torch.manual_seed(0)
    model = TopLayersClassifier(load_backbone("whisper-base", tiny=True), 3, top_layers=1, dropout=0.0, layer_weights=True, standardize=True).eval()
    items = clips()
    examples = [Example(str(i), 0, x, len(x) / 16000) for i, x in enumerate(items)]
    cached = extract_bottom(model, examples, progress=False)
    batch = frames_collate([Example(str(i), 0, c, 1.0) for i, c in enumerate(cached)])
    model.fit_standardization([batch])
    with torch.inference_mode():
        whole = pool_all_layers(model.backbone, model.backbone.preprocess(items))  # every state, all layers run
        split = model.pooled_states(batch)
        raw_logits = model(model.backbone.preprocess(items))
        cached_logits = model(batch)
    torch.testing.assert_close(split, whole, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(cached_logits, raw_logits, atol=1e-4, rtol=1e-4)
    # standardisation statistics came from the training batch
    torch.testing.assert_close(model.feat_mean, whole.mean(0), atol=1e-4, rtol=1e-4)


def test_only_the_top_layers_and_head_train():
    model = TopLayersClassifier(load_backbone("whisper-base", tiny=True), 2, top_layers=1, layer_weights=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    n_layers = len(model.backbone.model.encoder.layers)
    assert any(f"layers.{n_layers - 1}." in n for n in trainable)
    assert not any(f"layers.{n_layers - 2}." in n or "conv1" in n or "embed_positions" in n for n in trainable)
    assert {"linear.weight", "linear.bias", "layer_weights.weights"} <= trainable


def test_other_families_are_refused_clearly():
    with pytest.raises(ConfigError, match="Whisper"):
        TopLayersClassifier(load_backbone("wav2vec2-base", tiny=True), 2, top_layers=1)
