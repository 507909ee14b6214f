"""Turn utterances into model inputs (audio arrays or transcripts), with an explicit skip policy.

A multi-hour run must not die on the 4,000th file, but it must not drop data silently either:
every utterance that cannot be used is returned with its reason so the run report lists it.

What counts as unusable (each an ``EmovoxError`` naming the utterance and its file):

- audio that ``emovox.audio`` refuses: missing, not audio, an unsupported format, corrupt,
  truncated, empty, or holding NaN/inf samples;
- audio shorter than ``MIN_SECONDS`` (0.1 s): too short to carry emotion, and shorter than the
  receptive field of the convolutional front ends, so it would fail (or be noise) inside the
  model instead of here with a clear message;
- a missing or blank transcript when the model reads text.

Very long files are not an error: the papers crop to ``max_seconds`` (10 s), and so does this
module, reading only that part from disk (an hour-long recording is never decoded whole).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence, Union

import numpy as np

from emovox.audio import MIN_SECONDS, too_short_message  # noqa: F401  (MIN_SECONDS re-exported)
from emovox.corpora.base import Corpus, Utterance
from emovox.errors import AudioError, CorpusError, EmovoxError, TooShortError

SAMPLE_RATE = 16_000

Item = Union[np.ndarray, str, tuple]


class MissingTranscriptError(CorpusError):
    """A text model was asked to read an utterance without a transcript."""


@dataclass(frozen=True)
class Example:
    """One utterance ready for a backbone: ``item`` is a 16 kHz array, a text, or (context, text)."""

    id: str
    target: int
    item: Item
    length: float  # seconds for audio, characters for text: only used to group similar lengths


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
    def from_dict(cls, d: dict) -> "Skipped":
        return cls(str(d["id"]), str(d["reason"]), str(d.get("kind", "audio")), d.get("fold"))


def skip_kind(exc: EmovoxError) -> str:
    if isinstance(exc, TooShortError):
        return "too_short"
    if isinstance(exc, MissingTranscriptError):
        return "transcript"
    return "audio"


def utterance_text(corpus: Corpus, u: Utterance, context: bool) -> Item:
    """The transcript, or (previous utterance's transcript, transcript) when context is on."""
    if u.text is None or not u.text.strip():
        raise MissingTranscriptError(
            f"utterance {u.id} ({u.audio}) has no transcript, which a text model needs; "
            "add a text column to the manifest or use an audio backbone"
        )
    if not context:
        return u.text
    prev = corpus.previous(u)
    return (prev.text if prev is not None and prev.text else None, u.text)


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
    if len(wav) < MIN_SECONDS * SAMPLE_RATE:
        raise TooShortError(
            too_short_message(f"{where} (utterance {u.id})", len(wav)) + "; remove it from the corpus or set on_bad_audio: skip"
        )
    return wav


def build_examples(
    corpus: Corpus,
    ids: Sequence[str],
    modality: Literal["audio", "text"],
    *,
    context: bool = False,
    max_seconds: float = 10.0,
    on_error: Literal["error", "skip"] = "error",
) -> tuple[list[Example], list[Skipped]]:
    """Load every utterance in ``ids``; audio is cropped to ``max_seconds`` as the papers did.

    ``on_error="error"`` raises the first problem; ``"skip"`` leaves the utterance out and
    returns it in the second list with its reason (see the module docstring for what counts).
    """
    if on_error not in ("error", "skip"):
        raise EmovoxError(f"on_error {on_error!r}: use 'error' or 'skip'")
    index = {label: i for i, label in enumerate(corpus.labels)}
    examples: list[Example] = []
    skipped: list[Skipped] = []
    for uid in ids:
        u = corpus[uid]
        try:
            if modality == "audio":
                wav = load_cropped_audio(u, max_seconds)
                examples.append(Example(u.id, index[u.label], wav, len(wav) / SAMPLE_RATE))
            else:
                item = utterance_text(corpus, u, context)
                n = len(item) if isinstance(item, str) else sum(len(t or "") for t in item)
                examples.append(Example(u.id, index[u.label], item, float(n)))
        except EmovoxError as exc:
            if on_error == "error":
                raise
            skipped.append(Skipped(u.id, str(exc), skip_kind(exc)))
    return examples, skipped
