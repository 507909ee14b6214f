"""The LLM kinds through emovox's own machinery: generic trainer, cross-validation runner, recognizer directory.

They are reached by name through ``emovox.models.registry.KINDS``, as a user's config reaches them.
"""

from __future__ import annotations

import csv
import json

import pytest
from helpers import tone_rows, write_manifest

from emovox.config import config_from_dict
from emovox.errors import RecognizerError
from emovox.models import registry

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def test_the_llm_kinds_are_registered_by_name():
    for kind in ("llm-classifier", "audio-llm", "qwen2-audio-lora"):
        assert registry.kind_class(kind).kind == kind


@pytest.fixture
def manifest(tmp_path):
    # 4 speakers x 2 classes x 6 clips; transcripts "low words number k" / "high words number k"
    return write_manifest(tmp_path / "corpus" / "manifest.csv", tone_rows(tmp_path / "corpus", per_class=6))


def run_config(manifest, tmp_path, model: dict, **train) -> dict:
    return {
        "name": "llm",
        "corpus": f"manifest:{manifest}",
        "protocol": "speaker-groups:4",
        "validation": "strict",
        "cache_dir": str(tmp_path / "cache"),
        "model": model,
        "train": {"lr": 3e-3, "batch_size": 4, "max_epochs": 4, "patience": 4, "threads": 1, "weight_decay": 0.0, **train},
        "baseline": False,
    }


