"""A trained recognizer as a self-contained directory, and the one obvious way to use it.

Layout (``schema_version`` 1)::

    MODEL_DIR/
      emovox.json         labels, modality, kind, model config, preprocessing, training record,
                          and for text recognizers optionally ``asr`` ({model, language}): the
                          Whisper model that transcribes audio given without a transcript
      backbone/           the backbone (HF config + weights as safetensors + tokenizer/extractor)
      head.safetensors    everything that is not the backbone (pooling, layer weights, linear)
      README.md           model card: corpus, protocol, metrics

Only safetensors and JSON are read: loading a recognizer from a stranger cannot run code.
Everything is validated (schema version, label set, tensor names and shapes) and a mismatch
is a ``RecognizerError`` that names the file, not a traceback from ``load_state_dict``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from emovox import __version__
from emovox.errors import RecognizerError
from emovox.model_card import model_card
from emovox.training.checkpoint import atomic_save_tensors, atomic_write_json, atomic_write_text, load_tensors

SCHEMA_VERSION = 1
KINDS = ("end-to-end", "frozen-features", "top-layers")
MODALITIES = ("audio", "text")


@dataclass(frozen=True)
class Prediction:
    label: str
    probabilities: dict[str, float]
    source: str | None = None
    transcript: str | None = None

    def to_dict(self) -> dict:
        d = {"label": self.label, "probabilities": self.probabilities}
        if self.source is not None:
            d["source"] = self.source
        if self.transcript is not None:
            d["transcript"] = self.transcript
        return d


class Recognizer:
    """A backbone + head with its label set and preprocessing; ``predict`` takes files or arrays.

    A recognizer that reads transcripts (``modality == "text"``) can still be given audio: when
    no transcript comes with a clip, the configured Whisper ASR (``asr``: the ``asr`` entry of
    ``emovox.json``, or the one passed to ``load``) transcribes it and the transcript is
    returned with the prediction.
    """

    def __init__(self, model: torch.nn.Module, backbone, labels: Sequence[str], info: dict, *, asr=None):
        self.model = model.eval()
        self.backbone = backbone
        self.labels = tuple(labels)
        self.info = info
        if asr is not None:
            self.asr = asr

    @property
    def modality(self) -> str:
        return self.info["modality"]

    @property
    def needs_text(self) -> bool:
        """True when the model reads transcripts (audio must then be transcribed first)."""
        return self.modality == "text"

    @property
    def asr(self):
        """The ``AsrConfig`` used to transcribe audio for a text recognizer, or None."""
        from emovox.asr import AsrConfig, AsrError

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
        from emovox.asr import AsrConfig

        if value is None:
            self.info.pop("asr", None)
            return
        config = value if isinstance(value, AsrConfig) else AsrConfig(str(value))
        self.info["asr"] = config.to_dict()

    @property
    def max_seconds(self) -> float:
        """Clips are cropped to this many seconds, as in training (use ``predict_timeline`` for long audio)."""
        return float(self.info.get("preprocessing", {}).get("max_seconds") or getattr(self.backbone, "max_seconds", 10.0))

    @property
    def min_samples(self) -> int:
        """The shortest clip (16 kHz samples) the backbone can turn into one frame."""
        return int(getattr(self.backbone, "min_samples", 1))

    # -- persistence ---------------------------------------------------------------------------
    def save(self, directory: str | Path, *, card: str | None = None) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.backbone.save(directory / "backbone")
        head = {k: v for k, v in self.model.state_dict().items() if not k.startswith("backbone.")}
        atomic_save_tensors(directory / "head.safetensors", head, metadata={"format": "pt"})
        atomic_write_text(directory / "README.md", card or model_card(self.info, self.labels, directory=directory))
        # written last: a directory with emovox.json is complete
        atomic_write_json(directory / "emovox.json", dict(self.info, schema_version=SCHEMA_VERSION, labels=list(self.labels)))
        return directory

    @classmethod
    def load(cls, directory: str | Path, *, asr=None) -> "Recognizer":
        """Read a recognizer directory; ``asr`` (an ``AsrConfig`` or Whisper directory / hub id)
        overrides the ASR model recorded in its ``emovox.json``."""
        from emovox.models.classifier import FeatureClassifier, FrozenFeatureModel, UtteranceClassifier

        directory = Path(directory)
        meta_path = directory / "emovox.json"
        if not directory.exists():
            raise RecognizerError(f"{directory}: recognizer directory not found; train one with `emovox train`")
        if not meta_path.is_file():
            raise RecognizerError(f"{directory}: not a recognizer directory (no emovox.json); train one with `emovox train`")
        try:
            info = json.loads(meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise RecognizerError(f"{meta_path}: not valid JSON ({exc})") from None
        if not isinstance(info, dict):
            raise RecognizerError(f"{meta_path}: expected a JSON object")
        if info.get("schema_version") != SCHEMA_VERSION:
            raise RecognizerError(
                f"{meta_path}: schema_version {info.get('schema_version')!r}; this emovox ({__version__}) reads {SCHEMA_VERSION}"
            )
        labels = info.get("labels")
        if not isinstance(labels, list) or not labels or len(set(labels)) != len(labels) or not all(isinstance(x, str) for x in labels):
            raise RecognizerError(f"{meta_path}: 'labels' must be a non-empty list of distinct names")
        kind = info.get("kind")
        if kind not in KINDS:
            raise RecognizerError(f"{meta_path}: unknown kind {kind!r}; expected one of {list(KINDS)}")
        if info.get("modality") not in MODALITIES:
            raise RecognizerError(f"{meta_path}: unknown modality {info.get('modality')!r}; expected one of {list(MODALITIES)}")
        if "asr" in info and info["asr"] is not None:
            from emovox.asr import AsrConfig, AsrError

            try:
                AsrConfig.from_dict(info["asr"], where=f"{meta_path} 'asr'")
            except AsrError as exc:
                raise RecognizerError(str(exc)) from None
        head_path = directory / "head.safetensors"
        if not head_path.is_file():
            raise RecognizerError(f"{head_path}: missing; the recognizer directory is incomplete")
        backbone = _load_backbone_dir(directory / "backbone")
        m = info["model"]
        if kind == "frozen-features":
            head_info = info["head"]
            head = FeatureClassifier(
                head_info["num_layers"], head_info["hidden_size"], len(labels),
                layer_weights=m["layer_weights"], dropout=m["dropout"], standardize=m["standardize"],
            )
            model = FrozenFeatureModel(backbone, head)
        elif kind == "top-layers":
            from emovox.models.top_layers import TopLayersClassifier

            model = TopLayersClassifier(
                backbone, len(labels), top_layers=m["top_layers"], dropout=m["dropout"],
                layer_weights=m["layer_weights"], standardize=m["standardize"],
            )
        else:
            model = UtteranceClassifier(backbone, len(labels), pooling=m["pooling"], layer_weights=m["layer_weights"], dropout=m["dropout"])
        try:
            tensors = load_tensors(head_path)
        except Exception as exc:  # safetensors raises its own types for damaged files
            raise RecognizerError(f"{head_path}: not a readable safetensors file ({exc})") from None
        expected = {k: v for k, v in model.state_dict().items() if not k.startswith("backbone.")}
        if set(tensors) != set(expected):
            raise RecognizerError(
                f"{head_path}: tensors {sorted(set(tensors) ^ set(expected))[:6]} do not match a {kind} head for {len(labels)} labels"
            )
        for k, v in tensors.items():
            if tuple(v.shape) != tuple(expected[k].shape):
                raise RecognizerError(f"{head_path}: tensor {k} has shape {tuple(v.shape)}, expected {tuple(expected[k].shape)}")
        model.load_state_dict(tensors, strict=False)
        return cls(model, backbone, labels, info, asr=asr)

    # -- prediction ----------------------------------------------------------------------------
    @torch.inference_mode()
    def predict_proba(self, items: Sequence, batch_size: int = 8) -> np.ndarray:
        """Class probabilities ``[N, C]`` for model-ready items (16 kHz arrays, texts or pairs)."""
        from emovox.data.batching import length_grouped_batches

        lengths = [len(x) for x in items]
        out = np.zeros((len(items), len(self.labels)), dtype=np.float32)
        for b in length_grouped_batches(lengths, batch_size, shuffle=False):
            logits = self.model(self.backbone.preprocess([items[i] for i in b]))
            out[b] = torch.softmax(logits.float(), dim=-1).numpy()
        return out

    def _to_prediction(self, probs: np.ndarray, source: str | None = None, transcript: str | None = None) -> Prediction:
        return Prediction(
            self.labels[int(np.argmax(probs))],
            {label: float(p) for label, p in zip(self.labels, probs)},
            source,
            transcript,
        )

    def transcribe(self, clips: Sequence[np.ndarray]) -> list[str]:
        """Transcripts of 16 kHz clips with this recognizer's ASR model (``RecognizerError`` if none)."""
        from emovox.asr import get_transcriber

        config = self.asr
        if config is None:
            raise RecognizerError(
                "this recognizer reads transcripts and none was given: pass the transcript (text=..., --text, a manifest "
                "'text' column) or an ASR model to transcribe the audio (Recognizer.load(dir, asr=WHISPER_DIR_OR_HUB_ID), "
                "--asr, or an 'asr' entry in emovox.json)"
            )
        return get_transcriber(config).transcribe(list(clips))

    def predict(self, inputs=None, text=None, *, batch_size: int = 8):
        """Predict one clip or a list of clips.

        ``inputs``: an audio path, a 16 kHz float array, or a list of them (``None`` for a text
        recognizer given transcripts only). ``text``: the transcript (a string for one clip, a
        list with one string or None per clip); only recognizers that read transcripts take it.
        Missing transcripts are made by the ASR model. One clip -> ``Prediction``; a list ->
        list of ``Prediction``, in input order.
        """
        single = inputs is None and isinstance(text, str) or inputs is not None and not isinstance(inputs, (list, tuple))
        if inputs is None:
            if text is None:
                raise RecognizerError("nothing to predict: pass audio (a path or an array) and/or text=")
            texts = [text] if isinstance(text, str) else list(text)
            clips: list = [None] * len(texts)
        else:
            clips = [inputs] if single else list(inputs)
            if text is None:
                texts = [None] * len(clips)
            elif isinstance(text, str):
                if not single:
                    raise RecognizerError("text= is one string for one clip; for a list of clips pass a list of transcripts")
                texts = [text]
            else:
                texts = list(text)
                if len(texts) != len(clips):
                    raise RecognizerError(f"{len(clips)} clips but {len(texts)} transcripts; pass one transcript (or None) per clip")
        if not self.needs_text and any(t is not None for t in texts):
            raise RecognizerError(
                f"this recognizer ({self.info.get('name', 'unnamed')}) listens to audio only and does not read transcripts; drop the text"
            )
        for t in texts:
            if t is not None and not isinstance(t, str):
                raise RecognizerError(f"transcripts must be strings, got {type(t).__name__}")
        audio: list[np.ndarray | None] = []
        sources: list[str | None] = []
        for i, x in enumerate(clips):
            if x is None:
                if not self.needs_text:
                    raise RecognizerError("this recognizer listens to audio: pass a path or a 16 kHz array for every input")
                audio.append(None)
                sources.append(None)
            elif self.needs_text and texts[i] is not None:
                # the transcript is all the model reads: the audio need not be decoded
                if isinstance(x, (str, Path)) and not Path(x).is_file():
                    from emovox.errors import AudioError

                    raise AudioError(f"{x}: audio file not found")
                audio.append(None)
                sources.append(None if isinstance(x, np.ndarray) else str(x))
            else:
                clip, source = self._clip(x, i)
                audio.append(clip)
                sources.append(source)
        if self.needs_text:
            todo = [i for i, t in enumerate(texts) if t is None]
            if todo:
                for i, t in zip(todo, self.transcribe([audio[i] for i in todo])):
                    texts[i] = t
            context = bool(self.info.get("preprocessing", {}).get("context"))
            items: list = [(None, t) if context else t for t in texts]
        else:
            items = audio
        probs = self.predict_proba(items, batch_size=batch_size)
        preds = [
            self._to_prediction(p, s, t if self.needs_text else None) for p, s, t in zip(probs, sources, texts)
        ]
        return preds[0] if single else preds

    def _clip(self, x, index: int) -> tuple[np.ndarray, str | None]:
        """Decode (path) or check (array) one clip: 16 kHz mono float32, long enough for a frame."""
        from emovox.audio import load_audio
        from emovox.errors import AudioError

        if isinstance(x, np.ndarray):
            if x.ndim != 1 or not np.issubdtype(x.dtype, np.floating):
                raise AudioError(f"input {index}: arrays must be 1-D float 16 kHz mono samples, got {x.dtype} {x.shape}")
            clip, source, name = x.astype(np.float32, copy=False), None, f"input {index}"
        elif isinstance(x, (str, Path)):
            if self.needs_text and isinstance(x, str) and not Path(x).exists():
                raise AudioError(f"{x!r}: audio file not found (to classify a transcript, pass it as text=...)")
            clip, source = load_audio(x), str(x)
            name = source
        else:
            raise RecognizerError(f"input {index}: expected an audio path or a 16 kHz numpy array, got {type(x).__name__}")
        if not np.isfinite(clip).all():
            raise AudioError(f"{name}: holds NaN or infinite samples")
        if len(clip) < self.min_samples:
            raise AudioError(
                f"{name}: {len(clip) / 16000 * 1000:.1f} ms of audio is too short; this recognizer needs at least "
                f"{self.min_samples / 16000 * 1000:.1f} ms"
            )
        return clip, source

    def predict_timeline(self, path: str | Path, config=None, *, batch_size: int = 8, progress: bool = False, **options):
        """Segment a long recording while streaming it and predict every segment (``emovox.segments``).

        ``config`` is a ``SegmentConfig``; keyword ``options`` build one (``mode="fixed", window=4``).
        """
        from emovox.segments import SegmentConfig, predict_timeline

        if config is None:
            config = SegmentConfig(**options)
        elif options:
            raise RecognizerError("pass either a SegmentConfig or segmentation options, not both")
        return predict_timeline(self, path, config, batch_size=batch_size, progress=progress)


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def _load_backbone_dir(path: Path):
    """The recognizer's backbone, from safetensors only: a pickle in it is refused unread."""
    from emovox.backbones import load_backbone
    from emovox.errors import BackboneError

    if not path.is_dir():
        raise RecognizerError(f"{path}: missing; the recognizer directory is incomplete")
    pickles = sorted(p.name for p in path.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        raise RecognizerError(
            f"{path}: holds pickled weights {pickles}; emovox never loads pickles (they can run code). "
            "Weights must be model.safetensors"
        )
    if not any(path.glob("*.safetensors")):
        raise RecognizerError(f"{path}: no model.safetensors; the recognizer directory is incomplete")
    try:
        return load_backbone(str(path))
    except BackboneError as exc:
        raise RecognizerError(f"{path}: {exc}") from None
