"""Evaluation protocols: which utterances train, validate and test each fold.

A number in an SER paper means little without its protocol: the same model scores very
differently when a test speaker was also heard in training. So every protocol here is named
by the promise it makes, and ``make_folds`` *proves* that promise on the corpus at hand
(``check_folds``) instead of trusting the corpus layout: if IEMOCAP speaker ids were not
session-bound, leave-one-session-out would raise rather than silently leak.

Protocols (the ``protocol`` string):

``leave-one-session-out``
    One fold per session (IEMOCAP: 5). Speaker-independent when speakers are session-bound,
    which is checked. Needs ``Utterance.session``.
``speaker-groups:K`` (``speaker-groups:K:shuffle``)
    Speakers in natural order (``2`` < ``10``) are cut into K contiguous groups whose sizes
    differ by at most one; each group is one fold's test set. Contiguous, not round-robin,
    because corpora number speakers in a pattern (RAVDESS: odd actors male, even female), so
    RAVDESS ``speaker-groups:6`` gives 4 actors (2 male, 2 female) per group, while round-robin
    would give all-male groups. With ``:shuffle`` the order is a ``seed``-ed permutation.
``leave-one-speaker-out``
    ``speaker-groups:K`` with K = number of speakers (EmoDB: 10 folds).
``stratified:K``
    scikit-learn ``StratifiedKFold(K, shuffle=True, random_state=seed)`` over utterances, as
    the EmoSPeech paper did. NOT speaker-independent.
``holdout:FRACTION``
    One fold: scikit-learn ``train_test_split(test_size=FRACTION, stratify=labels,
    random_state=seed)``, as the RAVDESS voting paper's 80:20 split. NOT speaker-independent,
    and its test set covers only FRACTION of the corpus.
``official``
    One fold: the corpus's own published split, read from ``Utterance.session``: ``train``
    trains, ``dev`` (or ``valid``/``validation``) validates, ``test`` tests (MELD: 9,989 / 1,109 /
    2,610). Corpora whose sessions are not exactly these three parts (IEMOCAP's Session1-5, or
    none) are refused. NOT speaker-independent: the official splits of MELD share their main
    characters, and the protocol promises nothing about speakers. Validation is always the
    official dev part (``paper`` is refused: it would select on the test part the corpus's
    authors kept apart).

Protocols over several corpora (``corpus:`` a list of specs; each utterance's ``Utterance.corpus``):

``leave-one-corpus-out``
    One fold per corpus: it is the test part, never seen in training or validation; the other
    corpora train. Corpus-independent and speaker-independent (both checked).
``cross-corpus:TRAIN[:TEST]``
    One fold: the corpora named in TRAIN (``+``-joined, e.g. ``emodb+ased``) train, those in TEST
    (default: every other corpus) are tested once. Every corpus of the run must be in one of the
    two. With several test corpora the report breaks the figures down per corpus.
``in-corpus:K``
    Each corpus cut into K speaker groups (as ``speaker-groups:K``); a fold trains and validates on
    its own corpus only, so the run gives each corpus's in-corpus figure over the run's label set
    (the diagonal of the corpus matrix, ``emovox corpus matrix``).
``speaker-groups:K`` over several corpora
    Each corpus's speakers are cut into K groups of their own and group k of every corpus makes
    fold k, so every fold tests (and trains on) speakers of every corpus, not one corpus per group.

In the two corpus protocols, ``strict`` validation holds out a speaker group of every training
corpus (its speakers in natural order cut into ``VALID_GROUPS`` groups; fold k takes group k), so
choices are made on unheard voices of the corpora the model learns from, never on the test corpus.

Validation (the data early stopping and model selection look at):

``paper``
    ``valid`` is the test fold itself, as the IEMOCAP ensemble paper did. Optimistic: the
    reported score is the best epoch *on the test set*. Kept to reproduce published numbers.
``strict`` (default)
    The test fold is never seen before the final evaluation. For speaker-independent
    protocols a whole held-out unit is carved out of the training part: the next speaker group
    (fold k validates on group k+1, cyclically, so every group validates exactly once) or, for
    leave-one-session-out, the next whole session. A whole session rather than one of its two
    speakers, because IEMOCAP speakers share dialogues with their session partner: validating
    on one while training on the other lets the dialogue (and any context model) leak. It needs
    at least 3 groups/sessions. For ``stratified``/``holdout``, ``strict`` carves a seeded,
    stratified ``VALID_FRACTION`` of the training part (not speaker-independent, like the
    protocol itself); when a class is too rare to stratify, the carve-out is seeded but
    unstratified.

Fold ``index`` is 1-based, as printed in reports and as the ``fold_k`` directory names.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from emovox.atomic import atomic_write_text
from emovox.corpora.base import Corpus
from emovox.errors import SplitError

#: Share of the training part that ``strict`` validation carves out for stratified/holdout.
VALID_FRACTION = 0.1
#: Speaker groups of each training corpus in the corpus protocols; fold k validates on group k of each.
VALID_GROUPS = 5

VALIDATIONS = ("paper", "strict")

_PROTOCOL_HELP = (
    "use one of: leave-one-session-out, leave-one-speaker-out, speaker-groups:K, "
    "speaker-groups:K:shuffle, stratified:K, holdout:FRACTION (e.g. holdout:0.2), official; over several "
    "corpora also leave-one-corpus-out, cross-corpus:TRAIN[:TEST] (e.g. cross-corpus:emodb+ased:ravdess), in-corpus:K"
)

#: ``Utterance.session`` values of the ``official`` protocol's parts (first name = canonical).
OFFICIAL_PARTS: dict[str, tuple[str, ...]] = {"train": ("train",), "valid": ("dev", "valid", "validation"), "test": ("test",)}


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


def make_folds(corpus: Corpus, protocol: str, validation: str = "strict", seed: int = 0) -> list[Fold]:
    """Split ``corpus`` by ``protocol`` (see the module docstring) and prove the result.

    Deterministic: the same corpus, protocol, validation and seed give the same folds.
    """
    if validation not in VALIDATIONS:
        raise SplitError(f"unknown validation {validation!r}; use 'paper' or 'strict'")
    if len(corpus) == 0:
        raise SplitError(f"{corpus.spec or corpus.name}: the corpus is empty; nothing to split")
    kind, arg, shuffle = _parse_protocol(protocol)
    if kind == "leave-one-session-out":
        folds = _session_folds(corpus, protocol, validation)
    elif kind == "leave-one-speaker-out":
        folds = _speaker_group_folds(corpus, protocol, len(corpus.speakers), validation, seed, shuffle=False, spread=False)
    elif kind == "speaker-groups":
        folds = _speaker_group_folds(corpus, protocol, int(arg), validation, seed, shuffle)
    elif kind == "stratified":
        folds = _stratified_folds(corpus, protocol, int(arg), validation, seed)
    elif kind == "official":
        folds = _official_folds(corpus, protocol, validation)
    elif kind == "leave-one-corpus-out":
        names = _corpus_names(corpus, protocol)
        folds = [_cross_fold(corpus, protocol, validation, k + 1, [n for n in names if n != test], [test], test)
                 for k, test in enumerate(names)]  # fmt: skip
    elif kind == "cross-corpus":
        train, test = _cross_corpora(corpus, protocol, arg)
        folds = [_cross_fold(corpus, protocol, validation, 1, train, test, f"{'+'.join(train)} -> {'+'.join(test)}")]
    elif kind == "in-corpus":
        folds = _in_corpus_folds(corpus, protocol, int(arg), validation, seed)
    else:
        folds = _holdout_folds(corpus, protocol, float(arg), validation, seed)
    check_folds(folds, corpus)
    return folds


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


# --- protocols ------------------------------------------------------------------------------


def _parse_protocol(protocol: str) -> tuple[str, str, bool]:
    parts = protocol.strip().split(":")
    kind = parts[0]
    if kind == "cross-corpus":
        if len(parts) not in (2, 3) or not all(parts[1:]):
            raise SplitError(
                f"protocol {protocol!r}: name the training corpora and optionally the test corpora, "
                "cross-corpus:TRAIN[:TEST] with names joined by '+', e.g. cross-corpus:emodb+ased:ravdess"
            )
        return kind, ":".join(parts[1:]), False
    if kind == "in-corpus":
        kind, arg, _ = _parse_protocol("speaker-groups:" + ":".join(parts[1:])) if len(parts) == 2 else ("", "", False)
        if not arg:
            raise SplitError(f"protocol {protocol!r} needs a number of speaker groups per corpus, e.g. in-corpus:5")
        return "in-corpus", arg, False
    if kind in ("leave-one-session-out", "leave-one-speaker-out", "official", "leave-one-corpus-out"):
        if len(parts) != 1:
            raise SplitError(f"protocol {protocol!r} takes no argument; {_PROTOCOL_HELP}")
        return kind, "", False
    if kind in ("speaker-groups", "stratified"):
        shuffle = kind == "speaker-groups" and len(parts) == 3 and parts[2] == "shuffle"
        if len(parts) != 2 and not shuffle:
            raise SplitError(f"protocol {protocol!r} needs a number of folds, e.g. {kind}:5; {_PROTOCOL_HELP}")
        try:
            k = int(parts[1])
        except ValueError:
            raise SplitError(f"protocol {protocol!r}: {parts[1]!r} is not a whole number of folds") from None
        if k < 2:
            raise SplitError(f"protocol {protocol!r}: cross-validation needs at least 2 folds")
        return kind, str(k), shuffle
    if kind == "holdout":
        if len(parts) != 2:
            raise SplitError(f"protocol {protocol!r} needs a test fraction, e.g. holdout:0.2; {_PROTOCOL_HELP}")
        try:
            fraction = float(parts[1])
        except ValueError:
            raise SplitError(f"protocol {protocol!r}: {parts[1]!r} is not a fraction like 0.2") from None
        if not 0.0 < fraction < 1.0:
            raise SplitError(f"protocol {protocol!r}: the test fraction must be between 0 and 1 (exclusive)")
        return kind, parts[1], False
    raise SplitError(f"unknown protocol {protocol!r}; {_PROTOCOL_HELP}")


def _ids_where(corpus: Corpus, keep: set[str], attr: str) -> tuple[str, ...]:
    return tuple(u.id for u in corpus if getattr(u, attr) in keep)


def _unit_folds(
    corpus: Corpus, protocol: str, validation: str, attr: str, groups: list[list[str]], names: list[str]
) -> list[Fold]:
    """Folds that hold out whole units (sessions or speaker groups): group k tests fold k."""
    if validation == "strict" and len(groups) < 3:
        unit = "sessions" if attr == "session" else "speaker groups"
        raise SplitError(
            f"{corpus.spec or corpus.name}, {protocol}: 'strict' validation carves a whole unit out of training, "
            f"which needs at least 3 {unit} (found {len(groups)}); use --validation paper"
        )
    folds = []
    for k, group in enumerate(groups):
        test = _ids_where(corpus, set(group), attr)
        if validation == "strict":
            valid_units = set(groups[(k + 1) % len(groups)])
            valid = _ids_where(corpus, valid_units, attr)
            train = tuple(u.id for u in corpus if getattr(u, attr) not in valid_units and getattr(u, attr) not in group)
            valid_name = names[(k + 1) % len(groups)]
        else:
            valid = test
            train = tuple(u.id for u in corpus if getattr(u, attr) not in group)
            valid_name = "= test"
        folds.append(Fold(k + 1, names[k], train, valid, test, True, protocol, validation, valid_name))
    return folds


def _session_folds(corpus: Corpus, protocol: str, validation: str) -> list[Fold]:
    missing = [u.id for u in corpus if u.session is None]
    if missing:
        raise SplitError(
            f"{corpus.spec or corpus.name}: leave-one-session-out needs a session on every utterance, but "
            f"{len(missing)} have none (e.g. {missing[0]!r}); use speaker-groups:K instead"
        )
    sessions = natural_sorted(corpus.sessions)
    if len(sessions) < 2:
        raise SplitError(f"{corpus.spec or corpus.name}: leave-one-session-out needs at least 2 sessions, found {sessions}")
    return _unit_folds(corpus, protocol, validation, "session", [[s] for s in sessions], sessions)


def _speaker_group_folds(
    corpus: Corpus, protocol: str, k: int, validation: str, seed: int, shuffle: bool, *, spread: bool = True
) -> list[Fold]:
    """K speaker groups; over several corpora (``spread``) each corpus's speakers are spread over the groups."""
    if spread and len(corpus.corpora) > 1:
        return _pooled_group_folds(corpus, protocol, k, validation, seed, shuffle)
    speakers = natural_sorted(corpus.speakers)
    if k > len(speakers):
        raise SplitError(
            f"{corpus.spec or corpus.name}, {protocol}: {k} speaker groups need at least {k} speakers, but the corpus "
            f"has {len(speakers)}; use speaker-groups:{len(speakers)} or fewer"
        )
    if k < 2:
        raise SplitError(f"{corpus.spec or corpus.name}, {protocol}: needs at least 2 speakers, found {len(speakers)}")
    if shuffle:
        random.Random(seed).shuffle(speakers)
    groups = _balanced_chunks(speakers, k)
    names = ["speakers " + ",".join(natural_sorted(g)) if len(g) > 1 else f"speaker {g[0]}" for g in groups]
    return _unit_folds(corpus, protocol, validation, "speaker", groups, names)


