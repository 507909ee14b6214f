"""Speed paths stay correct: oneDNN linears compute the same values and gradients, bf16/int8 stay
close to fp32, the optimised model keeps its interface, the feature cache never mixes precisions,
small heads train single-threaded, and the speed benchmark's papers'-way baselines compute what
they claim (no timing asserts here)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

from emovox import accel
from emovox.accel import (
    SMALL_MODEL_PARAMETERS,
    AccelError,
    OneDNNLinear,
    bf16_support,
    compute_threads,
    onednn_linear_available,
    onednn_linears,
    optimize_for_inference,
)
from emovox.backbones.loader import load_backbone
from emovox.config import TrainConfig
from emovox.data.examples import Example
from emovox.models.extraction import extract_pooled, pooled_cache_key
from emovox.models.extraction import pool_all_layers as _pool_all_layers
from emovox.models.heads import LayerReducer
from emovox.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]


def needs_bf16():
    ok, why = bf16_support()
    if not ok:
        pytest.skip(f"no bf16 on this CPU: {why}")


class FeatureHead(nn.Module):
    """A probe over cached per-layer features: standardise, weighted layer sum, dropout, linear."""

    def __init__(self, num_layers: int, width: int, classes: int, *, dropout: float, standardize: bool):
        super().__init__()
        self.reducer = LayerReducer(num_layers, width, combine="weighted", standardize=standardize)
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(width, classes)

    def forward(self, inputs):
        return self.linear(self.dropout(self.reducer(inputs["features"])))


def pool_all_layers(backbone, inputs):
    return _pool_all_layers(backbone, inputs, backbone.spec.pooling)


def backbone_key(backbone, *, tiny, seed):
    return pooled_cache_key(backbone, tiny=tiny, seed=seed)


def tiny_head(seed: int = 0) -> tuple[FeatureHead, torch.Tensor]:
    torch.manual_seed(seed)
    head = FeatureHead(3, 64, 5, dropout=0.1, standardize=True)
    feats = torch.randn(200, 3, 64) * torch.linspace(0.1, 10, 64)
    head.reducer.fit_statistics(feats)
    with torch.no_grad():
        head.linear.weight.normal_(0, 0.5)
    return head.eval(), feats


def logits_of(model, feats):
    with torch.inference_mode():
        return model({"features": feats})


# --- accel on a tiny model ------------------------------------------------------------------------


def test_fp32_is_an_untouched_copy_in_eval_mode():
    head, feats = tiny_head()
    head.train()
    fast = optimize_for_inference(head, "fp32")
    assert fast is not head and not fast.training and head.training
    assert fast.inference_precision == "fp32" and not hasattr(head, "inference_precision")
    head.eval()
    torch.testing.assert_close(logits_of(fast, feats), logits_of(head, feats), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("precision, max_abs, min_agree", [("bf16", 0.1, 0.97), ("int8", 0.25, 0.9)])
def test_bf16_and_int8_stay_close_to_fp32_on_a_tiny_model(precision, max_abs, min_agree):
    if precision == "bf16":
        needs_bf16()
    head, feats = tiny_head()
    ref = logits_of(head, feats)
    fast = optimize_for_inference(head, precision)
    got = logits_of(fast, feats)
    assert got.dtype == torch.float32 and got.shape == ref.shape
    assert fast.inference_precision == precision
    assert 0 < float((got - ref).abs().max()) < max_abs  # changed (really quantised), but only a little
    assert float((got.argmax(1) == ref.argmax(1)).float().mean()) >= min_agree
    if precision == "bf16":
        assert fast.linear.weight.dtype == torch.bfloat16 and head.linear.weight.dtype == torch.float32
    else:
        assert type(fast.linear).__module__.startswith("torch.ao.nn.quantized")
        assert isinstance(head.linear, nn.Linear) and type(head.linear) is nn.Linear  # the original is untouched


def test_unknown_or_unsupported_precision_is_a_clear_error(monkeypatch):
    head, _ = tiny_head()
    with pytest.raises(AccelError, match="unknown inference precision 'fp8'.*fp32, bf16, int8"):
        optimize_for_inference(head, "fp8")
    monkeypatch.setattr(accel, "bf16_support", lambda: (False, "the CPU has no native bfloat16 instructions"))
    with pytest.raises(AccelError, match="'bf16' is not available here: the CPU has no native bfloat16.*'fp32' or 'int8'"):
        optimize_for_inference(head, "bf16")


def test_bf16_support_reports_why():
    ok, why = bf16_support()
    assert isinstance(ok, bool) and why
    assert (torch.backends.cpu.get_cpu_capability() in why) or not ok


@pytest.mark.parametrize("precision", ["int8", "bf16"])
def test_an_optimised_backbone_keeps_its_interface_and_its_own_cache_key(precision):
    if precision == "bf16":
        needs_bf16()
    backbone = load_backbone("whisper-base", tiny=True)
    rng = np.random.default_rng(0)
    items = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (8000, 5200, 12000)]
    examples = [Example(str(i), 0, audio=x, length=len(x) / 16000) for i, x in enumerate(items)]
    ref = extract_pooled(backbone, examples, cache=None, progress=False)
    fast = optimize_for_inference(backbone, precision)
    assert fast.spec == backbone.spec and fast.num_layers == backbone.num_layers
    got = extract_pooled(fast, examples, cache=None, progress=False)
    assert got.dtype == torch.float32 and got.shape == ref.shape
    assert float((got - ref).norm() / ref.norm()) < 0.1
    # features of different precisions never share cache entries (int8 is available everywhere to compare with)
    keys = {backbone_key(backbone, tiny=True, seed=0), backbone_key(fast, tiny=True, seed=0)}
    keys.add(backbone_key(optimize_for_inference(backbone, "int8"), tiny=True, seed=0))
    assert len(keys) == (2 if precision == "int8" else 3)
    assert backbone_key(backbone, tiny=True, seed=0) == backbone_key(load_backbone("whisper-base", tiny=True), tiny=True, seed=0)


def test_onednn_linears_compute_the_same_linear_and_gradients_and_leave_the_model_as_it_was():
    if not onednn_linear_available():
        pytest.skip("torch has no oneDNN float32 linear here")
    head, feats = tiny_head()
    head.train()
    torch.manual_seed(1)
    ref = head({"features": feats})
    (ref ** 2).sum().backward()
    ref_grads = {k: p.grad.clone() for k, p in head.named_parameters()}
    head.zero_grad(set_to_none=True)
    state = {k: v.clone() for k, v in head.state_dict().items()}
    with onednn_linears(head):
        assert type(head.linear) is OneDNNLinear
        torch.manual_seed(1)  # the same dropout mask
        got = head({"features": feats})
        (got ** 2).sum().backward()
    assert type(head.linear) is nn.Linear
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    for k, p in head.named_parameters():
        torch.testing.assert_close(p.grad, ref_grads[k], rtol=1e-4, atol=1e-4)
    assert all(torch.equal(state[k], v) for k, v in head.state_dict().items())


def test_the_onednn_probe_gives_the_same_answer_when_first_asked_under_inference_mode():
    # the answer is cached per process: a probe that failed under inference_mode (it runs a
    # backward) would silently switch oneDNN off for the rest of the run
    onednn_linear_available.cache_clear()
    with torch.inference_mode():
        first = onednn_linear_available()
    onednn_linear_available.cache_clear()
    assert first == onednn_linear_available()


def test_emovox_onednn_switch_turns_it_off(monkeypatch):
    head, _ = tiny_head()
    monkeypatch.setenv("EMOVOX_ONEDNN", "0")
    with onednn_linears(head):
        assert type(head.linear) is nn.Linear
    assert type(optimize_for_inference(head, "fp32").linear) is nn.Linear


# --- accel on real Whisper-base features ------------------------------------------------------------


@pytest.fixture(scope="module")
def whisper_and_clips(whisper_base_dir, emodb_dir):
    wavs = sorted((emodb_dir / "wav").glob("*.wav"))[::67][:8]  # spread over speakers and emotions
    clips = [sf.read(w, dtype="float32")[0] for w in wavs]
    clips[1] = clips[1][:21937]  # a ragged batch
    return load_backbone(str(whisper_base_dir)), clips


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_bf16_and_int8_whisper_base_features_stay_close_to_fp32(whisper_and_clips, precision):
    if precision == "bf16":
        needs_bf16()
    backbone, clips = whisper_and_clips
    inputs = backbone.preprocess(clips)
    with torch.inference_mode():
        ref = pool_all_layers(backbone, inputs)
    # A linear probe of the kind trained on these features (layer-weighted sum, linear), with fixed
    # seeded weights: its decisions should not depend on the inference path.
    torch.manual_seed(0)
    probe = FeatureHead(backbone.num_layers, backbone.hidden_size, 7, dropout=0.0, standardize=False)
    with torch.no_grad():
        probe.linear.weight.normal_(0, 0.05)
        probe.linear.bias.zero_()
    probe.eval()
    ref_pred = logits_of(probe, ref).argmax(1)
    # measured on these 8 clips: bf16 relative error ~0.007, int8 ~0.11 (activation outliers in
    # Whisper's deeper layers); bounds leave room for other CPUs' kernels
    max_rel, min_agree = {"bf16": (0.03, 1.0), "int8": (0.25, 0.75)}[precision]
    fast = optimize_for_inference(backbone, precision)
    with torch.inference_mode():
        got = pool_all_layers(fast, inputs)
    rel = float((got - ref).norm() / ref.norm())
    assert 0 < rel < max_rel, (precision, rel)
    cos = nn.functional.cosine_similarity(got.flatten(1), ref.flatten(1), dim=1)
    assert float(cos.min()) > 1 - 2 * max_rel, (precision, cos)
    agree = float((logits_of(probe, got).argmax(1) == ref_pred).float().mean())
    assert agree >= min_agree, (precision, agree)


# --- small heads train single-threaded -------------------------------------------------------------


def test_small_models_train_on_one_thread_and_the_setting_is_restored():
    head, feats = tiny_head()
    assert compute_threads(head, None) == 1
    assert compute_threads(head, 3) == 3
    big = nn.Linear(2048, SMALL_MODEL_PARAMETERS // 2048 + 1)
    assert compute_threads(big, None) is None

    seen = []

    def collate(batch):
        seen.append(torch.get_num_threads())
        return {"features": torch.stack([e.cached["features"] for e in batch])}

    examples = [Example(str(i), i % 5, length=1.0, cached={"features": feats[i]}) for i in range(40)]
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        Trainer(head.train(), collate, TrainConfig(max_epochs=2, batch_size=8), 5, progress=False).fit(examples, examples[:10])
        assert set(seen) == {1}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


# --- the benchmark ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def speed_module():
    spec = importlib.util.spec_from_file_location("emovox_benchmark_speed", ROOT / "benchmarks" / "speed.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_benchmark_extraction_runs_and_its_10s_baseline_is_the_papers_encoder(speed_module, whisper_and_clips):
    backbone, clips = whisper_and_clips
    examples = [Example(str(i), 0, audio=c, length=len(c) / 16000) for i, c in enumerate(clips[2:5])]
    rows, feats = speed_module.bench_extraction(backbone, examples, ways=("10s", "emovox"), batch_size=2)
    assert [(way, r.clips) for way, r in rows.items()] == [("10s", 3), ("emovox", 3)]
    assert all(r.m.seconds > 0 and r.rate > 0 and r.m.peak_mb > 0 for r in rows.values())
    assert feats["10s"].shape == feats["emovox"].shape == (3, 7, 512)
    # emovox's batched features are each clip's own
    with torch.inference_mode():
        alone = torch.cat([pool_all_layers(backbone, backbone.preprocess([e.audio])) for e in examples])
    torch.testing.assert_close(feats["emovox"], alone, rtol=1e-4, atol=1e-4)
    # the naive 10 s mean includes 8 s of padding frames: clearly not the clip's own features
    assert float((feats["10s"] - feats["emovox"]).norm() / feats["emovox"].norm()) > 0.05
    # on a clip of exactly 10 s there is no padding: the papers' truncated encoder and emovox agree
    ten = np.concatenate(clips)[: 10 * 16000]
    assert ten.size == 160000
    enc10 = speed_module.truncated_encoder(backbone.model.encoder, 500)
    with torch.inference_mode():
        paper = speed_module.naive_pooled(enc10, speed_module.padded_features(backbone.feature_extractor, [ten], 10.0))
        ours = pool_all_layers(backbone, backbone.preprocess([ten]))
    torch.testing.assert_close(paper, ours, rtol=1e-4, atol=1e-4)


def extraction_model(precision: str):
    """A frozen tiny Whisper classifier whose features are extracted in ``precision``."""
    from emovox.models.classifier import ClassifierConfig, ClassifierModel

    config = ClassifierConfig(backbone="whisper-base", tiny=True, mode="frozen", layers="all", combine="concat")
    m = ClassifierModel(config, ["a", "b"], load_backbone("whisper-base", tiny=True))
    m.extract_precision = precision
    return m


def tone_examples(n: int = 6) -> list[Example]:
    from helpers import tone

    return [Example(f"u{i}", i % 2, audio=tone(200 + 90 * i, 0.4 + 0.1 * i), length=0.5) for i in range(n)]


def test_bf16_feature_extraction_is_cached_apart_and_stays_close_to_fp32(tmp_path):
    """train.extract_precision: bf16 features land under their own cache key, near the fp32 ones."""
    from emovox.cache import FeatureCache

    needs_bf16()
    examples = tone_examples()
    cache = FeatureCache(tmp_path)
    fp32 = extraction_model("fp32").prepare(examples, cache=cache, progress=False)
    keys = {p.name for p in tmp_path.iterdir()}
    bf16 = extraction_model("bf16").prepare(examples, cache=cache, progress=False)
    assert len({p.name for p in tmp_path.iterdir()} - keys) == 1  # its own cache folder
    slot = extraction_model("fp32").branch.slot
    for a, b in zip(fp32, bf16, strict=True):
        x, y = a.cached[slot]["pooled"], b.cached[slot]["pooled"]
        assert y.dtype == torch.float32 and not torch.equal(x, y)
        assert float((x - y).norm() / x.norm()) < 0.05


def test_bf16_feature_extraction_is_refused_by_name_on_a_cpu_without_native_bf16(tmp_path, monkeypatch):
    """Rather than emulated slowly; runs on every CPU (the CPU's answer is replaced), cache or none."""
    from emovox.cache import FeatureCache

    monkeypatch.setattr(accel, "bf16_support", lambda: (False, "the CPU has no native bfloat16 instructions"))
    for cache in (None, FeatureCache(tmp_path)):
        with pytest.raises(accel.AccelError, match="bf16.*bfloat16"):
            extraction_model("bf16").prepare(tone_examples(1), cache=cache, progress=False)
    assert not list(tmp_path.iterdir())  # nothing half-written into the cache


def test_auto_extract_precision_is_bf16_only_where_bf16_is_native(monkeypatch):
    from emovox.accel import resolve_extract_precision

    monkeypatch.setattr(accel, "bf16_support", lambda: (True, "amx_bf16"))
    assert resolve_extract_precision("auto") == "bf16"
    monkeypatch.setattr(accel, "bf16_support", lambda: (False, "the CPU has no native bfloat16 instructions"))
    assert resolve_extract_precision("auto") == "fp32"
    assert resolve_extract_precision("fp32") == "fp32" and resolve_extract_precision("bf16") == "bf16"
