"""IEMOCAP in its official release layout.

Labels come from the bracketed summary lines of ``SessionN/dialog/EmoEvaluation/<dialogue>.txt``
(annotator lines ``C-E1:``/``A-E1:``, headers and the ``Categorical/`` etc. sub-folders are not
labels); transcripts from ``SessionN/dialog/transcriptions/<dialogue>.txt``; audio from
``SessionN/sentences/wav/<dialogue>/<utterance>.wav``.

Speakers: the speaker of ``Ses01F_impro01_M012`` is ``Ses01M`` -- the session plus the letter
before the utterance index. The letter in the dialogue name only says who wore the motion-capture
markers, so using it would put both actors of a dialogue under one speaker and leak speakers
across folds.

Turns: ``turn`` is the utterance's position in its dialogue by start time, counted over every
evaluated utterance (including ``xxx`` and labels outside the chosen set), so it is the true
position in the conversation; ``Corpus.previous`` then links each kept utterance to the kept
utterance just before it. ``start``/``end`` are on the dialogue's timeline while the audio file
is the utterance alone, so ``cut`` is false.

Transcripts are kept verbatim, including markers such as ``[LAUGHTER]``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from emovox.corpora.base import Corpus, Utterance
from emovox.corpora.spec import ON_MISSING_AUDIO, Option, Reader, boolean, choice, missing_audio
from emovox.errors import CorpusError
from emovox.labels import EXCITED, HAPPY, IEMOCAP_CODES, IEMOCAP_LABEL_SETS

NO_AGREEMENT = "xxx"

# [6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5000, 2.5000, 2.5000]
_EVAL_LINE = re.compile(r"^\[\s*(\d+(?:\.\d*)?)\s*-\s*(\d+(?:\.\d*)?)\s*\]\s+(\S+)\s+(\S+)\s+\[")
# Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.
_TRANSCRIPT_LINE = re.compile(r"^(\S+)\s+\[\s*[\d.]+\s*-\s*[\d.]+\s*\]\s*:\s?(.*)$")
# The speaker letter and index at the end of an utterance id: ..._F000, ..._M012
_SPEAKER_SUFFIX = re.compile(r"_([FM])\d{3}[A-Za-z]?$")
_SESSION_DIR = re.compile(r"^Session(\d+)$")

OPTIONS = (
    Option(
        "labels",
        "4",
        "label set: 4 (angry, happy, neutral, sad), 6 (adds excited, frustrated) or all",
        choice(*IEMOCAP_LABEL_SETS),
    ),
    Option(
        "merge_exc",
        None,
        "merge excited into happy (default: true for labels=4, false otherwise)",
        boolean,
    ),
    ON_MISSING_AUDIO,
)


@dataclass(frozen=True)
class _Evaluated:
    """One summary line of an EmoEvaluation file."""

    id: str
    code: str
    start: float
    end: float


def read_iemocap(
    root: Path, *, spec: str = "", labels: str = "4", merge_exc: bool | None = None, on_missing_audio: str = "error"
) -> Corpus:
    """Read the official IEMOCAP release under ``root`` (the folder holding ``Session1`` ...)."""
    root = Path(root).expanduser().resolve()
    spec = spec or f"iemocap:{root}"
    label_set = IEMOCAP_LABEL_SETS[labels]
    merge = (labels == "4") if merge_exc is None else merge_exc
    if merge and EXCITED in label_set:
        raise CorpusError(
            f"{spec}: merge_exc=true with labels={labels} would leave the class 'excited' empty; use labels=4 or merge_exc=false"
        )

    sessions = _session_dirs(root, spec)
    utterances: list[Utterance] = []
    missing: list[Path] = []
    for session_name, session_dir in sessions:
        eval_dir = session_dir / "dialog" / "EmoEvaluation"
        if not eval_dir.is_dir():
            raise CorpusError(f"{spec}: {eval_dir} is missing; expected the official layout SessionN/dialog/EmoEvaluation/*.txt")
        for eval_file in sorted(eval_dir.glob("*.txt")):
            if eval_file.name.startswith("._") or not eval_file.is_file():  # macOS resource forks
                continue
            dialogue = eval_file.stem
            turns = sorted(_read_evaluation(eval_file), key=lambda e: (e.start, e.end, e.id))
            texts = _read_transcripts(session_dir / "dialog" / "transcriptions" / f"{dialogue}.txt")
            for turn, ev in enumerate(turns):
                label = _map_label(ev, eval_file, merge)
                if label is None or label not in label_set:
                    continue
                audio = session_dir / "sentences" / "wav" / dialogue / f"{ev.id}.wav"
                if not audio.is_file():
                    missing.append(audio)
                    continue
                utterances.append(
                    Utterance(
                        id=ev.id,
                        speaker=_speaker(ev.id, eval_file),
                        label=label,
                        corpus_label=ev.code,
                        audio=audio,
                        session=session_name,
                        dialogue=dialogue,
                        turn=turn,
                        start=ev.start,
                        end=ev.end,
                        text=texts.get(ev.id),
                    )
                )
    dropped = missing_audio(spec, missing, on_missing_audio)
    if not utterances:
        raise CorpusError(f"{spec}: no utterances with labels {list(label_set)} found under {root}")
    return Corpus("iemocap", utterances, label_set, spec, dropped)


def _session_dirs(root: Path, spec: str) -> list[tuple[str, Path]]:
    if not root.is_dir():
        raise CorpusError(f"{spec}: {root} is not a folder; point at the IEMOCAP release folder that holds Session1 ... Session5")
    found = []
    for d in root.iterdir():
        m = _SESSION_DIR.match(d.name)
        if m and d.is_dir():
            found.append((int(m.group(1)), d))
    if not found:
        raise CorpusError(
            f"{spec}: no SessionN folders in {root}; point at the IEMOCAP release folder that holds Session1 ... Session5"
        )
    return [(f"Session{n}", d) for n, d in sorted(found)]


def _read_evaluation(path: Path) -> list[_Evaluated]:
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        m = _EVAL_LINE.match(line.strip())
        if m:
            out.append(_Evaluated(id=m.group(3), code=m.group(4).lower(), start=float(m.group(1)), end=float(m.group(2))))
    return out


def _read_transcripts(path: Path) -> dict[str, str]:
    """Utterance id -> transcript; lines without a ``[start-end]:`` stamp are not utterances."""
    if not path.is_file():
        return {}
    texts = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        m = _TRANSCRIPT_LINE.match(line.strip())
        if m and m.group(2).strip():
            texts[m.group(1)] = m.group(2).strip()
    return texts


def _map_label(ev: _Evaluated, eval_file: Path, merge_exc: bool) -> str | None:
    if ev.code == NO_AGREEMENT:
        return None
    try:
        label = IEMOCAP_CODES[ev.code]
    except KeyError:
        raise CorpusError(
            f"{eval_file}: utterance {ev.id} has the unknown emotion code {ev.code!r}; "
            f"IEMOCAP codes are {', '.join(sorted(IEMOCAP_CODES))} and {NO_AGREEMENT}"
        ) from None
    return HAPPY if (merge_exc and label == EXCITED) else label


def _speaker(utt_id: str, eval_file: Path) -> str:
    m = _SPEAKER_SUFFIX.search(utt_id)
    if not m or not re.match(r"^Ses\d\d", utt_id):
        raise CorpusError(
            f"{eval_file}: utterance id {utt_id!r} is not of the form SesNN..._F000 / _M000; is this the official release?"
        )
    return utt_id[:5] + m.group(1)


READER = Reader("iemocap", "IEMOCAP official release (SessionN/dialog/EmoEvaluation, sentences/wav)", read_iemocap, OPTIONS)
