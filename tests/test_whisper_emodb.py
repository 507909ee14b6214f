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


def config(whisper_base_dir, emodb_dir, tmp_path, seed=0, **model):
    return config_from_dict(
        {
            "name": "whisper-two-speakers",
            "corpus": f"emodb:{emodb_dir}",
            "protocol": "leave-one-speaker-out",
            "validation": "paper",
            "cache_dir": str(tmp_path / "cache"),
            "model": {"backbone": str(whisper_base_dir), **model},
            "train": {"lr": 1e-3, "batch_size": 16, "max_epochs": 15, "patience": 5, "seed": seed},
        }
    )


@pytest.mark.slow
def test_frozen_whisper_base_learns_emotions_of_an_unseen_speaker(two_speakers, whisper_base_dir, emodb_dir, tmp_path):
    """Trained on one speaker (35-38 clips), tested on the other, with three training seeds.

    One seed is a noisy measure at this size: pooled UA over seeds 0-9 ranged 0.40-0.51 (mean
    0.46, sd 0.035) on this copy's original clip lengths, and 0.43-0.53 on the former copy cut to
    2.0 s, where seed 0 happened to pass a single-seed bound of 0.45 that it now misses (0.397).
    The mean of three seeds varies by about 0.02; the features are cached after the first run,
    so the other two cost only their head's training.
    """
    from emovox.training.runner import run_cv

    assert len(two_speakers) == 73 and two_speakers.speakers == ["10", "12"]
    runs = []
    for seed in (0, 1, 2):
        cfg = config(whisper_base_dir, emodb_dir, tmp_path, seed=seed, mode="frozen", layer_weights=True)
        runs.append(run_cv(cfg, tmp_path / f"run{seed}", progress=False, corpus=two_speakers))
    assert all([f["n"] for f in res["folds"]] == [38, 35] for res in runs)
    uas = [res["pooled"]["ua"] for res in runs]
    # far above the 1/7 chance level: each seed at least twice chance, their mean 2.8 times (3 sd under its expectation)
    assert min(uas) > 2 / 7 and sum(uas) / len(uas) > 0.40, uas
    # the original clips' features were computed once and shared by all three runs; the length-augmented
    # training copies (one per clip, on by default) are drawn from each run's seed, so each seed adds its own:
    # 73 + 3 x 73 entries of [7 layers, 512]
    from safetensors.torch import load_file

    entries = list((tmp_path / "cache").rglob("*.safetensors"))
    assert len(entries) == 73 * (1 + 3)
    assert tuple(load_file(str(entries[0]))["pooled"].shape) == (7, 512)


@pytest.mark.slow
def test_finetuning_whisper_base_updates_the_encoder(two_speakers, whisper_base_dir, emodb_dir, tmp_path):
    import torch

    from emovox.backbones import load_backbone
    from emovox.training.runner import run_cv

    cfg = config(whisper_base_dir, emodb_dir, tmp_path, mode="finetune")
    cfg = cfg.model_copy(
        update={"folds": [1], "train": cfg.train.model_copy(update={"max_epochs": 1, "max_steps_per_epoch": 2, "lr": 1e-4})}
    )
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
