"""A fold, what it promises and its proof: ``Fold`` (train / valid / test ids under one protocol), ``Fold.check``
(speakers and corpora disjoint where the protocol promises it, on the corpus at hand), ``check_folds`` (the test
parts partition the corpus in cross-validation) and ``write_folds`` (the protocol kept as data, as EmoBox does:
``fold_k/{train,valid,test}.jsonl`` and ``folds.json``, written atomically).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from emovox.atomic import atomic_write_text
from emovox.corpora.base import Corpus
from emovox.errors import SplitError

#: ``make_folds``'s ``validation``: ``paper`` (the test fold validates) or ``strict`` (it never does).
VALIDATIONS = ("paper", "strict")


@dataclass(frozen=True)
class Fold:
    """One train/valid/test assignment of utterance ids.

    ``speaker_independent`` is the protocol's promise for this fold; ``check`` proves it.
    With ``validation == "paper"`` ``valid`` is exactly ``test``.
    """

    index: int
    name: str
    train: tuple[str, ...]
    valid: tuple[str, ...]
    test: tuple[str, ...]
    speaker_independent: bool
    protocol: str
    validation: str
    #: What the validation part is, for people: the held-out unit ("speaker 08"), "= test" (paper),
    #: or "10% of training"; the learning curves are measured on it.
    valid_name: str = ""
    #: The protocol's promise that no corpus of the test part is in training or validation
    #: (leave-one-corpus-out, cross-corpus); ``check`` proves it.
    corpus_independent: bool = False
    #: The corpora this fold covers (an ``in-corpus`` fold: its own); None: the whole corpus.
    scope: tuple[str, ...] | None = None

    @property
    def curve_name(self) -> str:
        """``test speaker 03 / valid speaker 08``: what a fold's learning curve is measured on."""
        return f"test {self.name} / valid {self.valid_name or '?'}"

    def parts(self) -> dict[str, tuple[str, ...]]:
        return {"train": self.train, "valid": self.valid, "test": self.test}

    def speakers(self, corpus: Corpus, part: str) -> list[str]:
        """Speakers of one part (``train``, ``valid`` or ``test``), in natural order."""
        return natural_sorted({corpus[i].speaker for i in self.parts()[part]})

    def corpora(self, corpus: Corpus, part: str) -> list[str]:
        """Corpora of one part (``train``, ``valid`` or ``test``), in the corpus's order."""
        present = {corpus[i].corpus for i in self.parts()[part]}
        return [name for name in corpus.corpora if name in present]

    def missing_train_classes(self, corpus: Corpus) -> list[str]:
        """Labels of the corpus's label set with no training utterance, in label-set order.

        Splitting never fails on this (a tiny corpus may lack a class in one fold); the
        trainer decides whether to warn or refuse.
        """
        present = {corpus[i].label for i in self.train}
        return [label for label in corpus.labels if label not in present]

    def check(self, corpus: Corpus) -> None:
        """Raise ``SplitError`` unless this fold keeps every promise its protocol makes."""
        where = f"{corpus.spec or corpus.name}, {self.protocol}, fold {self.index} ({self.name})"
        if self.validation not in VALIDATIONS:
            raise SplitError(f"{where}: unknown validation {self.validation!r}; use 'paper' or 'strict'")
        for part, ids in self.parts().items():
            if not ids:
                raise SplitError(f"{where}: the {part} part is empty; use fewer folds or a larger corpus")
            if len(set(ids)) != len(ids):
                raise SplitError(f"{where}: the {part} part lists an utterance id twice")
            unknown = [i for i in ids if i not in corpus]
            if unknown:
                raise SplitError(f"{where}: the {part} part names ids not in the corpus, e.g. {unknown[0]!r}")
        train, valid, test = set(self.train), set(self.valid), set(self.test)
        pairs = [("train", train, "test", test), ("train", train, "valid", valid)]
        if self.validation == "paper":
            if valid != test:
                raise SplitError(f"{where}: 'paper' validation must validate on exactly the test fold")
        else:
            pairs.append(("valid", valid, "test", test))
        for name_a, a, name_b, b in pairs:
            both = a & b
            if both:
                raise SplitError(f"{where}: {len(both)} utterance(s) in both {name_a} and {name_b}, e.g. {min(both)!r}")
        covered = {u.id for u in corpus if self.scope is None or u.corpus in self.scope}
        if train | valid | test != covered:
            scope = f"corpora {', '.join(self.scope)}" if self.scope is not None else "the corpus"
            raise SplitError(f"{where}: train, valid and test together do not cover {scope} (and nothing else)")
        if self.corpus_independent:
            self._check_corpora(corpus, where)
        if self.speaker_independent:
            self._check_speakers(corpus, where)

    def _check_corpora(self, corpus: Corpus, where: str) -> None:
        if any(corpus[i].corpus is None for i in self.test):
            raise SplitError(f"{where}: a corpus protocol needs the corpus of every utterance (Utterance.corpus)")
        tested = set(self.corpora(corpus, "test"))
        for part in ("train", "valid") if self.validation == "strict" else ("train",):
            shared = tested & set(self.corpora(corpus, part))
            if shared:
                raise SplitError(
                    f"{where}: corpus {', '.join(sorted(shared))} is both tested and in {part}, so the fold is not "
                    "corpus-independent; this is a bug in the protocol, please report it"
                )

    def _check_speakers(self, corpus: Corpus, where: str) -> None:
        spk = {part: set(self.speakers(corpus, part)) for part in ("train", "valid", "test")}
        pairs = [("train", "test"), ("train", "valid")]
        if self.validation == "strict":
            pairs.append(("valid", "test"))
        for a, b in pairs:
            shared = spk[a] & spk[b]
            if shared:
                raise SplitError(
                    f"{where}: speaker(s) {', '.join(natural_sorted(shared))} appear in both {a} and {b}, so this "
                    "protocol is not speaker-independent on this corpus; check the corpus's speaker/session ids or "
                    "use a speaker-groups protocol"
                )

    def to_dict(self) -> dict:
        return {
            "index": self.index,
            "name": self.name,
            "protocol": self.protocol,
            "validation": self.validation,
            "valid_name": self.valid_name,
            "speaker_independent": self.speaker_independent,
            "corpus_independent": self.corpus_independent,
            "scope": list(self.scope) if self.scope is not None else None,
            "train": list(self.train),
            "valid": list(self.valid),
            "test": list(self.test),
        }


