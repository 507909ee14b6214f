"""Real Whisper-base on real EmoDB speech: a frozen probe tested on unseen speakers, and a few fine-tuning steps.

Small enough for the default suite (the three smallest speakers, 116 clips); the full 10-speaker
experiment is the README's main job.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import EMODB_SMALL_SPEAKERS

from emovox.config import config_from_dict


def config(whisper_base_dir, emodb_dir, cache_dir, seed=0, **model):
    return config_from_dict(
        {
            "name": "whisper-three-speakers",
            "corpus": f"emodb:{emodb_dir}",
            "protocol": "speaker-groups:3",
            "validation": "strict",
            "cache_dir": str(cache_dir),
            "model": {"backbone": str(whisper_base_dir), **model},
            # extraction as the main recipe does it: bf16 where the CPU has it natively (2.6x faster here), else fp32
            "train": {"lr": 1e-3, "batch_size": 16, "max_epochs": 15, "patience": 5, "seed": seed, "threads": 1,
                      "extract_precision": "auto"},
        }
    )


@pytest.mark.slow
def test_frozen_whisper_base_learns_emotions_of_an_unseen_speaker(emodb_small, emodb_whisper_cache, whisper_base_dir, emodb_dir, tmp_path):
    """Each fold trains on one speaker, chooses its epoch on a second and is tested on the third, which
    nothing saw before the final evaluation (``validation: strict``); three training seeds.

    The bound was set before this version was first run, from what the method should reach: with the
    epoch chosen on the test speaker itself (``validation: paper``, two speakers) seeds 0-9 scored
    pooled UA 0.40-0.51 (mean 0.46, sd 0.035); choosing it on another speaker is honest and costs a few
    points, so about 0.40 is expected. Bound: the mean of three seeds above 0.35 (2.45 times the 1/7
    chance level; the mean of three varies by about 0.02) and every seed at least twice chance. Measured
    afterwards (2026-12-06, this 2-core machine): fp32 features 0.451, 0.414, 0.424 (mean 0.430); bf16 ones
    (``extract_precision: auto`` here) 0.447, 0.414, 0.386 (mean 0.416); the standard baseline on the same
    folds 0.464 with either. The features are cached after the first run, so the other two seeds cost only
    their head's training and their own augmented copies.
    """
    from emovox.training.runner import run_cv

    assert len(emodb_small) == 116 and emodb_small.speakers == list(EMODB_SMALL_SPEAKERS)
    runs = []
    for seed in (0, 1, 2):
        cfg = config(whisper_base_dir, emodb_dir, emodb_whisper_cache, seed=seed, mode="frozen", layer_weights=True)
        runs.append(run_cv(cfg, tmp_path / f"run{seed}", progress=False, corpus=emodb_small))
    # each fold tests one whole speaker; its epoch was chosen on another speaker, and it trained on the third
    assert all([f["n"] for f in res["folds"]] == [43, 38, 35] for res in runs)
    for k in (1, 2, 3):
        parts = {
            part: {json.loads(line)["speaker"] for line in (tmp_path / "run0" / "splits" / f"fold_{k}" / f"{part}.jsonl").open()}
            for part in ("train", "valid", "test")
        }
        assert all(len(speakers) == 1 for speakers in parts.values()) and len(set.union(*parts.values())) == 3, parts
    uas = [res["pooled"]["ua"] for res in runs]
    assert min(uas) >= 2 / 7 and sum(uas) / len(uas) > 0.35, uas
    # the original clips' features were computed once and shared by all three runs (and with the baseline
    # test of tests/test_search_baseline.py, whichever runs first); the length-augmented training copies (one
    # per clip, on by default) are drawn from each run's seed, so each seed adds its own: 116 + 3 x 116
    # entries of [7 layers, 512]
    from safetensors.torch import load_file

    entries = list(emodb_whisper_cache.rglob("*.safetensors"))
    assert len(entries) == 116 * (1 + 3)
    assert tuple(load_file(str(entries[0]))["pooled"].shape) == (7, 512)


@pytest.mark.slow
def test_finetuning_whisper_base_updates_the_encoder(emodb_small, whisper_base_dir, emodb_dir, tmp_path):
    """Fold 1 only (trained on speaker 12, validated on 10, tested on 09), on the first two clips of each
    class of each speaker (40 clips): two optimizer steps of 8 clips. The standard baseline is left out here
    (a frozen model, checked on real EmoDB by tests/test_search_baseline.py); what is asserted is fine-tuning."""
    import torch

    from emovox.backbones.loader import load_backbone
    from emovox.training.runner import run_cv

    firsts: dict[tuple[str, str], list[str]] = {}
    for u in sorted(emodb_small, key=lambda u: u.id):
        firsts.setdefault((u.speaker, u.label), []).append(u.id)
    corpus = emodb_small.subset([i for ids in firsts.values() for i in ids[:2]])
    assert len(corpus) == 40 and len({u.label for u in corpus}) == 7
    cfg = config(whisper_base_dir, emodb_dir, tmp_path / "cache", mode="finetune")
    train = cfg.train.model_copy(update={"max_epochs": 1, "max_steps_per_epoch": 2, "lr": 1e-4, "batch_size": 8})
    cfg = cfg.model_copy(update={"folds": [1], "baseline": False, "train": train})
    res = run_cv(cfg, tmp_path / "ft", progress=False, corpus=corpus)
    assert res["folds"][0]["n"] == len([u for u in corpus if u.speaker == "09"]) == 13
    from safetensors.torch import load_file

    best = load_file(str(tmp_path / "ft" / "fold_1" / "best_model.safetensors"))
    enc_keys = [k for k in best if k.startswith("branch.backbone.") and "layers.0." in k and k.endswith("weight")]
    assert enc_keys, "fine-tuned checkpoint must hold the encoder weights"
    original = load_backbone(str(whisper_base_dir)).state_dict()
    changed = [k for k in enc_keys if not torch.equal(best[k], original[k[len("branch.backbone."):]])]
    assert changed, "two optimizer steps must change the encoder"
    probs = np.loadtxt(tmp_path / "ft" / "predictions.csv", delimiter=",", skiprows=1, usecols=range(4, 11))
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-4)
