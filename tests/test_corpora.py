"""Corpus readers on fixture trees in each layout, the real EmoDB copy, and spec parsing."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest
from corpus_fixtures import (
    EMODB_FILES,
    IEMOCAP_COUNTS_PER_SESSION,
    IEMOCAP_DIALOGUES,
    MEACORPUS_ROWS,
    iemocap_dialogue,
    make_emodb_tree,
    make_iemocap_tree,
    make_meacorpus_tree,
    make_ravdess_tree,
)

import emovox.corpora as corpora
from emovox.corpora import READERS, UNKNOWN_SPEAKER, load_corpus, parse_spec
from emovox.errors import CorpusError

# --- spec strings -------------------------------------------------------------------------


def test_parse_spec_splits_format_path_and_options() -> None:
    s = parse_spec("IEMOCAP:/data/IEMOCAP?labels=6&merge_exc=false")
    assert (s.format, s.path, s.options) == ("iemocap", Path("/data/IEMOCAP"), {"labels": "6", "merge_exc": "false"})
    assert parse_spec("manifest:rel/train.csv").options == {}


@pytest.mark.parametrize("bad", ["", "iemocap", "iemocap:", ":/x", "iemocap:?labels=4"])
def test_malformed_specs(bad: str) -> None:
    with pytest.raises(CorpusError, match="FORMAT:PATH|no path"):
        load_corpus(bad)


def test_unknown_format_lists_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(CorpusError) as info:
        load_corpus(f"timit:{tmp_path}")
    for name in ("iemocap", "ravdess", "emodb", "meacorpus", "manifest"):
        assert name in str(info.value)


def test_unknown_option_lists_the_valid_ones(tmp_path: Path) -> None:
    root = make_iemocap_tree(tmp_path, sessions=1)
    with pytest.raises(CorpusError, match=r"unknown option\(s\) lables.*labels, merge_exc, name, on_missing_audio"):
        load_corpus(f"iemocap:{root}?lables=6")
    with pytest.raises(CorpusError, match="bad value '7' for option 'labels'"):
        load_corpus(f"iemocap:{root}?labels=7")
    with pytest.raises(CorpusError, match="merge_exc"):
        load_corpus(f"iemocap:{root}?merge_exc=maybe")


def test_every_option_is_documented_in_the_package_docstring() -> None:
    doc = corpora.__doc__ or ""
    for reader in READERS.values():
        assert f"``{reader.name}:PATH``" in doc
        for option in reader.options:
            assert option.name in doc, f"{reader.name} option {option.name} is not documented"


# --- IEMOCAP ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def iemocap_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_iemocap_tree(tmp_path_factory.mktemp("iemocap"), sessions=2)


@pytest.mark.parametrize("labels,merge", [("4", True), ("4", False), ("6", False)])
def test_iemocap_label_sets_and_exc_merge(iemocap_root: Path, labels: str, merge: bool) -> None:
    c = load_corpus(f"iemocap:{iemocap_root}?labels={labels}&merge_exc={str(merge).lower()}")
    expected = {k: 2 * v for k, v in IEMOCAP_COUNTS_PER_SESSION[(labels, merge)].items()}
    assert c.label_counts() == expected
    assert c.labels == (
        ("angry", "happy", "neutral", "sad") if labels == "4" else ("angry", "happy", "neutral", "sad", "excited", "frustrated")
    )
    excited = c["Ses01F_impro01_F001"] if "Ses01F_impro01_F001" in c else None
    if labels == "4" and merge:
        assert excited is not None and (excited.label, excited.corpus_label) == ("happy", "exc")
    elif labels == "4":
        assert excited is None
    else:
        assert excited is not None and excited.label == "excited"


def test_iemocap_defaults_merge_for_4_only(iemocap_root: Path) -> None:
    assert load_corpus(f"iemocap:{iemocap_root}").label_counts()["happy"] == 6
    assert load_corpus(f"iemocap:{iemocap_root}?labels=6").label_counts()["excited"] == 2
    with pytest.raises(CorpusError, match="excited"):
        load_corpus(f"iemocap:{iemocap_root}?labels=6&merge_exc=true")


def test_iemocap_all_keeps_every_code_but_xxx(iemocap_root: Path) -> None:
    c = load_corpus(f"iemocap:{iemocap_root}?labels=all")
    codes = Counter(u.corpus_label for u in c)
    assert codes == Counter({"neu": 6, "ang": 4, "hap": 4, "sad": 4, "exc": 2, "fru": 2, "sur": 2})
    assert "Ses01F_impro01_M001" not in c  # xxx


def test_iemocap_records(iemocap_root: Path) -> None:
    c = load_corpus(f"iemocap:{iemocap_root}")
    u = c["Ses02F_impro01_M000"]
    assert u.speaker == "Ses02M"  # the utterance's letter, not the dialogue's F
    assert u.session == "Session2"
    assert u.dialogue == "Ses02F_impro01"
    assert (u.start, u.end) == (2.0, 3.2)
    assert u.text == "Do you have your forms?"
    assert u.audio == iemocap_root.resolve() / "Session2/sentences/wav/Ses02F_impro01/Ses02F_impro01_M000.wav"
    assert u.audio.is_file() and not u.cut
    assert c["Ses01M_script01_1_F000"].speaker == "Ses01F"
    assert c.speakers == ["Ses01F", "Ses01M", "Ses02F", "Ses02M"]
    assert c.sessions == ["Session1", "Session2"]
    # Transcripts: verbatim, and None where the transcription file has no line.
    assert c["Ses01F_impro01_F002"].text == "That's great [LAUGHTER]."
    assert c["Ses01F_impro01_M003"].text is None
    # Turns count every evaluated utterance of the dialogue (xxx and fru included), by start time.
    assert [c[f"Ses01F_impro01_{s}"].turn for s in ("F000", "M000", "F001", "F002", "M002", "M003")] == [0, 1, 2, 4, 5, 7]


def test_iemocap_previous_crosses_speakers_in_time_order(iemocap_root: Path) -> None:
    c = load_corpus(f"iemocap:{iemocap_root}")
    d = iemocap_dialogue(1, "F_impro01")
    assert c.previous(f"{d}_F000") is None
    assert c.previous(f"{d}_M000").id == f"{d}_F000"
    assert c.previous(f"{d}_F001").id == f"{d}_M000"  # F000 1.0s, M000 2.0s, F001 3.5s
    assert c.previous(f"{d}_F002").id == f"{d}_F001"  # M001 (xxx) is not in the corpus
    s = iemocap_dialogue(2, "M_script01_1")
    assert c.previous(f"{s}_F000").id == f"{s}_M000"
    assert c.previous(f"{s}_M000") is None  # first turn; no link across dialogues or sessions


def test_iemocap_transcript_noise_is_skipped(iemocap_root: Path) -> None:
    c = load_corpus(f"iemocap:{iemocap_root}?labels=all")
    assert not any("MXX" in u.id for u in c)
    texts = {u.text for u in c}
    assert "[BREATHING]" not in texts and not any(t and "timestamp" in t for t in texts)
    # Every fixture line with a transcript is read back exactly.
    for key, rows in IEMOCAP_DIALOGUES.items():
        for suffix, _, _, code, text in rows:
            uid = f"{iemocap_dialogue(1, key)}_{suffix}"
            if code != "xxx":
                assert c[uid].text == text


def test_iemocap_missing_audio(tmp_path: Path) -> None:
    root = make_iemocap_tree(tmp_path, sessions=1)
    gone = root / "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_M002.wav"
    gone.unlink()
    with pytest.raises(CorpusError, match="Ses01F_impro01_M002.wav.*on_missing_audio=skip"):
        load_corpus(f"iemocap:{root}")
    c = load_corpus(f"iemocap:{root}?on_missing_audio=skip")
    assert "Ses01F_impro01_M002" not in c and len(c) == 9


def test_iemocap_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="Session1"):
        load_corpus(f"iemocap:{tmp_path}")
    (tmp_path / "Session1").mkdir()
    with pytest.raises(CorpusError, match="EmoEvaluation"):
        load_corpus(f"iemocap:{tmp_path}")


def test_iemocap_unknown_code_names_the_file(tmp_path: Path) -> None:
    root = make_iemocap_tree(tmp_path, sessions=1)
    f = root / "Session1/dialog/EmoEvaluation/Ses01F_impro01.txt"
    f.write_text(f.read_text().replace("\tsad\t", "\tgrumpy\t"))
    with pytest.raises(CorpusError, match=r"Ses01F_impro01.txt.*grumpy"):
        load_corpus(f"iemocap:{root}")


# --- RAVDESS ------------------------------------------------------------------------------


def test_ravdess_speech_by_default(tmp_path: Path) -> None:
    root = make_ravdess_tree(tmp_path, actors=(1, 2))
    c = load_corpus(f"ravdess:{root}")
    assert len(c) == 16 and c.labels == ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgusted", "surprised")
    assert set(c.label_counts().values()) == {2}
    assert c.speakers == ["Actor_01", "Actor_02"]
    u = c["03-01-05-01-02-01-02"]
    assert (u.label, u.corpus_label, u.speaker) == ("angry", "05", "Actor_02")
    assert u.text == "Dogs are sitting by the door"
    assert c["03-01-02-01-01-01-01"].text == "Kids are talking by the door"
    assert all(u.session is None and u.dialogue is None and c.previous(u) is None for u in c)


def test_ravdess_channel_and_label_options(tmp_path: Path) -> None:
    root = make_ravdess_tree(tmp_path, actors=(1, 2))
    song = load_corpus(f"ravdess:{root}?channel=song")
    assert len(song) == 12 and "disgusted" not in song.labels
    assert all(u.id.split("-")[1] == "02" for u in song)
    assert len(load_corpus(f"ravdess:{root}?channel=both")) == 28
    four = load_corpus(f"ravdess:{root}?labels=neutral,happy,sad,angry")
    assert four.labels == ("neutral", "happy", "sad", "angry") and len(four) == 8
    with pytest.raises(CorpusError, match="joyful"):
        load_corpus(f"ravdess:{root}?labels=joyful")


def test_ravdess_rejects_foreign_wavs(tmp_path: Path) -> None:
    root = make_ravdess_tree(tmp_path, actors=(1,))
    shutil.copy(next(root.rglob("*.wav")), root / "Actor_01" / "03-01-09-01-01-01-01.wav")
    with pytest.raises(CorpusError, match="03-01-09-01-01-01-01.wav.*emotion 09"):
        load_corpus(f"ravdess:{root}")


# --- EmoDB --------------------------------------------------------------------------------


def test_emodb_fixture(tmp_path: Path) -> None:
    root = make_emodb_tree(tmp_path)
    c = load_corpus(f"emodb:{root}")
    assert sorted(u.id for u in c) == sorted(EMODB_FILES)
    u = c["08a02Ta"]
    assert (u.speaker, u.label, u.corpus_label) == ("08", "sad", "T")
    assert u.text == "Das will sie am Mittwoch abgeben."
    assert len(load_corpus(f"emodb:{root / 'wav'}")) == len(EMODB_FILES)  # the wav/ folder itself


def test_emodb_real_copy(emodb_dir: Path) -> None:
    c = load_corpus(f"emodb:{emodb_dir}")
    assert len(c) == 535
    assert len(c.speakers) == 10
    assert c.label_counts() == {
        "angry": 127, "bored": 81, "neutral": 79, "happy": 71, "fearful": 69, "sad": 62, "disgusted": 46,
    }  # fmt: skip
    assert Counter(u.corpus_label for u in c) == {"W": 127, "L": 81, "N": 79, "F": 71, "A": 69, "T": 62, "E": 46}
    assert all(u.text for u in c)
    assert c["03a01Fa"].text == "Der Lappen liegt auf dem Eisschrank."
    assert all(u.audio.is_file() for u in c)


# --- MEACorpus ----------------------------------------------------------------------------


def test_meacorpus_defaults(tmp_path: Path) -> None:
    root = make_meacorpus_tree(tmp_path)
    c = load_corpus(f"meacorpus:{root}")
    assert len(c) == len(MEACORPUS_ROWS)
    assert c.labels == ("angry", "disgusted", "fearful", "happy", "neutral", "sad")
    u = c["mea_0003"]
    assert (u.label, u.corpus_label, u.text) == ("angry", "anger", "¡No me lo puedo creer, estoy furioso!")
    assert u.audio == root.resolve() / "audio" / "mea_0003.wav"
    assert c["mea_0007"].text is None
    assert c.speakers == [UNKNOWN_SPEAKER]  # no speaker information in the release
    # The table itself works as the path too.
    assert len(load_corpus(f"meacorpus:{root / 'train.csv'}")) == len(MEACORPUS_ROWS)


def test_meacorpus_configurable_columns(tmp_path: Path) -> None:
    root = make_meacorpus_tree(
        tmp_path, id_col="file_id", text_col="text", label_col="emotion", table="dev.csv", audio_dir="clips"
    )
    with pytest.raises(CorpusError, match="id, transcription, label.*file_id, text, emotion"):
        load_corpus(f"meacorpus:{root}")
    c = load_corpus(f"meacorpus:{root}?id_col=file_id&text_col=text&label_col=emotion&audio_dir=clips&labels=happy,sad")
    assert c.labels == ("happy", "sad") and len(c) == 2


def test_meacorpus_errors(tmp_path: Path) -> None:
    root = make_meacorpus_tree(tmp_path)
    (root / "test.csv").write_text("id,transcription,label\n")
    with pytest.raises(CorpusError, match="exactly one table.*test.csv, train.csv.*csv="):
        load_corpus(f"meacorpus:{root}")
    (root / "audio" / "mea_0002.wav").unlink()
    with pytest.raises(CorpusError, match="mea_0002.wav"):
        load_corpus(f"meacorpus:{root}?csv=train.csv")
    assert len(load_corpus(f"meacorpus:{root}?csv=train.csv&on_missing_audio=skip")) == len(MEACORPUS_ROWS) - 1
    (root / "train.csv").write_text((root / "train.csv").read_text().replace(",joy", ",glee"))
    with pytest.raises(CorpusError, match="train.csv, line 2.*glee"):
        load_corpus(f"meacorpus:{root}?csv=train.csv&on_missing_audio=skip")
