"""Backbones: one uniform wrapper around every pretrained text and speech model emovox uses.

A backbone turns a batch of raw items (16 kHz clips, texts, or (previous utterance, text)
pairs) into frame/token states plus a mask of which positions are real. Everything above it
(pooling, heads, fusion, the feature cache) sees only ``Encoded`` and never needs to know which
architecture produced it. Each batch is padded only to its own longest item, and the padding
never changes a real item's states: a padded batch gives what the items give one by one.

``load_backbone`` builds one from a registry name, a hub id, or a local directory (an HF model
directory or one written by ``Backbone.save``); ``tiny=True`` builds a small random model of
the same class with an offline tokenizer/feature extractor, for tests and smoke runs.
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from emovox.backbones.registry import (
    EMOVOX_FILE,
    FAMILIES,
    REGISTRY,
    BackboneSpec,
    get_spec,
    read_emovox_file,
)
from emovox.errors import BackboneError

__all__ = [
    "BackboneSpec",
    "REGISTRY",
    "FAMILIES",
    "get_spec",
    "load_backbone",
    "Backbone",
    "Encoded",
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_MAX_SECONDS",
]

#: The IEMOCAP paper's caps: ~99% of its transcripts fit in 100 tokens, >90% of clips in 10 s.
DEFAULT_MAX_TOKENS = 100
DEFAULT_MAX_SECONDS = 10.0


@dataclass
class Encoded:
    """A backbone's output for one batch.

    ``hidden`` is ``[B, T, H]`` (last layer) or ``[L, B, T, H]`` (every hidden state, embeddings
    first); ``mask`` is ``[B, T]``, true on real frames/tokens, at the resolution of ``hidden``.
    ``eos_mask`` marks end-of-sequence tokens for families pooled at their last EOS (BART).
    """

    hidden: torch.Tensor
    mask: torch.Tensor
    eos_mask: torch.Tensor | None = None


class Backbone(torch.nn.Module):
    """A pretrained model plus its tokenizer/feature extractor, behind one interface.

    ``model`` is the Hugging Face module (so its weights are this module's parameters) and
    ``processor`` its tokenizer or feature extractor. Subclasses implement ``preprocess`` and
    ``forward`` per family; inference mode and devices are the caller's business.
    """

    spec: BackboneSpec
    modality: str
    hidden_size: int
    num_layers: int

    def __init__(self, spec: BackboneSpec, model: torch.nn.Module, processor: Any, *,
                 max_tokens: int, max_seconds: float, hidden_size: int, num_layers: int):
        super().__init__()
        self.spec = spec
        self.modality = spec.modality
        self.model = model
        self.processor = processor
        self.max_tokens = int(max_tokens)
        self.max_seconds = float(max_seconds)
        self.hidden_size = int(hidden_size)
        self.num_layers = int(num_layers)

    # -- per family -------------------------------------------------------------------------
    def preprocess(self, items: list) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def forward(self, inputs: dict, all_layers: bool = False) -> Encoded:  # noqa: D401
        raise NotImplementedError

    def stop_after(self, top: int | None) -> AbstractContextManager:
        """A block in which ``forward(all_layers=True)`` may stop after hidden state ``top`` (0 = embeddings).

        The states up to ``top`` are exactly those of the whole model; states after it may be
        missing, so callers keep ``hidden[: top + 1]``. The base class runs every layer; families
        whose encoder is a plain stack of layers (Whisper, the wav2vec2 family) run only the
        ``top`` layers below it and skip a final norm that only the last state gets.
        """
        return nullcontext()

    # -- training set-ups ---------------------------------------------------------------------
    def freeze(self) -> None:
        """No backbone parameter trains (frozen feature extractor / linear probe)."""
        for p in self.parameters():
            p.requires_grad_(False)

    @property
    def learned(self) -> bool:
        """False for fixed signal processing (openSMILE functionals): nothing to train or save."""
        return FAMILIES[self.spec.family].learned

    def cache_identity(self) -> dict:
        """What fixes this backbone's outputs besides the weights its spec names (the feature cache keys
        on it): an openSMILE backbone's package version and feature set; nothing for a checkpoint."""
        return {}

    def about(self) -> dict:
        """What a model card should add about this backbone beyond its name (empty for checkpoints)."""
        return {}

    def freeze_feature_encoder(self) -> None:
        """Freeze the wav2vec2-style CNN front end only (the usual speech fine-tuning set-up)."""
        raise BackboneError(
            f"backbone '{self.spec.name}' ({self.spec.family}) has no wav2vec2-style CNN feature encoder to "
            "freeze; use mode 'finetune' or 'frozen' instead of 'finetune-frozen-cnn'"
        )

    # -- persistence --------------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        """HF weights (safetensors) + tokenizer/feature extractor + an emovox sidecar.

        ``load_backbone(directory)`` then restores the same model, preprocessing and limits
        offline; the sidecar keeps the registry name and pooling the run used.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with _QuietTransformers():
            self.model.save_pretrained(directory)
            self.processor.save_pretrained(directory)
        for stale in directory.glob("*.bin"):  # never leave pickled weights beside the safetensors
            stale.unlink()
        sidecar = {"format": 1, "spec": self.spec.to_dict(), "max_tokens": self.max_tokens,
                   "max_seconds": self.max_seconds}
        (directory / EMOVOX_FILE).write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")

    def extra_repr(self) -> str:
        return f"name={self.spec.name!r}, family={self.spec.family!r}, hidden={self.hidden_size}, layers={self.num_layers}"


