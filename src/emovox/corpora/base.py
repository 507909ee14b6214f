"""The one record type every corpus reader produces, and the corpus that holds them.

Readers differ in layout; everything downstream (splits, batching, context models, reports)
sees only ``Utterance`` and ``Corpus``. Keep these plain and immutable so folds, caches and
manifests can be computed from them and compared across runs.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path

from emovox.errors import CorpusError


@dataclass(frozen=True)
class Utterance:
    """One labelled utterance.

    ``start``/``end`` are seconds on the recording's timeline (the dialogue for IEMOCAP); they
    order turns. When ``cut`` is true the audio file is a longer recording and the utterance is
    the ``[start, end]`` segment of it; otherwise the file holds just this utterance.

    ``corpus`` names the corpus the utterance comes from (``emodb``, or the spec's ``?name=``), so
    that a run over several corpora can split, normalise and report by corpus. ``label`` is always a
    canonical name (``emovox.labels``); ``corpus_label`` keeps the corpus's own word or code.
    """

    id: str
    speaker: str
    label: str
    corpus_label: str
    audio: Path | None = None
    session: str | None = None
    dialogue: str | None = None
    turn: int | None = None
    start: float | None = None
    end: float | None = None
    text: str | None = None
    cut: bool = False
    corpus: str | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["audio"] = str(self.audio) if self.audio is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Utterance:
        d = dict(d)
        if d.get("audio") is not None:
            d["audio"] = Path(d["audio"])
        return cls(**d)


@dataclass
class Corpus:
    """Utterances of one corpus under one label set.

    ``labels`` is ordered: it fixes class indices and the row order of every report.
    """

    name: str
    utterances: list[Utterance]
    labels: tuple[str, ...]
    spec: str = ""
    #: Utterances a reader left out under a skip policy, as (utterance id or file, reason), so a
    #: run can list them in its report instead of losing them silently.
    dropped: list[tuple[str, str]] = field(default_factory=list)
    #: The corpora pooled into this one (``emovox.corpora.pool``): name, spec, fingerprint of the
    #: corpus as read alone, utterances. Empty for a corpus read from one spec.
    sources: list[dict] = field(default_factory=list)
    _by_id: dict[str, Utterance] = field(default_factory=dict, init=False, repr=False)
    _previous: dict[str, str | None] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        for u in self.utterances:
            if u.id in self._by_id:
                raise CorpusError(f"{self.spec or self.name}: utterance id {u.id!r} appears twice; ids must be unique")
            if u.label not in self.labels:
                raise CorpusError(
                    f"{self.spec or self.name}: utterance {u.id!r} has label {u.label!r}, "
                    f"which is not in the label set {list(self.labels)}"
                )
            self._by_id[u.id] = u
        self._link_dialogues()

    def _link_dialogues(self) -> None:
        """Order each dialogue's turns (by turn, then start time, then id) and link neighbours."""
        dialogues: dict[str, list[Utterance]] = {}
        for u in self.utterances:
            if u.dialogue is not None:
                dialogues.setdefault(u.dialogue, []).append(u)
        self._previous = {u.id: None for u in self.utterances}
        for turns in dialogues.values():
            turns.sort(key=lambda u: (u.turn if u.turn is not None else 0, u.start if u.start is not None else 0.0, u.id))
            for prev, cur in pairwise(turns):
                self._previous[cur.id] = prev.id

    def __len__(self) -> int:
        return len(self.utterances)

    def __iter__(self) -> Iterator[Utterance]:
        return iter(self.utterances)

    def __getitem__(self, utt_id: str) -> Utterance:
        try:
            return self._by_id[utt_id]
        except KeyError:
            raise CorpusError(f"{self.spec or self.name}: no utterance with id {utt_id!r}") from None

    def __contains__(self, utt_id: object) -> bool:
        return utt_id in self._by_id

    def previous(self, u: Utterance | str) -> Utterance | None:
        """The utterance spoken just before ``u`` in the same dialogue (any speaker), or None."""
        uid = u if isinstance(u, str) else u.id
        prev = self._previous.get(uid)
        return self._by_id[prev] if prev is not None else None

    def history(self, u: Utterance | str, turns: int) -> list[Utterance]:
        """Up to ``turns`` utterances spoken before ``u`` in its dialogue, oldest first (any speaker)."""
        out: list[Utterance] = []
        prev = self.previous(u)
        while prev is not None and len(out) < turns:
            out.append(prev)
            prev = self.previous(prev)
        return out[::-1]

    @property
    def speakers(self) -> list[str]:
        return sorted({u.speaker for u in self.utterances})

    @property
    def corpora(self) -> list[str]:
        """Names of the corpora its utterances come from, in order of first appearance."""
        return list(dict.fromkeys(u.corpus for u in self.utterances if u.corpus is not None))

    @property
    def sessions(self) -> list[str]:
        return sorted({u.session for u in self.utterances if u.session is not None})

    def label_counts(self) -> dict[str, int]:
        counts = {label: 0 for label in self.labels}
        for u in self.utterances:
            counts[u.label] += 1
        return counts

    def subset(self, ids: list[str] | set[str]) -> Corpus:
        """A corpus of just these utterances (same label set); dialogue links are recomputed."""
        keep = set(ids)
        return Corpus(
            self.name, [u for u in self.utterances if u.id in keep], self.labels, self.spec, list(self.dropped),
            [dict(s) for s in self.sources],
        )

    def fingerprint(self) -> str:
        """A short hash of ids, labels, speakers and paths: two runs on the same data agree.

        The corpus of each utterance counts only when there are several: a corpus read alone keeps
        the fingerprint it always had, so its existing runs and recognizers stay valid.
        """
        several = len(self.corpora) > 1
        h = hashlib.sha256()
        for u in sorted(self.utterances, key=lambda u: u.id):
            row = [u.id, u.label, u.speaker, u.session, str(u.audio), u.text, u.start, u.end]
            h.update(json.dumps([*row, u.corpus] if several else row).encode())
        h.update(json.dumps(list(self.labels)).encode())
        return h.hexdigest()[:16]


def files_under(root: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """Every file below ``root`` whose suffix (lower-cased) is one of ``suffixes``, in sorted path order.

    Users link their datasets in (``Audio_Speech_Actors_01-24 -> /data/ravdess``), and
    ``Path.rglob`` does not descend into symlinked folders before Python 3.13, which made a linked
    corpus look empty. This walk follows them; each real folder is visited once, so a link that
    points back up the tree cannot loop or list a file twice. macOS ``._`` resource forks are skipped.
    """
    found: list[Path] = []
    seen: set[str] = set()
    for folder, subfolders, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            subfolders[:] = []
            continue
        seen.add(real)
        subfolders.sort()
        found += [Path(folder, n) for n in names if Path(n).suffix.lower() in suffixes and not n.startswith("._")]
    return sorted(found)
