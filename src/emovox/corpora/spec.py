"""Corpus spec strings (``FORMAT:PATH?opt=value&...``) and the options each reader declares.

One string names a corpus everywhere (CLI, YAML recipes, recognizer metadata), so it is parsed
in one place. Each reader declares its options with a default and a parser; a misspelt option
or a bad value is a ``CorpusError`` that lists what is valid instead of being silently ignored.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from emovox.corpora.base import Corpus
from emovox.errors import CorpusError
from emovox.labels import canonical_label


@dataclass(frozen=True)
class CorpusSpec:
    """A parsed spec: reader name, path on disk and raw option strings."""

    format: str
    path: Path
    options: dict[str, str] = field(default_factory=dict)
    text: str = ""


@dataclass(frozen=True)
class Option:
    """One ``?name=value`` option of a reader: its default and how to parse the string value."""

    name: str
    default: Any
    help: str
    parse: Callable[[str], Any] = str


@dataclass(frozen=True)
class Reader:
    """A corpus layout: ``read(path, spec=..., **options) -> Corpus`` plus its declared options."""

    name: str
    summary: str
    read: Callable[..., Corpus]
    options: tuple[Option, ...] = ()


def parse_spec(spec: str) -> CorpusSpec:
    """Split ``FORMAT:PATH?a=1&b=2``; the first ``?`` starts the options (paths must not contain one)."""
    text = str(spec).strip()
    fmt, sep, rest = text.partition(":")
    if not sep or not fmt or not rest:
        raise CorpusError(f"corpus spec {text!r} is not FORMAT:PATH (e.g. iemocap:/data/IEMOCAP or manifest:train.csv)")
    raw_path, _, query = rest.partition("?")
    if not raw_path:
        raise CorpusError(f"corpus spec {text!r} has no path after {fmt + ':'!r}")
    options: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if key in options:
            raise CorpusError(f"corpus spec {text!r} sets option {key!r} twice")
        options[key] = value
    return CorpusSpec(fmt.strip().lower(), Path(raw_path).expanduser(), options, text)


def resolve_options(spec: CorpusSpec, declared: tuple[Option, ...]) -> dict[str, Any]:
    """Parsed values for every declared option (defaults filled in); unknown names are an error."""
    known = {o.name: o for o in declared}
    unknown = sorted(set(spec.options) - set(known))
    if unknown:
        valid = ", ".join(sorted(known)) or "(none)"
        raise CorpusError(
            f"{spec.text}: unknown option(s) {', '.join(unknown)} for format {spec.format!r}; valid options: {valid}"
        )
    values = {name: o.default for name, o in known.items()}
    for name, raw in spec.options.items():
        try:
            values[name] = known[name].parse(raw)
        except ValueError as exc:
            raise CorpusError(f"{spec.text}: bad value {raw!r} for option {name!r}: {exc}") from None
    return values


# --- value parsers ------------------------------------------------------------------------

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def boolean(raw: str) -> bool:
    v = raw.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ValueError("expected true or false")


def choice(*values: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        v = raw.strip().lower()
        if v not in values:
            raise ValueError(f"expected one of {', '.join(values)}")
        return v

    return parse


def name_list(raw: str) -> tuple[str, ...]:
    """Comma-separated names, order kept (it becomes the label order), no blanks or repeats."""
    items = tuple(x.strip() for x in raw.split(",") if x.strip())
    if not items:
        raise ValueError("expected a comma-separated list, e.g. angry,happy,neutral,sad")
    if len(set(items)) != len(items):
        raise ValueError("a name is listed twice")
    return items


def text(raw: str) -> str:
    v = raw.strip()
    if not v:
        raise ValueError("expected a non-empty value")
    return v


ON_MISSING_AUDIO = Option(
    "on_missing_audio",
    "error",
    "error: stop at the first utterance whose audio file does not exist; skip: leave such utterances out",
    choice("error", "skip"),
)


#: What a corpus name may hold: it prefixes ids and speakers (``emodb/03``) and is written in
#: protocols (``cross-corpus:emodb+ased:ravdess``), so no ``/``, ``+``, ``:`` or spaces.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def corpus_name(raw: str) -> str:
    """A corpus name for ``?name=`` (letters, digits, ``_ . -``)."""
    v = raw.strip()
    if not _NAME.match(v):
        raise ValueError("a corpus name is letters, digits, '_', '.' or '-' (it prefixes ids: NAME/id), e.g. name=emodb2")
    return v


#: The option every reader takes: the corpus's name in a run over several corpora (default: the
#: reader's name, or a manifest's file name), so that two manifests, or two copies of one corpus,
#: can be pooled.
NAME_OPTION = Option("name", None, "the corpus's name in a run over several corpora (default: the format's name)", corpus_name)


def canonical_names(spec_text: str, wanted: tuple[str, ...]) -> tuple[str, ...]:
    """``labels=`` names as canonical names (``fear`` -> ``fearful``), order kept; a class named twice is an error."""
    names = tuple(canonical_label(w) for w in wanted)
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise CorpusError(f"{spec_text}: labels= names {twice} more than once (an alias and its canonical name?)")
    return names


def select_labels(spec_text: str, available: tuple[str, ...], wanted: tuple[str, ...] | None) -> tuple[str, ...]:
    """The label set: ``available`` as is, or the ``labels=`` subset in the order the user gave
    (aliases such as ``fear`` or ``anger`` name their canonical class)."""
    if wanted is None:
        return available
    wanted = canonical_names(spec_text, wanted)
    bad = [w for w in wanted if w not in available]
    if bad:
        raise CorpusError(f"{spec_text}: labels {bad} are not labels of this corpus; choose from {list(available)}")
    return wanted


def missing_audio(spec_text: str, missing: list[Path], policy: str) -> list[tuple[str, str]]:
    """Raise for missing audio files under ``on_missing_audio=error``, naming the first ones;
    under ``skip``, return them as ``Corpus.dropped`` entries so the run report lists them."""
    if policy == "skip":
        return [(str(p), "audio file missing (on_missing_audio=skip)") for p in missing]
    if not missing:
        return []
    shown = ", ".join(str(p) for p in missing[:3])
    more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
    raise CorpusError(
        f"{spec_text}: {len(missing)} audio file(s) are missing: {shown}{more}. Restore them, or add "
        "?on_missing_audio=skip to leave those utterances out"
    )


#: Speaker of utterances whose corpus does not say who spoke (MEACorpus, manifests without a
#: ``speaker`` column). All such utterances share this one speaker, so a speaker-independent
#: split sees a single speaker group and refuses, instead of silently treating every utterance
#: as its own speaker (which would hide speaker leakage behind a "speaker-independent" label).
UNKNOWN_SPEAKER = "unknown"


def known_speaker(speaker: str | None) -> str | None:
    """The speaker, or None where the corpus does not say who spoke (``UNKNOWN_SPEAKER``, also namespaced
    ``<corpus>/unknown``): per-speaker statistics must not pool a whole corpus as one "speaker"."""
    if speaker is None or speaker == UNKNOWN_SPEAKER or speaker.endswith("/" + UNKNOWN_SPEAKER):
        return None
    return speaker
