"""The ``audio-llm`` kind: tiny Whisper -> trained projector -> frozen tiny Gemma 3 / Llama."""

from __future__ import annotations

import math

import numpy as np
import torch
from llm_fixtures import accuracy, class_logits, example, one_thread, train_steps  # noqa: F401 (an autouse fixture)

from emovox.llm.audio_llm import AudioLLM, AudioLLMConfig, pool_frames
from emovox.llm.lora import LoRAConfig, base_state_dict
from emovox.llm.prompts import PromptConfig

LABELS = ["angry", "happy", "neutral"]
PITCH_HZ = [220.0, 600.0, 1500.0]  # the tone's pitch decides the label


def tones(n: int, seed: int) -> list:
    """Sine tones of random length (0.5-1.5 s), loudness and phase; the transcript says nothing."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        target = i % len(LABELS)
        t = np.arange(int(rng.uniform(0.5, 1.5) * 16000)) / 16000
        wav = rng.uniform(0.2, 0.8) * np.sin(2 * np.pi * PITCH_HZ[target] * t + rng.uniform(0, 6))
        wav = (wav + 0.01 * rng.standard_normal(len(t))).astype(np.float32)
        out.append(example(f"tone{seed}-{i}", target, audio=wav, text="the quick brown fox", length=len(t) / 16000))
    return out


def build(family: str = "gemma3", **kw) -> AudioLLM:
    model = AudioLLM.build(AudioLLMConfig(llm=f"tiny:{family}", audio_tiny=True, **kw), LABELS, seed=0)
    # A random tiny Whisper's 0.02-initialised convolutions are drowned by its unit-scale position
    # table, so its frames say how long a clip is but hardly what it sounds like (a logistic
    # regression on them is at chance for pitch); a trained Whisper's are not. Scaled up, they are.
    with torch.no_grad():
        model.audio.model.encoder.conv1.weight.mul_(10)
        model.audio.model.encoder.conv2.weight.mul_(10)
    return model


def test_projector_learns_tone_pitch_with_the_llm_frozen():
    model = build("gemma3")  # the paper's Whisper-Gemma, with its prompt (Figure 2) in Gemma's chat frame
    train, test = model.prepare(tones(30, 0)), model.prepare(tones(30, 1))
    assert {name for g in model.param_groups(1e-3, None) for name, p in model.named_parameters() if any(p is q for q in g["params"])} == {
        "projector.linear.weight", "projector.linear.bias"}
    llm_before = {k: v.clone() for k, v in model.lm.state_dict().items()}
    audio_before = {k: v.clone() for k, v in model.audio.state_dict().items()}
    train_steps(model, train, steps=40, lr=3e-3)
    assert accuracy(model, test) >= 0.9  # held-out tones; chance is 1/3
    assert all(torch.equal(llm_before[k], v) for k, v in model.lm.state_dict().items())
    assert all(torch.equal(audio_before[k], v) for k, v in model.audio.state_dict().items())


def test_llama_with_a_short_prompt_learns_too():
    model = build("llama", prompt=PromptConfig(template="Audio: {audio}", chat="never", answer_prefix="emotion ="))
    assert model.fields() == {"audio"}  # no {text} in the template: transcripts are not needed
    train, test = model.prepare(tones(30, 0)), model.prepare(tones(30, 1))
    train_steps(model, train, steps=40, lr=1e-2)
    assert accuracy(model, test) >= 0.9


def test_cached_tokens_equal_the_raw_audio_path_and_batching_changes_nothing():
    model = build("gemma3").eval()
    clips = tones(5, 2)
    raw = class_logits(model, clips, batch_size=5)
    cached = class_logits(model, model.prepare(clips), batch_size=5)
    alone = torch.cat([class_logits(model, [c]) for c in clips])
    assert torch.allclose(raw, cached, atol=1e-5)
    assert torch.allclose(raw, alone, atol=1e-4)


def test_pooling_counts_only_real_frames():
    hidden = torch.arange(2 * 7 * 1, dtype=torch.float32).view(2, 7, 1)
    mask = torch.tensor([[1] * 7, [1] * 3 + [0] * 4])
    pooled, lengths = pool_frames(hidden, mask, 3, "mean")
    assert lengths.tolist() == [3, 1]
    assert pooled[0, :, 0].tolist() == [1.0, 4.0, 6.0]  # the last window holds one real frame
    assert pooled[1, 0, 0].item() == 8.0  # frames 7, 8, 9 of the second clip
    stacked, _ = pool_frames(hidden, mask, 3, "stack")
    assert stacked.shape == (2, 3, 3) and stacked[0, 2].tolist() == [6.0, 0.0, 0.0]


def test_audio_tokens_per_clip():
    model = build("gemma3")
    # 20 ms Whisper frames, 10 per token: 5 tokens per second, 50 for the 10 s crop
    for seconds in (0.5, 2.59, 8.98, 12.0):
        clip = np.zeros(int(seconds * 16000), dtype=np.float32)
        clip[::7] = 0.1
        (tokens,) = model.audio_tokens([clip])
        expected = math.ceil(math.ceil(min(seconds, 10.0) * 100 / 2) / 10)
        assert tokens.shape[0] == expected <= 50


def test_saved_and_reloaded_predicts_the_same(tmp_path):
    model = build("gemma3", lora=LoRAConfig(rank=4, alpha=8, dropout=0.0))
    train = model.prepare(tones(8, 0))
    base_before = {k: v.clone() for k, v in base_state_dict(model.lm).items()}
    train_steps(model, train, steps=4, lr=3e-3)
    assert any("lora_" in n for g in model.param_groups(1e-3, None) for n, p in model.named_parameters()
               if any(p is q for q in g["params"]))
    assert all(torch.equal(base_before[k], v) for k, v in base_state_dict(model.lm).items())  # LoRA: base untouched
    clips = tones(4, 3)
    before = class_logits(model, clips)
    model.save(tmp_path)
    for part in ("weights.safetensors", "branches/audio/model.safetensors", "branches/llm/model.safetensors",
                 "adapters/llm/adapter_model.safetensors", "llm.json"):
        assert (tmp_path / part).is_file(), part
    assert not list(tmp_path.rglob("*.bin"))
    loaded = AudioLLM.load(tmp_path, model.config, LABELS)
    assert torch.allclose(class_logits(loaded, clips), before, atol=1e-5)


def test_real_whisper_base_keeps_emodb_clips_under_50_tokens(emodb_dir, whisper_base_dir):
    import soundfile as sf

    from emovox.backbones.loader import load_backbone
    from emovox.llm.audio_llm import AudioProjector

    longest = max(emodb_dir.glob("wav/*.wav"), key=lambda p: sf.info(str(p)).frames)
    wav, rate = sf.read(str(longest), dtype="float32")
    assert rate == 16000
    audio = load_backbone(whisper_base_dir)
    enc = audio(audio.preprocess([wav]))
    pooled, lengths = pool_frames(enc.hidden, enc.mask, 10, "mean")
    assert 40 < int(lengths[0]) <= 50  # the longest EmoDB clip (8.98 s): 45 audio tokens
    assert AudioProjector(audio.hidden_size, 576, target_std=0.05, seed=0)(pooled).shape == (1, int(lengths[0]), 576)
