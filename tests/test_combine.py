"""Combining models (issue 14), proven on synthetic corpora built so that only the right wiring can succeed.

- A dialogue corpus whose labels are given away by the *previous* utterance only: a context
  branch reaches ~100 %, the utterance alone stays at chance.
- A corpus whose four classes are pitch (audio) x word (text): either modality alone can tell
  only half of them apart, a fusion of both (or a late fusion of an audio and a text model) all.
- Late fusion never uses a member that saw a fold's test part; a saved late-fusion recognizer
  carries its members and predicts what it predicted before saving.
- Bad input for a multi-branch model (no transcript for its text branch, no audio for its audio
  branch, an unusable previous utterance for its context branch) is skipped and listed, or named.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tone, write_manifest, write_wav

from emovox.config import config_from_dict
from emovox.corpora.base import Corpus, Utterance
from emovox.errors import ConfigError, EmovoxError, RecognizerError
from emovox.training.runner import run_cv

TRAIN = {"lr": 0.02, "batch_size": 8, "max_epochs": 15, "patience": 15, "threads": 1}

# --- corpora ------------------------------------------------------------------------------------

CUES = {"high": ("wonderful", "great"), "low": ("terrible", "awful")}


def dialogue_corpus(dialogues: int = 24, turns: int = 8, seed: int = 0, *, back: int = 1, two_speakers: bool = False) -> Corpus:
    """Each utterance is one cue word drawn at random; its label is the class of the cue word said
    ``back`` turns before (a dialogue's first ``back`` utterances are "high"). An utterance's own
    words say nothing about its label. ``two_speakers``: each dialogue's turns alternate between two
    speakers (``spk<d % 4>a``, ``...b``), else one speaker says them all."""
    rng = random.Random(seed)
    words = [w for ws in CUES.values() for w in ws]
    utterances = []
    for d in range(dialogues):
        cues = [rng.choice(words) for _ in range(turns)]
        for t in range(turns):
            label = "high" if t < back else next(k for k, ws in CUES.items() if cues[t - back] in ws)
            speaker = f"spk{d % 4}" + ("ab"[t % 2] if two_speakers else "")
            utterances.append(Utterance(f"d{d}_t{t}", speaker, label, label, text=cues[t], dialogue=f"d{d}", turn=t))
    return Corpus("dialogues", utterances, ("high", "low"), spec="dialogues:synthetic")


PITCH = {"hi": 600.0, "lo": 150.0}
WORDS = {"a": ("apples and pears", "apples again"), "b": ("rain on the roof", "rain all day")}


def half_and_half_manifest(root: Path, speakers: int = 4, per_class: int = 3) -> Path:
    """Four classes hi-a, hi-b, lo-a, lo-b: the pitch of the clip says hi/lo, the transcript a/b."""
    rows = []
    for s in range(speakers):
        for pitch, freq in PITCH.items():
            for word, sentences in WORDS.items():
                for k in range(per_class):
                    rel = f"wav/spk{s}_{pitch}_{word}_{k}.wav"
                    write_wav(root / rel, tone(freq * (1 + 0.01 * s), 0.35 + 0.05 * k, 0.2 + 0.05 * k))
                    rows.append({"id": f"spk{s}_{pitch}_{word}_{k}", "path": rel, "label": f"{pitch}-{word}",
                                 "speaker": f"spk{s}", "text": sentences[k % 2]})
    return write_manifest(root / "manifest.csv", rows)


def experiment(corpus: str, cache: Path, model: dict, **top) -> dict:
    return {"name": "combine", "corpus": corpus, "protocol": "speaker-groups:4", "cache_dir": str(cache), "model": model,
            "train": dict(TRAIN), "baseline": False, **top}


AUDIO = {"backbone": "wav2vec2-base", "tiny": True, "mode": "frozen", "layers": "all", "combine": "concat"}
TEXT = {"backbone": "bert-base", "tiny": True, "mode": "frozen", "layers": "all", "combine": "concat"}


@pytest.fixture(scope="module")
def halves(tmp_path_factory) -> dict:
    """The half-and-half corpus, and cv runs of an audio-only and a text-only model on it."""
    root = tmp_path_factory.mktemp("halves")
    manifest = half_and_half_manifest(root / "corpus")
    spec, cache = f"manifest:{manifest}", root / "cache"
    runs = {}
    for name, model in (("audio", AUDIO), ("text", TEXT)):
        runs[name] = root / f"run-{name}"
        runs[f"{name}_results"] = run_cv(config_from_dict(experiment(spec, cache, model)), runs[name], progress=False)
    return {"root": root, "spec": spec, "cache": cache, **runs}


# --- context ------------------------------------------------------------------------------------


def test_a_context_branch_predicts_what_only_the_previous_utterance_tells(tmp_path):
    corpus = dialogue_corpus()
    utterance = dict(TEXT)
    alone = experiment("dialogues:synthetic", tmp_path / "cache", utterance)
    with_context = experiment("dialogues:synthetic", tmp_path / "cache", {
        "kind": "fusion", "projection": 16,
        "branches": [utterance, {**TEXT, "input": "context"}],
    })
    res_alone = run_cv(config_from_dict(alone), tmp_path / "alone", corpus=corpus, progress=False)
    res_context = run_cv(config_from_dict(with_context), tmp_path / "context", corpus=corpus, progress=False)
    assert res_alone["pooled"]["n"] == res_context["pooled"]["n"] == 192
    assert res_context["pooled"]["ua"] >= 0.95  # the previous utterance gives every label away
    assert res_alone["pooled"]["ua"] <= 0.65  # an utterance's own word is independent of its label: chance is 0.5
    # the first utterances (no previous one) are right too: the learned "no context" vector stands for them
    rows = (tmp_path / "context" / "predictions.csv").read_text().splitlines()[1:]
    firsts = [r.split(",") for r in rows if r.split(",")[0].endswith("_t0")]
    assert len(firsts) == 24 and sum(r[2] == r[3] for r in firsts) >= 23


def test_emovox_predict_gives_a_context_recognizer_the_previous_utterance(tmp_path):
    """A text-only manifest in dialogue order: each row's context is the row before it in its
    dialogue, and the labels (which only the previous utterance tells) come out right."""
    from typer.testing import CliRunner

    from emovox.cli import app
    from emovox.inference.recognizer import Recognizer
    from emovox.training.final import train_recognizer

    cfg = config_from_dict(experiment("dialogues:synthetic", tmp_path / "cache", {
        "kind": "fusion", "projection": 16, "branches": [dict(TEXT), {**TEXT, "input": "context"}],
    }))
    train_recognizer(cfg, tmp_path / "rec", corpus=dialogue_corpus(), progress=False)
    rec = Recognizer.load(tmp_path / "rec")
    test = [u for u in dialogue_corpus(dialogues=6, seed=1).utterances]
    rows = [{"id": u.id, "dialogue": u.dialogue, "text": u.text, "label": u.label} for u in test]
    manifest = write_manifest(tmp_path / "dialogues.csv", rows, fields=("id", "dialogue", "text", "label"))
    runner = CliRunner()
    result = runner.invoke(app, ["predict", str(tmp_path / "rec"), str(manifest), "--json", "-", "--quiet"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert [r["input"] for r in out] == [u.id for u in test]
    assert np.mean([r["label"] == u.label for r, u in zip(out, test, strict=True)]) >= 0.95
    # the same as the Python API given each previous utterance (None for a dialogue's first)
    context = [None if u.turn == 0 else test[i - 1].text for i, u in enumerate(test)]
    api = rec.predict(text=[u.text for u in test], context=context)
    assert [r["label"] for r in out] == [p.label for p in api]
    # --context for one text; without any context the CLI warns that inputs count as first utterances
    one = runner.invoke(app, ["predict", str(tmp_path / "rec"), "--text", "great", "--context", "awful", "--json", "-"])
    assert one.exit_code == 0, one.output
    assert json.loads(one.stdout)[0]["label"] == "low"
    bare = write_manifest(tmp_path / "bare.csv", [{"id": u.id, "text": u.text} for u in test[:4]], fields=("id", "text"))
    result = runner.invoke(app, ["predict", str(tmp_path / "rec"), str(bare), "--json", "-", "--quiet"])
    assert result.exit_code == 0 and "first utterance" in result.stderr
    # serve: the previous utterance in the form field 'context'
    from fastapi.testclient import TestClient

    from emovox.serve.app import create_app
    from emovox.serve.limits import ServeConfig

    with TestClient(create_app(rec, ServeConfig())) as client:
        for previous, label in (("awful", "low"), ("wonderful", "high")):
            r = client.post("/predict", data={"text": "great", "context": previous})
            assert r.status_code == 200, r.text
            assert r.json()["label"] == label
            want = rec.predict(text="great", context=previous).probabilities
            assert r.json()["probabilities"] == pytest.approx(want, abs=1e-6)


def two_back_corpus(dialogues: int = 24, seed: int = 0) -> Corpus:
    """The label is the class of the cue word said *two* turns before: the previous utterance alone says nothing."""
    return dialogue_corpus(dialogues, turns=8, seed=seed, back=2, two_speakers=True)


def test_format_context_keeps_the_last_turns_oldest_first_with_or_without_speakers():
    from emovox.data.examples import ContextFormat, common_context_format, format_context

    turns = [("Ross", "Hi."), ("Monica", None), ("Rachel", "Oh no."), ("Ross", "What?")]
    assert format_context(turns) == "What?"  # the paper's context: the previous utterance alone
    assert format_context(turns, ContextFormat(2)) == "Oh no. What?"  # a turn without a transcript is left out
    assert format_context(turns, ContextFormat(3, speakers=True)) == "Ross: Hi. Rachel: Oh no. Ross: What?"
    assert format_context([(None, "Hi.")], ContextFormat(1, speakers=True)) == "Hi."  # no name, no prefix
    corpus = dialogue_corpus(dialogues=1, turns=4, back=2)
    assert [u.id for u in corpus.history("d0_t3", 2)] == ["d0_t1", "d0_t2"]
    assert [u.id for u in corpus.history("d0_t1", 5)] == ["d0_t0"] and corpus.history("d0_t0", 3) == []
    with pytest.raises(EmovoxError, match="at least 1"):
        ContextFormat(0)
    with pytest.raises(EmovoxError, match=r"fusion: .*1 turn\(s\), 2 turn\(s\) with speakers"):
        common_context_format([ContextFormat(), None, ContextFormat(2, True)], where="fusion")


def test_a_context_of_two_turns_reads_what_only_the_turn_before_the_previous_tells(tmp_path):
    """Labels given away two turns back: one previous utterance is at chance, two turns are enough; a
    recognizer trained on two turns with speaker names gets that context from a dialogue manifest in
    `emovox predict` as from ``Recognizer.context_text`` in Python."""
    from typer.testing import CliRunner

    from emovox.cli import app
    from emovox.inference.recognizer import Recognizer
    from emovox.training.final import train_recognizer

    corpus = two_back_corpus()

    def model(**context) -> dict:
        return {"kind": "fusion", "projection": 16, "branches": [dict(TEXT), {**TEXT, "input": "context", **context}]}

    one = run_cv(config_from_dict(experiment("dialogues:synthetic", tmp_path / "cache", model())), tmp_path / "one",
                 corpus=corpus, progress=False)
    two = run_cv(config_from_dict(experiment("dialogues:synthetic", tmp_path / "cache", model(context_turns=2))),
                 tmp_path / "two", corpus=corpus, progress=False)
    assert one["pooled"]["ua"] <= 0.7 and two["pooled"]["ua"] >= 0.95

    cfg = config_from_dict(experiment("dialogues:synthetic", tmp_path / "cache", model(context_turns=2, context_speakers=True)))
    train_recognizer(cfg, tmp_path / "rec", corpus=corpus, progress=False)
    rec = Recognizer.load(tmp_path / "rec")
    test = two_back_corpus(dialogues=4, seed=1).utterances
    assert rec.context_text([("spk0", "great"), ("spk1", "awful"), ("spk0", "terrible")]) == "spk1: awful spk0: terrible"
    rows = [{"id": u.id, "dialogue": u.dialogue, "speaker": u.speaker, "text": u.text} for u in test]
    manifest = write_manifest(tmp_path / "dialogues.csv", rows, fields=("id", "dialogue", "speaker", "text"))
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "rec"), str(manifest), "--json", "-", "--quiet"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    # the manifest's rows became each row's last two turns with their speakers, as in training
    contexts = [rec.context_text([(v.speaker, v.text) for v in test[i - u.turn : i]]) or None for i, u in enumerate(test)]
    assert contexts[2] == f"spk0a: {test[0].text} spk0b: {test[1].text}" and contexts[0] is None
    api = rec.predict(text=[u.text for u in test], context=contexts)
    assert [r["probabilities"] for r in out] == [pytest.approx(p.probabilities, abs=1e-6) for p in api]
    previous_only = rec.predict(text=[u.text for u in test], context=[None if u.turn == 0 else test[i - 1].text
                                                                       for i, u in enumerate(test)])
    assert sum(a.label != b.label for a, b in zip(api, previous_only, strict=True)) >= 3  # the format matters
    # serve takes the formatted turns in its 'context' field, and its schema says how to format them
    from fastapi.testclient import TestClient

    from emovox.serve.app import create_app
    from emovox.serve.limits import ServeConfig

    with TestClient(create_app(rec, ServeConfig())) as client:
        assert "last 2 turn(s) each as 'speaker: text'" in json.dumps(client.get("/openapi.json").json())
        r = client.post("/predict", data={"text": test[2].text, "context": contexts[2]})
        assert r.status_code == 200, r.text
        assert r.json()["probabilities"] == pytest.approx(api[2].probabilities, abs=1e-6)


def test_a_long_context_of_several_turns_loses_its_oldest_words_not_its_newest():
    from emovox.backbones.loader import load_backbone
    from emovox.cache import item_key
    from emovox.data.examples import EndText

    backbone = load_backbone("bert-base", tiny=True, max_tokens=6)
    words = "one two three four five six seven eight"
    ids = backbone.tokenizer(words, add_special_tokens=False)["input_ids"]
    plain = backbone.preprocess([words])["input_ids"][0].tolist()
    end = backbone.preprocess([EndText(words)])["input_ids"][0].tolist()
    assert plain[1:-1] == ids[:4] and end[1:-1] == ids[-4:]  # [CLS] ... [SEP] around the 4 kept tokens
    assert item_key(EndText(words)) != item_key(words)  # the two encodings never share a cache entry


def test_context_turns_are_refused_where_they_shape_nothing(tmp_path):
    from emovox.models import registry

    for branch in ({**TEXT, "context_turns": 2}, {**AUDIO, "input": "context", "context_speakers": True}):
        cfg = config_from_dict(experiment("dialogues:synthetic", tmp_path / "cache", {"kind": "fusion", "branches": [branch]}))
        with pytest.raises(ConfigError, match="context_turns / context_speakers shape a context text"):
            registry.build(cfg.model, ("high", "low"))
    mixed = {"kind": "fusion", "projection": 16,
             "branches": [{**TEXT, "input": "context", "context_turns": 2}, {**TEXT, "input": "pair", "name": "p"}]}
    with pytest.raises(EmovoxError, match="read the dialogue context in different ways"):
        run_cv(config_from_dict(experiment("dialogues:synthetic", tmp_path / "cache", mixed)), tmp_path / "mixed",
               corpus=two_back_corpus(dialogues=8), progress=False)


def test_serve_gives_an_audio_and_text_context_recognizer_the_previous_utterance(halves, tmp_path):
    """The audio+text endpoint takes the 'context' form field too, and passes it on; a context branch
    trained where no utterance has a previous one warns and still trains."""
    from fastapi.testclient import TestClient

    from emovox.errors import EmovoxWarning
    from emovox.inference.recognizer import Recognizer
    from emovox.serve.app import create_app
    from emovox.serve.limits import ServeConfig
    from emovox.training.final import train_recognizer

    model = {"kind": "fusion", "projection": 16, "branches": [AUDIO, TEXT, {**TEXT, "input": "context"}]}
    # this corpus has no dialogue order: the context branch never sees a previous utterance. That is
    # said, and training stays finite (its standardisation had been fitted on no rows: NaN)
    with pytest.warns(EmovoxWarning, match="no dialogue order"):
        train_recognizer(config_from_dict(experiment(halves["spec"], halves["cache"], model)), tmp_path / "rec", progress=False)
    rec = Recognizer.load(tmp_path / "rec")
    audio = Path(halves["spec"].split(":", 1)[1]).parent / "wav" / "spk0_hi_a_0.wav"
    seen, predict = [], rec.predict

    def recording(clips, text=None, context=None, **kwargs):
        seen.append(context)
        return predict(clips, text=text, context=context, **kwargs)

    rec.predict = recording
    with TestClient(create_app(rec, ServeConfig())) as client:
        for ctx in ("rain on the roof", None):
            data = {"text": "apples again", **({"context": ctx} if ctx else {})}
            r = client.post("/predict", files={"audio": ("clip.wav", audio.read_bytes(), "audio/wav")}, data=data)
            assert r.status_code == 200, r.text
            want = predict([str(audio)], text=["apples again"], context=None if ctx is None else [ctx])[0]
            assert r.json()["probabilities"] == pytest.approx(want.probabilities, abs=1e-6)
    assert seen == [["rain on the roof"], None]  # the form field reached the recognizer; none: the dialogue's first


# --- early fusion -------------------------------------------------------------------------------


def test_fusion_of_audio_and_text_beats_each_modality_alone(halves):
    cfg = experiment(halves["spec"], halves["cache"], {"kind": "fusion", "projection": 16, "branches": [AUDIO, TEXT]})
    fused = run_cv(config_from_dict(cfg), halves["root"] / "run-fusion", progress=False)
    audio, text = halves["audio_results"]["pooled"]["ua"], halves["text_results"]["pooled"]["ua"]
    assert audio <= 0.65 and text <= 0.65  # each tells apart two of the four classes: at best 0.5 + noise
    assert fused["pooled"]["ua"] >= 0.9 and fused["pooled"]["ua"] >= max(audio, text) + 0.25


def test_a_logistic_fusion_head_is_the_closed_form_fit_written_into_the_papers_layers(halves):
    """head: logistic fits one scikit-learn model over both branches' features; the projections and
    the final layer then compute exactly its class scores, and the cv result is as good as Adam's."""
    from sklearn.linear_model import LogisticRegression

    from emovox.corpora import load_corpus
    from emovox.models.closed_form import features
    from emovox.training.data import ExperimentData

    model = {"kind": "fusion", "projection": 16, "branches": [AUDIO, TEXT], "head": "logistic", "C": [0.1, 1.0],
             "select": "inner-logloss"}
    cfg = config_from_dict(experiment(halves["spec"], halves["cache"], model))
    res = run_cv(cfg, halves["root"] / "run-fusion-logistic", progress=False)
    assert res["pooled"]["ua"] >= 0.9 and res["choices"][0]["select"] == "inner-logloss"
    assert res["choices"][0]["C"] in (0.1, 1.0) and "temperature" in res["choices"][0]  # no epochs: chosen in closed form

    def without_augmentation(**changes):
        raw = experiment(halves["spec"], halves["cache"], {**model, **changes})
        raw["train"]["augment"] = {"length": False}
        return config_from_dict(raw)

    plain = without_augmentation()
    data = ExperimentData(plain, load_corpus(plain.corpus), progress=False)
    fusion, train = data.build_model(), list(data.examples.values())
    fusion.fit_statistics(train)
    choices = fusion.fit_direct(train, [])
    x, y = features(fusion, train, fusion.reduced), [e.target for e in train]
    assert x.shape[1] == sum(r.out_width for r in fusion.reducers)
    ref = LogisticRegression(C=choices["C"], solver="newton-cg", tol=1e-10, max_iter=10000).fit(x, y)
    fusion.eval()
    with torch.no_grad():
        logits = torch.cat([fusion.logits(fusion.collate(train[i : i + 16])) for i in range(0, len(train), 16)])
    np.testing.assert_allclose(logits.numpy(), ref.decision_function(x), atol=1e-3)
    with pytest.raises(ConfigError, match="projection"):
        data.build_model(without_augmentation(projection=2)).fit_direct(train, [])


def test_an_audio_and_text_recognizer_predicts_from_the_cli_with_the_manifests_transcripts(halves, tmp_path):
    """Both inputs reach a fusion recognizer from `emovox predict`: the audio is decoded even though a transcript is given."""
    import csv

    from typer.testing import CliRunner

    from emovox.cli import app
    from emovox.inference.recognizer import Recognizer
    from emovox.training.final import train_recognizer

    cfg = experiment(halves["spec"], halves["cache"], {"kind": "fusion", "projection": 16, "branches": [AUDIO, TEXT]})
    train_recognizer(config_from_dict(cfg), tmp_path / "rec", progress=False)
    rec = Recognizer.load(tmp_path / "rec")
    assert rec.needs_audio and rec.needs_text
    manifest = Path(halves["spec"].split(":", 1)[1])
    with manifest.open() as fh:
        rows = list(csv.DictReader(fh))[:6]
    r = CliRunner().invoke(app, ["predict", str(tmp_path / "rec"), str(manifest), "--json", "-"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)[:6]
    for row, out in zip(rows, got, strict=True):
        audio = manifest.parent / row["path"]
        expected = rec.predict([str(audio)], text=[row["text"]])[0]
        assert out["label"] == expected.label and out["probabilities"] == pytest.approx(expected.probabilities, abs=1e-6)
    # and from the HTTP service: the upload and the typed transcript together
    from fastapi.testclient import TestClient

    from emovox.serve.app import create_app
    from emovox.serve.limits import ServeConfig

    row = rows[0]
    audio = manifest.parent / row["path"]
    with TestClient(create_app(rec, ServeConfig())) as client:
        r = client.post("/predict", files={"audio": ("clip.wav", audio.read_bytes(), "audio/wav")}, data={"text": row["text"]})
        assert r.status_code == 200, r.text
        expected = rec.predict([str(audio)], text=[row["text"]])[0]
        assert r.json()["probabilities"] == pytest.approx(expected.probabilities, abs=1e-6)


# --- late fusion --------------------------------------------------------------------------------


def late(halves: dict, members: list, **model) -> dict:
    cfg = experiment(halves["spec"], halves["cache"], {"kind": "late-fusion", "members": [str(m) for m in members],
                                                       "hidden": [32, 16, 16], **model})
    cfg["train"].update(lr=0.005, max_epochs=30, patience=30)  # 24 training utterances per fold: small steps
    return cfg


def test_late_fusion_over_cv_runs_uses_each_folds_member_models_and_beats_both(halves):
    res = run_cv(config_from_dict(late(halves, [halves["audio"], halves["text"]])), halves["root"] / "run-late", progress=False)
    assert res["kind"] == "late-fusion" and res["backbone"] == "run-audio + run-text"
    assert res["pooled"]["n"] == 48
    audio, text = halves["audio_results"]["pooled"]["ua"], halves["text_results"]["pooled"]["ua"]
    assert res["pooled"]["ua"] >= 0.9 and res["pooled"]["ua"] >= max(audio, text) + 0.25


def test_a_logistic_late_fusion_head_fits_the_member_outputs_in_closed_form_and_reloads(halves, tmp_path):
    """head: logistic: no hidden layers, one scikit-learn fit over the standardised member outputs."""
    from emovox.inference.recognizer import Recognizer
    from emovox.training.final import train_recognizer

    cfg = late(halves, [halves["audio"], halves["text"]], head="logistic", C=[0.1, 1.0], select="inner-logloss")
    res = run_cv(config_from_dict(cfg), tmp_path / "run-late-logistic", progress=False)
    assert res["pooled"]["ua"] >= 0.9 and {c["C"] for c in res["choices"]} <= {0.1, 1.0}
    members = []
    for name, model in (("audio", AUDIO), ("text", TEXT)):
        members.append(tmp_path / f"rec-{name}")
        train_recognizer(config_from_dict(experiment(halves["spec"], halves["cache"], model)), members[-1], progress=False)
    rec_cfg = late(halves, members, head="logistic", C=[0.1, 1.0], select="inner-logloss")
    trained = train_recognizer(config_from_dict(rec_cfg), tmp_path / "rec", progress=False)
    assert list(trained.model.mlp) == [] and trained.info["training"]["choices"]["select"] == "inner-logloss"
    from emovox.data.examples import Example

    clips = [tone(600, 0.4), tone(150, 0.4)]
    examples = [Example(str(i), 0, audio=c, text=WORDS["a"][0], length=len(c) / 16000) for i, c in enumerate(clips)]
    with torch.inference_mode():
        before = torch.softmax(trained.model(trained.model.collate(examples)), -1).numpy()
    np.testing.assert_allclose(Recognizer.load(tmp_path / "rec").predict_examples(examples), before, atol=1e-5)
    assert [trained.labels[k] for k in before.argmax(1)] == ["hi-a", "lo-a"]


def test_a_fold_model_is_rebuilt_exactly_from_its_run(halves):
    """What late fusion reads per fold is the very model that fold tested."""
    from emovox.corpora import load_corpus
    from emovox.data.examples import build_examples
    from emovox.evaluation.predictions import read_predictions
    from emovox.models.fold_model import load_fold_model

    corpus = load_corpus(halves["spec"])
    for fold in ("fold_1", "fold_3"):
        record = json.loads((halves["audio"] / fold / "model.json").read_text())
        assert record["kind"] == "classifier" and record["weights"] == "best_model.safetensors" and record["embed_width"] == 96
        model = load_fold_model(halves["audio"] / fold)
        ids, _, probs = read_predictions(halves["audio"] / fold / "predictions.csv", corpus.labels)
        examples, _ = build_examples(corpus, ids, model.fields())
        with torch.inference_mode():
            again = torch.softmax(model(model.collate(examples)), -1).numpy()
        np.testing.assert_allclose(again, probs, atol=1e-4)


def test_late_fusion_never_uses_a_member_that_saw_the_test_part(halves, tmp_path):
    from emovox.training.final import train_recognizer

    audio_cfg = config_from_dict(experiment(halves["spec"], halves["cache"], AUDIO))
    text_cfg = config_from_dict(experiment(halves["spec"], halves["cache"], TEXT))
    rec_audio, rec_text = tmp_path / "rec-audio", tmp_path / "rec-text"
    train_recognizer(audio_cfg, rec_audio, progress=False)
    train_recognizer(text_cfg, rec_text, progress=False)
    # recognizers trained on all of this corpus saw every test fold: refused in cross-validation
    with pytest.raises(EmovoxError, match="rec-audio was trained on this corpus.*cv run directories"):
        run_cv(config_from_dict(late(halves, [rec_audio, rec_text])), tmp_path / "leaky", progress=False)
    # a member run whose folds differ: its fold-k model trained on some of this fold-k's test utterances
    other = config_from_dict({**experiment(halves["spec"], halves["cache"], AUDIO), "protocol": "stratified:4"})
    run_cv(other, tmp_path / "run-stratified", progress=False)
    with pytest.raises(EmovoxError, match=r"run-stratified: its fold_1 model trained on \d+ of this fold's test utterances"):
        run_cv(config_from_dict(late(halves, [tmp_path / "run-stratified", halves["text"]])), tmp_path / "mixed", progress=False)
    # cv runs have models fold by fold only: a final recognizer needs recognizer directories
    with pytest.raises(ConfigError, match="is a cv run.*give the members' recognizer directories"):
        train_recognizer(config_from_dict(late(halves, [halves["audio"], rec_text])), tmp_path / "no", progress=False)
    with pytest.raises(ConfigError, match="neither a recognizer directory.*nor a cv run directory"):
        config = config_from_dict(late(halves, [tmp_path, rec_text]))
        train_recognizer(config, tmp_path / "no", progress=False)


def test_a_saved_late_fusion_recognizer_holds_its_members_and_predicts_the_same(halves, tmp_path):
    from emovox.data.examples import Example
    from emovox.inference.recognizer import Recognizer
    from emovox.training.final import train_recognizer

    members = []
    for name, model in (("audio", AUDIO), ("text", TEXT)):
        members.append(tmp_path / f"rec-{name}")
        train_recognizer(config_from_dict(experiment(halves["spec"], halves["cache"], model)), members[-1], progress=False)
    trained = train_recognizer(config_from_dict(late(halves, members)), tmp_path / "rec-late", progress=False)
    # self-contained: moved elsewhere with its members' originals gone, it loads and predicts the same
    moved = tmp_path / "elsewhere" / "rec-late"
    shutil.copytree(tmp_path / "rec-late", moved)
    for m in [*members, tmp_path / "rec-late"]:
        shutil.rmtree(m)
    info = json.loads((moved / "emovox.json").read_text())
    assert info["kind"] == "late-fusion" and info["modality"] == "audio+text" and info["fields"] == ["audio", "text"]
    assert info["model"]["members"] == ["members/0", "members/1"]
    assert "members/0/emovox.json" in info["files"] and "members/1/weights.safetensors" in info["files"]
    rec = Recognizer.load(moved)
    clips = [tone(600, 0.4), tone(600, 0.45), tone(150, 0.4), tone(150, 0.35)]
    texts = [WORDS["a"][0], WORDS["b"][1], WORDS["a"][1], WORDS["b"][0]]
    preds = rec.predict(clips, text=texts)
    examples = [Example(str(i), 0, audio=c, text=t, length=len(c) / 16000) for i, (c, t) in enumerate(zip(clips, texts, strict=True))]
    with torch.inference_mode():
        before = torch.softmax(trained.model(trained.model.collate(examples)), -1).numpy()
    np.testing.assert_allclose(rec.predict_examples(examples), before, atol=1e-5)
    np.testing.assert_allclose([[p.probabilities[x] for x in rec.labels] for p in preds], before, atol=1e-5)
    assert len({p.label for p in preds}) > 1  # it reads its inputs (the members run live on the raw audio and text)
    # every member file is checked like the recognizer's own
    (moved / "members" / "1" / "emovox.json").write_text((moved / "members" / "1" / "emovox.json").read_text() + " ")
    with pytest.raises(RecognizerError, match=r"members/1/emovox.json: damaged or modified"):
        Recognizer.load(moved)


def test_late_fusion_config_errors_are_named(halves):
    with pytest.raises(ConfigError, match="listed twice"):
        config_from_dict(late(halves, [halves["audio"], halves["audio"]]))
    with pytest.raises(ConfigError, match="hidden"):
        config_from_dict(late(halves, [halves["audio"]], hidden=[0]))


# --- bad input for multi-branch models ----------------------------------------------------------


def bad_input_manifest(root: Path) -> Path:
    """The tone corpus of two classes plus: an utterance without transcript, one whose audio file is
    not audio, and one whose *previous* utterance (same dialogue) has no transcript."""
    rows = []
    for s in range(4):
        for label, freq, words in (("high", 520.0, "what a wonderful day"), ("low", 180.0, "I feel sad and tired")):
            for k in range(3):
                rel = f"wav/spk{s}_{label}_{k}.wav"
                write_wav(root / rel, tone(freq * (1 + 0.03 * s), 0.4 + 0.05 * k))
                rows.append({"id": f"spk{s}_{label}_{k}", "path": rel, "label": label, "speaker": f"spk{s}", "text": words,
                             "dialogue": f"spk{s}_{label}", "turn": k})
    rows[0]["text"] = ""  # spk0_high_0: no transcript (it is the previous utterance of spk0_high_1 too)
    (root / "wav" / "broken.wav").write_bytes(b"this is not audio")
    rows[4]["path"] = "wav/broken.wav"  # spk0_low_1: unreadable audio
    return write_manifest(root / "manifest.csv", rows, ("id", "path", "label", "speaker", "text", "dialogue", "turn"))


def test_bad_input_of_a_multi_branch_model_is_skipped_and_listed_or_named(tmp_path):
    manifest = bad_input_manifest(tmp_path / "corpus")
    model = {"kind": "fusion", "projection": 16, "branches": [AUDIO, TEXT, {**TEXT, "input": "context"}]}
    cfg = experiment(f"manifest:{manifest}", tmp_path / "cache", model, on_bad_audio="skip")
    cfg["train"]["max_epochs"] = 2
    res = run_cv(config_from_dict(cfg), tmp_path / "run", progress=False)
    skipped = {s["id"]: s for s in res["skipped"]}
    assert set(skipped) == {"spk0_high_0", "spk0_low_1", "spk0_high_1"}
    assert skipped["spk0_high_0"]["kind"] == "transcript" and "has no transcript" in skipped["spk0_high_0"]["reason"]
    assert skipped["spk0_low_1"]["kind"] == "audio" and "broken.wav" in skipped["spk0_low_1"]["reason"]
    assert "previous utterance spk0_high_0" in skipped["spk0_high_1"]["reason"]
    assert res["pooled"]["n"] == 24 - 3
    report = (tmp_path / "run" / "report.md").read_text()
    assert "spk0_low_1" in report and "spk0_high_1" in report
    cfg["on_bad_audio"] = "error"
    with pytest.raises(EmovoxError, match="spk0_high_0.*has no transcript"):
        run_cv(config_from_dict(cfg), tmp_path / "run-error", progress=False)


# --- text models without audio, end to end on MELD-like data -----------------------------------

MOODS = {"joy": ("what great news", "I love it"), "sadness": ("I miss her so much", "this is so sad"),
         "neutral": ("the keys are on the table", "see you at noon")}


def meld_like_tree(root: Path) -> Path:
    from corpus_fixtures import make_meld_tree

    rows, speakers = [], ["Ross", "Rachel", "Joey", "Monica"]
    for split, dialogues in (("train", 12), ("dev", 4), ("test", 4)):
        for d in range(dialogues):
            for t in range(6):
                emotion = list(MOODS)[(d + t) % 3]
                rows.append((split, d, t, speakers[(d + t) % 4], emotion, MOODS[emotion][(d * t) % 2]))
    return make_meld_tree(root, tuple(rows))


def test_a_text_context_model_runs_cv_train_predict_and_serve_without_audio(tmp_path):
    import yaml
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from emovox.cli import app
    from emovox.inference.recognizer import Recognizer
    from emovox.serve.app import create_app
    from emovox.serve.limits import ServeConfig

    config = tmp_path / "meld-context.yaml"
    config.write_text(yaml.safe_dump({
        "name": "meld-context", "corpus": f"meld:{meld_like_tree(tmp_path)}?labels=joy,sadness,neutral",
        "protocol": "official", "cache_dir": str(tmp_path / "cache"),
        "model": {"kind": "fusion", "projection": 16, "branches": [TEXT, {**TEXT, "input": "context"}]},
        "train": dict(TRAIN),
    }))
    runner = CliRunner()
    result = runner.invoke(app, ["cv", str(config), "--out", str(tmp_path / "run"), "--quiet"])
    assert result.exit_code == 0, result.output
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["kind"] == "fusion" and res["pooled"]["n"] == 24 and res["pooled"]["weighted_f1"] >= 0.9
    assert "confidence_intervals" in res and res["baseline"]["pooled"]["n"] == 24
    result = runner.invoke(app, ["train", str(config), "--out", str(tmp_path / "rec"), "--quiet"])
    assert result.exit_code == 0, result.output
    rec = Recognizer.load(tmp_path / "rec")
    assert rec.modality == "text" and rec.fields == {"text", "context_text"} and not rec.needs_audio
    result = runner.invoke(app, ["predict", str(tmp_path / "rec"), "--text", "I miss her so much", "--json", "-"])
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)[0]
    assert row["label"] == "sad" and row["transcript"] == "I miss her so much"
    # the previous utterance is optional: without it the model reads its learned "no context" vector
    alone = rec.predict(text="what great news")
    after = rec.predict(text="what great news", context="the keys are on the table")
    assert alone.label == after.label == "happy" and alone.probabilities != after.probabilities
    assert row["probabilities"] == pytest.approx(rec.predict(text="I miss her so much").probabilities, abs=1e-6)
    with TestClient(create_app(rec, ServeConfig())) as client:
        r = client.post("/predict", data={"text": "this is so sad"})
        assert r.status_code == 200, r.text
        assert r.json()["label"] == "sad"
        assert r.json()["probabilities"] == pytest.approx(rec.predict(text="this is so sad").probabilities, abs=1e-6)


# --- the papers' combination recipes ------------------------------------------------------------

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def test_the_iemocap_papers_combination_recipes_are_valid_configs_of_its_tables():
    from emovox.config import load_config

    def branches(name: str) -> list[tuple[str, str]]:
        cfg = load_config(RECIPES / "iemocap" / f"{name}.yaml")
        assert cfg.name == name and cfg.model.kind == "fusion" and cfg.model.projection == 256 and cfg.model.dropout == 0.1
        assert cfg.protocol == "leave-one-session-out" and cfg.train.lr == 1e-5 and cfg.train.batch_size == 12
        assert all(b.mode == "finetune" for b in cfg.model.branches)
        return [(b.backbone, b.input) for b in cfg.model.branches]

    slug = {"bert": "bert-base", "bart": "bart-base", "opt": "opt-125m", "wav2vec2": "wav2vec2-base", "whisper": "whisper-small"}
    table3 = [("bert", "bert"), ("bert", "bart"), ("bert", "opt"), ("bart", "bart"), ("bart", "bert"), ("bart", "opt"),
              ("opt", "opt"), ("opt", "bert"), ("opt", "bart"), ("wav2vec2", "wav2vec2"), ("wav2vec2", "whisper"),
              ("whisper", "whisper"), ("whisper", "wav2vec2")]
    for utt, ctx in table3:
        assert branches(f"iemocap-context-{utt}-{ctx}") == [(slug[utt], "utterance"), (slug[ctx], "context")]
    for audio in ("wav2vec2", "whisper"):
        for text in ("bert", "bart", "opt"):
            assert branches(f"iemocap-fusion-{audio}-{text}") == [(slug[audio], "utterance"), (slug[text], "utterance")]
    w, o = "whisper-small", "opt-125m"
    assert branches("iemocap-fusion-whisper-opt-context") == [(w, "utterance"), (w, "context"), (o, "utterance"), (o, "context")]
    assert branches("iemocap-fusion-whisper-opt-context-no-audio-context") == [(w, "utterance"), (o, "utterance"), (o, "context")]
    assert branches("iemocap-fusion-whisper-opt-context-no-text-context") == [(w, "utterance"), (w, "context"), (o, "utterance")]
    assert "WA 82.12 / UA 83.34" in (RECIPES / "iemocap" / "iemocap-fusion-whisper-opt-context.yaml").read_text()


def test_the_late_fusion_recipes_name_their_members_runs():
    from emovox.config import load_config

    for name, members in (("iemocap6-late-fusion-deberta-wav2vec2", ["iemocap6-deberta-v3-small", "iemocap6-wav2vec2-base-960h"]),
                          ("emodb-late-fusion-whisper-minilm", ["emodb-whisper-base-frozen", "emodb-minilm-frozen"])):
        folder = RECIPES / name.split("-")[0].removesuffix("6")
        cfg = load_config(folder / f"{name}.yaml")
        assert cfg.model.kind == "late-fusion" and len(cfg.model.hidden) + 1 == 4  # the paper's 4-layer MLP
        assert [Path(m).name for m in cfg.model.members] == members and all(Path(m).is_absolute() for m in cfg.model.members)
        for member in members:  # each member's own recipe is there, with the same corpus and protocol
            member_cfg = load_config(folder / f"{member}.yaml")
            assert (member_cfg.corpus, member_cfg.protocol) == (cfg.corpus, cfg.protocol)
