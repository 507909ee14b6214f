"""A recognizer directory's README.md is a model card that huggingface_hub's own parser reads back.

The cards come from real runs: a tiny recognizer trained on the tone corpus, once alone and once
with the results.json of a real `cv` run of the same recipe, whose figures must reappear in the
hub metadata (model-index) and in the card's table.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import make_tone_manifest

from emovox.model_card import card_data, model_card

hub = pytest.importorskip("huggingface_hub", reason="huggingface_hub (installed with transformers) reads model cards")


def tone_config(root: Path) -> dict:
    return {
        "name": "tiny-cv-card",
        "corpus": f"manifest:{make_tone_manifest(root / 'corpus')}",
        "protocol": "speaker-groups:4",
        "validation": "strict",
        "cache_dir": str(root / "cache"),
        "model": {"backbone": "wav2vec2-base", "tiny": True, "mode": "frozen"},
        "train": {"lr": 0.05, "batch_size": 8, "max_epochs": 4, "patience": 4, "threads": 1},
    }


@pytest.fixture(scope="module")
def cv_recognizer(tmp_path_factory) -> tuple[Path, dict]:
    """A recognizer trained with the results.json of a real cross-validation run quoted in its card."""
    from emovox.config import config_from_dict
    from emovox.training.final import train_recognizer
    from emovox.training.runner import run_cv

    root = tmp_path_factory.mktemp("card")
    cfg = config_from_dict(tone_config(root))
    results = run_cv(cfg, root / "run", progress=False)
    train_recognizer(cfg, root / "recognizer", progress=False, cv_results=root / "run" / "results.json")
    return root / "recognizer", results


def test_card_of_a_trained_recognizer_parses_as_a_hub_model_card(audio_recognizer_dir):
    card = hub.ModelCard.load(audio_recognizer_dir / "README.md")
    data = card.data.to_dict()
    info = json.loads((audio_recognizer_dir / "emovox.json").read_text())
    assert data["library_name"] == "emovox" and data["pipeline_tag"] == "audio-classification"
    assert {"emovox", "speech-emotion-recognition", "audio-classification", "wav2vec2-base"} <= set(data["tags"])
    assert data["datasets"] == ["manifest"]  # the manifest's file name (manifest.csv)
    assert "base_model" not in data  # a tiny random build started from no hub model
    assert "model-index" not in data  # no cross-validation: no evaluation results are claimed
    text = card.text
    for i, label in enumerate(info["labels"]):
        assert f"| {i} | {label} |" in text  # the label map
    assert "No cross-validated evaluation" in text and "not a test score" in text
    # size on disk: the actual bytes of every weight file, and their total
    files = sorted(f for f in audio_recognizer_dir.rglob("*.safetensors") if f.parts[-2] != "runtime")  # not weights of their own
    assert {f.relative_to(audio_recognizer_dir).as_posix() for f in files} == {"weights.safetensors", "branches/audio/model.safetensors"}
    for f in files:
        assert f"| `{f.relative_to(audio_recognizer_dir).as_posix()}` | {f.stat().st_size:,} |" in text
    assert f"{sum(f.stat().st_size for f in files):,} bytes" in text


def test_card_quotes_the_cross_validation_it_was_given(cv_recognizer):
    directory, results = cv_recognizer
    card = hub.ModelCard.load(directory / "README.md")
    evals = card.data.eval_results
    assert evals, "a recognizer trained with --cv-results must list its evaluation results"
    got = {(e.metric_type, e.metric_config): e.metric_value for e in evals}
    hub_ids = {"wa": "accuracy", "ua": "recall", "macro_f1": "f1"}
    assert got == {(hub_ids[k], how): round(results[how][k], 4) for k in hub_ids for how in ("pooled", "mean")}
    for e in evals:
        assert e.task_type == "audio-classification" and e.dataset_split == "speaker-groups:4"
        assert e.dataset_args == {"protocol": "speaker-groups:4", "folds": 4}
    assert card.data.metrics == ["accuracy", "recall", "f1"]
    ua = next(line for line in card.text.splitlines() if line.startswith("| UA"))
    assert f"{results['mean']['ua']:.4f} ± {results['std']['ua']:.4f} | {results['pooled']['ua']:.4f} |" in ua
    assert "protocol `speaker-groups:4`, 4 folds" in card.text


def test_text_recognizer_card(text_recognizer_dir):
    data = hub.ModelCard.load(text_recognizer_dir / "README.md").data
    assert data.pipeline_tag == "text-classification" and "text-classification" in data.tags


def test_corpus_language_base_model_and_confidence_intervals():
    """Metadata that the tiny tone recognizers cannot show: a real corpus, a hub backbone, CIs."""
    info = {
        "name": "emodb-whisper-base-frozen",
        "modality": "audio",
        "kind": "frozen-features",
        "model": {"backbone": "whisper-base", "mode": "frozen"},
        "training": {"corpus": "emodb:/data/emodb", "best_epoch": 3, "best_valid_ua": 0.8},
        "cross_validation": {
            "protocol": "leave-one-speaker-out", "folds": 10, "results": "runs/x/results.json",
            "mean": {"wa": 0.85, "ua": 0.82, "macro_f1": 0.79}, "std": {"wa": 0.05, "ua": 0.07, "macro_f1": 0.08},
            "pooled": {"wa": 0.8523, "ua": 0.8437, "macro_f1": 0.84},
            "ci": {"ua": [0.81, 0.87]}, "ci_level": 0.95,
        },
    }
    local = card_data({**info, "model": {"backbone": "/data/models/whisper-base/", "mode": "frozen"}}, ["angry", "neutral"])
    assert "whisper-base" in local.tags and not any("data" in t for t in local.tags) and local.base_model is None
    data = card_data(info, ["angry", "neutral"])
    assert data.language == ["de"] and data.datasets == ["emodb"] and data.base_model == "openai/whisper-base"
    assert data.eval_results[0].dataset_name == "EmoDB (leave-one-speaker-out, 10 folds)"
    text = model_card(info, ["angry", "neutral"])
    parsed = hub.ModelCard(text)
    assert parsed.data.eval_results == data.eval_results  # what we wrote is what the hub reads
    assert "| UA (macro recall) | 0.8200 ± 0.0700 | 0.8437 | 0.8100 - 0.8700 |" in parsed.text
    assert "| WA (accuracy) | 0.8500 ± 0.0500 | 0.8523 | - |" in parsed.text
    assert "Size on disk" not in text  # nothing measured without a directory


def test_a_logistic_head_is_described_by_its_choices_not_by_epochs():
    """A logistic head has no epochs: the card says what was chosen, how, and that it was refitted."""
    training = {
        "corpus": "emodb:/data/emodb", "best_epoch": 0, "best_valid_ua": 1.0, "validation": "held-out speakers",
        "choices": {"C": 0.3, "select": "inner-logloss", "layers": [2, 3, 4, 5], "refit": True, "temperature": 1.05},
        "config": {"train": {"seed": 0, "lr": 1e-5}},
    }
    text = model_card({"name": "x", "modality": "audio", "model": {"backbone": "whisper-base"}, "training": training},
                      ["angry", "neutral"])
    assert "C = 0.3, layers [2, 3, 4, 5]" in text and "log-loss over speaker groups" in text
    assert "refitted on all the training data" in text and "temperature 1.050" in text
    assert "Best epoch" not in text and "lr 1e-05" not in text


def test_the_card_names_the_metric_that_chose_the_epoch():
    from emovox.model_card import selection_text

    assert selection_text({"best_valid_ua": 0.9}) == "validation UA 0.9000"
    assert selection_text({"select_on": "ua", "best_valid_ua": 0.9, "best_valid_score": 0.9}) == "validation UA 0.9000"
    text = selection_text({"select_on": "weighted_f1", "best_valid_ua": 0.41, "best_valid_score": 0.5826})
    assert text == "validation weighted-F1 0.5826 (UA 0.4100)"
