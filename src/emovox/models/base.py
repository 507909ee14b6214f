"""What a model kind is: the one contract the trainer, the runner and the recognizer rely on.

Every way of turning examples into class scores (a probe on one backbone, a fine-tuned
classifier, a fusion of branches, a late-fusion MLP over trained recognizers, a prompted LLM) is
one ``ModelKind`` subclass in its own module, registered in ``emovox.models.KINDS``. A kind owns:

- its config section (``Config``, a pydantic model selected by ``model.kind`` in the YAML);
- the example fields it reads (``fields``), so only those are loaded from the corpus;
- what it precomputes once per run (``prepare``: frozen features, a frozen bottom) and the
  statistics it takes from the training part only (``fit_statistics``);
- its collate, ``logits`` and loss (``forward`` divides the logits by a temperature fitted on
  validation data after training, so every probability emovox reports is calibrated);
- which parameters train at which learning rate (``param_groups``);
- its files in a recognizer directory (``save``/``load``): backbones as Hugging Face
  directories under ``branches/<name>/``, adapters under ``adapters/<name>/``, everything else in
  ``weights.safetensors``, and its config as JSON beside them, so a recognizer rebuilds itself
  from its own files.

Nothing above this layer knows a kind by name: the trainer calls these methods, the runner builds
kinds through the registry, and the recognizer loads whatever ``emovox.json`` names.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from emovox.errors import RecognizerError

if TYPE_CHECKING:
    from emovox.cache import FeatureCache
    from emovox.corpora.base import Corpus
    from emovox.data.examples import ContextFormat, Example
    from emovox.splits.fold import Fold

#: Everything of a kind that is not a backbone or an adapter.
WEIGHTS_FILE = "weights.safetensors"


class KindConfig(BaseModel):
    """Base of every kind's config section: unknown keys are errors (a typo must not fall back to a default)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    kind: str


