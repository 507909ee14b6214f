"""What a prediction is, and how ``predict``'s arguments are checked: one definition for every engine.

The torch ``Recognizer`` and the onnxruntime ``Runtime`` take the same arguments (a path, an array
or a list of them; transcripts; a previous utterance) and refuse the same mistakes with the same
messages, because both call the functions below before anything runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emovox.errors import AudioError, RecognizerError


@dataclass(frozen=True)
class Prediction:
    """A label and its class probabilities; ``speech`` is False when the audio holds no speech at all
    (digital silence, hum, steady noise: ``emovox.inference.activity``), whose label then means nothing."""

    label: str
    probabilities: dict[str, float]
    source: str | None = None
    transcript: str | None = None
    speech: bool | None = None

    def to_dict(self) -> dict:
        d = {"label": self.label, "probabilities": self.probabilities}
        if self.source is not None:
            d["source"] = self.source
        if self.transcript is not None:
            d["transcript"] = self.transcript
        if self.speech is not None:
            d["speech"] = self.speech
        return d


def to_prediction(
    labels: Sequence[str], probs: np.ndarray, source: str | None = None, transcript: str | None = None,
    speech: bool | None = None,
) -> Prediction:
    return Prediction(
        labels[int(np.argmax(probs))],
        {label: float(p) for label, p in zip(labels, probs, strict=True)},
        source,
        transcript,
        speech,
    )


@dataclass(frozen=True)
class Request:
    """``predict``'s arguments, one entry per clip, checked against what the recognizer reads."""

    single: bool
    clips: list
    texts: list
    contexts: list
    context_clips: list


def request(inputs, text, context, context_audio, *, fields: set[str], name: str) -> Request:
    """Spread ``predict``'s arguments over the clips and refuse what the recognizer cannot use."""
    needs_text = "text" in fields
    single = inputs is None and isinstance(text, str) or inputs is not None and not isinstance(inputs, (list, tuple))
    if inputs is None:
        if text is None:
            raise RecognizerError("nothing to predict: pass audio (a path or an array) and/or text=")
        texts = [text] if isinstance(text, str) else list(text)
        clips: list = [None] * len(texts)
    else:
        clips = [inputs] if single else list(inputs)
        texts = per_item(text, len(clips), single, "text", "transcript")
    n = len(clips)
    if not needs_text and any(t is not None for t in texts):
        raise RecognizerError(f"this recognizer ({name}) listens to audio only and does not read transcripts; drop the text")
    for t in texts:
        if t is not None and not isinstance(t, str):
            raise RecognizerError(f"transcripts must be strings, got {type(t).__name__}")
    contexts = per_item(context, n, single, "context", "previous transcript")
    context_clips = per_item(context_audio, n, single, "context_audio", "previous clip")
    if any(c is not None for c in contexts) and "context_text" not in fields:
        raise RecognizerError("this recognizer reads no previous utterance's transcript; drop context=")
    if any(c is not None for c in context_clips) and "context_audio" not in fields:
        raise RecognizerError("this recognizer reads no previous utterance's audio; drop context_audio=")
    return Request(single, clips, texts, contexts, context_clips)


def decode_inputs(req: Request, *, needs_audio: bool, needs_text: bool) -> tuple[list, list]:
    """``(audio, sources)``: every clip the model must hear decoded (paths) or checked (arrays)."""
    audio: list[np.ndarray | None] = []
    sources: list[str | None] = []
    for i, x in enumerate(req.clips):
        if x is None:
            if needs_audio:
                raise RecognizerError("this recognizer listens to audio: pass a path or a 16 kHz array for every input")
            audio.append(None)
            sources.append(None)
        elif not needs_audio and req.texts[i] is not None:
            # the transcript is all the model reads: the audio need not be decoded
            if isinstance(x, (str, Path)) and not Path(x).is_file():
                raise AudioError(f"{x}: audio file not found")
            audio.append(None)
            sources.append(None if isinstance(x, np.ndarray) else str(x))
        else:
            clip, source = decode_clip(x, i, reads_text=needs_text)
            audio.append(clip)
            sources.append(source)
    return audio, sources


def decode_clip(x, index: int, *, reads_text: bool = False) -> tuple[np.ndarray, str | None]:
    """Decode (path) or check (array) one clip: 16 kHz mono float32, at least ``MIN_SECONDS`` long."""
    from emovox.audio import check_min_duration, load_audio

    if isinstance(x, np.ndarray):
        if x.ndim != 1 or not np.issubdtype(x.dtype, np.floating):
            raise AudioError(f"input {index}: arrays must be 1-D float 16 kHz mono samples, got {x.dtype} {x.shape}")
        clip, source, name = x.astype(np.float32, copy=False), None, f"input {index}"
    elif isinstance(x, (str, Path)):
        if reads_text and isinstance(x, str) and not Path(x).exists():
            raise AudioError(f"{x!r}: audio file not found (to classify a transcript, pass it as text=...)")
        clip, source = load_audio(x), str(x)
        name = source
    else:
        raise RecognizerError(f"input {index}: expected an audio path or a 16 kHz numpy array, got {type(x).__name__}")
    if not np.isfinite(clip).all():
        raise AudioError(f"{name}: holds NaN or infinite samples")
    check_min_duration(clip, name)
    return clip, source


def group_names(value, n: int, name: str) -> list:
    """One group name (``speaker=`` or ``corpus=``) per clip: one name for every clip, or a list with one per clip."""
    if value is None or isinstance(value, str):
        return [value] * n
    values = list(value)
    if len(values) != n:
        raise RecognizerError(f"{n} clips but {len(values)} names for {name}=; pass one name for all clips or one per clip")
    bad = [v for v in values if v is not None and not isinstance(v, str)]
    if bad:
        raise RecognizerError(f"{name}= names must be strings, got {type(bad[0]).__name__}")
    return values


def warn_ungrouped(mode: str, keys: Sequence[str | None], *, fallback: bool, stacklevel: int = 3) -> None:
    """Say how many clips a recognizer that normalises per ``mode`` (speaker, corpus) had to classify
    without their group's statistics: no group given, or the only clip of their group."""
    counts: dict[str, int] = {}
    for k in keys:
        if k is not None:
            counts[k] = counts.get(k, 0) + 1
    alone = sum(1 for k in keys if k is None or counts[k] < 2)
    if not alone:
        return
    import warnings

    from emovox.errors import UngroupedWarning

    option = "speaker=... (a manifest 'speaker' column, --speaker)" if mode == "speaker" else \
        "corpus=... (a manifest 'corpus' column, --corpus)"
    how = "by its unnormalised head instead" if fallback else "with the training statistics instead"
    warnings.warn(
        f"this recognizer standardises each clip with statistics of its {mode}'s own clips; {alone} of {len(keys)} "
        f"clip(s) have no other clip of their {mode} and were classified {how}, which recognises less well: give "
        f"several clips per {mode} with {option}",
        UngroupedWarning,
        stacklevel=stacklevel,
    )


def per_item(value, n: int, single: bool, name: str, what: str) -> list:
    """One value per clip from a keyword that takes one value (one clip) or a list (a list of clips)."""
    if value is None:
        return [None] * n
    if isinstance(value, (str, np.ndarray, Path)):
        if not single:
            raise RecognizerError(f"{name}= is one {what} for one clip; for a list of clips pass a list (None where absent)")
        return [value]
    values = list(value)
    if len(values) != n:
        raise RecognizerError(f"{n} clips but {len(values)} values for {name}=; pass one {what} (or None) per clip")
    return values
