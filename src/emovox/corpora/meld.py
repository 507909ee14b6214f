"""MELD (Poria et al., ACL 2019): transcripts of Friends dialogues, one CSV per official split.

The release's label files are ``train_sent_emo.csv``, ``dev_sent_emo.csv`` and
``test_sent_emo.csv`` with the columns ``Sr No., Utterance, Speaker, Emotion, Sentiment,
Dialogue_ID, Utterance_ID, Season, Episode, StartTime, EndTime``. This reader is for the text
route: ``Utterance.audio`` is None (MELD's audio is a separate video release), so every
audio-reading path refuses MELD utterances by name instead of guessing files.

Ids are ``<split>/dia<Dialogue_ID>_utt<Utterance_ID>`` (e.g. ``train/dia12_utt3``): dialogue
numbers restart in every split, so the split is part of the id, of ``dialogue``
(``train/dia12``) and of ``session`` (``train``, ``dev`` or ``test``). ``session`` carries the
official split, which the ``official`` protocol of ``emovox.splits`` reads. ``turn`` is
``Utterance_ID``, the position in the dialogue; ``Corpus.previous`` gives the utterance just
before in the same dialogue (either speaker), which is the context the papers use. A few
dialogues skip an ``Utterance_ID`` (the authors removed some utterances): the previous one is
then the nearest earlier utterance that exists. With ``labels=`` the turns keep their true
positions and the context of a kept utterance is the nearest earlier *kept* one, as for IEMOCAP.

Speakers are the character names (``Chandler``, ``The Interviewer``, ``Ross and Rachel``): the
six main characters speak in every official split, so the ``official`` protocol is not
speaker-independent. Speaker-group protocols do split by character name, but they ignore the
published split the MELD literature reports on. Start and end times are on the episode's
timeline and are not read.

The files are UTF-8, but copies of the release contain mis-encoded bytes (a bare ``\\x92`` for an
apostrophe); they are read with errors replaced (U+FFFD) rather than stopping the whole corpus.
Labels are mapped to emovox's names (joy -> happy, surprise -> surprised, anger -> angry,
sadness -> sad, disgust -> disgusted, fear -> fearful); ``corpus_label`` keeps MELD's word.
"""

from __future__ import annotations

import csv
from pathlib import Path

from emovox.corpora.base import Corpus, Utterance
from emovox.corpora.spec import Option, Reader, name_list, select_labels
from emovox.errors import CorpusError
from emovox.labels import MELD_CODES, MELD_LABELS

#: Official split -> file name in the release.
SPLIT_FILES: dict[str, str] = {"train": "train_sent_emo.csv", "dev": "dev_sent_emo.csv", "test": "test_sent_emo.csv"}
COLUMNS = ("Utterance", "Speaker", "Emotion", "Dialogue_ID", "Utterance_ID")


def _splits(raw: str) -> tuple[str, ...]:
    names = name_list(raw)
    bad = [n for n in names if n not in SPLIT_FILES]
    if bad:
        raise ValueError(f"unknown split(s) {', '.join(bad)}; choose from {', '.join(SPLIT_FILES)}")
    return names


def _labels(raw: str) -> tuple[str, ...]:
    """Label names as emovox's (happy) or MELD's (joy) words; the order given is the label order."""
    names = tuple(MELD_CODES.get(n, n) for n in name_list(raw))
    if len(set(names)) != len(names):
        raise ValueError("a label is listed twice (MELD's and emovox's name of the same class?)")
    return names


OPTIONS = (
    Option("splits", tuple(SPLIT_FILES), "official splits to read, comma-separated (train, dev, test; default all)", _splits),
    Option("labels", None, "keep only these labels, in this order (emovox or MELD names, comma-separated)", _labels),
)


def read_meld(
    root: Path, *, spec: str = "", splits: tuple[str, ...] = tuple(SPLIT_FILES), labels: tuple[str, ...] | None = None
) -> Corpus:
    """Read the MELD label files under ``root`` (the folder holding ``*_sent_emo.csv``)."""
    root = Path(root).expanduser().resolve()
    spec = spec or f"meld:{root}"
    if not root.is_dir():
        raise CorpusError(f"{spec}: {root} is not a folder; point at the folder holding {', '.join(SPLIT_FILES.values())}")
    label_set = select_labels(spec, MELD_LABELS, labels)
    utterances: list[Utterance] = []
    for split in splits:
        path = root / SPLIT_FILES[split]
        if not path.is_file():
            raise CorpusError(
                f"{spec}: {path} is missing; MELD's {split} split is read from it (or leave it out with ?splits=...)"
            )
        utterances += [u for u in _read_split(path, split) if u.label in label_set]
    if not utterances:
        raise CorpusError(f"{spec}: no utterances with labels {list(label_set)} in splits {list(splits)}")
    return Corpus("meld", utterances, label_set, spec)


def _read_split(path: Path, split: str) -> list[Utterance]:
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in reader.fieldnames or []]
        absent = [c for c in COLUMNS if c not in columns]
        if absent:
            raise CorpusError(
                f"MELD file {path}: column(s) {', '.join(absent)} missing; found {columns}. Is this a MELD *_sent_emo.csv?"
            )
        out = []
        for row in reader:
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
            where = f"MELD file {path}, line {reader.line_num}"
            emotion = row["Emotion"].lower()
            if emotion not in MELD_CODES:
                raise CorpusError(f"{where}: unknown emotion {row['Emotion']!r}; MELD's are {', '.join(MELD_CODES)}")
            dialogue, turn = _whole(row["Dialogue_ID"], "Dialogue_ID", where), _whole(row["Utterance_ID"], "Utterance_ID", where)
            out.append(
                Utterance(
                    id=f"{split}/dia{dialogue}_utt{turn}",
                    speaker=row["Speaker"] or "unknown",
                    label=MELD_CODES[emotion],
                    corpus_label=emotion,
                    session=split,
                    dialogue=f"{split}/dia{dialogue}",
                    turn=turn,
                    text=row["Utterance"] or None,
                )
            )
    return out


def _whole(value: str, column: str, where: str) -> int:
    if not value.isdigit():
        raise CorpusError(f"{where}: {column} {value!r} is not a whole number")
    return int(value)


READER = Reader("meld", "MELD transcripts (train/dev/test_sent_emo.csv), text only", read_meld, OPTIONS)