def _pooled_group_folds(corpus: Corpus, protocol: str, k: int, validation: str, seed: int, shuffle: bool) -> list[Fold]:
    """``speaker-groups:K`` over several corpora: each corpus's speakers cut into K groups of its own
    (contiguous in natural order, or a seeded permutation), group k of every corpus together make fold k."""
    groups: list[list[str]] = [[] for _ in range(k)]
    for name in corpus.corpora:
        speakers = natural_sorted({u.speaker for u in corpus if u.corpus == name})
        if shuffle:
            random.Random(f"{seed}:{name}").shuffle(speakers)
        for g, chunk in enumerate(_balanced_chunks(speakers, k)):
            groups[g] += chunk
    empty = [g + 1 for g, members in enumerate(groups) if not members]
    if empty:
        raise SplitError(f"{corpus.spec or corpus.name}, {protocol}: speaker group(s) {empty} are empty; use fewer groups")
    return _unit_folds(corpus, protocol, validation, "speaker", groups, [f"speaker group {g + 1}" for g in range(k)])


def _corpus_names(corpus: Corpus, protocol: str, minimum: int = 2) -> list[str]:
    where = corpus.spec or corpus.name
    unnamed = next((u.id for u in corpus if u.corpus is None), None)
    if unnamed is not None:
        raise SplitError(
            f"{where}, {protocol}: utterance {unnamed!r} has no corpus (Utterance.corpus); read corpora with load_corpus"
        )
    names = corpus.corpora
    if len(names) < minimum:
        raise SplitError(
            f"{where}, {protocol}: needs at least {minimum} corpora, found {names}; give corpus: a list of specs"
        )
    return names


