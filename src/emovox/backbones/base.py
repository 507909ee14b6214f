"""What every backbone is: ``Backbone`` (one uniform wrapper around a pretrained text or speech model) and
``Encoded`` (what it gives: frame/token states plus a mask of which positions are real).

Everything above a backbone (pooling, heads, fusion, the feature cache) sees only ``Encoded`` and never needs to
know which architecture produced it. Each batch is padded only to its own longest item, and the padding never
changes a real item's states: a padded batch gives what the items give one by one. The families' builders
(``text``, ``audio``, ``speech``, ``whisper``, ...) subclass ``Backbone``; ``loader.load_backbone`` picks one.

``from_pretrained_checked`` is the one place pretrained weights are read: float32 from safetensors only (a pickled
checkpoint is never unpickled), refusing a checkpoint that would leave part of the model randomly initialised;
``QuietTransformers`` silences transformers' own load report while emovox checks loading itself.
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
    BackboneSpec,
)
from emovox.errors import BackboneError

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
        with QuietTransformers():
            self.model.save_pretrained(directory)
            self.processor.save_pretrained(directory)
        for stale in directory.glob("*.bin"):  # never leave pickled weights beside the safetensors
            stale.unlink()
        sidecar = {"format": 1, "spec": self.spec.to_dict(), "max_tokens": self.max_tokens,
                   "max_seconds": self.max_seconds}
        (directory / EMOVOX_FILE).write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")

    def extra_repr(self) -> str:
        return f"name={self.spec.name!r}, family={self.spec.family!r}, hidden={self.hidden_size}, layers={self.num_layers}"


class QuietTransformers:
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


#: Weights a checkpoint may lack without anything we use being random: pooler heads we never
#: call, SpecAugment's mask embedding (training-time only, absent from some fine-tuned exports).
BENIGN_MISSING = ("pooler.", "masked_spec_embed", "position_ids")


def describe(exc: BaseException) -> str:
    """A library exception as one line (CLI errors are one line), type first."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def from_pretrained_checked(model_cls, spec: BackboneSpec, **kwargs) -> torch.nn.Module:
    """``model_cls.from_pretrained(spec.hub_id)`` in float32 from safetensors, refusing silently random weights.

    Unexpected keys (a decoder or an ASR head we do not use) are fine; missing ones mean part
    of the backbone would be randomly initialised, which is an error naming the keys.
    """
    try:
        with QuietTransformers():
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
    missing = [k for k in info.get("missing_keys", []) if not any(b in k for b in BENIGN_MISSING)]
    mismatched = list(info.get("mismatched_keys", []))
    if missing or mismatched:
        bad = sorted(missing)[:5] + [str(m) for m in mismatched[:3]]
        raise BackboneError(
            f"'{spec.hub_id}' does not hold a complete {model_cls.__name__} for family '{spec.family}': "
            f"{len(missing)} missing and {len(mismatched)} mismatched weights (e.g. {bad}); "
            "is it a checkpoint of that architecture?"
        )
    return model
