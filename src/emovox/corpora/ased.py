"""ASED, the Amharic Speech Emotion Dataset (Retta et al., 2023): ``0NEmotion/xN-SS-RR-GG-PP.wav``.

Five folders (``01Neutral``, ``02Fearful``, ``03Happy``, ``04Sad``, ``05Angry``) of 16 kHz mono
clips whose names hold everything: ``x`` the emotion letter (n neutral, f fearful, h happy, s sad,
a angry; one file of the release has a capital ``S``, so letters are read in any case), ``N`` the
folder number, ``SS`` the sentence (01-07), ``RR`` the repetition, ``GG`` the gender (01 female,
02 male) and ``PP`` the speaker (01-65). The speaker is ``PP`` alone: five speakers each have one
file whose gender code disagrees with their other files, a typo of the release, not another person.
The emotion is read from the name (flattened copies work); when the file sits in one of the
release's folders, the folder must agree.

**The words give the label away for most of ASED.** Sentences 03-07 are different texts in each
emotion folder, each written for that one emotion; only sentences 01 and 02 are the same texts read
in every emotion (624 files). Emotion-from-voice figures are reported on ``?sentences=01,02`` (or
``sentences=common``); a full-set figure needs the text-only control beside it (``control:`` in a
config) to show how much of it the words alone give.
"""

from __future__ import annotations

import re
from pathlib import Path

from emovox.corpora.base import Corpus, Utterance, files_under
from emovox.corpora.spec import Option, Reader, name_list, select_labels
from emovox.errors import CorpusError
from emovox.labels import ASED_CODES, ASED_LABELS

#: The two sentences read in all five emotions.
COMMON_SENTENCES = ("01", "02")
SENTENCES = tuple(f"{i:02d}" for i in range(1, 8))
#: Folder number (the ``N`` after the letter, and the folder's prefix) of each emotion letter.
FOLDERS = {"n": "01Neutral", "f": "02Fearful", "h": "03Happy", "s": "04Sad", "a": "05Angry"}

_NAME = re.compile(r"^([A-Za-z])(\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")


def _sentences(raw: str) -> tuple[str, ...]:
    """``01,02`` (or ``1,2``), ``common`` (01 and 02) or ``all``."""
    v = raw.strip().lower()
    if v == "common":
        return COMMON_SENTENCES
    if v == "all":
        return SENTENCES
    out = []
    for item in name_list(raw):
        if not item.isdigit() or f"{int(item):02d}" not in SENTENCES:
            raise ValueError(f"sentence {item!r} is not one of 01-07 (or use common / all)")
        out.append(f"{int(item):02d}")
    if len(set(out)) != len(out):
        raise ValueError("a sentence is listed twice")
    return tuple(out)


OPTIONS = (
    Option(
        "sentences",
        SENTENCES,
        "keep only these sentences (01-07, comma-separated; common = 01,02, the texts read in every emotion; "
        "default all, whose sentences 03-07 give the label away by their words)",
        _sentences,
    ),
    Option("labels", None, "keep only these labels, in this order (comma-separated)", name_list),
)


def read_ased(
    root: Path, *, spec: str = "", sentences: tuple[str, ...] = SENTENCES, labels: tuple[str, ...] | None = None
) -> Corpus:
    """Read every ``xN-SS-RR-GG-PP.wav`` under ``root`` (recursively) of the chosen sentences."""
    root = Path(root).expanduser().resolve()
    spec = spec or f"ased:{root}"
    if not root.is_dir():
        raise CorpusError(f"{spec}: {root} is not a folder; point at the ASED folder holding 01Neutral ... 05Angry")
    label_set = select_labels(spec, ASED_LABELS, labels)
    utterances = []
    for path in sorted(files_under(root, (".wav",)), key=lambda p: p.name):
        letter, sentence, speaker = _parse_name(path, spec)
        label = ASED_CODES[letter.lower()]
        if sentence not in sentences or label not in label_set:
            continue
        utterances.append(Utterance(id=path.stem, speaker=speaker, label=label, corpus_label=letter, audio=path))
    if not utterances:
        raise CorpusError(
            f"{spec}: no ASED files (xN-SS-RR-GG-PP.wav) of sentences {','.join(sentences)} with labels "
            f"{list(label_set)} under {root}"
        )
    return Corpus("ased", utterances, label_set, spec)


def _parse_name(path: Path, spec: str) -> tuple[str, str, str]:
    """(emotion letter as written, sentence, speaker) of one file; a ``CorpusError`` naming it otherwise."""
    m = _NAME.match(path.stem)
    problem = None
    if not m:
        problem = "it is not of the form xN-SS-RR-GG-PP (e.g. a5-01-01-02-50.wav)"
    else:
        letter, number, sentence, _rep, gender, speaker = m.groups()
        folder = FOLDERS.get(letter.lower())
        if folder is None:
            problem = f"emotion letter {letter!r} is not one of {', '.join(ASED_CODES)}"
        elif number != folder[1]:
            problem = f"folder number {number} does not match emotion {letter!r} ({folder})"
        elif sentence not in SENTENCES:
            problem = f"sentence {sentence} is not 01-07"
        elif gender not in ("01", "02"):
            problem = f"gender {gender} is not 01 (female) or 02 (male)"
        elif not 1 <= int(speaker) <= 99:
            problem = f"speaker {speaker} is not a speaker number"
        elif path.parent.name in FOLDERS.values() and path.parent.name != folder:
            problem = f"it is in folder {path.parent.name} but its name says {folder}"
    if problem:
        raise CorpusError(
            f"{spec}: {path} does not follow the ASED naming ({problem}); move other files out of the corpus folder"
        )
    return m.group(1), m.group(3), m.group(6)  # type: ignore[union-attr]


READER = Reader("ased", "ASED, Amharic (0NEmotion/xN-SS-RR-GG-PP.wav)", read_ased, OPTIONS)