def _cross_corpora(corpus: Corpus, protocol: str, arg: str) -> tuple[list[str], list[str]]:
    """The training and test corpora that ``cross-corpus:TRAIN[:TEST]`` names (TEST default: all the others)."""
    names = _corpus_names(corpus, protocol)
    train_raw, _, test_raw = arg.partition(":")
    train = train_raw.split("+")
    test = test_raw.split("+") if test_raw else [n for n in names if n not in train]
    where = f"{corpus.spec or corpus.name}, {protocol}"
    for part, listed in (("training", train), ("test", test)):
        unknown = [n for n in listed if n not in names]
        if unknown or len(set(listed)) != len(listed) or not listed:
            raise SplitError(
                f"{where}: {part} corpora {listed} must be distinct names of the run's corpora {names} "
                "(a corpus is named by its format or its spec's ?name=)"
            )
    both = sorted(set(train) & set(test))
    if both:
        raise SplitError(f"{where}: corpus {', '.join(both)} is both trained and tested on; a cross-corpus test is unseen")
    unused = [n for n in names if n not in train and n not in test]
    if unused:
        raise SplitError(
            f"{where}: corpus {', '.join(unused)} is neither trained nor tested on; name it in the protocol or remove it "
            "from corpus:"
        )
    return [n for n in names if n in train], [n for n in names if n in test]


