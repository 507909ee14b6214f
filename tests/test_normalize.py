"""Per-speaker (per-corpus) normalisation: the arithmetic, the choice on validation, and prediction.

``normalize: [none, speaker]`` standardises every clip's pooled states with its speaker's own
statistics (shrunk towards the global ones by clip count) and lets held-out speakers decide
whether that helps. Two synthetic corpora pin the choice down: one where speakers differ by a
large offset and every speaker shows every emotion (normalising removes the speaker and keeps
the emotion), one where every speaker shows a single emotion (normalising removes the emotion).
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
from helpers import tiny_frozen_classifier, tone, write_manifest, write_wav

from emovox.data.examples import Example
from emovox.errors import ConfigError, EmovoxWarning
from emovox.models.heads import STD_FLOOR, GroupNormalizer


def direct(states: np.ndarray, keys: list[str], mean0: np.ndarray, var0: np.ndarray, k: float) -> np.ndarray:
    """The normalisation written out in numpy: per group, mean and variance shrunk towards the global
    ones by ``k`` clips, the std floored at STD_FLOOR x the median global std of its layer; lone clips
    and unknown groups use the (floored) global statistics."""
    floor = np.maximum(STD_FLOOR * np.median(np.sqrt(var0), axis=-1, keepdims=True), 1e-5)
    out = np.empty_like(states)
    keys_arr = np.array(keys, dtype=object)
    for key in set(keys):
        rows = keys_arr == key
        n = rows.sum()
        if key is None or n < 2:
            mean, var = mean0, var0
        else:
            w = n / (n + k)
            mean = w * states[rows].mean(0) + (1 - w) * mean0
            var = w * states[rows].var(0) + (1 - w) * var0
        out[rows] = (states[rows] - mean) / np.maximum(np.sqrt(var), floor)
    return out


def test_group_statistics_equal_a_direct_numpy_computation():
    rng = np.random.default_rng(0)
    train = rng.normal(0, 2, (40, 3, 5))
    test = rng.normal(1, 3, (13, 3, 5))
    test[:, 0, 0] = 0.7  # a dimension constant within the clips: the floor keeps it finite
    keys = ["a"] * 6 + ["b"] * 5 + ["c"] + [None]
    norm = GroupNormalizer(3, 5, shrink=4.0)
    norm.fit(torch.from_numpy(train).float())
    norm.mode = "speaker"
    norm.observe(torch.from_numpy(test).float(), keys)
    assert set(norm.table) == {"a", "b"}  # a lone clip ("c") and no speaker (None) have no statistics of their own
    ours = norm(torch.from_numpy(test).float(), keys).double().numpy()
    expected = direct(test, keys, train.mean(0), train.var(0), 4.0)
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4)
    # shrinkage is what makes a speaker with few clips look like everyone: with k = 0 it is its own statistics only
    norm0 = GroupNormalizer(3, 5, shrink=0.0)
    norm0.fit(torch.from_numpy(train).float())
    norm0.mode = "speaker"
    norm0.observe(torch.from_numpy(test).float(), keys)
    own = norm0(torch.from_numpy(test).float(), keys).double().numpy()
    np.testing.assert_allclose(own[:6, 1:].mean(0), 0, atol=1e-5)
    assert not np.allclose(ours[:6, 1:].mean(0), 0, atol=1e-2)
    # "none" is the identity: a recognizer without normalisation is unchanged
    norm.mode = "none"
    assert torch.equal(norm(torch.from_numpy(test).float(), keys), torch.from_numpy(test).float())


def test_the_estimated_shrinkage_is_within_over_between_speaker_variance():
    """Empirical Bayes: speakers whose averages differ a lot against the spread of their own clips are
    trusted after a few clips; speakers that differ little need many."""
    from emovox.models.heads import estimate_shrink

    rng = np.random.default_rng(3)
    keys = [f"s{i // 20}" for i in range(800)]  # forty speakers of 20 clips
    spread = np.array([3.0, 0.3])  # dimension 0: speakers far apart; dimension 1: close together
    offsets = rng.normal(0, 1, (40, 1, 2)) * spread
    states = offsets[[i // 20 for i in range(800)]] + rng.normal(0, 1, (800, 1, 2))
    k = estimate_shrink(torch.from_numpy(states).float(), keys).numpy()
    means = np.stack([states[i * 20:(i + 1) * 20].mean(0) for i in range(40)])
    within = np.stack([states[i * 20:(i + 1) * 20].var(0, ddof=1) for i in range(40)]).mean(0)
    between = means.var(0, ddof=1) - within / 20
    np.testing.assert_allclose(k, np.clip(within / between, 0.5, 1000.0), rtol=1e-4)
    assert k[0, 0] < 1.0 and k[0, 1] > 10 * k[0, 0]  # in expectation ~1/9 clip against ~11 clips
    # one speaker only: nothing to tell it from everyone, so its own statistics never take over
    assert float(estimate_shrink(torch.from_numpy(states).float(), ["s"] * 800).min()) == 1000.0


def synthetic(labels: int, speakers: int, per: int, *, one_emotion_each: bool, seed: int, layers: int, width: int,
              strength: float = 0.35, spread: float = 4.0):
    """Examples whose cached pooled states are a speaker offset (large) plus an emotion direction (small)."""
    rng = np.random.default_rng(seed)
    directions = np.random.default_rng(99).normal(0, 1, (labels, layers, width))
    out = []
    for s in range(speakers):
        offset = rng.normal(0, spread, (layers, width))
        for i in range(per):
            y = (s % labels) if one_emotion_each else (i % labels)
            x = offset + strength * directions[y] + rng.normal(0, 1.0, (layers, width))
            out.append((f"s{seed}-{s}-{i}", y, f"spk{seed}-{s}", x))
    return out


def as_examples(model, rows):
    slot = model.branch.slot
    return [
        Example(uid, y, audio=np.zeros(1600, np.float32), length=0.1, speaker=spk,
                cached={slot: {"pooled": torch.from_numpy(x).float()}})
        for uid, y, spk, x in rows
    ]


def fitted(one_emotion_each: bool, normalize, *, model_out: list | None = None, **shape):
    from emovox.backbones.loader import load_backbone
    from emovox.models.classifier import ClassifierConfig, ClassifierModel

    labels = ("a", "b", "c")
    config = ClassifierConfig(backbone="wav2vec2-base", tiny=True, mode="frozen", layers="all", combine="concat",
                              head="logistic", C=[0.1, 1.0], select="inner-logloss", normalize=normalize)
    torch.manual_seed(0)
    model = ClassifierModel(config, labels, load_backbone("wav2vec2-base", tiny=True))
    layers, width = model.branch.total_layers, model.branch.width
    train = as_examples(model, synthetic(3, 12, 9, one_emotion_each=one_emotion_each, seed=1, layers=layers, width=width, **shape))
    test = as_examples(model, synthetic(3, 6, 9, one_emotion_each=one_emotion_each, seed=2, layers=layers, width=width, **shape))
    model.fit_statistics(train)
    choices = model.fit_direct(train, [])
    model.temperature.fill_(choices["temperature"])
    model.eval()
    if model_out is not None:
        model_out += [model, test]
    test = model.observe(test)
    with torch.inference_mode():
        pred = model(model.collate(test)).argmax(1).numpy()
    accuracy = float(np.mean(pred == np.array([e.target for e in test])))
    return choices, accuracy


def test_validation_chooses_speaker_normalisation_where_it_removes_the_speaker():
    choices, accuracy = fitted(False, ["none", "speaker"])
    assert choices["normalize"] == "speaker"
    _, without = fitted(False, ["none"])
    assert accuracy > without + 0.1 and accuracy > 0.6  # chance: 1/3


def test_clips_without_speaker_statistics_get_the_best_unnormalised_candidate():
    """A recognizer that normalises per speaker keeps none's best candidate for clips it cannot normalise
    (a lone clip, no speaker): they get exactly what a recognizer trained without normalisation says."""
    held, plain = [], []
    choices, _ = fitted(False, ["none", "speaker"], model_out=held)
    fitted(False, ["none"], model_out=plain)
    model, test = held
    reference, _ = plain
    assert choices["normalize"] == "speaker" and choices["fallback"]["normalize"] == "none"
    lone = [replace(e, speaker=None) for e in test[:7]]
    with torch.inference_mode():
        ours = torch.softmax(model(model.collate(model.observe(lone))), -1)
        theirs = torch.softmax(reference(reference.collate(lone)), -1)
        named = torch.softmax(model(model.collate(model.observe(test[:7]))), -1)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(named, ours, atol=1e-3)  # with their speaker's statistics they read otherwise


def test_validation_turns_normalisation_off_where_each_speaker_shows_one_emotion():
    # natural speech: speakers differ less, and each speaker's clips share one emotion
    choices, accuracy = fitted(True, ["none", "speaker"], strength=0.3, spread=0.5)
    assert choices["normalize"] == "none"
    # what it protects against: forced on, the normalisation subtracts the emotion with the speaker
    _, forced = fitted(True, ["speaker"], strength=0.3, spread=0.5)
    assert accuracy > forced + 0.05


def test_normalisation_needs_the_closed_form_head_over_a_frozen_branch():
    from emovox.backbones.loader import load_backbone
    from emovox.models.classifier import ClassifierConfig, ClassifierModel

    for bad in ({"head": "linear"}, {"head": "logistic", "mode": "finetune"}):
        config = ClassifierConfig(**{"backbone": "wav2vec2-base", "tiny": True, "mode": "frozen", "normalize": "speaker", **bad})
        with pytest.raises(ConfigError, match="normalize"):
            ClassifierModel(config, ("a", "b"), load_backbone("wav2vec2-base", tiny=True))


@pytest.fixture(scope="module")
def speaker_recognizer(tmp_path_factory):
    """A tiny frozen recognizer forced to normalise per speaker, trained on tones whose pitch moves
    with the speaker."""
    from emovox.config import config_from_dict
    from emovox.inference.recognizer import Recognizer
    from emovox.training.final import train_recognizer

    root = tmp_path_factory.mktemp("speaker-rec")
    rows = []
    for s in range(6):
        for label, freq in (("low", 180.0), ("high", 520.0)):
            for k in range(4):
                rel = f"wav/spk{s}_{label}_{k}.wav"
                write_wav(root / rel, tone(freq * (1 + 0.08 * s), 0.35 + 0.04 * k, 0.15 + 0.04 * k))
                rows.append({"id": f"spk{s}_{label}_{k}", "path": rel, "label": label, "speaker": f"spk{s}"})
    manifest = write_manifest(root / "train.csv", rows, ("id", "path", "label", "speaker"))
    cfg = config_from_dict({
        "name": "speaker-norm", "corpus": f"manifest:{manifest}", "protocol": "speaker-groups:3",
        "cache_dir": str(root / "cache"),
        "model": {"backbone": "wav2vec2-base", "tiny": True, "mode": "frozen", "layers": "all", "combine": "concat",
                  "head": "logistic", "C": [0.1, 1.0], "select": "inner-logloss", "normalize": "speaker"},
        "train": {"threads": 1, "augment": {"length": False}},
    })
    train_recognizer(cfg, root / "rec", progress=False)
    return Recognizer.load(root / "rec"), root


def new_speaker_clips(root, name: str, shift: float) -> tuple[list, list[str]]:
    paths, labels = [], []
    for label, freq in (("low", 180.0), ("high", 520.0), ("low", 190.0), ("high", 500.0), ("low", 175.0)):
        path = root / "new" / f"{name}_{len(paths)}.wav"
        write_wav(path, tone(freq * shift, 0.4, 0.2))
        paths.append(str(path))
        labels.append(label)
    return paths, labels


def test_a_recognizer_takes_its_speakers_statistics_from_their_clips(speaker_recognizer):
    rec, root = speaker_recognizer
    assert rec.normalization == "speaker"
    a, _ = new_speaker_clips(root, "ann", 1.1)
    b, _ = new_speaker_clips(root, "bob", 0.9)
    together = rec.predict(a + b, speaker=["ann"] * len(a) + ["bob"] * len(b))
    # each speaker's clips are standardised with statistics of that speaker's clips only: the same
    # predictions whether the other speaker is in the call or not, and different from a pooled "speaker"
    alone = rec.predict(a, speaker="ann")
    for x, y in zip(together[: len(a)], alone, strict=True):
        assert x.probabilities == pytest.approx(y.probabilities, abs=1e-6)
    pooled = rec.predict(a + b, speaker="everyone")
    assert any(abs(x.probabilities["high"] - y.probabilities["high"]) > 1e-4 for x, y in zip(together, pooled, strict=True))
    # a lone clip, or clips without a speaker, fall back to the training statistics, with a warning
    with pytest.warns(EmovoxWarning, match="no other clip of their speaker"):
        lone = rec.predict(a[0], speaker="ann")
    with pytest.warns(EmovoxWarning, match="no other clip"):
        unnamed = rec.predict(a[:2])
    with pytest.warns(EmovoxWarning):
        assert rec.predict(a[0]).probabilities == pytest.approx(lone.probabilities, abs=1e-6)
    assert unnamed[0].probabilities == pytest.approx(lone.probabilities, abs=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # several clips of one named speaker: no warning
        rec.predict(a, speaker="ann")


def test_predict_reads_the_speaker_column_of_a_manifest_and_speaker_for_a_folder(speaker_recognizer, tmp_path):
    import json

    from typer.testing import CliRunner

    from emovox.cli import app

    rec, root = speaker_recognizer
    a, la = new_speaker_clips(tmp_path, "ann", 1.1)
    b, lb = new_speaker_clips(tmp_path, "bob", 0.9)
    # the speakers' rows interleaved, and one clip per batch: predict must still gather each speaker's clips
    rows = [row for pair in zip(zip(a, la, ["ann"] * 5, strict=True), zip(b, lb, ["bob"] * 5, strict=True), strict=True) for row in pair]
    manifest = write_manifest(tmp_path / "m.csv", [{"path": p, "label": lab, "speaker": spk} for p, lab, spk in rows],
                              ("path", "label", "speaker"))
    expected = rec.predict([r[0] for r in rows], speaker=[r[2] for r in rows])
    result = CliRunner().invoke(app, ["predict", str(root / "rec"), str(manifest), "--json", str(tmp_path / "m.json"),
                                      "--quiet", "--batch-size", "1"])
    assert result.exit_code == 0, result.output
    got = json.loads((tmp_path / "m.json").read_text())
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g["probabilities"]["high"] == pytest.approx(e.probabilities["high"], abs=1e-5)
    # a folder of one person's clips: --speaker names them all
    folder = tmp_path / "new"
    result = CliRunner().invoke(app, ["predict", str(root / "rec"), str(folder), "--speaker", "ann", "--json",
                                      str(tmp_path / "f.json"), "--quiet"])
    assert result.exit_code == 0, result.output
    got = {row["input"]: row for row in json.loads((tmp_path / "f.json").read_text())}
    together = rec.predict(sorted(str(p) for p in folder.glob("*.wav")), speaker="ann")
    assert len(got) == len(together) == 10
    for pred in together:
        assert got[pred.source]["probabilities"]["high"] == pytest.approx(pred.probabilities["high"], abs=1e-5)


def test_a_recognizer_without_normalisation_is_unchanged_by_speaker_names(tmp_path):
    model = tiny_frozen_classifier(None)
    assert getattr(model, "normalizer", None) is None
    assert "groups" not in model.collate([Example("x", 0, audio=tone(200, 0.3), length=0.3, speaker="s")])


def test_the_runtime_head_normalises_and_falls_back_as_the_torch_model_does():
    """The torch-free head (``emovox.inference.head``) gets the normalisation, the group statistics and the
    fallback head from the export, and answers what the torch model answers, grouped and alone."""
    from emovox.inference.export_head import head_of, read_positions
    from emovox.inference.head import Head, probabilities

    held = []
    choices, _ = fitted(False, ["none", "speaker"], model_out=held)
    model, test = held
    assert choices["normalize"] == "speaker"
    positions = read_positions(model)
    head = head_of(model, positions)
    head = Head.from_arrays({k: v.astype("float64") for k, v in head.arrays().items()}, head.settings())  # as stored
    assert head.normalize == "speaker" and head.fallback is not None
    states = torch.stack([e.cached[model.branch.slot]["pooled"] for e in test])
    keys = [e.speaker for e in test[:-1]] + [None]  # one clip without a speaker
    model.normalizer.observe(states, keys)
    with torch.inference_mode():
        expected = torch.softmax(model.logits_of_states(states, keys) / model.temperature, -1).numpy()
    ours = probabilities(states[:, model.branch.layer_index][:, positions].numpy(), head, keys)
    np.testing.assert_allclose(ours, expected, atol=1e-4)
    lone = probabilities(states[:, model.branch.layer_index][:, positions].numpy(), head, None)
    assert not np.allclose(lone, ours, atol=1e-3)  # without speakers every clip takes the fallback


def test_evaluate_on_a_corpus_that_does_not_say_who_spoke_classifies_each_clip_alone(speaker_recognizer, tmp_path):
    """A manifest without a speaker column gives every clip the placeholder speaker ``unknown``: its clips
    must not be standardised together as if one person spoke them all, but each alone, with the warning."""
    from emovox.corpora import load_corpus
    from emovox.training.final import evaluate_recognizer

    rec, root = speaker_recognizer
    a, labels_a = new_speaker_clips(root, "cat", 1.1)
    b, labels_b = new_speaker_clips(root, "dan", 0.9)
    rows = [{"path": p, "label": lab} for p, lab in zip(a + b, labels_a + labels_b, strict=True)]
    manifest = write_manifest(tmp_path / "nobody.csv", rows, ("path", "label"))
    corpus = load_corpus(f"manifest:{manifest}")
    assert {u.speaker for u in corpus} == {"unknown"}
    with pytest.warns(EmovoxWarning, match=f"{len(rows)} of {len(rows)} clip\\(s\\) have no other clip of their speaker") as said:
        ev = evaluate_recognizer(rec, corpus, progress=False)
    assert len(said) == 1  # said once
    with pytest.warns(EmovoxWarning):
        alone = [rec.predict(p) for p in a + b]
    by_path = {str(u.audio): u.id for u in corpus}
    order = {e.id: i for i, e in enumerate(ev.examples)}
    for p, pred in zip(a + b, alone, strict=True):
        row = ev.probs[order[by_path[p]]]
        assert [pred.probabilities[label] for label in rec.labels] == pytest.approx(row.tolist(), abs=1e-5)
