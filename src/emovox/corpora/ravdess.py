"""RAVDESS audio release: ``Actor_XX/MM-VC-EE-II-SS-RR-AA.wav``.

Everything is in the file name: modality, vocal channel (01 speech, 02 song), emotion (01-08),
intensity, statement (01 "Kids are talking by the door", 02 "Dogs are sitting by the door"),
repetition and actor (01-24, the speaker; odd male, even female). The actor is read from the
name rather than the folder so that flattened copies work too. There are no sessions or
dialogues; every utterance stands alone.

Song takes have no disgust or surprise, so with ``channel=song`` the label set drops those two.
"""

from __future__ import annotations

import re
from pathlib import Path

from emovox.corpora.base import Corpus, Utterance, files_under
from emovox.corpora.spec import Option, Reader, choice, name_list, select_labels
from emovox.errors import CorpusError
from emovox.labels import DISGUSTED, RAVDESS_CODES, RAVDESS_LABELS, SURPRISED

STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
CHANNELS = {"speech": ("01",), "song": ("02",), "both": ("01", "02")}

_NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")

OPTIONS = (
    Option("channel", "speech", "vocal channel: speech (01), song (02) or both", choice(*CHANNELS)),
    Option("labels", None, "keep only these labels, in this order (comma-separated), e.g. neutral,happy,sad,angry", name_list),
)


def read_ravdess(root: Path, *, spec: str = "", channel: str = "speech", labels: tuple[str, ...] | None = None) -> Corpus:
    """Read every RAVDESS ``.wav`` under ``root`` (recursively, through symlinked folders) of the chosen vocal channel."""
    root = Path(root).expanduser().resolve()
    spec = spec or f"ravdess:{root}"
    if not root.is_dir():
        raise CorpusError(f"{spec}: {root} is not a folder; point at the folder holding Actor_01 ... Actor_24")
    available = RAVDESS_LABELS if channel != "song" else tuple(x for x in RAVDESS_LABELS if x not in (DISGUSTED, SURPRISED))
    label_set = select_labels(spec, available, labels)
    utterances = []
    for path in sorted(files_under(root, (".wav",)), key=lambda p: p.name):  # symlinked folders too
        fields = _parse_name(path, spec)
        _modality, vocal, emotion, _intensity, statement, _rep, actor = fields
        label = RAVDESS_CODES[emotion]
        if vocal not in CHANNELS[channel] or label not in label_set:
            continue
        utterances.append(
            Utterance(
                id=path.stem,
                speaker=f"Actor_{actor}",
                label=label,
                corpus_label=emotion,
                audio=path,
                text=STATEMENTS[statement],
            )
        )
    if not utterances:
        raise CorpusError(
            f"{spec}: no RAVDESS {channel} files (MM-VC-EE-II-SS-RR-AA.wav) with labels {list(label_set)} under {root}"
        )
    return Corpus("ravdess", utterances, label_set, spec)


def _parse_name(path: Path, spec: str) -> tuple[str, ...]:
    m = _NAME.match(path.stem)
    problem = None
    if not m:
        problem = "it is not of the form MM-VC-EE-II-SS-RR-AA"
    else:
        modality, vocal, emotion, intensity, statement, rep, actor = m.groups()
        if emotion not in RAVDESS_CODES:
            problem = f"emotion {emotion} is not 01-08"
        elif vocal not in ("01", "02"):
            problem = f"vocal channel {vocal} is not 01 (speech) or 02 (song)"
        elif statement not in STATEMENTS:
            problem = f"statement {statement} is not 01 or 02"
        elif not 1 <= int(actor) <= 24:
            problem = f"actor {actor} is not 01-24"
    if problem:
        raise CorpusError(
            f"{spec}: {path} does not follow the RAVDESS naming ({problem}); move other files out of the corpus folder"
        )
    return m.groups()  # type: ignore[union-attr]


READER = Reader("ravdess", "RAVDESS audio (Actor_XX/MM-VC-EE-II-SS-RR-AA.wav)", read_ravdess, OPTIONS)
