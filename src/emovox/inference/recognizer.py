"""A trained recognizer as a self-contained directory, and the one obvious way to use it.

``Recognizer.load(dir)`` rebuilds whatever model kind the directory holds (``emovox.models.
directory``: layout, integrity checks, 0.1 directories) and ``predict`` takes what that model
reads: audio (paths or 16 kHz arrays), transcripts, or both, plus optionally the previous
utterance for models with a context branch. This module knows no model kind by name.

Only safetensors and JSON are read: loading a recognizer from a stranger cannot run code.
Every file is checked against the sha256 recorded when it was saved, and a mismatch is a
``RecognizerError`` that names the file, not a traceback from ``load_state_dict``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from emovox.audio import MIN_SECONDS, SAMPLE_RATE
from emovox.errors import RecognizerError
from emovox.inference.prediction import Prediction, decode_clip, decode_inputs, group_names, request, to_prediction

__all__ = ["Prediction", "Recognizer"]


class Recognizer:
    """A backbone + head with its label set and preprocessing; ``predict`` takes files or arrays.

    A recognizer that reads transcripts (``modality == "text"``) can still be given audio: when
    no transcript comes with a clip, the configured Whisper ASR (``asr``: the ``asr`` entry of
    ``emovox.json``, or the one passed to ``load``) transcribes it and the transcript is
    returned with the prediction.
    """

    #: what computes the predictions (``emovox.inference.runtime.Runtime`` is the torch-free one)
    engine = "torch"

    def __init__(self, model: torch.nn.Module, labels: Sequence[str], info: dict, *, asr=None):
        self.model = model.eval()
        self.labels = tuple(labels)
        self.info = info
        if asr is not None:
            self.asr = asr

    @property
    def fields(self) -> set[str]:
        """The example fields the model reads (``audio``, ``text``, ``context_audio``, ``context_text``)."""
        return set(self.model.fields())

    @property
    def modality(self) -> str:
        """``audio``, ``text`` or ``audio+text``."""
        from emovox.models.directory import modality

        return modality(self.fields)

    @property
    def needs_text(self) -> bool:
        """True when the model reads transcripts (audio must then be transcribed when none is given)."""
        return "text" in self.fields

    @property
    def needs_audio(self) -> bool:
        return "audio" in self.fields

    @property
    def backbone(self):
        """The backbone of a single-branch model (export, preprocessing limits), else None."""
        branch = getattr(self.model, "branch", None)
        return branch.backbone if branch is not None else None

    @property
    def asr(self):
        """The ``AsrConfig`` used to transcribe audio for a text recognizer, or None."""
        from emovox.inference.asr import AsrConfig, AsrError

        data = self.info.get("asr")
        if data is None:
            return None
        try:
            return AsrConfig.from_dict(data, where="emovox.json 'asr'")
        except AsrError as exc:
            raise RecognizerError(str(exc)) from None

    @asr.setter
    def asr(self, value) -> None:
        """An ``AsrConfig``, a model directory / hub id, or None; ``save`` keeps it in emovox.json."""
        from emovox.inference.asr import AsrConfig

        if value is None:
            self.info.pop("asr", None)
            return
        config = value if isinstance(value, AsrConfig) else AsrConfig(str(value))
        self.info["asr"] = config.to_dict()

    @property
    def max_seconds(self) -> float:
        """Clips are cropped to this many seconds, as in training (long recordings: ``timeline.predict_timeline``)."""
        return float(self.info.get("preprocessing", {}).get("max_seconds") or self.model.max_seconds())

    @property
    def min_samples(self) -> int:
        """The shortest clip (16 kHz samples) emovox classifies: ``MIN_SECONDS`` everywhere."""
        return int(round(MIN_SECONDS * SAMPLE_RATE))

    # -- persistence ---------------------------------------------------------------------------
    def save(self, directory: str | Path, *, card: str | None = None) -> Path:
        from emovox.models import directory as recognizer_dir

        return recognizer_dir.save(Path(directory), self.model, self.labels, self.info, card=card)

    @classmethod
    def load(cls, directory: str | Path, *, asr=None) -> Recognizer:
        """Read a recognizer directory; ``asr`` (an ``AsrConfig`` or Whisper directory / hub id)
        overrides the ASR model recorded in its ``emovox.json``."""
        from emovox.models import directory as recognizer_dir

        model, labels, info = recognizer_dir.load(Path(directory))
        if info.get("asr") is not None:
            from emovox.inference.asr import AsrConfig, AsrError

            try:
                AsrConfig.from_dict(info["asr"], where=f"{Path(directory) / 'emovox.json'} 'asr'")
            except AsrError as exc:
                raise RecognizerError(str(exc)) from None
        return cls(model, labels, info, asr=asr)

    # -- prediction ----------------------------------------------------------------------------
    @torch.inference_mode()
    def predict_examples(
        self, examples: Sequence, batch_size: int = 8, *, progress: bool = False, desc: str = "predict"
    ) -> np.ndarray:
        """Class probabilities ``[N, C]`` for ``Example`` records holding the fields the model reads."""
        from emovox.data.batching import length_grouped_batches
        from emovox.progress import progress_bar

        examples = self._observe(examples)
        out = np.zeros((len(examples), len(self.labels)), dtype=np.float32)
        batches = length_grouped_batches([e.length for e in examples], batch_size, shuffle=False)
        with progress_bar(total=len(examples), desc=desc, unit="utt", disable=not progress) as bar:
            for b in batches:
                logits = self.model(self.model.collate([examples[i] for i in b]))
                out[b] = torch.softmax(logits.float(), dim=-1).numpy()
                bar.update(len(b))
        return out

    @property
    def normalization(self) -> str:
        """How clips are standardised before the head: ``none`` (training statistics), ``speaker`` or
        ``corpus`` (statistics of the speaker's / corpus's own clips, given to ``predict`` together)."""
        norm = getattr(self.model, "normalizer", None)
        return norm.mode if norm is not None else "none"

    def _observe(self, examples: Sequence) -> list:
        """Let the model take per-speaker (per-corpus) statistics of the clips it is about to classify,
        and say which clips had to do without: no group given, or the only clip of their group."""
        examples = list(examples)
        mode = self.normalization
        if mode == "none":
            return examples
        from emovox.inference.prediction import warn_ungrouped

        keys = [self.model.normalizer.key(e) for e in examples]
        warn_ungrouped(mode, keys, fallback=getattr(self.model, "fallback", None) is not None, stacklevel=4)
        return self.model.observe(examples)

    def predict_proba(self, items: Sequence, batch_size: int = 8) -> np.ndarray:
        """Class probabilities ``[N, C]`` for model-ready items of a one-input model: 16 kHz arrays
        (audio models) or transcripts (text models)."""
        from emovox.data.examples import Example, example_length

        field = "audio" if self.needs_audio else "text"
        if len(self.fields - {"context_text", "context_audio"}) != 1:
            raise RecognizerError(f"predict_proba takes one input per item; this model reads {sorted(self.fields)}: use predict")
        examples = [
            Example(str(i), 0, **{field: x}, length=example_length(*((x, None) if field == "audio" else (None, x))))
            for i, x in enumerate(items)
        ]
        return self.predict_examples(examples, batch_size)

    def _to_prediction(
        self, probs: np.ndarray, source: str | None = None, transcript: str | None = None, speech: bool | None = None
    ) -> Prediction:
        return to_prediction(self.labels, probs, source, transcript, speech)

    def transcribe(self, clips: Sequence[np.ndarray]) -> list[str]:
        """Transcripts of 16 kHz clips with this recognizer's ASR model (``RecognizerError`` if none)."""
        from emovox.inference.asr import get_transcriber

        config = self.asr
        if config is None:
            raise RecognizerError(
                "this recognizer reads transcripts and none was given: pass the transcript (text=..., --text, a manifest "
                "'text' column) or an ASR model to transcribe the audio (Recognizer.load(dir, asr=WHISPER_DIR_OR_HUB_ID), "
                "--asr, or an 'asr' entry in emovox.json)"
            )
        return get_transcriber(config).transcribe(list(clips))

    def context_text(self, turns) -> str:
        """The ``context`` string for ``predict`` from the dialogue so far, ``(speaker, transcript)`` pairs oldest
        first: formatted as this recognizer's training read it (its last ``context_turns``, with speaker names
        when it was trained with ``context_speakers``)."""
        from emovox.data.examples import format_context

        return format_context([(spk, text) for spk, text in turns], self.model.context_format())

    def predict(self, inputs=None, text=None, *, context=None, context_audio=None, speaker=None, corpus=None,
                batch_size: int = 8):
        """Predict one clip or a list of clips.

        ``inputs``: an audio path, a 16 kHz float array, or a list of them (``None`` for a text
        recognizer given transcripts only). ``text``: the transcript (a string for one clip, a
        list with one string or None per clip); only recognizers that read transcripts take it.
        Missing transcripts are made by the ASR model. ``context`` / ``context_audio``: the
        previous utterance's transcript / audio, for recognizers with a context branch (None, or
        left out: this is the first utterance of its dialogue; ``context_text`` formats several
        previous turns for a recognizer trained on them). ``speaker`` / ``corpus``: who spoke each
        clip (one name for all, or one per clip), for a recognizer that standardises clips with their
        speaker's (corpus's) own statistics (``normalization``): the clips of one speaker are then
        classified together, each with statistics of them all; other recognizers ignore them. One
        clip -> ``Prediction``; a list -> list of ``Prediction``, in input order.
        """
        from emovox.data.examples import Example, example_length

        req = request(inputs, text, context, context_audio, fields=self.fields, name=self.info.get("name", "unnamed"))
        audio, sources = decode_inputs(req, needs_audio=self.needs_audio, needs_text=self.needs_text)
        texts, contexts, n = list(req.texts), req.contexts, len(req.clips)
        speakers = group_names(speaker, n, "speaker")
        corpora = group_names(corpus, n, "corpus")
        if self.needs_text:
            todo = [i for i, t in enumerate(texts) if t is None]
            if todo:
                for i, t in zip(todo, self.transcribe([audio[i] for i in todo]), strict=True):
                    texts[i] = t
        context_arrays = [self._clip(c, i)[0] if c is not None else None for i, c in enumerate(req.context_clips)]
        examples = [
            Example(
                str(i), 0,
                audio=audio[i] if self.needs_audio else None,
                text=texts[i] if self.needs_text else None,
                context_audio=context_arrays[i],
                context_text=contexts[i],
                length=example_length(audio[i] if self.needs_audio else None, texts[i]),
                speaker=speakers[i],
                corpus=corpora[i],
            )
            for i in range(n)
        ]
        probs = self.predict_examples(examples, batch_size=batch_size)
        from emovox.inference.activity import has_speech

        speech = [has_speech(a) if a is not None else None for a in audio]
        preds = [
            self._to_prediction(p, s, t if self.needs_text else None, sp)
            for p, s, t, sp in zip(probs, sources, texts, speech, strict=True)
        ]
        return preds[0] if req.single else preds

    def _clip(self, x, index: int) -> tuple[np.ndarray, str | None]:
        """Decode (path) or check (array) one clip: 16 kHz mono float32, at least ``MIN_SECONDS`` long."""
        return decode_clip(x, index, reads_text=self.needs_text)


