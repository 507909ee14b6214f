"""The ``llm-classifier`` kind on tiny random Llama and Gemma 3 models with offline tokenizers."""

from __future__ import annotations

import random

import pytest
import torch
from llm_fixtures import accuracy, class_logits, example, one_thread, train_steps  # noqa: F401 (an autouse fixture)

from emovox.data.examples import MissingTranscriptError
from emovox.errors import LLMError, RecognizerError
from emovox.llm.classifier import LLMClassifier, LLMClassifierConfig
from emovox.llm.lora import LoRAConfig, base_state_dict
from emovox.llm.prompts import PromptConfig

LABELS = ["angry", "happy", "neutral"]
KEYWORDS = ["apple", "river", "window"]  # not emotion words: the mapping must be learnt
FILLER = "the a is was it you we they this that what why how where when yes very so sunny rainy table green blue red".split()
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def keyword_task(n: int, seed: int) -> list:
    """Five random filler words with the class's keyword at a random place."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        target = i % len(LABELS)
        words = rng.sample(FILLER, 5)
        words.insert(rng.randrange(6), KEYWORDS[target])
        out.append(example(f"s{seed}-{i}", target, text=" ".join(words)))
    return out


def tiny_cfg(family: str, **kw) -> LLMClassifierConfig:
    # A short prompt: in a random 2-layer model every prompt token dilutes the keyword's attention
    kw.setdefault("prompt", PromptConfig(template="Text: {text}", chat="never"))
    kw.setdefault("lora", LoRAConfig(rank=8, alpha=16, dropout=0.0, target_modules=ALL_LINEAR))
    return LLMClassifierConfig(llm=f"tiny:{family}", **kw)


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_lora_learns_keyword_task(family):
    train, test = keyword_task(30, seed=0), keyword_task(30, seed=1)
    model = LLMClassifier.build(tiny_cfg(family), LABELS, seed=0)
    base_before = {k: v.clone() for k, v in base_state_dict(model.lm).items()}
    losses = train_steps(model, train, steps=60, lr=3e-3)
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10 / 3
    assert accuracy(model, test) >= 0.9  # held-out sentences, chance is 1/3
    # only the adapters trained: the base model is bit-for-bit what it was
    after = base_state_dict(model.lm)
    assert all(torch.equal(base_before[k], after[k]) for k in base_before)
    # the trained model also *says* the label word: generation + answer parsing get it right
    answers = model.zero_shot_answers(test)
    assert answers.unparsed <= 3
    assert sum(p == e.target for p, e in zip(answers.predictions, test, strict=True)) >= 0.8 * len(test)


def test_adapter_saved_and_reloaded_predicts_the_same(tmp_path):
    train = keyword_task(12, seed=0)
    model = LLMClassifier.build(tiny_cfg("llama", prompt=PromptConfig()), LABELS, seed=0)  # the paper's chat prompt
    train_steps(model, train, steps=5, lr=3e-3)
    before = class_logits(model, train)
    model.save(tmp_path)
    assert (tmp_path / "adapters" / "llm" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "adapters" / "llm" / "adapter_config.json").is_file()
    assert (tmp_path / "branches" / "llm" / "model.safetensors").is_file()  # a tiny base travels with it
    assert not list(tmp_path.rglob("*.bin")) and not list(tmp_path.rglob("*.pt"))
    loaded = LLMClassifier.load(tmp_path, model.config, LABELS)
    assert torch.allclose(class_logits(loaded, train), before, atol=1e-5)
    # the adapter changed the model: the base alone scores differently
    fresh = LLMClassifier.build(tiny_cfg("llama", prompt=PromptConfig()), LABELS, seed=0)
    assert not torch.allclose(class_logits(fresh, train), before, atol=1e-3)


def test_adapters_are_read_from_safetensors_only(tmp_path):
    model = LLMClassifier.build(tiny_cfg("llama"), LABELS, seed=0)
    model.save(tmp_path)
    (tmp_path / "adapters" / "llm" / "adapter_model.bin").write_bytes(b"not opened")
    with pytest.raises(RecognizerError, match="pickled weights"):
        LLMClassifier.load(tmp_path, model.config, LABELS)
    (tmp_path / "adapters" / "llm" / "adapter_model.bin").unlink()
    (tmp_path / "adapters" / "llm" / "adapter_model.safetensors").unlink()
    with pytest.raises(RecognizerError, match="LoRA adapter missing"):
        LLMClassifier.load(tmp_path, model.config, LABELS)


def test_reload_refuses_other_label_words(tmp_path):
    model = LLMClassifier.build(tiny_cfg("llama"), LABELS, seed=0)
    model.save(tmp_path)
    other = tiny_cfg("llama", label_words={"happy": "glad"})
    with pytest.raises(RecognizerError, match=r"trained with the label words \['anger', 'joy', 'neutral'\]"):
        LLMClassifier.load(tmp_path, other, LABELS)


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_padded_batch_equals_items_alone(family):
    model = LLMClassifier.build(tiny_cfg(family, prompt=PromptConfig()), LABELS, seed=0).eval()
    items = [example("a", 0, text="hi"), example("b", 1, text="a much longer sentence about the river and the table"),
             example("c", 2, text="yes")]
    batch = class_logits(model, items, batch_size=3)
    alone = torch.cat([class_logits(model, [e]) for e in items])
    assert torch.allclose(batch, alone, atol=1e-5)


@pytest.mark.parametrize("eos", [False, True])
def test_loss_is_the_answer_words_next_token_ce(eos):
    prompt = PromptConfig(template="Text: {text}", chat="never", answer_eos=eos)
    model = LLMClassifier.build(tiny_cfg("gemma3", prompt=prompt), LABELS, seed=0).eval()
    items = keyword_task(3, seed=0)
    targets = torch.tensor([e.target for e in items])
    with torch.no_grad():
        loss, scores = model.loss(model.collate(items), targets)
    # by hand, one utterance at a time: full-vocabulary logits, prompt + answer tokens
    total = 0.0
    for e in items:
        prompt = model.encoder.prompt_ids(e.text)
        answer = list(model.encoder.verbalizer.token_ids[e.target]) + ([model.tokenizer.eos_token_id] if eos else [])
        with torch.no_grad():
            logits = model.lm(input_ids=torch.tensor([prompt + answer])).logits[0]
        rows = logits[len(prompt) - 1: len(prompt) - 1 + len(answer)]
        total += float(torch.nn.functional.cross_entropy(rows, torch.tensor(answer)))
    assert float(loss) == pytest.approx(total / len(items), rel=1e-4)
    # the scores from the same pass are forward's class logits
    assert torch.allclose(scores, model(model.collate(items)), atol=1e-4)
    # class weights weight each utterance's loss by its target's weight
    with torch.no_grad():
        weighted, _ = model.loss(model.collate(items), targets, torch.tensor([1.0, 0.0, 0.0]))
        alone, _ = model.loss(model.collate(items[:1]), targets[:1])
    assert float(weighted) == pytest.approx(float(alone), rel=1e-4)


def test_zero_shot_mode_trains_nothing_and_counts_fallbacks():
    model = LLMClassifier.build(tiny_cfg("llama", mode="zero-shot"), LABELS, seed=0)
    assert model.param_groups(1e-3, None) == []
    assert not any(p.requires_grad for p in model.parameters())
    items = keyword_task(4, seed=0)
    result = model.zero_shot_answers(items)
    assert len(result.answers) == 4
    # a random model babbles: whatever it said, unparsable answers fell back to neutral and were counted
    for parsed, prediction in zip(result.parsed, result.predictions, strict=True):
        assert prediction == (LABELS.index(parsed.label) if parsed.label else LABELS.index("neutral"))
    assert result.summary()["unparsed"] == sum(p.label is None for p in result.parsed)
    with pytest.raises(LLMError, match="fallback"):
        LLMClassifier.build(tiny_cfg("llama", mode="zero-shot"), ["angry", "happy"], seed=0)


def test_missing_transcript_names_the_utterance():
    model = LLMClassifier.build(tiny_cfg("llama"), LABELS, seed=0)
    with pytest.raises(MissingTranscriptError, match="utt-7"):
        model.collate([example("utt-7", 0, text="  ")])