#: Weights a checkpoint may lack without anything we use being random: pooler heads we never
#: call, SpecAugment's mask embedding (training-time only, absent from some fine-tuned exports).
_BENIGN_MISSING = ("pooler.", "masked_spec_embed", "position_ids")


class _QuietTransformers:
    """Silence transformers' load report and progress bars while emovox checks loading itself."""

    def __enter__(self):
        from transformers.utils import logging as hf_logging

        self._hf = hf_logging
        self._verbosity = hf_logging.get_verbosity()
        self._bars = hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        return self

    def __exit__(self, *exc):
        self._hf.set_verbosity(self._verbosity)
        if self._bars:
            self._hf.enable_progress_bar()
        return False


def describe(exc: BaseException) -> str:
    """A library exception as one line (CLI errors are one line), type first."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def from_pretrained_checked(model_cls, spec: BackboneSpec, **kwargs) -> torch.nn.Module:
    """``model_cls.from_pretrained(spec.hub_id)`` in float32 from safetensors, refusing silently random weights.

    Unexpected keys (a decoder or an ASR head we do not use) are fine; missing ones mean part
    of the backbone would be randomly initialised, which is an error naming the keys.
    """
    try:
        with _QuietTransformers():
            # safetensors only: a pickled pytorch_model.bin is never unpickled, not even by
            # torch.load(weights_only=True); convert such a checkpoint once with transformers.
            model, info = model_cls.from_pretrained(
                spec.hub_id, dtype=torch.float32, output_loading_info=True, use_safetensors=True, **kwargs
            )
    except Exception as exc:  # offline, unknown repo, damaged weights, wrong architecture
        raise BackboneError(
            f"could not load backbone '{spec.name}' from '{spec.hub_id}' as {model_cls.__name__} "
            f"({describe(exc)}). "
            "Offline? Download the model once and pass its local directory."
        ) from None
    missing = [k for k in info.get("missing_keys", []) if not any(b in k for b in _BENIGN_MISSING)]
    mismatched = list(info.get("mismatched_keys", []))
    if missing or mismatched:
        bad = sorted(missing)[:5] + [str(m) for m in mismatched[:3]]
        raise BackboneError(
            f"'{spec.hub_id}' does not hold a complete {model_cls.__name__} for family '{spec.family}': "
            f"{len(missing)} missing and {len(mismatched)} mismatched weights (e.g. {bad}); "
            "is it a checkpoint of that architecture?"
        )
    return model


def load_backbone(
    name_or_path: str | Path,
    *,
    tiny: bool = False,
    max_tokens: int | None = None,
    max_seconds: float | None = None,
    seed: int = 0,
) -> Backbone:
    """Build the backbone named by a registry name, hub id or local directory (in eval mode).

    ``max_tokens``/``max_seconds`` default to what a saved directory recorded, else to the
    paper's 100 tokens / 10 s. ``tiny=True`` never downloads: a small random model of the same
    class (seeded by ``seed``), with an offline tokenizer or feature extractor. An openSMILE
    backbone has nothing to shrink: ``tiny`` builds the real one.
    """
    spec = get_spec(name_or_path)
    saved: dict = {}
    directory = Path(spec.hub_id)
    if not tiny and (directory / EMOVOX_FILE).is_file():
        saved = read_emovox_file(directory)
    max_tokens = int(max_tokens if max_tokens is not None else saved.get("max_tokens", DEFAULT_MAX_TOKENS))
    max_seconds = float(max_seconds if max_seconds is not None else saved.get("max_seconds", DEFAULT_MAX_SECONDS))
    if max_tokens < 4:
        raise BackboneError(f"max_tokens must be at least 4 (got {max_tokens})")
    if not max_seconds > 0:
        raise BackboneError(f"max_seconds must be positive (got {max_seconds})")
    if spec.family == "opensmile":
        from emovox.backbones.smile import build_smile_backbone

        backbone = build_smile_backbone(spec, saved, max_tokens=max_tokens, max_seconds=max_seconds)
    elif spec.modality == "text":
        from emovox.backbones.text import build_text_backbone

        backbone = build_text_backbone(spec, tiny=tiny, max_tokens=max_tokens, max_seconds=max_seconds, seed=seed)
    else:
        from emovox.backbones.speech import build_audio_backbone

        backbone = build_audio_backbone(spec, tiny=tiny, max_tokens=max_tokens, max_seconds=max_seconds, seed=seed)
    return backbone.eval()
