"""Several corpora as one: one label vocabulary, the ``labels:`` policy, and ids kept apart.

Every reader already maps its corpus's words onto emovox's canonical names (``emovox.labels``), so
EmoDB's ``W``, RAVDESS's ``05`` and a manifest's ``anger`` all arrive as ``angry``. What is left
for a run over several corpora is deciding which classes it learns, and keeping the corpora apart:

- **Labels** (``LabelPolicy``, the config's ``labels:`` section): ``merge`` renames classes first
  (``{calm: neutral}``), then ``keep`` picks the label set: a list of names (in that order),
  ``shared`` (the classes every corpus has utterances of; the default for several corpora, because
  a class that some corpus lacks cannot be tested there and a pooled model would learn it from one
  corpus's voices only), or ``all`` (every class of any corpus; the default for one corpus, as before).
  Names may be aliases (``fear``, ``anger``). The corpus's own code stays in ``corpus_label``.
- **Ids** (``pool``): in a pool of several corpora, ids, speakers, sessions and dialogues become
  ``<corpus>/<id>``: two corpora may both have a speaker ``03`` and an utterance ``a01``, and a
  speaker-independent split must not take them for one. A corpus read alone keeps its ids, so its
  existing runs, folds and recognizers stay valid.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from emovox.corpora.base import Corpus, Utterance
from emovox.errors import CorpusError
from emovox.labels import canonical_label

#: ``keep`` values that are not a list of names.
KEEP_WORDS = ("shared", "all")


@dataclass(frozen=True)
class LabelPolicy:
    """Which classes a run learns: ``merge`` (old -> new name) first, then ``keep``.

    ``keep`` is a tuple of names, ``"shared"``, ``"all"``, or None: ``all`` for one corpus and
    ``shared`` for several (``resolved_keep``).
    """

    keep: tuple[str, ...] | str | None = None
    merge: Mapping[str, str] = field(default_factory=dict)

    def resolved_keep(self, n_corpora: int) -> tuple[str, ...] | str:
        if self.keep is None:
            return "shared" if n_corpora > 1 else "all"
        return self.keep

    def to_dict(self) -> dict:
        keep = list(self.keep) if isinstance(self.keep, tuple) else self.keep
        return {"keep": keep, "merge": dict(self.merge)}


def present_labels(corpus: Corpus) -> tuple[str, ...]:
    """The classes of ``corpus`` that have utterances, in its label order."""
    counts = corpus.label_counts()
    return tuple(label for label in corpus.labels if counts[label] > 0)


def label_table(corpora: Sequence[Corpus]) -> dict[str, dict[str, int]]:
    """``label -> {corpus name: utterances}`` over every class any corpus has, in first-seen order."""
    table: dict[str, dict[str, int]] = {}
    for c in corpora:
        for label in c.labels:
            table.setdefault(label, {})
    for c in corpora:
        counts = c.label_counts()
        for label in table:
            table[label][c.name] = counts.get(label, 0)
    return table


def shared_labels(corpora: Sequence[Corpus]) -> tuple[str, ...]:
    """The classes every corpus has utterances of, in the first corpus's order."""
    present = [set(present_labels(c)) for c in corpora]
    return tuple(label for label in (corpora[0].labels if corpora else ()) if all(label in p for p in present))


def apply_labels(corpora: Sequence[Corpus], policy: LabelPolicy | None) -> list[Corpus]:
    """The corpora under ``policy`` (merge, then keep), all with the same label set.

    With no policy a single corpus comes back untouched (its label set as its reader made it), and
    several keep the classes they share.
    """
    corpora = list(corpora)
    policy = policy or LabelPolicy()
    if len(corpora) == 1 and not policy.merge and policy.resolved_keep(1) == "all":
        return corpora
    merge = _check_merge(corpora, policy.merge)
    merged = [_merged(c, merge) for c in corpora]
    keep = _keep(merged, policy.resolved_keep(len(corpora)))
    out = []
    for c in merged:
        utterances = [u for u in c.utterances if u.label in keep]
        if not utterances:
            raise CorpusError(
                f"{c.spec or c.name}: none of its utterances has a label in {list(keep)} (its classes: "
                f"{list(present_labels(c))}); drop the corpus or change labels: keep"
            )
        out.append(Corpus(c.name, utterances, keep, c.spec, list(c.dropped), [dict(s) for s in c.sources]))
    return out


