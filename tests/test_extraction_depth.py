"""Frozen extraction stops after the highest hidden state a model reads; the cache says which states it holds."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from emovox.backbones.loader import load_backbone
from emovox.cache import CacheWarning, FeatureCache
from emovox.models.extraction import extract_pooled

FAMILIES = ["whisper-base", "wav2vec2-base", "hubert-base", "wavlm-base", "wav2vec2-large-xlsr-53", "unispeech-large-1500h-cv"]


def clips():
    rng = np.random.default_rng(0)
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (8000, 6400, 8000)]


@pytest.fixture(scope="module", params=FAMILIES)
def backbone(request):
    b = load_backbone(request.param, tiny=True).eval()
    if request.param == "wav2vec2-large-xlsr-53":
        assert b.model.config.do_stable_layer_norm  # the pre-norm variant, whose final norm belongs to the last state
    return b


def test_stop_after_runs_only_the_layers_below_the_top_state_and_keeps_their_states(backbone):
    layers = backbone.model.encoder.layers
    calls = []
    hooks = [layer.register_forward_hook(lambda *a, i=i: calls.append(i)) for i, layer in enumerate(layers)]
    norm = backbone.model.encoder.layer_norm
    norm_calls = []
    hooks.append(norm.register_forward_hook(lambda *a: norm_calls.append(1)))
    inputs = backbone.preprocess(clips())
    try:
        with torch.no_grad():
            full = backbone(inputs, all_layers=True).hidden
            last = backbone.num_layers - 1
            assert sorted(set(calls)) == list(range(len(layers)))
            for top in range(last):
                calls.clear()
                norm_calls.clear()
                with backbone.stop_after(top):
                    part = backbone(inputs, all_layers=True).hidden
                torch.testing.assert_close(part[: top + 1], full[: top + 1], atol=1e-6, rtol=0)
                ran = sorted(set(calls))
                # transformers records states with hooks on layers: the wav2vec2 family runs one layer at least
                assert ran == list(range(top if backbone.spec.family == "whisper" else max(top, 1))), (top, ran)
                final_norm = backbone.spec.family == "whisper" or backbone.model.config.do_stable_layer_norm
                if final_norm:
                    assert not norm_calls, f"the final norm ran for state {top}"
        # restored afterwards: the whole model runs again
        calls.clear()
        with torch.no_grad():
            torch.testing.assert_close(backbone(inputs, all_layers=True).hidden, full)
        assert sorted(set(calls)) == list(range(len(layers)))
    finally:
        for h in hooks:
            h.remove()


def test_cached_states_serve_any_shallower_request_and_a_deeper_one_replaces_them(tmp_path):
    backbone = load_backbone("whisper-base", tiny=True).eval()
    items = clips()
    cache = FeatureCache(tmp_path)
    shallow = extract_pooled(backbone, items, cache=cache, model_key="k", progress=False, top=0)
    assert shallow.shape[:2] == (3, 1) and cache.writes == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)  # fewer states than asked for is not damage
        deep = extract_pooled(backbone, items, cache=cache, model_key="k", progress=False)
    assert deep.shape[:2] == (3, backbone.num_layers) and cache.writes == 6 and cache.hits == 0
    torch.testing.assert_close(deep[:, :1], shallow, atol=1e-6, rtol=0)
    again = extract_pooled(backbone, items, cache=cache, model_key="k", progress=False, top=1)
    assert again.shape[:2] == (3, 2) and cache.hits == 3 and cache.writes == 6  # the deeper entries serve it
    torch.testing.assert_close(again, deep[:, :2])
    stored = next(tmp_path.rglob("*.safetensors"))
    from safetensors.torch import load_file

    assert load_file(str(stored))["pooled"].shape[0] == backbone.num_layers  # the entry's shape says what it holds


def test_a_branch_reading_lower_layers_extracts_only_those(tmp_path):
    from emovox.data.examples import Example
    from emovox.models.classifier import ClassifierConfig, ClassifierModel

    config = ClassifierConfig(backbone="whisper-base", tiny=True, mode="frozen", layers=[0, 1], combine="concat")
    model = ClassifierModel.build(config, ["a", "b"])
    assert model.branch.top == 1 and model.branch.total_layers == 3
    examples = [Example(str(i), 0, audio=c, length=len(c) / 16000) for i, c in enumerate(clips())]
    out = model.prepare(examples, cache=FeatureCache(tmp_path), progress=False)
    row = out[0].cached[model.branch.slot]
    assert tuple(row["pooled"].shape) == (2, model.branch.width)
    # what the head reads from the cache equals what the backbone computes live, and live (a recognizer predicting)
    # runs only the one layer below state 1 too, not the layer above it nor the final norm
    encoder = model.branch.backbone.model.encoder
    ran = []
    hooks = [layer.register_forward_hook(lambda *a, i=i: ran.append(i)) for i, layer in enumerate(encoder.layers)]
    hooks.append(encoder.layer_norm.register_forward_hook(lambda *a: ran.append("norm")))
    try:
        with torch.no_grad():
            cached = model.branch(model.branch.collate(out))
            assert ran == []  # the cache serves it
            live = model.branch(model.branch.collate(examples))
    finally:
        for h in hooks:
            h.remove()
    assert ran == [0]
    torch.testing.assert_close(cached, live, atol=1e-5, rtol=0)
    assert len(encoder.layers) == 2  # restored afterwards


@pytest.mark.parametrize("name", FAMILIES[1:])
def test_a_first_call_that_stops_early_leaves_later_calls_whole(name):
    """transformers records the wav2vec2 family's states with hooks, installed at the first call that asks for them:
    a first call on a shorter stack of layers must not leave the layers it hid without theirs."""
    fresh = load_backbone(name, tiny=True, seed=0).eval()
    reference = load_backbone(name, tiny=True, seed=0).eval()
    inputs = fresh.preprocess(clips())
    with torch.no_grad():
        with fresh.stop_after(1):
            fresh(inputs, all_layers=True)
        whole = fresh(inputs, all_layers=True).hidden
        expected = reference(inputs, all_layers=True).hidden
    assert whole.shape[0] == fresh.num_layers
    torch.testing.assert_close(whole, expected)