def _cross_fold(
    corpus: Corpus, protocol: str, validation: str, index: int, train_names: list[str], test_names: list[str], name: str
) -> Fold:
    """Train on ``train_names``, test on ``test_names``; strict validation holds out a speaker group of each
    training corpus (group ``index`` of ``VALID_GROUPS``)."""
    test = tuple(u.id for u in corpus if u.corpus in test_names)
    training = [u for u in corpus if u.corpus in train_names]
    if validation == "paper":
        train, valid, valid_name = tuple(u.id for u in training), test, "= test"
    else:
        held: list[str] = []
        shown: list[str] = []
        for c in train_names:
            speakers = natural_sorted({u.speaker for u in training if u.corpus == c})
            if len(speakers) < 2:
                continue  # one speaker cannot be both trained on and held out
            chunks = _balanced_chunks(speakers, min(VALID_GROUPS, len(speakers)))
            chunk = chunks[(index - 1) % len(chunks)]
            held += chunk
            shown.append(f"{c} {','.join(s.removeprefix(c + '/') for s in chunk)}")
        if not held:
            raise SplitError(
                f"{corpus.spec or corpus.name}, {protocol}: 'strict' validation holds out speakers of the training "
                f"corpora, but {'+'.join(train_names)} have fewer than 2 speakers each; use --validation paper"
            )
        held_set = set(held)
        valid = tuple(u.id for u in training if u.speaker in held_set)
        train = tuple(u.id for u in training if u.speaker not in held_set)
        valid_name = "speakers " + "; ".join(shown)
    return Fold(index, name, train, valid, test, True, protocol, validation, valid_name, corpus_independent=True)


