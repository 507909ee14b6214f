"""MELD: the reader (text only, dialogue order, context, splits, bad bytes) and the ``official`` protocol."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from corpus_fixtures import MELD_ROWS, make_meld_tree
from typer.testing import CliRunner

from emovox.cli import app
from emovox.corpora import load_corpus
from emovox.corpora.base import Corpus, Utterance
from emovox.errors import CorpusError, SplitError
from emovox.splits.fold import write_folds
from emovox.splits.protocols import make_folds

runner = CliRunner()


# --- the reader on a tiny release -----------------------------------------------------------


def test_reader_ids_labels_speakers_and_split(tmp_path: Path) -> None:
    c = load_corpus(f"meld:{make_meld_tree(tmp_path)}")
    assert c.name == "meld" and len(c) == len(MELD_ROWS)
    assert c.labels == ("angry", "disgusted", "fearful", "happy", "neutral", "sad", "surprised")
    # every split has a dialogue 0: the split keeps ids and dialogues unique
    assert {u.id for u in c if u.turn == 0 and u.dialogue.endswith("dia0")} == {
        "train/dia0_utt0",
        "dev/dia0_utt0",
        "test/dia0_utt0",
    }
    u = c["train/dia0_utt1"]
    assert (u.speaker, u.label, u.corpus_label, u.session, u.dialogue, u.turn) == (
        "Ross",
        "happy",
        "joy",
        "train",
        "train/dia0",
        1,
    )
    assert u.text == "We were on a break!"
    assert u.audio is None and u.start is None and not u.cut  # text only
    assert c.sessions == ["dev", "test", "train"]
    assert c["dev/dia0_utt1"].label == "fearful" and c["train/dia1_utt1"].label == "surprised"


def test_reader_replaces_mis_encoded_bytes(tmp_path: Path) -> None:
    c = load_corpus(f"meld:{make_meld_tree(tmp_path)}")
    assert c["test/dia0_utt0"].text == "I\ufffdm fine."


def test_previous_is_the_utterance_before_in_the_same_dialogue(tmp_path: Path) -> None:
    c = load_corpus(f"meld:{make_meld_tree(tmp_path)}")
    # rows were written out of order (1, 0, 3) and utterance 2 is missing from the release
    assert c.previous("train/dia0_utt0") is None
    assert c.previous("train/dia0_utt1").id == "train/dia0_utt0"
    assert c.previous("train/dia0_utt3").id == "train/dia0_utt1"  # nearest earlier one that exists
    assert c.previous("train/dia1_utt0") is None  # never reaches into another dialogue
    assert c.previous("dev/dia0_utt0") is None and c.previous("test/dia0_utt1").id == "test/dia0_utt0"
    # either speaker: Ross's context is Rachel's line
    assert c.previous("train/dia0_utt1").speaker == "Rachel"


def test_splits_and_labels_options(tmp_path: Path) -> None:
    root = make_meld_tree(tmp_path)
    dev = load_corpus(f"meld:{root}?splits=dev")
    assert [u.id for u in dev] == ["dev/dia0_utt0", "dev/dia0_utt1"]
    # MELD's words or emovox's, in the order given; other labels left out
    c = load_corpus(f"meld:{root}?labels=joy,anger,neutral")
    assert c.labels == ("happy", "angry", "neutral")
    assert Counter(u.label for u in c) == {"happy": 2, "angry": 1, "neutral": 2}
    # a left-out utterance keeps its turn; the context of a kept one is the nearest earlier kept one
    assert load_corpus(f"meld:{root}?labels=happy,sad").previous("train/dia0_utt3").id == "train/dia0_utt1"
    for bad, match in [
        ("splits=train,valid", "unknown split"),
        ("labels=joy,happy", "listed twice"),
        ("labels=calm", "not labels of this corpus"),
        ("split=train", "unknown option"),
    ]:
        with pytest.raises(CorpusError, match=match):
            load_corpus(f"meld:{root}?{bad}")


def test_bad_releases_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="not a folder"):
        load_corpus(f"meld:{tmp_path / 'nowhere'}")
    root = make_meld_tree(tmp_path)
    (root / "dev_sent_emo.csv").unlink()
    with pytest.raises(CorpusError, match="dev_sent_emo.csv is missing"):
        load_corpus(f"meld:{root}")
    assert len(load_corpus(f"meld:{root}?splits=train,test")) == 7
    (root / "test_sent_emo.csv").write_text("Utterance,Speaker,Emotion\nhi,Joey,joy\n")
    with pytest.raises(CorpusError, match=r"test_sent_emo.csv: column\(s\) Dialogue_ID, Utterance_ID missing"):
        load_corpus(f"meld:{root}?splits=test")
    (root / "test_sent_emo.csv").write_text("Utterance,Speaker,Emotion,Dialogue_ID,Utterance_ID\nhi,Joey,happiness,0,0\n")
    with pytest.raises(CorpusError, match=r"test_sent_emo.csv, line 2: unknown emotion 'happiness'"):
        load_corpus(f"meld:{root}?splits=test")
    (root / "test_sent_emo.csv").write_text("Utterance,Speaker,Emotion,Dialogue_ID,Utterance_ID\nhi,Joey,joy,0,x\n")
    with pytest.raises(CorpusError, match="Utterance_ID 'x' is not a whole number"):
        load_corpus(f"meld:{root}?splits=test")


def test_corpus_info_works_without_audio(tmp_path: Path) -> None:
    spec = f"meld:{make_meld_tree(tmp_path)}"
    result = runner.invoke(app, ["corpus", "info", spec, "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["utterances"] == 9 and info["without_audio"] == 9 and info["unreadable_audio"] == []
    assert info["sessions"] == 3 and info["dialogues"] == 4 and info["missing_transcripts"] == 0
    assert info["total_duration_s"] == 0 and info["mean_duration_s"] is None
    table = runner.invoke(app, ["corpus", "info", spec])
    assert table.exit_code == 0 and "without audio (text only)" in table.output
    export = runner.invoke(app, ["corpus", "export", spec, str(tmp_path / "m.csv")])
    assert export.exit_code != 0 and "text-only corpus" in str(export.exception)


# --- the official protocol ------------------------------------------------------------------


def test_official_protocol_uses_the_published_parts(tmp_path: Path) -> None:
    c = load_corpus(f"meld:{make_meld_tree(tmp_path)}")
    (fold,) = make_folds(c, "official")
    assert fold.index == 1 and fold.protocol == "official" and fold.validation == "strict"
    assert {c[i].session for i in fold.train} == {"train"} and len(fold.train) == 5
    assert set(fold.valid) == {"dev/dia0_utt0", "dev/dia0_utt1"}
    assert set(fold.test) == {"test/dia0_utt0", "test/dia0_utt1"}
    assert fold.speaker_independent is False  # Chandler and Joey speak in train/dev and test
    paths = write_folds([fold], c, tmp_path / "splits")
    summary = json.loads(paths[-1].read_text())
    assert summary["folds"][0]["speaker_independent"] is False and summary["folds"][0]["sizes"] == {
        "train": 5,
        "valid": 2,
        "test": 2,
    }


def test_official_protocol_accepts_valid_as_the_dev_name_and_refuses_others() -> None:
    def corpus(sessions: list[str | None]) -> Corpus:
        utts = [Utterance(f"u{i}", "spk", "a", "a", session=s) for i, s in enumerate(sessions)]
        return Corpus("toy", utts, ("a",), spec="toy:/x")

    (fold,) = make_folds(corpus(["train", "Validation", "test", "train"]), "official")
    assert fold.train == ("u0", "u3") and fold.valid == ("u1",) and fold.test == ("u2",)
    with pytest.raises(SplitError, match=r"sessions are \['Session1', 'Session2', 'Session3'\]"):
        make_folds(corpus(["Session1", "Session2", "Session3"]), "official")
    with pytest.raises(SplitError, match="it has no sessions"):
        make_folds(corpus([None, None]), "official")
    with pytest.raises(SplitError, match="utterance 'u1' has none"):
        make_folds(corpus(["train", None, "test", "dev"]), "official")
    with pytest.raises(SplitError, match="but dev is empty"):
        make_folds(corpus(["train", "test"]), "official")
    with pytest.raises(SplitError, match="validation 'paper' would select on the test part"):
        make_folds(corpus(["train", "dev", "test"]), "official", validation="paper")
    with pytest.raises(SplitError, match="takes no argument"):
        make_folds(corpus(["train", "dev", "test"]), "official:2")


def test_cli_splits_flags_official_as_not_speaker_independent(tmp_path: Path) -> None:
    result = runner.invoke(app, ["splits", f"meld:{make_meld_tree(tmp_path)}", "-p", "official", "--out", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    assert "NOT speaker-independent" in result.output
    assert len((tmp_path / "s" / "fold_1" / "test.jsonl").read_text().splitlines()) == 2


# --- the real release -----------------------------------------------------------------------


def test_real_meld(meld_dir: Path) -> None:
    c = load_corpus(f"meld:{meld_dir}")
    sizes = Counter(u.session for u in c)
    assert (sizes["train"], sizes["dev"], sizes["test"]) == (9989, 1109, 2610)
    train_counts = Counter(u.corpus_label for u in c if u.session == "train")
    assert train_counts == {
        "neutral": 4710,
        "joy": 1743,
        "surprise": 1205,
        "anger": 1109,
        "sadness": 683,
        "disgust": 271,
        "fear": 268,
    }  # fmt: skip  (the counts of the README beside the data)
    dialogues = Counter(s for s, _ in {(u.session, u.dialogue) for u in c})
    assert (dialogues["train"], dialogues["dev"], dialogues["test"]) == (1038, 114, 280)
    assert all(u.audio is None and u.text for u in c)
    # the first lines of train_sent_emo.csv, in dialogue order, each the context of the next
    first = c["train/dia0_utt0"]
    assert first.speaker == "Chandler" and first.text.startswith("also I was the point person on my company")
    assert c.previous(first) is None
    second = c["train/dia0_utt1"]
    assert (second.speaker, second.text, c.previous(second)) == ("The Interviewer", "You must’ve had your hands full.", first)
    assert c.previous("train/dia0_utt2").id == "train/dia0_utt1"
    # every utterance's context is the same dialogue's utterance with the largest smaller turn, and only
    # a dialogue's first utterance has none (worked out here from the dialogues, not from the reader's links)
    by_dialogue: dict[str, list] = {}
    for u in c:
        by_dialogue.setdefault(u.dialogue, []).append(u)
    expected = {}
    for turns in by_dialogue.values():
        turns.sort(key=lambda u: u.turn)
        assert len({u.turn for u in turns}) == len(turns)  # turns are unique within a dialogue: "just before" is defined
        expected.update({u.id: None if k == 0 else turns[k - 1].id for k, u in enumerate(turns)})
    got = {u.id: getattr(c.previous(u), "id", None) for u in c}
    assert got == expected
    assert sum(p is not None for p in got.values()) == len(c) - len(by_dialogue) == 13708 - 1432
    (fold,) = make_folds(c, "official")
    assert (len(fold.train), len(fold.valid), len(fold.test)) == (9989, 1109, 2610)
    assert fold.speaker_independent is False
