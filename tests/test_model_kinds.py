"""Model kinds: the registry, a two-branch (audio + text) recognizer end to end, context branches,
and recognizer directories written by emovox 0.1."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TEXTS, make_tone_manifest, tone

from emovox.config import config_from_dict
from emovox.data.examples import Example
from emovox.errors import ConfigError, RecognizerError
from emovox.models import registry
from emovox.models.classifier import ClassifierConfig, ClassifierModel


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return make_tone_manifest(tmp_path_factory.mktemp("corpus"))


def fusion_config(manifest: Path, tmp: Path, **extra) -> dict:
    return {
        "name": "fusion",
        "corpus": f"manifest:{manifest}",
        "protocol": "speaker-groups:4",
        "cache_dir": str(tmp / "cache"),
        "model": {
            "kind": "fusion",
            "branches": [
                {"backbone": "wav2vec2-base", "tiny": True, "mode": "frozen", "layers": "all"},
                {"backbone": "bert-base", "tiny": True, "mode": "frozen", "layers": "all", "combine": "concat"},
            ],
            "projection": 16,
            **extra,
        },
        "train": {"lr": 0.02, "batch_size": 8, "max_epochs": 12, "patience": 12, "threads": 1},
    }


def test_unknown_kinds_and_bad_sections_are_config_errors(manifest, tmp_path):
    data = fusion_config(manifest, tmp_path)
    data["model"]["kind"] = "telepathy"
    with pytest.raises(ConfigError, match="unknown model kind 'telepathy'.*classifier, fusion"):
        config_from_dict(data)
    data = fusion_config(manifest, tmp_path)
    data["model"]["branches"] = []
    with pytest.raises(ConfigError, match="one to four branches"):
        config_from_dict(data)
    data = fusion_config(manifest, tmp_path)
    data["model"]["branches"][0]["typo"] = 1
    with pytest.raises(ConfigError, match="typo"):
        config_from_dict(data)
    # a classifier is the default kind, and 0.1's spelling still reads
    cfg = config_from_dict({"corpus": "x:y", "protocol": "stratified:2", "model": {"backbone": "bert-base", "layer_weights": True}})
    assert cfg.model.kind == "classifier" and cfg.model.layers == "all" and cfg.model.combine == "weighted"


def test_two_branch_recognizer_trains_saves_loads_and_predicts(manifest, tmp_path):
    from emovox.inference.recognizer import Recognizer
    from emovox.training.final import train_recognizer

    cfg = config_from_dict(fusion_config(manifest, tmp_path))
    trained = train_recognizer(cfg, tmp_path / "rec", progress=False)
    d = tmp_path / "rec"
    info = json.loads((d / "emovox.json").read_text())
    assert info["kind"] == "fusion" and info["modality"] == "audio+text" and info["fields"] == ["audio", "text"]
    assert sorted(p.name for p in (d / "branches").iterdir()) == ["audio", "text"]
    assert [b["name"] for b in info["model"]["branches"]] == ["audio", "text"]
    rec = Recognizer.load(d)
    assert rec.needs_audio and rec.needs_text and rec.labels == ("high", "low")
    clips = [tone(520, 0.5), tone(180, 0.5)]
    texts = [TEXTS["high"][0], TEXTS["low"][0]]
    preds = rec.predict(clips, text=texts)
    assert [p.label for p in preds] == ["high", "low"]
    # the reloaded recognizer computes what the trained model computed
    examples = [Example(str(i), 0, audio=c, text=t, length=0.5) for i, c, t in zip(range(2), clips, texts, strict=True)]
    with torch.inference_mode():
        before = torch.softmax(trained.model(trained.model.collate(examples)), -1).numpy()
    np.testing.assert_allclose(before, rec.predict_examples(examples), atol=1e-5)
    np.testing.assert_allclose([[p.probabilities["high"], p.probabilities["low"]] for p in preds], before, atol=1e-5)
    # a fusion model needs both inputs; audio without a transcript needs an ASR model
    with pytest.raises(RecognizerError, match="transcripts and none was given"):
        rec.predict(clips[0])


def test_cv_of_a_fusion_model_uses_the_feature_cache_and_saves_validation_predictions(manifest, tmp_path):
    from emovox.training.runner import run_cv

    cfg = config_from_dict(fusion_config(manifest, tmp_path))
    res = run_cv(cfg, tmp_path / "run", progress=False)
    assert res["kind"] == "fusion" and res["backbone"] == "wav2vec2-base + bert-base" and res["pooled"]["n"] == 24
    assert res["pooled"]["ua"] > 0.9  # tones and their words both give the class away
    for k in range(1, 5):
        valid = (tmp_path / "run" / f"fold_{k}" / "valid_predictions.csv").read_text().splitlines()
        assert valid[0] == "id,fold,true,pred,p_high,p_low" and len(valid) > 1
    cached = list((tmp_path / "cache").iterdir())
    assert len(cached) == 2  # one cache folder per frozen branch


def context_model(**branch) -> ClassifierModel:
    from emovox.backbones.loader import load_backbone

    config = ClassifierConfig(backbone="bert-base", tiny=True, mode="frozen", input="context", layers="all", **branch)
    return ClassifierModel(config, ["a", "b"], load_backbone("bert-base", tiny=True))


def test_a_context_branch_reads_the_previous_utterance_and_a_learned_vector_when_there_is_none():
    model = context_model().eval()
    assert model.fields() == {"context_text"} and model.branch.name == "context_text"
    with torch.no_grad():
        model.branch.no_input.normal_()
    batch = [Example("first", 0, context_text=None), Example("second", 1, context_text="what did you say")]
    with torch.inference_mode():
        states = model.branch(model.collate(batch)[model.branch.name])
        alone = model.branch(model.collate(batch[1:])[model.branch.name])
    torch.testing.assert_close(states[0], model.branch.no_input)
    torch.testing.assert_close(states[1], alone[0], atol=1e-5, rtol=1e-5)
    # the learned vector trains
    assert model.branch.no_input.requires_grad


def test_a_pair_branch_reads_previous_and_current_as_one_tokenizer_pair():
    from emovox.backbones.loader import load_backbone

    config = ClassifierConfig(backbone="bert-base", tiny=True, mode="frozen", context=True)
    model = ClassifierModel(config, ["a", "b"], load_backbone("bert-base", tiny=True))
    assert config.input == "pair" and model.fields() == {"text", "context_text"}
    inputs = model.collate([Example("x", 0, text="fine", context_text="how are you")])[model.branch.name]["inputs"]
    tok = model.branch.backbone.tokenizer
    assert inputs["input_ids"][0].tolist() == tok("how are you", "fine")["input_ids"]


def write_v1(model: ClassifierModel, directory: Path, kind: str, layer_weights: bool) -> None:
    """A recognizer directory as emovox 0.1 wrote it: backbone/, head.safetensors, emovox.json schema 1."""
    from safetensors.torch import save_file

    model.branch.backbone.save(directory / "backbone")
    state = model.state_dict()
    head = {"linear.weight": state["head.linear.weight"], "linear.bias": state["head.linear.bias"]}
    if kind != "end-to-end":
        mean, std = state["reducer.standardize.mean"], state["reducer.standardize.std"]
        if not layer_weights:  # 0.1 kept statistics of every layer and used the last
            mean = torch.cat([torch.zeros(model.branch.total_layers - 1, mean.shape[1]), mean])
            std = torch.cat([torch.ones(model.branch.total_layers - 1, std.shape[1]), std])
        head.update(feat_mean=mean.contiguous(), feat_std=std.contiguous())
    if layer_weights:
        head["layer_weights.weights"] = state["reducer.weights.weights"]
    save_file({k: v.contiguous() for k, v in head.items()}, str(directory / "head.safetensors"))
    m = model.config
    info = {
        "schema_version": 1, "name": "old", "kind": kind, "modality": "audio", "labels": list(model.labels),
        "model": {"backbone": m.backbone, "tiny": True, "mode": m.mode, "top_layers": 2, "pooling": m.pooling,
                  "layer_weights": layer_weights, "standardize": True, "dropout": 0.1, "context": False,
                  "max_tokens": 100, "max_seconds": 10.0},
        "preprocessing": {"sample_rate": 16000, "max_seconds": 10.0, "max_tokens": 100, "context": False},
        "training": {},
    }
    (directory / "emovox.json").write_text(json.dumps(info))


@pytest.mark.parametrize("kind, mode, layer_weights", [("frozen-features", "frozen", True), ("frozen-features", "frozen", False),
                                                       ("end-to-end", "finetune", True)])
def test_recognizers_saved_by_0_1_still_load_and_predict_the_same(tmp_path, kind, mode, layer_weights):
    from emovox.backbones.loader import load_backbone
    from emovox.inference.recognizer import Recognizer

    torch.manual_seed(0)
    config = ClassifierConfig(backbone="wav2vec2-base", tiny=True, mode=mode, layers="all" if layer_weights else "last",
                              standardize=kind != "end-to-end")
    model = ClassifierModel(config, ["high", "low"], load_backbone("wav2vec2-base", tiny=True)).eval()
    with torch.no_grad():  # statistics and weights that matter
        for name, p in model.named_parameters():
            if not name.startswith("branch.backbone."):
                p.normal_()
        if model.reducer.standardize.enabled:
            model.reducer.standardize.mean.normal_()
            model.reducer.standardize.std.uniform_(0.5, 2.0)
    write_v1(model, tmp_path / "old", kind, layer_weights)
    rec = Recognizer.load(tmp_path / "old")
    assert rec.info["upgraded_from_schema"] == 1 and rec.info["kind"] == "classifier"
    clips = [tone(520, 0.5), tone(180, 0.7)]
    examples = [Example(str(i), 0, audio=c, length=len(c) / 16000) for i, c in enumerate(clips)]
    with torch.inference_mode():
        expected = torch.softmax(model(model.collate(examples)), -1).numpy()
    np.testing.assert_allclose(rec.predict_proba(clips), expected, atol=1e-5)
    # the upgrade route models/legacy.py names before its removal (0.3.0): load, save, read as schema 2
    rec.save(tmp_path / "new")
    assert json.loads((tmp_path / "new" / "emovox.json").read_text())["schema_version"] == 2
    upgraded = Recognizer.load(tmp_path / "new")
    assert not (tmp_path / "new" / "head.safetensors").exists() and (tmp_path / "new" / "weights.safetensors").is_file()
    np.testing.assert_allclose(upgraded.predict_proba(clips), expected, atol=1e-5)


def test_a_0_1_recognizer_that_cannot_be_converted_says_what_to_do(tmp_path):
    from emovox.backbones.loader import load_backbone
    from emovox.inference.recognizer import Recognizer

    config = ClassifierConfig(backbone="wav2vec2-base", tiny=True, mode="finetune", layers="all")
    model = ClassifierModel(config, ["high", "low"], load_backbone("wav2vec2-base", tiny=True))
    write_v1(model, tmp_path / "old", "end-to-end", True)
    info = json.loads((tmp_path / "old" / "emovox.json").read_text())
    info["model"]["pooling"] = "attention"
    (tmp_path / "old" / "emovox.json").write_text(json.dumps(info))
    with pytest.raises(RecognizerError, match="retrain it with `emovox train`"):
        Recognizer.load(tmp_path / "old")


def test_every_registered_kind_declares_its_config_and_fields():
    for kind in registry.KINDS:
        cls = registry.kind_class(kind)
        assert cls.kind == kind and cls.Config.model_fields["kind"].default == kind