def _in_corpus_folds(corpus: Corpus, protocol: str, k: int, validation: str, seed: int) -> list[Fold]:
    """``in-corpus:K``: ``speaker-groups:K`` inside each corpus alone, one corpus after another."""
    from dataclasses import replace

    folds: list[Fold] = []
    for name in _corpus_names(corpus, protocol, minimum=1):
        alone = corpus.subset([u.id for u in corpus if u.corpus == name])
        if k > len(alone.speakers):
            raise SplitError(
                f"{corpus.spec or corpus.name}, {protocol}: corpus {name} has {len(alone.speakers)} speakers, too few "
                f"for {k} groups; use in-corpus:{len(alone.speakers)} or fewer"
            )
        prefix = f"{name}/"
        for f in _speaker_group_folds(alone, protocol, k, validation, seed, shuffle=False):
            folds.append(
                replace(
                    f, index=len(folds) + 1, name=f"{name} {f.name.replace(prefix, '')}",
                    valid_name=f"{name} {f.valid_name.replace(prefix, '')}", scope=(name,),
                )
            )  # fmt: skip
    return folds


def _balanced_chunks(items: list[str], k: int) -> list[list[str]]:
    """K contiguous chunks whose sizes differ by at most one (the first ``len % k`` get one more)."""
    size, extra = divmod(len(items), k)
    chunks, start = [], 0
    for i in range(k):
        end = start + size + (1 if i < extra else 0)
        chunks.append(items[start:end])
        start = end
    return chunks


def _stratified_folds(corpus: Corpus, protocol: str, k: int, validation: str, seed: int) -> list[Fold]:
    from sklearn.model_selection import StratifiedKFold

    ids = [u.id for u in corpus]
    labels = [u.label for u in corpus]
    if k > len(ids):
        raise SplitError(f"{corpus.spec or corpus.name}, {protocol}: {k} folds need at least {k} utterances, found {len(ids)}")
    skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    try:
        splits = list(skf.split(ids, labels))
    except ValueError as exc:
        raise SplitError(f"{corpus.spec or corpus.name}, {protocol}: {exc}; use fewer folds") from None
    folds = []
    for index, (train_idx, test_idx) in enumerate(splits, start=1):
        test_set = {ids[i] for i in test_idx}
        test = tuple(i for i in ids if i in test_set)
        train, valid = _carve_valid(corpus, [ids[i] for i in sorted(train_idx)], validation, seed, test, protocol)
        folds.append(Fold(index, f"fold {index}", train, valid, test, False, protocol, validation, _carved_name(validation)))
    return folds


