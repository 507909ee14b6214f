"""Transcripts for text recognizers: Whisper speech recognition, configurable per recognizer.

A recognizer that reads transcripts is useless on raw audio unless someone supplies the words.
When the caller has no transcript, the recognizer asks a Whisper model for one (a local
directory or a hub id, a language such as ``de``) and returns it with the prediction, so the
user can see what the emotion was judged on. Decoding runs on CPU in float32 with greedy
search: deterministic, and the same transcript on every machine.

Loaded models are shared through ``get_transcriber`` (one per model and language), because a
server or a long recording must not load Whisper once per request or per segment.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from emovox.audio import SAMPLE_RATE
from emovox.errors import EmovoxError

#: Whisper hears at most 30 s at a time; longer clips are transcribed in 30 s pieces.
WHISPER_SECONDS = 30


class AsrError(EmovoxError):
    """The speech recognizer cannot be loaded or configured (model, language)."""


@dataclass(frozen=True)
class AsrConfig:
    """Which Whisper checkpoint transcribes, in which language.

    ``language`` None lets Whisper detect it per clip; a code (``de``) or an English name
    (``german``) fixes it, which is both faster and more reliable on short emotional speech.
    """

    model: str
    language: str | None = None
    batch_size: int = 8

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise AsrError("ASR model must be a Whisper directory or hub id, e.g. --asr openai/whisper-base")
        object.__setattr__(self, "language", normalize_language(self.language))
        if int(self.batch_size) <= 0:
            raise AsrError(f"ASR batch_size {self.batch_size} must be positive")

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "language": self.language, "batch_size": self.batch_size}

    @classmethod
    def from_dict(cls, data: Any, where: str = "asr") -> AsrConfig:
        """Read the ``asr`` entry of a recognizer's ``emovox.json`` (a dict, or just the model)."""
        if isinstance(data, str):
            return cls(data)
        if not isinstance(data, dict) or not isinstance(data.get("model"), str):
            raise AsrError(f"{where}: expected {{'model': PATH_OR_HUB_ID, 'language': CODE}}, got {data!r}")
        unknown = set(data) - {"model", "language", "batch_size"}
        if unknown:
            raise AsrError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: model, language, batch_size")
        return cls(**data)


def normalize_language(language: str | None) -> str | None:
    """``"de"``, ``"German"`` or ``"<|de|>"`` -> ``"de"``; unknown names are an ``AsrError``."""
    if language is None:
        return None
    from transformers.models.whisper.tokenization_whisper import (
        LANGUAGES,
        TO_LANGUAGE_CODE,
    )

    key = str(language).strip().lower().removeprefix("<|").removesuffix("|>")
    if not key:
        return None
    if key in LANGUAGES:
        return key
    if key in TO_LANGUAGE_CODE:
        return TO_LANGUAGE_CODE[key]
    raise AsrError(
        f"ASR language {language!r} is not one Whisper knows; use a code such as de, en, es, fr (or leave it unset to detect it)"
    )


