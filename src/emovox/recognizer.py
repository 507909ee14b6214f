"""A trained recognizer as a self-contained directory, and the one obvious way to use it.

Layout (``schema_version`` 1)::

    MODEL_DIR/
      emovox.json         labels, modality, kind, model config, preprocessing, training record
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
from emovox.training.checkpoint import atomic_save_tensors, atomic_write_json, atomic_write_text, load_tensors

SCHEMA_VERSION = 1
KINDS = ("end-to-end", "frozen-features")


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
    """A backbone + head with its label set and preprocessing; ``predict`` takes files or arrays."""

    def __init__(self, model: torch.nn.Module, backbone, labels: Sequence[str], info: dict):
        self.model = model.eval()
        self.backbone = backbone
        self.labels = tuple(labels)
        self.info = info

    @property
    def modality(self) -> str:
        return self.info["modality"]

    # -- persistence ---------------------------------------------------------------------------
    def save(self, directory: str | Path, *, card: str | None = None) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.backbone.save(directory / "backbone")
        head = {k: v for k, v in self.model.state_dict().items() if not k.startswith("backbone.")}
        atomic_save_tensors(directory / "head.safetensors", head, metadata={"format": "pt"})
        atomic_write_text(directory / "README.md", card or model_card(self.info, self.labels))
        # written last: a directory with emovox.json is complete
        atomic_write_json(directory / "emovox.json", dict(self.info, schema_version=SCHEMA_VERSION, labels=list(self.labels)))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "Recognizer":
        from emovox.backbones import load_backbone
        from emovox.models.classifier import FeatureClassifier, FrozenFeatureModel, UtteranceClassifier

        directory = Path(directory)
        meta_path = directory / "emovox.json"
        if not meta_path.is_file():
            raise RecognizerError(f"{directory}: not a recognizer directory (no emovox.json); train one with `emovox train`")
        try:
            info = json.loads(meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise RecognizerError(f"{meta_path}: not valid JSON ({exc})") from None
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
        head_path = directory / "head.safetensors"
        if not head_path.is_file():
            raise RecognizerError(f"{head_path}: missing; the recognizer directory is incomplete")
        backbone = load_backbone(str(directory / "backbone"))
        m = info["model"]
        if kind == "frozen-features":
            head_info = info["head"]
            head = FeatureClassifier(
                head_info["num_layers"], head_info["hidden_size"], len(labels),
                layer_weights=m["layer_weights"], dropout=m["dropout"], standardize=m["standardize"],
            )
            model = FrozenFeatureModel(backbone, head)
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
        return cls(model, backbone, labels, info)

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

    def predict(self, inputs, text: str | None = None):
        """One clip (path or 16 kHz array) -> ``Prediction``; a list -> list of ``Prediction``.

        Text recognizers take transcripts (``text=`` for one clip, or strings in the list).
        """
        from emovox.audio import load_audio

        single = not isinstance(inputs, (list, tuple))
        batch = [inputs] if single else list(inputs)
        items, sources = [], []
        for x in batch:
            if self.modality == "text":
                t = text if single and text is not None else x
                if not isinstance(t, str):
                    raise RecognizerError("this recognizer reads transcripts: pass text=... or a list of strings")
                items.append(t)
                sources.append(None)
            elif isinstance(x, np.ndarray):
                items.append(x.astype(np.float32, copy=False))
                sources.append(None)
            else:
                items.append(load_audio(x))
                sources.append(str(x))
        probs = self.predict_proba(items)
        preds = [self._to_prediction(p, s) for p, s in zip(probs, sources)]
        return preds[0] if single else preds


def model_card(info: dict, labels: Sequence[str]) -> str:
    """README.md of a recognizer directory: what it is, how it was trained, how well it did."""
    t = info.get("training", {})
    lines = [
        f"# emovox recognizer: {info.get('name', 'unnamed')}",
        "",
        f"- Backbone: `{info['model']['backbone']}` ({info['modality']}, {info['kind']}, mode {info['model']['mode']})",
        f"- Labels: {', '.join(labels)}",
        f"- Trained on: `{t.get('corpus', '?')}` ({t.get('train_utterances', '?')} utterances for training, "
        f"{t.get('valid_utterances', '?')} held out for early stopping: {t.get('validation', '?')})",
        f"- Corpus fingerprint: `{t.get('corpus_fingerprint', '?')}`",
        f"- Best epoch: {t.get('best_epoch', '?')}, validation UA {t.get('best_valid_ua', float('nan')):.4f}",
        f"- emovox {info.get('emovox_version', '?')}",
        "",
    ]
    cv = info.get("cross_validation")
    if cv:
        lines += [
            "## Cross-validated performance",
            "",
            f"Protocol `{cv['protocol']}`, {cv['folds']} folds, from `{cv['results']}`.",
            "",
            "| metric | mean ± std over folds | pooled |",
            "| --- | --- | --- |",
        ]
        for k in ("wa", "ua", "macro_f1"):
            lines.append(f"| {k} | {cv['mean'][k]:.4f} ± {cv['std'][k]:.4f} | {cv['pooled'][k]:.4f} |")
        lines.append("")
    lines += [
        "## Use",
        "",
        "```bash",
        "emovox predict THIS_DIR clip.wav",
        "```",
        "",
        "```python",
        "from emovox import Recognizer",
        "Recognizer.load('THIS_DIR').predict('clip.wav')",
        "```",
        "",
    ]
    return "\n".join(lines)