def _check_merge(corpora: list[Corpus], merge: Mapping[str, str]) -> dict[str, str]:
    out = {canonical_label(k): canonical_label(v) for k, v in merge.items()}
    known = {label for c in corpora for label in present_labels(c)}
    for old, new in out.items():
        if old == new:
            raise CorpusError(f"labels: merge {old!r} into itself; remove that entry")
        if old not in known:
            raise CorpusError(
                f"labels: merge names {old!r}, which no corpus has (their classes: {sorted(known)}); fix the name"
            )
        if new in out:
            raise CorpusError(f"labels: merge {old!r} -> {new!r}, but {new!r} is merged further; merge {old!r} directly")
    return out


def _merged(c: Corpus, merge: dict[str, str]) -> Corpus:
    if not any(label in merge for label in c.labels):
        return c
    labels = tuple(dict.fromkeys(merge.get(label, label) for label in c.labels))
    utterances = [replace(u, label=merge[u.label]) if u.label in merge else u for u in c.utterances]
    return Corpus(c.name, utterances, labels, c.spec, list(c.dropped), [dict(s) for s in c.sources])


def _keep(corpora: list[Corpus], keep: tuple[str, ...] | str) -> tuple[str, ...]:
    table = label_table(corpora)
    available = [label for label, counts in table.items() if any(counts.values())]
    if keep == "all":
        return tuple(available)
    if keep == "shared":
        shared = shared_labels(corpora)
        if not shared:
            have = "; ".join(f"{c.name}: {', '.join(present_labels(c))}" for c in corpora)
            raise CorpusError(
                f"the corpora share no class ({have}); name the classes with labels: keep: [...] (or merge some)"
            )
        return shared
    names = tuple(canonical_label(k) for k in keep)
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise CorpusError(f"labels: keep names {twice} more than once (an alias and its canonical name?)")
    unknown = [n for n in names if n not in available]
    if unknown:
        raise CorpusError(f"labels: keep names {unknown}, which no corpus has; the corpora's classes are {available}")
    return names


def pool(corpora: Sequence[Corpus]) -> Corpus:
    """One corpus of several (all under one label set, ``apply_labels``); a single one is returned as is.

    Ids, speakers, sessions and dialogues are prefixed with the utterance's corpus (``emodb/03``).
    """
    corpora = list(corpora)
    if len(corpora) == 1:
        return corpora[0]
    if not corpora:
        raise CorpusError("no corpus given; corpus: takes a spec or a list of specs")
    labels = corpora[0].labels
    owner: dict[str, str] = {}
    for c in corpora:
        if c.labels != labels:
            raise CorpusError(
                f"{c.spec or c.name}: label set {list(c.labels)} differs from {list(labels)}; pool corpora under one "
                "labels: policy"
            )
        for name in c.corpora or [c.name]:
            if name in owner:
                raise CorpusError(
                    f"two corpora are both named {name!r} ({owner[name]} and {c.spec}); give one another name with "
                    "?name=NAME in its spec"
                )
            owner[name] = c.spec or c.name
    utterances = [_namespaced(u, c.name) for c in corpora for u in c.utterances]
    dropped = [(f"{c.name}/{x}", why) for c in corpora for x, why in c.dropped]
    sources = [s for c in corpora for s in corpus_sources(c)]
    return Corpus("+".join(c.name for c in corpora), utterances, labels, " + ".join(c.spec for c in corpora), dropped, sources)


def _namespaced(u: Utterance, default: str) -> Utterance:
    name = u.corpus or default
    prefix = f"{name}/"
    return replace(
        u,
        id=prefix + u.id,
        speaker=prefix + u.speaker,
        session=prefix + u.session if u.session is not None else None,
        dialogue=prefix + u.dialogue if u.dialogue is not None else None,
        corpus=name,
    )


def corpus_sources(corpus: Corpus) -> list[dict]:
    """What each corpus of ``corpus`` is, for run records and model cards: name, spec, fingerprint,
    utterances, speakers, class counts and the label map (canonical name -> the corpus's own codes)."""
    if corpus.sources:
        return [dict(s) for s in corpus.sources]
    label_map: dict[str, set[str]] = {}
    for u in corpus.utterances:
        label_map.setdefault(u.label, set()).add(u.corpus_label)
    return [
        {
            "name": corpus.corpora[0] if len(corpus.corpora) == 1 else corpus.name,
            "spec": corpus.spec,
            "fingerprint": corpus.fingerprint(),
            "utterances": len(corpus),
            "speakers": len(corpus.speakers),
            "labels": {k: v for k, v in corpus.label_counts().items() if v},
            "label_map": {label: sorted(label_map[label]) for label in corpus.labels if label in label_map},
        }
    ]
