"""EmoDB (Berlin Database of Emotional Speech): ``wav/SSTTTEV.wav``.

The name holds the speaker (``SS``), the sentence code (``TTT``, one of ten fixed German
sentences, which gives the transcript), the emotion letter (German initial: W Wut/angry,
L Langeweile/bored, E Ekel/disgusted, A Angst/fearful, F Freude/happy, T Trauer/sad, N neutral)
and the take (``V``). The path may be the corpus folder (holding ``wav/``) or ``wav/`` itself.
"""

from __future__ import annotations

import re
from pathlib import Path

from emovox.corpora.base import Corpus, Utterance
from emovox.corpora.spec import Option, Reader, name_list, select_labels
from emovox.errors import CorpusError
from emovox.labels import EMODB_CODES, EMODB_LABELS

#: Sentence code -> transcript (Burkhardt et al. 2005).
SENTENCES: dict[str, str] = {
    "a01": "Der Lappen liegt auf dem Eisschrank.",
    "a02": "Das will sie am Mittwoch abgeben.",
    "a04": "Heute abend könnte ich es ihm sagen.",
    "a05": "Das schwarze Stück Papier befindet sich da oben neben dem Holzstück.",
    "a07": "In sieben Stunden wird es soweit sein.",
    "b01": "Was sind denn das für Tüten, die da unter dem Tisch stehen?",
    "b02": "Sie haben es gerade hochgetragen und jetzt gehen sie wieder runter.",
    "b03": "An den Wochenenden bin ich jetzt immer nach Hause gefahren und habe Agnes besucht.",
    "b09": "Ich will das eben wegbringen und dann mit Karl was trinken gehen.",
    "b10": "Die wird auf dem Platz sein, wo wir sie immer hinlegen.",
}

_NAME = re.compile(r"^(\d\d)([ab]\d\d)([A-Z])([a-z])$")

OPTIONS = (Option("labels", None, "keep only these labels, in this order (comma-separated)", name_list),)


def read_emodb(root: Path, *, spec: str = "", labels: tuple[str, ...] | None = None) -> Corpus:
    """Read every ``SSTTTEV.wav`` of an EmoDB copy."""
    root = Path(root).expanduser().resolve()
    spec = spec or f"emodb:{root}"
    wav_dir = root / "wav" if (root / "wav").is_dir() else root
    if not wav_dir.is_dir():
        raise CorpusError(f"{spec}: {root} is not a folder; point at the EmoDB folder that holds wav/")
    label_set = select_labels(spec, EMODB_LABELS, labels)
    utterances = []
    for path in sorted(wav_dir.glob("*.wav")):
        if path.name.startswith("._"):
            continue
        m = _NAME.match(path.stem)
        if not m or m.group(3) not in EMODB_CODES:
            raise CorpusError(
                f"{spec}: {path} does not follow the EmoDB naming SSTTTEV.wav (e.g. 03a01Fa.wav, emotion one of "
                f"{''.join(EMODB_CODES)}); move other files out of {wav_dir}"
            )
        speaker, sentence, letter, _take = m.groups()
        label = EMODB_CODES[letter]
        if label not in label_set:
            continue
        utterances.append(
            Utterance(
                id=path.stem,
                speaker=speaker,
                label=label,
                corpus_label=letter,
                audio=path,
                text=SENTENCES.get(sentence),
            )
        )
    if not utterances:
        raise CorpusError(f"{spec}: no EmoDB files (SSTTTEV.wav) in {wav_dir}")
    return Corpus("emodb", utterances, label_set, spec)


READER = Reader("emodb", "EmoDB (wav/SSTTTEV.wav)", read_emodb, OPTIONS)