def test_llm_classifier_cross_validation_and_recognizer(manifest, tmp_path):
    from emovox.inference.recognizer import Recognizer
    from emovox.training.final import train_recognizer
    from emovox.training.runner import run_cv

    model = {
        "kind": "llm-classifier",
        "llm": "tiny:gemma3",
        "label_words": {"low": "sadness", "high": "joy"},
        "prompt": {"template": "Text: {text}", "chat": "never"},
        "lora": {"rank": 8, "alpha": 16, "dropout": 0.0, "target_modules": ALL_LINEAR},
    }
    cfg = config_from_dict(run_config(manifest, tmp_path, model))
    results = run_cv(cfg, tmp_path / "run", progress=False)
    assert len(results["folds"]) == 4
    assert results["pooled"]["ua"] >= 0.9  # the transcript's keyword decides the label
    with open(tmp_path / "run" / "fold_1" / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["id", "fold", "true", "pred", "p_high", "p_low"]  # labels in corpus order
    assert (tmp_path / "run" / "fold_1" / "valid_predictions.csv").is_file()

    out = tmp_path / "recognizer"
    train_recognizer(cfg, out, progress=False)
    meta = json.loads((out / "emovox.json").read_text())
    assert meta["kind"] == "llm-classifier" and meta["modality"] == "text"
    assert "adapters/llm/adapter_model.safetensors" in meta["files"] and "weights.safetensors" in meta["files"]
    assert "llm.json" in meta["files"]  # the base model's record is checksummed like the weights
    rec = Recognizer.load(out)
    predictions = rec.predict(text=["high words number 9", "low words number 9"])
    assert [p.label for p in predictions] == ["high", "low"]
    (out / "llm.json").write_text((out / "llm.json").read_text().replace("{", "{ ", 1))  # edited by hand
    with pytest.raises(RecognizerError, match="llm.json"):
        Recognizer.load(out)


def test_zero_shot_mode_runs_without_gradient_steps(manifest, tmp_path):
    import numpy as np
    import torch
    from sklearn.metrics import balanced_accuracy_score

    from emovox.corpora import load_corpus
    from emovox.data.examples import Example
    from emovox.training.runner import run_cv

    model = {"kind": "llm-classifier", "llm": "tiny:llama", "mode": "zero-shot", "zero_shot": {"fallback": "low"},
             "label_words": {"low": "sadness", "high": "joy"}}
    cfg = config_from_dict(run_config(manifest, tmp_path, model))
    results = run_cv(cfg, tmp_path / "run", progress=False)
    done = json.loads((tmp_path / "run" / "fold_1" / "done.json").read_text())
    assert done["history"] == [] and done["choices"]["mode"] == "zero-shot"
    # every fold's test probabilities are those of the untouched model (built afresh here, as the run builds
    # it), calibrated by the fold's temperature only: no weight of the LLM moved
    corpus = load_corpus(cfg.corpus)
    untouched = registry.build(cfg.model, corpus.labels, seed=cfg.train.seed)
    texts = {u.id: u.text for u in corpus}
    truth, predicted = [], []
    for k in range(1, 5):
        fold = tmp_path / "run" / f"fold_{k}"
        with open(fold / "predictions.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        temperature = json.loads((fold / "done.json").read_text())["calibration"]["temperature"]
        with torch.inference_mode():
            logits = untouched.logits(untouched.collate([Example(r["id"], 0, text=texts[r["id"]]) for r in rows]))
        expected = torch.softmax(logits / temperature, -1).numpy()
        np.testing.assert_allclose([[float(r["p_high"]), float(r["p_low"])] for r in rows], expected, atol=2e-5)
        truth += [r["true"] for r in rows]
        predicted += [r["pred"] for r in rows]
    assert len(truth) == 48
    # and the pooled UA is that of these predictions (scikit-learn's balanced accuracy)
    assert results["pooled"]["ua"] == pytest.approx(balanced_accuracy_score(truth, predicted))


def test_audio_llm_cross_validation_and_recognizer(manifest, tmp_path):
    from helpers import tone

    from emovox.inference.recognizer import Recognizer
    from emovox.training.final import train_recognizer
    from emovox.training.runner import run_cv

    model = {"kind": "audio-llm", "llm": "tiny:gemma3", "audio_tiny": True, "label_words": {"low": "sadness", "high": "joy"}}
    cfg = config_from_dict(run_config(manifest, tmp_path, model, max_epochs=2, lr=1e-3))
    results = run_cv(cfg, tmp_path / "run", progress=False)
    assert len(results["folds"]) == 4 and set(results["pooled"]) >= {"wa", "ua", "macro_f1"}
    # the frozen Whisper ran once per utterance, into the feature cache
    assert len(list((tmp_path / "cache").rglob("*.safetensors"))) == 48

    out = tmp_path / "recognizer"
    train_recognizer(cfg, out, progress=False)
    meta = json.loads((out / "emovox.json").read_text())
    assert meta["kind"] == "audio-llm" and meta["modality"] == "audio+text"
    assert {"branches/audio/model.safetensors", "branches/llm/model.safetensors", "weights.safetensors"} <= set(meta["files"])
    rec = Recognizer.load(out)
    prediction = rec.predict(tone(520.0, 0.6), text="high words number 1")
    assert prediction.label in ("high", "low") and abs(sum(prediction.probabilities.values()) - 1) < 1e-5


def test_checkpoints_leave_out_a_frozen_tied_output_layer():
    """SmolLM2 ties lm_head to embed_tokens: the frozen matrix must not enter every LoRA checkpoint."""
    import torch
    from torch import nn

    from emovox.models.fold_model import learnt_state as trainable_state
    from emovox.training.checkpoint import load_trainable_state

    class TiedLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(50, 8)
            self.head = nn.Linear(8, 50, bias=False)
            self.head.weight = self.embed.weight  # tied, as tie_word_embeddings=True
            self.embed.weight.requires_grad_(False)
            self.adapter = nn.Linear(8, 8)

    model = TiedLM()
    assert "head.weight" in model.state_dict() and "head.weight" not in dict(model.named_parameters())
    state = trainable_state(model)
    assert set(state) == {"adapter.weight", "adapter.bias"}
    other = TiedLM()
    load_trainable_state(other, {k: v.clone() for k, v in state.items()})  # a frozen tied name is not "missing"
    assert torch.equal(other.adapter.weight, model.adapter.weight)
