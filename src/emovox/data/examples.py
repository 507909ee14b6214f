"""Turn utterances into model inputs (audio arrays or transcripts), with an explicit skip policy.

A multi-hour run must not die on the 4,000th file, but it must not drop data silently either:
every utterance that cannot be used is returned with its reason so the run report lists it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence, Union

import numpy as np

from emovox.corpora.base import Corpus, Utterance
from emovox.errors import EmovoxError

SAMPLE_RATE = 16_000

Item = Union[np.ndarray, str, tuple]


@dataclass(frozen=True)
class Example:
    """One utterance ready for a backbone: ``item`` is a 16 kHz array, a text, or (context, text)."""

    id: str
    target: int
    item: Item
    length: float  # seconds for audio, characters for text: only used to group similar lengths


@dataclass(frozen=True)
class Skipped:
    id: str
    reason: str


def utterance_text(corpus: Corpus, u: Utterance, context: bool) -> Item:
    """The transcript, or (previous utterance's transcript, transcript) when context is on."""
    if u.text is None or not u.text.strip():
        raise EmovoxError(
            f"utterance {u.id} ({u.audio}) has no transcript, which a text model needs; "
            "add a text column to the manifest or use an audio backbone"
        )
    if not context:
        return u.text
    prev = corpus.previous(u)
    return (prev.text if prev is not None and prev.text else None, u.text)


def build_examples(
    corpus: Corpus,
    ids: Sequence[str],
    modality: Literal["audio", "text"],
    *,
    context: bool = False,
    max_seconds: float = 10.0,
    on_error: Literal["error", "skip"] = "error",
) -> tuple[list[Example], list[Skipped]]:
    """Load every utterance in ``ids``; audio is cropped to ``max_seconds`` as the papers did."""
    from emovox.audio import load_utterance_audio

    index = {label: i for i, label in enumerate(corpus.labels)}
    max_samples = int(round(max_seconds * SAMPLE_RATE))
    examples: list[Example] = []
    skipped: list[Skipped] = []
    for uid in ids:
        u = corpus[uid]
        try:
            if modality == "audio":
                wav = load_utterance_audio(u)[:max_samples]
                examples.append(Example(u.id, index[u.label], wav, len(wav) / SAMPLE_RATE))
            else:
                item = utterance_text(corpus, u, context)
                n = len(item) if isinstance(item, str) else sum(len(t or "") for t in item)
                examples.append(Example(u.id, index[u.label], item, float(n)))
        except EmovoxError as exc:
            if on_error == "error":
                raise
            skipped.append(Skipped(u.id, str(exc)))
    return examples, skipped
