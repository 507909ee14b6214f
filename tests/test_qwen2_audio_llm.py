"""The ``qwen2-audio-lora`` kind on a tiny random Qwen2AudioForConditionalGeneration."""

from __future__ import annotations

import torch
from llm_fixtures import accuracy, class_logits, example, one_thread, train_steps  # noqa: F401 (an autouse fixture)
from test_audio_llm import LABELS, tones

from emovox.llm.lora import LoRAConfig, base_state_dict
from emovox.llm.qwen2_audio import Qwen2AudioLoRA, Qwen2AudioLoRAConfig

LM_LINEAR = r".*language_model\..*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


def build(**kw) -> Qwen2AudioLoRA:
    kw.setdefault("lora", LoRAConfig(rank=8, alpha=16, dropout=0.0, target_modules=LM_LINEAR))
    return Qwen2AudioLoRA.build(Qwen2AudioLoRAConfig(tiny=True, **kw), LABELS, seed=0)


def test_lora_on_the_language_model_learns_tone_pitch_with_the_audio_encoder_frozen():
    model = build()
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and "language_model" in n for n in trainable)
    frozen_before = {k: v.clone() for k, v in base_state_dict(model.lm).items()}
    train, test = tones(30, 0), tones(30, 1)
    train_steps(model, train, steps=40, lr=3e-3)
    assert accuracy(model, test) >= 0.9  # chance is 1/3; the transcript is the same for every class
    after = base_state_dict(model.lm)
    assert all(torch.equal(frozen_before[k], after[k]) for k in frozen_before)  # audio tower, projector, LM
    answers = model.zero_shot_answers(test[:12])  # it also says the word: generation + parsing
    assert sum(p == e.target for p, e in zip(answers.predictions, test[:12], strict=True)) >= 10


def test_saved_and_reloaded_predicts_the_same(tmp_path):
    model = build()
    train_steps(model, tones(6, 0), steps=3, lr=3e-3)
    clips = tones(3, 4)
    before = class_logits(model, clips)
    model.save(tmp_path)
    assert (tmp_path / "adapters" / "llm" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "branches" / "qwen2-audio" / "model.safetensors").is_file()
    assert not list(tmp_path.rglob("*.bin"))
    loaded = Qwen2AudioLoRA.load(tmp_path, model.config, LABELS)
    assert torch.allclose(class_logits(loaded, clips), before, atol=1e-5)


def test_prompt_is_the_papers_with_the_audio_first_and_padding_is_invisible():
    model = build(mode="zero-shot")
    text = model._render("hello there")
    assert "Audio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\nSelect the predominant emotion from anger, joy, neutral." in text
    assert text.endswith("Consider also its transcription: hello there<|im_end|>\n<|im_start|>assistant\n")
    clips = [example("a", 0, audio=tones(1, 5)[0].audio, text="hi"),
             example("b", 1, audio=tones(2, 6)[1].audio, text="a much longer transcript than the first one")]
    assert torch.allclose(class_logits(model, clips), torch.cat([class_logits(model, [c]) for c in clips]), atol=1e-4)
    assert model.param_groups(1e-3, None) == []
