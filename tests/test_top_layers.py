"""finetune-top: the frozen bottom + trainable top equals the whole encoder, and only the top learns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emovox.backbones import load_backbone
from emovox.errors import ConfigError
from emovox.models.top_layers import TopLayersClassifier, frames_collate
from emovox.data.examples import Example


def clips(n=3):
    rng = np.random.default_rng(0)
    return [(0.2 * rng.standard_normal(4000 + 1500 * i)).astype(np.float32) for i in range(n)]


def test_bottom_then_top_equals_the_whole_encoder_and_deploys_as_utterance_classifier():
    torch.manual_seed(0)
    model = TopLayersClassifier(load_backbone("whisper-base", tiny=True), 3, top_layers=1, dropout=0.0).eval()
    items = clips()
    frames, mask = model.bottom(model.backbone.preprocess(items))
    examples = [Example(str(i), 0, frames[i, : int(mask[i].sum())].clone(), 1.0) for i in range(len(items))]
    split_logits = model(frames_collate(examples))
    with torch.inference_mode():
        whole_logits = model.as_utterance_classifier().eval()(model.backbone.preprocess(items))
    torch.testing.assert_close(split_logits.detach(), whole_logits, atol=1e-4, rtol=1e-4)


def test_only_the_top_layers_and_head_train():
    model = TopLayersClassifier(load_backbone("whisper-base", tiny=True), 2, top_layers=1)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    n_layers = len(model.backbone.model.encoder.layers)
    assert any(f"layers.{n_layers - 1}." in n for n in trainable)
    assert not any(f"layers.{n_layers - 2}." in n or "conv1" in n or "embed_positions" in n for n in trainable)
    assert {"linear.weight", "linear.bias"} <= trainable


def test_other_families_are_refused_clearly():
    with pytest.raises(ConfigError, match="Whisper"):
        TopLayersClassifier(load_backbone("wav2vec2-base", tiny=True), 2, top_layers=1)