def natural_sorted(items: Iterable[str]) -> list[str]:
    """Sort so that embedded numbers compare as numbers: ``spk2`` before ``spk10``."""

    def key(s: str) -> tuple:
        return tuple((0, int(t), "") if t.isdigit() else (1, 0, t.lower()) for t in re.split(r"(\d+)", s) if t)

    return sorted(items, key=lambda s: (key(s), s))


def check_folds(folds: Sequence[Fold], corpus: Corpus) -> None:
    """Prove each fold (``Fold.check``) and, for cross-validation, that test folds partition the corpus.

    A holdout or official protocol (one fold, test is a part) is exempt from the partition check.
    """
    if not folds:
        raise SplitError(f"{corpus.spec or corpus.name}: the protocol produced no folds")
    for fold in folds:
        fold.check(corpus)
    if len(folds) == 1 and folds[0].protocol.startswith(("holdout", "official", "cross-corpus")):
        return
    seen: dict[str, int] = {}
    for fold in folds:
        for uid in fold.test:
            if uid in seen:
                raise SplitError(
                    f"{corpus.spec or corpus.name}, {fold.protocol}: utterance {uid!r} is tested in both fold "
                    f"{seen[uid]} and fold {fold.index}"
                )
            seen[uid] = fold.index
    if len(seen) != len(corpus):
        missing = next(u.id for u in corpus if u.id not in seen)
        raise SplitError(
            f"{corpus.spec or corpus.name}, {folds[0].protocol}: {len(corpus) - len(seen)} utterance(s) are never "
            f"tested, e.g. {missing!r}"
        )


def write_folds(folds: Sequence[Fold], corpus: Corpus, out_dir: str | Path) -> list[Path]:
    """Write ``fold_k/{train,valid,test}.jsonl`` (one ``Utterance.to_dict()`` per line) and ``folds.json``.

    The protocol kept as data (as EmoBox does) lets anyone audit which utterances were tested
    where. Each file is written to a temporary name and renamed, so a crash never leaves a
    half-written fold behind. Returns the paths written.
    """
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SplitError(f"cannot create output directory {out}: {exc.strerror}; choose a writable --out") from None
    _remove_stale_folds(out, {fold.index for fold in folds})
    written: list[Path] = []
    for fold in folds:
        fold_dir = out / f"fold_{fold.index}"
        fold_dir.mkdir(parents=True, exist_ok=True)
        for part, ids in fold.parts().items():
            lines = "".join(json.dumps(corpus[i].to_dict(), ensure_ascii=False) + "\n" for i in ids)
            path = fold_dir / f"{part}.jsonl"
            atomic_write_text(path, lines)
            written.append(path)
    from emovox.corpora.pool import corpus_sources

    summary = {
        "corpus": corpus.name,
        "spec": corpus.spec,
        "fingerprint": corpus.fingerprint(),
        "labels": list(corpus.labels),
        "corpora": corpus_sources(corpus),
        "folds": [
            {
                **{k: v for k, v in fold.to_dict().items() if k not in ("train", "valid", "test")},
                "sizes": {part: len(ids) for part, ids in fold.parts().items()},
                "corpora": {part: fold.corpora(corpus, part) for part in ("train", "valid", "test")},
                "speakers": {part: fold.speakers(corpus, part) for part in ("train", "valid", "test")},
                "missing_train_classes": fold.missing_train_classes(corpus),
            }
            for fold in folds
        ],
    }
    path = out / "folds.json"
    atomic_write_text(path, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    written.append(path)
    return written


def _remove_stale_folds(out: Path, keep: set[int]) -> None:
    """Delete ``fold_k`` directories of an earlier run with more folds, so the directory shows one protocol.

    Only directories holding nothing but our three JSONL files are removed; anything else is
    the user's and stops the write. Another process may be removing the same directory at the
    same moment (fold jobs of one run start together), so a file or directory that vanishes
    under us is not an error.
    """
    ours = {"train.jsonl", "valid.jsonl", "test.jsonl"}
    for d in out.glob("fold_*"):
        suffix = d.name[len("fold_"):]
        if not d.is_dir() or not suffix.isdigit() or int(suffix) in keep:
            continue
        try:
            names = {p.name for p in d.iterdir()}
        except FileNotFoundError:
            continue
        if names - ours:
            raise SplitError(f"{d} is left from an earlier split and holds other files; remove it or choose another --out")
        for name in names:
            (d / name).unlink(missing_ok=True)
        try:
            d.rmdir()
        except (FileNotFoundError, OSError):
            pass  # removed by another process, or refilled by one that writes this fold: either way not ours to fight over