class Transcriber:
    """One Whisper model, loaded once; ``transcribe`` is thread-safe (one decode at a time)."""

    def __init__(self, config: AsrConfig):
        import torch
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        self.config = config
        source = _resolve_source(config.model)
        from emovox.backbones.base import QuietTransformers  # no load report / progress bars: emovox reports errors itself

        try:
            with QuietTransformers():
                self.processor = WhisperProcessor.from_pretrained(source)
                self.model = WhisperForConditionalGeneration.from_pretrained(
                    source, dtype=torch.float32, use_safetensors=True
                ).eval()
        except Exception as exc:  # offline cache miss, wrong repo, damaged files: all the user's to fix
            raise AsrError(
                f"cannot load the Whisper ASR model {config.model!r} ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                "pass a local Whisper directory (config.json, model weights, tokenizer, preprocessor) with --asr, "
                "or a hub id that is in the local Hugging Face cache"
            ) from None
        self._lock = threading.Lock()
        _quiet_generation_notice()

    def transcribe(self, audio: np.ndarray | Sequence[np.ndarray], *, max_new_tokens: int | None = None) -> list[str]:
        """One transcript per 16 kHz float32 clip; clips over 30 s are decoded in 30 s pieces.

        ``max_new_tokens`` caps each piece's transcript (default: Whisper's own limit, 448): on speech in a
        language the checkpoint hardly knows Whisper can loop on a phrase, and a batch waits for its longest.
        """
        clips = [audio] if isinstance(audio, np.ndarray) else list(audio)
        pieces: list[np.ndarray] = []
        owner: list[int] = []
        step = WHISPER_SECONDS * SAMPLE_RATE
        for i, clip in enumerate(clips):
            clip = np.asarray(clip, dtype=np.float32).reshape(-1)
            for start in range(0, len(clip), step):
                pieces.append(clip[start : start + step])
                owner.append(i)
        texts = self._decode(pieces, max_new_tokens)
        out: list[list[str]] = [[] for _ in clips]
        for i, t in zip(owner, texts, strict=True):
            if t:
                out[i].append(t)
        return [" ".join(parts) for parts in out]

    def _decode(self, pieces: list[np.ndarray], max_new_tokens: int | None = None) -> list[str]:
        import torch

        texts: list[str] = []
        bs = self.config.batch_size
        with self._lock, torch.inference_mode():
            for start in range(0, len(pieces), bs):
                batch = pieces[start : start + bs]
                feats = self.processor.feature_extractor(
                    batch, sampling_rate=SAMPLE_RATE, return_tensors="pt", return_attention_mask=True
                )
                try:
                    ids = self.model.generate(
                        feats.input_features,
                        attention_mask=feats.attention_mask,
                        language=self.config.language,
                        task="transcribe",
                        do_sample=False,
                        num_beams=1,
                        **({"max_new_tokens": int(max_new_tokens)} if max_new_tokens else {}),
                    )
                except ValueError as exc:  # e.g. a language this (English-only) checkpoint cannot do
                    raise AsrError(
                        f"ASR model {self.config.model!r} cannot transcribe with language {self.config.language!r}: {exc}"
                    ) from None
                texts.extend(t.strip() for t in self.processor.batch_decode(ids, skip_special_tokens=True))
        return texts


class _DropNotice(logging.Filter):
    """transformers' Whisper ``generate`` passes its own suppress-token arguments together with
    the generation config and then warns the caller about it, and warns that a ``max_new_tokens``
    cap overrides the checkpoint's ``max_length``, which is what the cap is for; nothing the caller
    can change or needs to know."""

    NOTICES = ("Please pass either a `generation_config`", "Both `max_new_tokens`")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(notice in message for notice in self.NOTICES)


def _quiet_generation_notice() -> None:
    log = logging.getLogger("transformers.generation.utils")
    if not any(isinstance(f, _DropNotice) for f in log.filters):
        log.addFilter(_DropNotice())


def _resolve_source(model: str) -> str:
    p = Path(model).expanduser()
    if p.exists():
        if not (p / "config.json").is_file():
            raise AsrError(f"{p}: not a Whisper model directory (no config.json)")
        import json

        try:
            model_type = json.loads((p / "config.json").read_text(encoding="utf-8")).get("model_type")
        except (OSError, ValueError):
            model_type = None
        if model_type != "whisper":
            raise AsrError(f"{p}: is a {model_type!r} model, not Whisper; the ASR must be a Whisper checkpoint")
        return str(p)
    if model.startswith((".", "/", "~")):
        raise AsrError(f"{model}: ASR model directory not found")
    return model


_LOAD_LOCK = threading.Lock()


def get_transcriber(config: AsrConfig) -> Transcriber:
    """A shared, loaded transcriber for ``config`` (models are loaded once per process)."""
    with _LOAD_LOCK:
        return _cached_transcriber(config)


@lru_cache(maxsize=4)
def _cached_transcriber(config: AsrConfig) -> Transcriber:
    return Transcriber(config)
