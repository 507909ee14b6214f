"""Turn utterances into model inputs with named fields, with an explicit skip policy.

A model kind declares which fields it reads (``audio``, ``text``, ``context_audio``,
``context_text``); only those are loaded, so a text model never decodes audio and an audio model
never needs a transcript. The context of an utterance is the previous utterance of the same
dialogue (either speaker), or, for a text context, the last few turns (``ContextFormat``); the
first utterance of a dialogue has none (``None``), which the models represent with a learned
"no context" vector rather than by skipping the utterance.

A multi-hour run must not die on the 4,000th file, but it must not drop data silently either:
every utterance that cannot be used is returned with its reason so the run report lists it.

What counts as unusable (each an ``EmovoxError`` naming the utterance and its file):

- audio that ``emovox.audio`` refuses: missing, not audio, an unsupported format, corrupt,
  truncated, empty, or holding NaN/inf samples;
- audio shorter than ``MIN_SECONDS`` (0.1 s): too short to carry emotion, and shorter than the
  receptive field of the convolutional front ends, so it would fail (or be noise) inside the
  model instead of here with a clear message;
- a missing or blank transcript when the model reads text;
- for a context field, the previous utterance's audio failing the same checks (the utterance is
  then skipped with a reason naming the context utterance: a silently missing context would
  change what the model sees).

Very long files are not an error: the papers crop to ``max_seconds`` (10 s), and so does this
module, reading only that part from disk (an hour-long recording is never decoded whole).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from emovox.audio import MIN_SECONDS, SAMPLE_RATE, check_min_duration
from emovox.corpora.base import Corpus, Utterance
from emovox.errors import AudioError, CorpusError, EmovoxError, TooShortError

#: Every field an ``Example`` can carry; a model kind reads a subset (``ModelKind.fields``).
FIELDS = ("audio", "text", "context_audio", "context_text")
__all__ = [
    "FIELDS", "MIN_SECONDS", "ContextFormat", "EndText", "Example", "MissingTranscriptError", "Skipped", "TooShortError",
    "build_examples", "common_context_format", "format_context",
]


class MissingTranscriptError(CorpusError):
    """A text model was asked to read an utterance without a transcript."""


@dataclass(frozen=True)
class Example:
    """One utterance ready for a model: its target and the fields the model reads.

    ``audio`` is 16 kHz mono float32 (cropped to ``max_seconds``), ``text`` the transcript;
    ``context_*`` are the previous utterance's (``None`` for the first one of a dialogue).
    ``length`` (seconds of audio, else characters of text) only groups similar lengths into
    batches. ``speaker`` and ``corpus`` are the utterance's (namespaced ``<corpus>/<speaker>`` in a
    run over several corpora), for what is computed per speaker or per corpus.
    ``cached`` holds what a model precomputed for this example (frozen features, a
    frozen bottom's frames), keyed by the branch that owns it; it is empty for raw inputs.
    """

    id: str
    target: int
    audio: np.ndarray | None = None
    text: str | None = None
    context_audio: np.ndarray | None = None
    context_text: str | None = None
    length: float = 0.0
    cached: Mapping[str, Any] = field(default_factory=dict)
    speaker: str | None = None  # who spoke it: inner cross-validation groups by speaker; per-speaker normalisation
    corpus: str | None = None  # which corpus it comes from (``Utterance.corpus``): per-corpus normalisation and reports

    def with_cached(self, name: str, value: Any) -> Example:
        """A copy with ``value`` cached under ``name`` (examples are immutable and shared by folds)."""
        return replace(self, cached={**self.cached, name: value})


def example_length(audio: np.ndarray | None, text: str | None) -> float:
    """Seconds of audio if there is audio, else characters of text: what batching groups by."""
    if audio is not None:
        return len(audio) / SAMPLE_RATE
    return float(len(text or ""))


@dataclass(frozen=True)
class Skipped:
    """An utterance left out of a run, and why.

    ``kind`` groups reasons for summaries ("audio", "too_short", "transcript", "missing_class");
    ``fold`` is set when the utterance was left out of one fold only (its class had no training
    utterance there) rather than out of the whole run.
    """

    id: str
    reason: str
    kind: str = "audio"
    fold: str | None = None

    def to_dict(self) -> dict:
        d = {"id": self.id, "reason": self.reason, "kind": self.kind}
        if self.fold is not None:
            d["fold"] = self.fold
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Skipped:
        return cls(str(d["id"]), str(d["reason"]), str(d.get("kind", "audio")), d.get("fold"))


def skip_kind(exc: EmovoxError) -> str:
    if isinstance(exc, TooShortError):
        return "too_short"
    if isinstance(exc, MissingTranscriptError):
        return "transcript"
    return "audio"


def utterance_text(u: Utterance) -> str:
    """The transcript; a ``MissingTranscriptError`` naming the utterance when there is none."""
    if u.text is None or not u.text.strip():
        where = f" ({u.audio})" if u.audio is not None else ""
        raise MissingTranscriptError(
            f"utterance {u.id}{where} has no transcript, which a text model needs; "
            "add a text column to the manifest or use an audio backbone"
        )
    return u.text


def load_cropped_audio(u: Utterance, max_seconds: float) -> np.ndarray:
    """The utterance's 16 kHz audio, at most ``max_seconds`` long, reading only that much.

    The duration comes from the file header, so a file (or cut) longer than ``max_seconds`` is
    decoded only up to its first ``max_seconds``. Raises ``TooShortError`` under ``MIN_SECONDS``.
    """
    from emovox.audio import END_TOLERANCE_S, audio_duration, load_audio

    if u.audio is None:
        raise AudioError(f"utterance {u.id!r} has no audio file; use a text-only model or add a path for it")
    duration = audio_duration(u.audio)
    where = f"{u.audio}"
    if u.cut:
        start, end = u.start, u.end
        s = start if start is not None else 0.0
        e = end if end is not None else duration
        # an end past the file is left to load_audio, which says so; a valid long cut is cropped
        if e <= duration + END_TOLERANCE_S and e - s > max_seconds:
            end = e = s + max_seconds
        wav = load_audio(u.audio, start, end)
        where = f"{u.audio} [{s:g}-{e:g} s]"
    elif duration > max_seconds:
        wav = load_audio(u.audio, 0.0, max_seconds)
    else:
        wav = load_audio(u.audio)
    wav = wav[: int(round(max_seconds * SAMPLE_RATE))]
    check_min_duration(wav, f"{where} (utterance {u.id})", hint="; remove it from the corpus or set on_bad_audio: skip")
    return wav


@dataclass(frozen=True)
class ContextFormat:
    """How much of the dialogue a context text holds: the IEMOCAP paper reads the one previous
    utterance (the default); MELD systems that gain from context (EmoBERTa) read several previous
    turns with their speakers' names, so both are configurable. Audio context is always one turn.
    A recognizer given a context at prediction time reads it as written, so a caller passes the
    turns formatted by ``format_context`` (what training saw)."""

    turns: int = 1
    speakers: bool = False

    def __post_init__(self) -> None:
        if self.turns < 1:
            raise EmovoxError(f"context turns must be at least 1, not {self.turns}")


class EndText(str):
    """A text that, when too long for its backbone, is cut from its start rather than its end: a
    context of several turns, whose newest turn (next to the utterance) matters most. It hashes
    apart from the same plain text in the feature cache, since the two can encode differently."""

    __slots__ = ()


def format_context(turns: Sequence[tuple[str | None, str]], fmt: ContextFormat = ContextFormat()) -> str:
    """The context text of ``(speaker, transcript)`` turns, oldest first: the last ``fmt.turns`` of
    them (turns without a transcript left out), each ``"speaker: text"`` when ``fmt.speakers``,
    joined by single spaces."""
    kept = [(spk, text) for spk, text in turns if text is not None][-fmt.turns :]
    return " ".join(f"{spk}: {text}" if fmt.speakers and spk else text for spk, text in kept)


def common_context_format(formats: Iterable[ContextFormat | None], *, where: str) -> ContextFormat:
    """The one format of several parts' context texts (an ``Example`` holds one context text), the
    default when none reads any; a ``EmovoxError`` naming ``where`` when they disagree."""
    found = {f for f in formats if f is not None}
    if len(found) > 1:
        shown = ", ".join(f"{f.turns} turn(s){' with speakers' if f.speakers else ''}" for f in sorted(found, key=str))
        raise EmovoxError(f"{where}: its parts read the dialogue context in different ways ({shown}); use one "
                          "context_turns / context_speakers for every context or pair branch")
    return found.pop() if found else ContextFormat()


def _context(corpus: Corpus, u: Utterance, what: str, max_seconds: float, fmt: ContextFormat):
    turns = corpus.history(u, 1 if what == "audio" else fmt.turns)
    if not turns:
        return None
    prev = turns[-1]
    try:
        if what == "audio":
            return load_cropped_audio(prev, max_seconds)
        texts = [(t.speaker, utterance_text(t)) for t in turns]
    except EmovoxError as exc:
        raise type(exc)(f"the context of {u.id} (the previous utterance {prev.id}) is unusable: {exc}") from None
    return format_context(texts, fmt)


def load_example(
    corpus: Corpus,
    u: Utterance,
    target: int,
    fields: Iterable[str],
    *,
    max_seconds: float,
    context: ContextFormat = ContextFormat(),
) -> Example:
    """One utterance's ``Example`` with just ``fields`` loaded (raises ``EmovoxError`` if unusable)."""
    fields = set(fields)
    unknown = fields - set(FIELDS)
    if unknown:
        raise EmovoxError(f"unknown example field(s) {sorted(unknown)}; fields are {list(FIELDS)}")
    audio = load_cropped_audio(u, max_seconds) if "audio" in fields else None
    text = utterance_text(u) if "text" in fields else None
    context_audio = _context(corpus, u, "audio", max_seconds, context) if "context_audio" in fields else None
    context_text = _context(corpus, u, "text", max_seconds, context) if "context_text" in fields else None
    return Example(
        u.id, target, audio, text, context_audio, context_text, example_length(audio, text), speaker=u.speaker, corpus=u.corpus
    )


def build_examples(
    corpus: Corpus,
    ids: Sequence[str],
    fields: Iterable[str],
    *,
    max_seconds: float = 10.0,
    on_error: Literal["error", "skip"] = "error",
    context: ContextFormat = ContextFormat(),
) -> tuple[list[Example], list[Skipped]]:
    """Load every utterance in ``ids`` with the given fields; audio is cropped to ``max_seconds``.

    ``on_error="error"`` raises the first problem; ``"skip"`` leaves the utterance out and
    returns it in the second list with its reason (see the module docstring for what counts).
    """
    if on_error not in ("error", "skip"):
        raise EmovoxError(f"on_error {on_error!r}: use 'error' or 'skip'")
    fields = (fields,) if isinstance(fields, str) else tuple(fields)
    index = {label: i for i, label in enumerate(corpus.labels)}
    examples: list[Example] = []
    skipped: list[Skipped] = []
    for uid in ids:
        u = corpus[uid]
        try:
            examples.append(load_example(corpus, u, index[u.label], fields, max_seconds=max_seconds, context=context))
        except EmovoxError as exc:
            if on_error == "error":
                raise
            skipped.append(Skipped(u.id, str(exc), skip_kind(exc)))
    return examples, skipped
