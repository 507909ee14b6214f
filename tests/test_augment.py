"""Training-time augmentation: what it produces, that it is deterministic, that evaluation never sees it,
and (on real EmoDB) that a recognizer trained on clips cut to one length works on every length."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from helpers import REPO, tiny_frozen_classifier, tone

from emovox.data.augment import AugmentConfig, augment_audio, rng_for, spec_augment
from emovox.data.examples import Example

SR = 16_000


def test_crops_and_padding_stay_in_their_ranges_and_keep_the_signal():
    clip = tone(300, 2.0)
    cfg = AugmentConfig(crop=(0.6, 1.0), pad=(0.0, 1.5), variants=1)
    for k in range(50):
        out = augment_audio(clip, rng_for(0, "u1", k), cfg)
        voiced = np.flatnonzero(np.abs(out) > 1e-6)
        kept = voiced[-1] - voiced[0] + 1  # the cropped tone, between the silences
        assert 0.6 * len(clip) - 400 <= kept <= len(clip)
        assert kept <= len(out) <= kept * 2.5 + 1 and out.dtype == np.float32
    # off: the clip comes back as it was
    assert np.array_equal(augment_audio(clip, rng_for(0, "u1", 0), AugmentConfig(length=False)), clip)


def test_augmentation_is_a_pure_function_of_seed_clip_and_epoch():
    clip = tone(300, 1.0)
    cfg = AugmentConfig(speed=[0.9, 1.1], noise_snr_db=(10, 20))
    a = augment_audio(clip, rng_for(3, "u1", 7), cfg)
    assert np.array_equal(a, augment_audio(clip, rng_for(3, "u1", 7), cfg))
    assert not np.array_equal(a, augment_audio(clip, rng_for(3, "u1", 8), cfg))  # another epoch
    assert not np.array_equal(a, augment_audio(clip, rng_for(4, "u1", 7), cfg))  # another seed
    assert not np.array_equal(a, augment_audio(clip, rng_for(3, "u2", 7), cfg))  # another clip


def test_speed_perturbation_changes_the_length_by_its_factor():
    clip = tone(300, 1.0)
    out = augment_audio(clip, rng_for(0, "u", 0), AugmentConfig(length=False, speed=[1.25]))
    assert abs(len(out) - len(clip) / 1.25) <= 2


def test_specaugment_masks_only_real_frames():
    x = torch.randn(2, 80, 100)
    out = spec_augment(x, np.random.default_rng(0), lengths=torch.tensor([100, 60]))
    assert out.shape == x.shape and not torch.equal(out, x)
    assert torch.equal(out[1, :, 60:], x[1, :, 60:])  # padding untouched


def frozen_model():
    return tiny_frozen_classifier(AugmentConfig(variants=2))


def test_frozen_branches_cache_augmented_views_and_evaluation_never_reads_them():
    model = frozen_model()
    examples = [Example(f"u{i}", i % 2, audio=tone(200 + 100 * i, 0.5), length=0.5) for i in range(4)]
    prepared = model.prepare(examples, cache=None, progress=False)
    rows = [e.cached[model.branch.slot] for e in prepared]
    assert all(len(r["variants"]) == 2 for r in rows)
    assert not torch.equal(rows[0]["variants"][0]["pooled"], rows[0]["pooled"])
    original = torch.stack([r["pooled"] for r in rows])
    # evaluation (augment=False): always the original clip's features
    for epoch in (1, 2, 3):
        model.set_epoch(epoch)
        assert torch.equal(model.collate(prepared)[model.branch.name]["pooled"], original)
    # training: one view per clip and epoch, deterministic, not always the original
    views = []
    for epoch in range(1, 7):
        model.set_epoch(epoch)
        batch = model.collate(prepared, augment=True)[model.branch.name]["pooled"]
        model.set_epoch(epoch)
        assert torch.equal(batch, model.collate(prepared, augment=True)[model.branch.name]["pooled"])
        views.append(batch)
    assert any(not torch.equal(v, original) for v in views)


def test_the_trainer_augments_training_batches_only():
    from emovox.config import TrainConfig
    from emovox.training.trainer import Trainer

    model = frozen_model()
    seen = []
    original = model.collate

    def spy(batch, *, augment=False):
        seen.append(augment)
        return original(batch, augment=augment)

    model.collate = spy
    examples = model.prepare([Example(f"u{i}", i % 2, audio=tone(200 + 300 * (i % 2), 0.5), length=0.5) for i in range(8)],
                             cache=None, progress=False)
    trainer = Trainer(model, None, TrainConfig(max_epochs=2, batch_size=4, lr=0.01, threads=1), 2, progress=False)
    trainer.fit(examples, examples[:4])
    trainer.predict_proba(examples)
    assert True in seen and False in seen
    n = len(seen)
    trainer.predict_proba(examples)
    assert seen[n:] == [False] * (len(seen) - n)


# --- real speech: a recognizer trained on one clip length ----------------------------------------


def uniform(clip: np.ndarray, seconds: float = 2.0) -> np.ndarray:
    """Cut to, or zero-pad at the end to, exactly ``seconds`` (how the former EmoDB copy was made)."""
    n = int(seconds * SR)
    return clip[:n] if len(clip) >= n else np.concatenate([clip, np.zeros(n - len(clip), np.float32)])


@pytest.mark.slow
def test_a_recognizer_trained_on_one_clip_length_works_on_every_length(whisper_base_dir, emodb_dir, tmp_path):
    """Issue 9: trained on EmoDB cut to 2.0 s, it still works on the original clips; labels survive +-0.1 s of
    silence and 90 % crops; accuracy at 4 s of padding stays within 10 points of the original clips'.

    Measured (seed 0): originals 0.886; agreement 0.929 / 0.929 / 0.921; 4 s padding 0.921. The same head
    forced onto all 7 layers at C = 1 agrees only 0.87 / 0.87 / 0.77: the embedding layers carry Whisper's
    positions, whose mean depends on the length, and the recipe's inner selection prefers the middle layers."""
    import soundfile as sf

    from emovox.config import config_from_dict
    from emovox.corpora import load_corpus
    from emovox.inference.runtime import Runtime
    from emovox.training.final import train_recognizer

    corpus = load_corpus(f"emodb:{emodb_dir}")
    train_speakers, test_speakers = ("03", "08", "09", "10", "11", "12", "13"), ("14", "16")
    rows = ["path,label,speaker"]
    for u in corpus:
        if u.speaker in train_speakers:
            clip, _ = sf.read(str(u.audio), dtype="float32")
            path = tmp_path / "u2" / f"{u.id}.wav"
            path.parent.mkdir(exist_ok=True)
            sf.write(str(path), uniform(clip), SR)
            rows.append(f"{path},{u.label},{u.speaker}")
    (tmp_path / "u2.csv").write_text("\n".join(rows) + "\n")
    # the recognizer the README's main recipe trains (issue 9 was found with it), on the uniform-length copy
    recipe = yaml.safe_load((REPO / "recipes" / "emodb" / "emodb-whisper-base-frozen.yaml").read_text())
    recipe["model"]["backbone"] = str(whisper_base_dir)
    # The clips below are classified alone (no speaker given), which a speaker-normalising recognizer answers with
    # its best candidate without normalisation (its fallback): fit only those, half the head search.
    recipe["model"]["normalize"] = ["none"]
    cfg = config_from_dict({
        **recipe, "name": "uniform-2s", "corpus": f"manifest:{tmp_path / 'u2.csv'}?labels={','.join(corpus.labels)}",
        "cache_dir": str(tmp_path / "cache"),  # train.augment keeps its defaults: length augmentation on
        # one thread (the recipe's train.threads), for extraction too: the suite runs on two workers, one per core,
        # and two threads beside another worker on a busy machine only wait on each other (this test took 661 s
        # so, against 427 s serial, 2026-12-06 at load ~8)
    })
    with pytest.warns(Warning, match="all .* clips last 2.00 s"):
        train_recognizer(cfg, tmp_path / "rec", progress=False)
    # The 700 clips below are classified by the recognizer's runtime, which `emovox predict` takes unasked: twice as
    # fast here as torch (4.2 s against 8.9 s for the 140 originals, 2026-12-07), the same labels on all 140 and to
    # 4e-6 in probability; its equality with torch over all 535 EmoDB clips is test_runtime.py's.
    rec = Runtime.load(tmp_path / "rec")
    tests = [u for u in corpus if u.speaker in test_speakers]
    truth = np.array([corpus.labels.index(u.label) for u in tests])
    originals = [sf.read(str(u.audio), dtype="float32")[0] for u in tests]
    silence = np.zeros(int(0.1 * SR), np.float32)

    def labels(clips):
        return rec.predict_proba(clips).argmax(1)

    base = labels(originals)
    accuracy = float(np.mean(base == truth))
    assert accuracy > 0.6, accuracy  # 7 classes, two unseen speakers: works on lengths it never saw
    for name, clips in {
        "0.1 s of silence after": [np.concatenate([c, silence]) for c in originals],
        "0.1 s of silence before": [np.concatenate([silence, c]) for c in originals],
        "cropped to 90 %": [c[int(0.05 * len(c)) : int(0.95 * len(c))] for c in originals],
    }.items():
        agree = float(np.mean(labels(clips) == base))
        assert agree >= 0.9, (name, agree)
    padded = [np.concatenate([c, np.zeros(max(0, 4 * SR - len(c)), np.float32)]) for c in originals]
    assert float(np.mean(labels(padded) == truth)) >= accuracy - 0.10
