"""Real Whisper-base on real EmoDB speech: two speakers, frozen probe and a few fine-tuning steps.

Small enough for the default suite (73 clips); the full 10-speaker experiment is the README's
main job.
"""

from __future__ import annotations

import numpy as np
import pytest

from emovox.config import config_from_dict
from emovox.corpora import load_corpus


@pytest.fixture(scope="module")
def two_speakers(emodb_dir):
    corpus = load_corpus(f"emodb:{emodb_dir}")
    return corpus.subset([u.id for u in corpus if u.speaker in {"10", "12"}])


def config(whisper_base_dir, emodb_dir, tmp_path, **model):
    return config_from_dict(
        {
            "name": "whisper-two-speakers",
            "corpus": f"emodb:{emodb_dir}",
            "protocol": "leave-one-speaker-out",
            "validation": "paper",
            "cache_dir": str(tmp_path / "cache"),
            "model": {"backbone": str(whisper_base_dir), **model},
            "train": {"lr": 1e-3, "batch_size": 16, "max_epochs": 15, "patience": 5},
        }
    )


@pytest.mark.slow
def test_frozen_whisper_base_learns_emotions_of_an_unseen_speaker(two_speakers, whisper_base_dir, emodb_dir, tmp_path):
    from emovox.training.runner import run_cv

    assert len(two_speakers) == 73 and two_speakers.speakers == ["10", "12"]
    cfg = config(whisper_base_dir, emodb_dir, tmp_path, mode="frozen", layer_weights=True)
    res = run_cv(cfg, tmp_path / "run", progress=False, corpus=two_speakers)
    assert [f["n"] for f in res["folds"]] == [38, 35]
    # trained on one speaker, tested on the other: far above the 1/7 chance level
    assert res["pooled"]["ua"] > 0.45, res["pooled"]
    # the features were cached: 73 entries of [7 layers, 512]
    from safetensors.torch import load_file

    entries = list((tmp_path / "cache").rglob("*.safetensors"))
    assert len(entries) == 73
    assert tuple(load_file(str(entries[0]))["pooled"].shape) == (7, 512)


@pytest.mark.slow
def test_finetuning_whisper_base_updates_the_encoder(two_speakers, whisper_base_dir, emodb_dir, tmp_path):
    import torch

    from emovox.backbones import load_backbone
    from emovox.training.runner import run_cv

    cfg = config(whisper_base_dir, emodb_dir, tmp_path, mode="finetune")
    cfg = cfg.model_copy(update={"folds": [1], "train": cfg.train.model_copy(update={"max_epochs": 1, "max_steps_per_epoch": 2, "lr": 1e-4})})
    res = run_cv(cfg, tmp_path / "ft", progress=False, corpus=two_speakers)
    assert res["folds"][0]["n"] == 38
    from safetensors.torch import load_file

    best = load_file(str(tmp_path / "ft" / "fold_1" / "best_model.safetensors"))
    enc_keys = [k for k in best if k.startswith("branch.backbone.") and "layers.0." in k and k.endswith("weight")]
    assert enc_keys, "fine-tuned checkpoint must hold the encoder weights"
    original = load_backbone(str(whisper_base_dir)).state_dict()
    changed = [k for k in enc_keys if not torch.equal(best[k], original[k[len("branch.backbone."):]])]
    assert changed, "two optimizer steps must change the encoder"
    probs = np.loadtxt(tmp_path / "ft" / "predictions.csv", delimiter=",", skiprows=1, usecols=range(4, 11))
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-4)