class ModelKind(nn.Module):
    """A trainable model over ``Example`` records that returns class logits ``[B, C]``."""

    kind: ClassVar[str]
    Config: ClassVar[type[KindConfig]]
    #: ``train.augment`` of the run (an ``AugmentConfig``), set by the runner; None: no augmentation
    augment = None
    #: validation id -> logits of a fit that did not see the validation part, kept by a closed-form head
    #: that was then refitted on it (``emovox.training.folds.heldout_valid_proba``); None: the model's own
    heldout_valid: dict | None = None
    #: ``train.extract_precision`` of the run: the arithmetic of the frozen feature extraction
    extract_precision = "fp32"
    seed: int = 0

    def __init__(self, config: KindConfig, labels: Sequence[str]):
        super().__init__()
        self.config = config
        self.labels = tuple(labels)
        # 1 while training; set by emovox.training.calibration after it (saved with the weights)
        self.register_buffer("temperature", torch.ones(()))

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def build(cls, config: KindConfig, labels: Sequence[str], *, seed: int = 0, backbones=None) -> ModelKind:
        """A fresh model for training: pretrained backbones, new heads (seeded by ``seed``).

        ``backbones`` (a ``BackboneStore``) shares frozen backbones between the folds of a run.
        """
        raise NotImplementedError

    @classmethod
    def load(cls, directory: Path, config: KindConfig, labels: Sequence[str]) -> ModelKind:
        """The model saved in ``directory`` by ``save`` (raises ``RecognizerError`` naming the file)."""
        raise NotImplementedError

    def save(self, directory: Path) -> None:
        raise NotImplementedError

    def saved_config(self) -> KindConfig:
        """The config recorded beside the weights (with everything ``load`` needs filled in)."""
        return self.config

    # -- data --------------------------------------------------------------------------------------
    def fields(self) -> set[str]:
        """The ``Example`` fields this model reads (a subset of ``emovox.data.examples.FIELDS``)."""
        raise NotImplementedError

    def max_seconds(self) -> float:
        """Audio is cropped to this many seconds when examples are built (the papers' 10 s)."""
        return 10.0

    def context_format(self) -> ContextFormat:
        """How the previous turns become the ``context_text`` this model reads (the branches' one format)."""
        from emovox.data.examples import ContextFormat

        return ContextFormat()

    def prepare(self, examples: list[Example], *, cache: FeatureCache | None, progress: bool = True) -> list[Example]:
        """Examples with whatever the frozen parts compute attached (``Example.cached``); computed once per run."""
        return examples

    def fit_statistics(self, train: list[Example]) -> None:
        """Statistics taken from the training part only (standardisation); never from validation or test."""

    def observe(self, examples: list[Example], *, reset: bool = True) -> list[Example]:
        """Called before predicting ``examples``: statistics a model takes from the unlabelled inputs it is
        about to classify (per-speaker normalisation, ``emovox.models.heads.GroupNormalizer``); none by
        default. Returns the examples to predict (with what it computed to observe them attached, so the
        backbone runs once)."""
        return examples

    def use_fold(self, fold: Fold | None, corpus: Corpus) -> None:
        """Called before the model trains: with the fold inside ``emovox cv``, with None for the final model of
        ``emovox train``. Kinds built on models that were trained fold by fold (late fusion over cv runs) pick
        that fold's models here and refuse any that has seen the fold's test utterances."""

    def set_epoch(self, epoch: int) -> None:
        """Called by the trainer before each training epoch (deterministic per-epoch augmentation)."""
        self.epoch = epoch

    def collate(self, batch: list[Example], *, augment: bool = False) -> dict:
        raise NotImplementedError

    # -- computation -------------------------------------------------------------------------------
    def logits(self, inputs: dict) -> torch.Tensor:
        """Uncalibrated class scores ``[B, C]``."""
        raise NotImplementedError

    def forward(self, inputs: dict) -> torch.Tensor:
        """Calibrated logits: ``logits / temperature`` (softmax of these are the reported probabilities)."""
        return self.logits(inputs) / self.temperature

    def loss(self, inputs: dict, targets: torch.Tensor, weight: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, logits)`` for a training batch: class-weighted cross-entropy by default, mixed
        (``train.augment.mixup``) when the run asks for it."""
        alpha = getattr(self.augment, "mixup", 0.0) if self.training else 0.0
        if alpha:
            from emovox.models.mixup import mixup_loss

            return mixup_loss(self, inputs, targets, weight, alpha)
        logits = self(inputs)
        return nn.functional.cross_entropy(logits.float(), targets, weight=weight), logits

    def from_embedding(self, embedding: torch.Tensor) -> torch.Tensor:
        """Uncalibrated logits from ``embed``'s output: what mixup mixes is the embedding, so a kind
        that can be trained with mixup says how its head reads one."""
        raise NotImplementedError

    @property
    def supports_mixup(self) -> bool:
        """A kind with a head over an embedding and the default loss (mixup replaces that loss)."""
        cls = type(self)
        return cls.from_embedding is not ModelKind.from_embedding and cls.loss is ModelKind.loss

    def fit_direct(self, train: list[Example], valid: list[Example]) -> dict | None:
        """Fit without gradient steps (a closed-form head); returns what was chosen on ``valid``, or
        None when the model trains with the generic trainer instead."""
        return None

    def backbone_parameters(self) -> list[nn.Parameter]:
        """Pretrained parameters (trained at ``train.lr``); everything else trains at ``head_lr``."""
        return []

    def param_groups(self, lr: float, head_lr: float | None) -> list[dict]:
        """Optimizer groups: pretrained weights at ``lr``, new parts at ``head_lr`` (default ``lr``); the
        ``name`` of each group labels its learning-rate curve in experiment trackers (``train/lr/head``)."""
        pretrained = {id(p) for p in self.backbone_parameters()}
        backbone = [p for p in self.parameters() if p.requires_grad and id(p) in pretrained]
        head = [p for p in self.parameters() if p.requires_grad and id(p) not in pretrained]
        if head_lr is None:
            return [g for g in ({"params": backbone + head},) if g["params"]]
        groups = ({"params": backbone, "lr": lr, "name": "backbone"}, {"params": head, "lr": head_lr, "name": "head"})
        return [g for g in groups if g["params"]]

    def compute_size(self) -> int:
        """Parameters that take part in a training step (a frozen, cached backbone does not)."""
        return sum(p.numel() for p in self.parameters())

    def embed(self, inputs: dict) -> torch.Tensor:
        """The vector the classifier layer reads (late fusion and embeddings use it)."""
        raise NotImplementedError(f"model kind {self.kind!r} exposes no embedding")

    def embed_width(self) -> int:
        """The width of ``embed``'s vectors (a late-fusion MLP is sized from its members' before it sees data)."""
        raise NotImplementedError(f"model kind {self.kind!r} exposes no embedding")

    def embed_and_logits(self, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """``(embed(inputs), forward(inputs))``; kinds whose classifier reads ``embed`` override this to run once."""
        return self.embed(inputs), self(inputs)

    # -- deployment --------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """What a model card says about this model (backbones, modality, what trained)."""
        return {"kind": self.kind}


def check_tensors(path: Path, tensors: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], what: str) -> None:
    """Names and shapes of saved tensors must match the rebuilt model; a ``RecognizerError`` says which differ."""
    if set(tensors) != set(expected):
        diff = sorted(set(tensors) ^ set(expected))
        raise RecognizerError(f"{path}: tensors {diff[:6]} do not match {what}")
    for k, v in tensors.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise RecognizerError(f"{path}: tensor {k} has shape {tuple(v.shape)}, expected {tuple(expected[k].shape)}")


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise RecognizerError(f"{path}: missing; the recognizer directory is incomplete")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own types for damaged files
        raise RecognizerError(f"{path}: not a readable safetensors file ({exc})") from None
