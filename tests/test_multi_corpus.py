"""Several corpora in one run: canonical labels, the labels: policy, namespaced ids, the ASED reader.

The pseudo-corpora (``corpus_fixtures.make_pseudo_corpora``) are real EmoDB clips in three layouts:
alpha (a manifest, 8 kHz, short label words), beta (RAVDESS names, 48 kHz, calm = EmoDB's bored),
gamma (ASED names, 16 kHz, no happy); alpha and gamma both call their speakers 01 and 02.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from corpus_fixtures import ALPHA_WORDS, PSEUDO_CORPORA, make_ased_tree
from sklearn.metrics import balanced_accuracy_score
from typer.testing import CliRunner

from emovox.cli import app
from emovox.config import config_from_dict
from emovox.corpora import LabelPolicy, load_corpora, load_corpus
from emovox.data.examples import build_examples
from emovox.errors import ConfigError, CorpusError
from emovox.labels import canonical_label

# --- labels ---------------------------------------------------------------------------------


def test_aliases_name_the_canonical_classes_and_other_words_stay() -> None:
    assert [canonical_label(x) for x in ("fear", "Disgust", "surprise", "anger", "joy", "sadness", "boredom")] == [
        "fearful", "disgusted", "surprised", "angry", "happy", "sad", "bored"]  # fmt: skip
    assert canonical_label("Neutral") == "neutral" and canonical_label("fearful") == "fearful"
    assert canonical_label("positive") == "positive"  # a manifest's own label is kept as written


def test_reader_labels_option_takes_aliases(tmp_path: Path) -> None:
    from corpus_fixtures import make_ravdess_tree

    root = make_ravdess_tree(tmp_path)
    c = load_corpus(f"ravdess:{root}?labels=anger,joy,neutral,fear")
    assert c.labels == ("angry", "happy", "neutral", "fearful")
    with pytest.raises(CorpusError, match="more than once"):
        load_corpus(f"ravdess:{root}?labels=fear,fearful")


def test_a_manifest_keeps_its_word_and_gets_the_canonical_name(pseudo_corpora) -> None:
    alpha = load_corpus(pseudo_corpora["alpha"])
    assert set(alpha.labels) == {"angry", "happy", "sad", "neutral", "fearful"}
    assert {u.corpus_label for u in alpha} == set(ALPHA_WORDS.values())
    by_word = {u.corpus_label: u.label for u in alpha}
    assert by_word == {"anger": "angry", "joy": "happy", "sadness": "sad", "neutral": "neutral", "fear": "fearful"}


# --- one corpus, several ----------------------------------------------------------------------


def test_every_utterance_knows_its_corpus_and_a_lone_corpus_keeps_its_ids(pseudo_corpora) -> None:
    beta = load_corpus(pseudo_corpora["beta"])
    assert beta.name == "beta" and {u.corpus for u in beta} == {"beta"}
    assert all("/" not in u.id and u.speaker.startswith("Actor_") for u in beta)
    assert load_corpora(pseudo_corpora["beta"]).fingerprint() == beta.fingerprint()
    assert load_corpora([pseudo_corpora["beta"]]).fingerprint() == beta.fingerprint()
    # the fingerprint of a corpus read alone is what it always was (runs and recognizers stay valid)
    import hashlib

    h = hashlib.sha256()
    for u in sorted(beta.utterances, key=lambda u: u.id):
        h.update(json.dumps([u.id, u.label, u.speaker, u.session, str(u.audio), u.text, u.start, u.end]).encode())
    h.update(json.dumps(list(beta.labels)).encode())
    assert beta.fingerprint() == h.hexdigest()[:16]


def test_pooled_corpora_namespace_ids_and_speakers(pseudo_corpora) -> None:
    pooled = load_corpora(list(pseudo_corpora.values()))
    assert pooled.corpora == ["alpha", "beta", "gamma"]
    assert all(u.id.startswith(f"{u.corpus}/") and u.speaker.startswith(f"{u.corpus}/") for u in pooled)
    # alpha and gamma both number their speakers 01, 02: pooled, they are four people, not two
    assert {"alpha/01", "alpha/02", "gamma/01", "gamma/02"} <= set(pooled.speakers)
    assert len(pooled.speakers) == sum(len(s) for s, _ in PSEUDO_CORPORA.values())
    assert [s["name"] for s in pooled.sources] == ["alpha", "beta", "gamma"]
    assert pooled.sources[0]["label_map"]["fearful"] == ["fear"]
    assert pooled.sources[1]["fingerprint"] == load_corpora(pseudo_corpora["beta"], LabelPolicy(pooled.labels)).fingerprint()
    # the corpus of each utterance reaches the model's examples
    ids = [pooled.utterances[0].id, pooled.utterances[-1].id]
    examples, _ = build_examples(pooled, ids, ["audio"], max_seconds=1.0)
    assert [(e.corpus, e.speaker) for e in examples] == [(pooled[i].corpus, pooled[i].speaker) for i in ids]
    assert examples[0].audio.dtype == np.float32  # 8 kHz alpha and 48 kHz beta arrive at 16 kHz
    assert abs(len(examples[0].audio) / 16_000 - min(1.0, sf.info(str(pooled[ids[0]].audio)).duration)) < 0.01


def test_several_corpora_keep_the_classes_they_share_by_default(pseudo_corpora) -> None:
    pooled = load_corpora(list(pseudo_corpora.values()))
    # alpha: angry fearful happy neutral sad; beta: + calm; gamma: no happy
    assert pooled.labels == ("angry", "fearful", "neutral", "sad")
    assert {u.label for u in pooled} == set(pooled.labels)
    assert len(pooled) == sum(len(s) * 4 * 2 for s, _ in PSEUDO_CORPORA.values())


def test_keep_and_merge(pseudo_corpora) -> None:
    specs = list(pseudo_corpora.values())
    merged = load_corpora(specs, LabelPolicy("all", {"calm": "neutral"}))
    assert merged.labels == ("angry", "fearful", "happy", "neutral", "sad")
    calm = [u for u in merged if u.corpus == "beta" and u.corpus_label == "02"]
    assert calm and {u.label for u in calm} == {"neutral"}  # RAVDESS's calm (02), now neutral; its code kept
    assert sum(u.corpus == "gamma" and u.label == "happy" for u in merged) == 0
    kept = load_corpora(specs, LabelPolicy(("anger", "sadness")))  # aliases, in the order given
    assert kept.labels == ("angry", "sad") and {u.label for u in kept} == {"angry", "sad"}
    with pytest.raises(CorpusError, match="no corpus has"):
        load_corpora(specs, LabelPolicy(("angry", "surprised")))
    with pytest.raises(CorpusError, match="merge names 'bored'"):
        load_corpora(specs, LabelPolicy("all", {"bored": "neutral"}))
    with pytest.raises(CorpusError, match=r"both named .gamma.*\?name="):
        load_corpora([pseudo_corpora["beta"], pseudo_corpora["beta"].replace("?name=beta", "?name=gamma"),
                      pseudo_corpora["gamma"]])  # fmt: skip


def test_two_copies_of_one_corpus_pool_only_under_other_names(pseudo_corpora) -> None:
    alpha = pseudo_corpora["alpha"]
    with pytest.raises(CorpusError, match="both named 'alpha'"):
        load_corpora([alpha, alpha + "?labels=anger,joy"])
    pooled = load_corpora([alpha, alpha + "?name=alpha2"])
    assert pooled.corpora == ["alpha", "alpha2"] and len(pooled.speakers) == 4
    with pytest.raises(CorpusError, match="corpus name is letters"):
        load_corpus(alpha + "?name=a/b")


def test_labels_section_of_a_config(pseudo_corpora) -> None:
    base = {"corpus": list(pseudo_corpora.values()), "protocol": "leave-one-corpus-out", "model": {"backbone": "wav2vec2-base"}}
    assert config_from_dict(base).open_corpus().labels == ("angry", "fearful", "neutral", "sad")
    short = config_from_dict({**base, "labels": ["joy", "anger"]})
    assert short.labels.keep == ["joy", "anger"] and short.open_corpus().labels == ("happy", "angry")
    full = config_from_dict({**base, "labels": {"keep": "all", "merge": {"calm": "neutral"}}})
    assert full.open_corpus().labels == ("angry", "fearful", "happy", "neutral", "sad")
    with pytest.raises(ConfigError, match="labels"):
        config_from_dict({**base, "labels": {"keep": "most"}})
    with pytest.raises(ConfigError, match="listed twice"):
        config_from_dict({**base, "corpus": [pseudo_corpora["alpha"]] * 2})


# --- ASED -----------------------------------------------------------------------------------


def test_ased_reader(tmp_path: Path) -> None:
    root = make_ased_tree(tmp_path, speakers=(1, 7))
    c = load_corpus(f"ased:{root}")
    assert c.labels == ("neutral", "fearful", "happy", "sad", "angry") and len(c) == 2 * 5 * 2 + 1
    capital = c["S4-02-02-01-01"]  # the release's one capital letter
    assert (capital.label, capital.corpus_label, capital.speaker) == ("sad", "S", "01")
    assert c.speakers == ["01", "07"] and all(u.text is None for u in c)
    common = load_corpus(f"ased:{root}?sentences=common")
    assert {u.id.split("-")[1] for u in common} == {"01", "02"} and len(common) == 2 * 5 + 1
    assert len(load_corpus(f"ased:{root}?sentences=1,2")) == len(common)
    assert load_corpus(f"ased:{root}?labels=anger,sad").labels == ("angry", "sad")
    with pytest.raises(CorpusError, match="sentence '09'"):
        load_corpus(f"ased:{root}?sentences=09")


def test_ased_names_and_folders_must_agree(tmp_path: Path) -> None:
    root = make_ased_tree(tmp_path)
    wrong = root / "01Neutral" / "a5-01-01-01-01.wav"  # an angry name in the neutral folder
    sf.write(str(wrong), np.zeros(1600, dtype=np.float32), 16_000)
    with pytest.raises(CorpusError, match=r"a5-01-01-01-01.wav does not follow the ASED naming \(it is in folder 01Neutral"):
        load_corpus(f"ased:{root}")
    wrong.unlink()
    (root / "05Angry" / "notes.wav").write_bytes(b"")
    with pytest.raises(CorpusError, match="notes.wav does not follow the ASED naming"):
        load_corpus(f"ased:{root}")


# --- corpus info on a list -----------------------------------------------------------------------


def test_corpus_info_on_several_corpora(pseudo_corpora) -> None:
    runner = CliRunner()
    r = runner.invoke(app, ["corpus", "info", *pseudo_corpora.values(), "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert [c["name"] for c in info["corpora"]] == ["alpha", "beta", "gamma"]
    assert [c["utterances"] for c in info["corpora"]] == [20, 36, 24]
    assert info["labels"]["happy"] == {"alpha": 4, "beta": 6, "gamma": 0}
    assert info["labels"]["calm"] == {"alpha": 0, "beta": 6, "gamma": 0}
    assert info["shared"] == ["angry", "fearful", "neutral", "sad"]
    table = runner.invoke(app, ["corpus", "info", *pseudo_corpora.values()], env={"COLUMNS": "160"})
    assert table.exit_code == 0, table.output
    assert "in every corpus" in table.output and "shared by every corpus: angry, fearful, neutral, sad" in table.output
    happy = next(line for line in table.output.splitlines() if line.strip("│┃ ").startswith("happy"))
    assert "4" in happy and "6" in happy and "-" in happy  # gamma has none


# --- per-corpus figures ---------------------------------------------------------------------------


def test_ua_over_the_classes_present_equals_scikit_learn_on_those_rows() -> None:
    """A test corpus without some class: its UA (breakdown.scores) is sklearn's balanced accuracy on its rows
    (mean recall over the classes present, a class only predicted there left out), and the class is named absent."""
    from emovox.training.breakdown import scores

    labels = ("angry", "fearful", "happy", "neutral", "sad")
    rng = np.random.default_rng(3)
    y = rng.choice([0, 1, 3, 4], size=60)  # no happy (2)
    probs = rng.dirichlet(np.ones(5), size=60)
    probs[:5, 2] = 5.0  # ... but some predictions say happy
    probs /= probs.sum(1, keepdims=True)
    s = scores([str(i) for i in range(60)], y.tolist(), probs, labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns that y_pred holds a class y_true lacks
        assert s["ua"] == pytest.approx(balanced_accuracy_score(y, probs.argmax(1)), abs=1e-12)
    assert s["absent_classes"] == ["happy"] and s["classes_present"] == ["angry", "fearful", "neutral", "sad"]
    assert s["chance_ua"] == 0.25 and s["n"] == 60