def _official_folds(corpus: Corpus, protocol: str, validation: str) -> list[Fold]:
    where = corpus.spec or corpus.name
    if validation != "strict":
        raise SplitError(
            f"{where}, {protocol}: the official split validates on its dev part; validation {validation!r} would select "
            "on the test part, so it is refused (use --validation strict)"
        )
    part_of = {name: part for part, names in OFFICIAL_PARTS.items() for name in names}
    sessions = corpus.sessions
    unknown = [s for s in sessions if s.lower() not in part_of]
    missing_session = next((u.id for u in corpus if u.session is None), None)
    if unknown or missing_session is not None or not sessions:
        found = f"its sessions are {sessions}" if sessions else "it has no sessions"
        if missing_session is not None and sessions:
            found += f" and utterance {missing_session!r} has none"
        raise SplitError(
            f"{where}: the official protocol needs a published train/dev/test split in Utterance.session "
            f"(train; dev, valid or validation; test), but {found}; choose another protocol"
        )
    part_of_utt = {u.id: part_of[str(u.session).lower()] for u in corpus}
    parts = {part: tuple(u.id for u in corpus if part_of_utt[u.id] == part) for part in OFFICIAL_PARTS}
    empty = [OFFICIAL_PARTS[p][0] for p, ids in parts.items() if not ids]
    if empty:
        raise SplitError(
            f"{where}: the official protocol needs all three parts, but {', '.join(empty)} is empty "
            "(a spec option such as splits= may have left it out)"
        )
    return [Fold(1, "official train/dev/test", parts["train"], parts["valid"], parts["test"], False, protocol, validation)]


def _holdout_folds(corpus: Corpus, protocol: str, fraction: float, validation: str, seed: int) -> list[Fold]:
    ids = [u.id for u in corpus]
    rest, test = seeded_split(corpus, ids, fraction, seed, protocol, what="test")
    train, valid = _carve_valid(corpus, rest, validation, seed, test, protocol)
    return [Fold(1, f"holdout {fraction * 100:g}%", train, valid, test, False, protocol, validation, _carved_name(validation))]


def _carved_name(validation: str) -> str:
    return "= test" if validation == "paper" else f"{VALID_FRACTION * 100:g}% of training"


def _carve_valid(
    corpus: Corpus, train: list[str], validation: str, seed: int, test: tuple[str, ...], protocol: str
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if validation == "paper":
        return tuple(train), test
    return seeded_split(corpus, train, VALID_FRACTION, seed, protocol, what="valid")


def seeded_split(
    corpus: Corpus, ids: list[str], fraction: float, seed: int, protocol: str, what: str
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Split ``ids`` into (rest, held) with ``fraction`` held out, stratified by label when possible.

    scikit-learn refuses to stratify when a class has a single member or the held-out part is
    smaller than the number of classes (tiny corpora); then the split is seeded but unstratified
    rather than failing, because a slightly unbalanced split is still a valid split.
    """
    from sklearn.model_selection import train_test_split

    if len(ids) < 2:
        raise SplitError(
            f"{corpus.spec or corpus.name}, {protocol}: cannot hold out a {what} part from {len(ids)} utterance(s); "
            "use a larger corpus or --validation paper"
        )
    labels = [corpus[i].label for i in ids]
    try:
        rest, held = train_test_split(ids, test_size=fraction, stratify=labels, random_state=seed)
    except ValueError:
        rest, held = train_test_split(ids, test_size=fraction, random_state=seed)
    held_set = set(held)
    return tuple(i for i in ids if i not in held_set), tuple(i for i in ids if i in held_set)


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
