"""The protocols: ``make_folds`` turns a protocol string (``emovox.splits`` lists them and their promises) into
folds, then proves them (``fold.check_folds``). One builder per protocol; ``seeded_split`` is the seeded, stratified
carve-out that ``strict`` validation (and ``train``'s validation part) use.
"""

from __future__ import annotations

import random

from emovox.corpora.base import Corpus
from emovox.errors import SplitError
from emovox.splits.fold import VALIDATIONS, Fold, check_folds, natural_sorted

#: Share of the training part that ``strict`` validation carves out for stratified/holdout.
VALID_FRACTION = 0.1
#: Speaker groups of each training corpus in the corpus protocols; fold k validates on group k of each.
VALID_GROUPS = 5

_PROTOCOL_HELP = (
    "use one of: leave-one-session-out, leave-one-speaker-out, speaker-groups:K, "
    "speaker-groups:K:shuffle, stratified:K, holdout:FRACTION (e.g. holdout:0.2), official; over several "
    "corpora also leave-one-corpus-out, cross-corpus:TRAIN[:TEST] (e.g. cross-corpus:emodb+ased:ravdess), in-corpus:K"
)

#: ``Utterance.session`` values of the ``official`` protocol's parts (first name = canonical).
OFFICIAL_PARTS: dict[str, tuple[str, ...]] = {"train": ("train",), "valid": ("dev", "valid", "validation"), "test": ("test",)}


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
