"""The papers' classifier: one branch (backbone + pooling), then standardise, combine layers, dropout, linear.

One kind covers every single-backbone recipe, chosen by the branch's ``mode`` rather than by
separate classes: a frozen probe trains on cached per-layer features in seconds; ``finetune``
trains everything end to end (the IEMOCAP paper); ``finetune-top`` trains Whisper's top layers
over a cached frozen bottom. In every case the trained module, given raw inputs, is the
deployable recognizer: it runs its own backbone.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field

from emovox.errors import ConfigError
from emovox.models.base import WEIGHTS_FILE, KindConfig, ModelKind, check_tensors, read_weights
from emovox.models.branch import BackboneStore, Branch, BranchConfig, default_branch_name, non_backbone_state
from emovox.models.closed_form import LogisticFields
from emovox.models.heads import ClassifierHead, LayerReducer


class ClassifierConfig(BranchConfig, LogisticFields, KindConfig):
    """``model.kind: classifier`` (the default): the branch's fields plus the head's."""

    kind: Literal["classifier"] = "classifier"
    head: Literal["linear", "mlp", "logistic"] = Field(
        "linear",
        description="linear: dropout + one linear layer trained with the others (papers); mlp: one hidden layer; "
        "logistic: multinomial logistic regression fitted in closed form (scikit-learn), C chosen on validation; "
        "with a trainable mode, the backbone is then fine-tuned from it (LP-FT), the epoch (0: none) chosen on validation.",
    )
    hidden: int = Field(256, gt=0, description="mlp: hidden units.")
    layer_sets: list[list[int]] | None = Field(
        None,
        description="logistic: candidate sets of hidden states (indices into `layers`, e.g. [[0, 1, 2, 3, 4, 5, 6], "
        "[2, 3, 4, 5]]) chosen jointly with C; default: every selected layer.",
    )
    dropout: float = Field(0.1, ge=0.0, lt=1.0)


class ClassifierModel(ModelKind):
    kind = "classifier"
    Config = ClassifierConfig

    def __init__(self, config: ClassifierConfig, labels: Sequence[str], backbone):
        super().__init__(config, labels)
        name = default_branch_name(config, backbone.modality)
        self.branch = Branch(name, config, backbone)
        b = self.branch
        self.reducer = LayerReducer(
            b.num_layers, b.width, combine=config.combine, standardize=b.standardize, std_floor=config.std_floor
        )
        self.head = ClassifierHead(
            self.reducer.out_width, len(labels), dropout=config.dropout, hidden=config.hidden if config.head == "mlp" else None
        )

    @classmethod
    def build(cls, config: ClassifierConfig, labels, *, seed: int = 0, backbones: BackboneStore | None = None):
        backbone = (backbones or BackboneStore()).get(config, seed)
        torch.manual_seed(seed)  # the head's initial weights
        model = cls(config, labels, backbone)
        model.seed = seed
        return model

    # -- data ------------------------------------------------------------------------------------
    def fields(self) -> set[str]:
        return self.branch.fields()

    def max_seconds(self) -> float:
        return self.config.max_seconds

    def context_format(self):
        from emovox.data.examples import ContextFormat

        return self.branch.context_format() or ContextFormat()

    def prepare(self, examples, *, cache, progress: bool = True):
        return self.branch.precompute(examples, cache=cache, seed=self.seed, progress=progress, augment=self.augment,
                                      precision=self.extract_precision)

    def collate(self, batch, *, augment: bool = False) -> dict:
        aug = self.augment if augment else None
        return {self.branch.name: self.branch.collate(batch, augment=aug, epoch=getattr(self, "epoch", 0), seed=self.seed)}

    @torch.no_grad()
    def fit_statistics(self, train) -> None:
        if self.reducer.standardize.enabled:
            self.reducer.fit_statistics(branch_states(self, self.branch, train))

    # -- computation -----------------------------------------------------------------------------
    def embed(self, inputs: dict) -> torch.Tensor:
        return self.reducer(self.branch(inputs[self.branch.name]))

    def logits(self, inputs: dict) -> torch.Tensor:
        return self.head(self.embed(inputs))

    def from_embedding(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.head(embedding)

    def embed_width(self) -> int:
        return self.reducer.out_width

    def embed_and_logits(self, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.embed(inputs)
        return embedding, self.head(embedding) / self.temperature

    def forward_backbone_inputs(self, backbone_inputs: dict) -> torch.Tensor:
        """Calibrated logits straight from the backbone's preprocessing output (ONNX export traces this)."""
        return self.head(self.reducer(self.branch._live(backbone_inputs))) / self.temperature

    @property
    def finetunes_after_direct(self) -> bool:
        """``head: logistic`` over a trainable backbone: linear probing, then fine-tuning (LP-FT). A new
        head trained together with pretrained layers pushes them around while it is still wrong, which
        is how fine-tuning on a few hundred clips ends below the frozen probe (Kumar et al., 2022); a head
        that starts at the probe's closed-form optimum sends them only the gradient of what it still
        gets wrong."""
        return self.config.head == "logistic" and self.branch.mode != "frozen"

    def fit_direct(self, train, valid) -> dict | None:
        """``head: logistic``: scikit-learn on the reduced (standardised, layer-combined) features."""
        if self.config.head != "logistic":
            return None
        from emovox.models.closed_form import column_sets, fit_head

        cfg = self.config
        if self.finetunes_after_direct and cfg.refit:
            raise ConfigError("head: logistic with a trainable mode fine-tunes after the closed-form fit and chooses its "
                              "epoch on the validation part, which a refit would have seen: set refit: false")
        if cfg.layer_sets and cfg.combine != "concat":
            raise ConfigError("layer_sets need combine: concat (each candidate keeps some of the concatenated layers)")
        sets = column_sets([[s] for s in cfg.layer_sets or []], [(self.branch.layer_index, self.branch.width)])
        fit, choices = fit_head(self, [self.branch], train, valid, cfg, self.embed, sets)
        with torch.no_grad():
            self.head.linear.weight.copy_(torch.from_numpy(fit.coef))
            self.head.linear.bias.copy_(torch.from_numpy(fit.intercept))
        return choices

    def backbone_parameters(self):
        return list(self.branch.backbone.parameters())

    def compute_size(self) -> int:
        if self.branch.cache_mode == "pooled":
            backbone = {id(p) for p in self.branch.backbone.parameters()}
            return sum(p.numel() for p in self.parameters() if id(p) not in backbone)
        return super().compute_size()

    # -- files -----------------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        from emovox.atomic import atomic_save_tensors

        self.branch.backbone.save(Path(directory) / "branches" / self.branch.name)
        atomic_save_tensors(Path(directory) / WEIGHTS_FILE, non_backbone_state(self), metadata={"format": "pt"})

    @classmethod
    def load(cls, directory: Path, config: ClassifierConfig, labels):
        from emovox.models.registry import load_branch_backbone

        name = config.name or _saved_branch_name(directory)
        backbone = load_branch_backbone(Path(directory) / "branches" / name, config)
        model = cls(config, labels, backbone)
        load_weights(model, Path(directory) / WEIGHTS_FILE, f"a classifier head for {len(labels)} labels")
        return model

    def saved_config(self) -> ClassifierConfig:
        return self.config.model_copy(update={"name": self.branch.name})

    def describe(self) -> dict:
        return {"kind": self.kind, "branches": [self.branch.describe()], "head": self.config.head}


def _saved_branch_name(directory: Path) -> str:
    names = (
        sorted(p.name for p in (Path(directory) / "branches").iterdir() if p.is_dir())
        if (Path(directory) / "branches").is_dir()
        else []
    )
    if len(names) != 1:
        from emovox.errors import RecognizerError

        raise RecognizerError(f"{directory}/branches: expected one branch directory, found {names}")
    return names[0]


def load_weights(model: ModelKind, path: Path, what: str) -> None:
    """Read ``weights.safetensors`` into ``model``: every non-backbone tensor, names and shapes checked."""
    tensors = read_weights(path)
    expected = non_backbone_state(model)
    check_tensors(path, tensors, expected, what)
    model.load_state_dict(tensors, strict=False)


@torch.no_grad()
def branch_states(model: ModelKind, branch: Branch, examples, batch_size: int = 64) -> torch.Tensor:
    """``[N, L, W]`` pooled states of ``branch`` for the examples that have its input (eval mode, no grad)."""
    was = model.training
    model.eval()
    rows = [e for e in examples if branch.item(e) is not None]
    out = [branch(branch.collate(rows[i : i + batch_size])) for i in range(0, len(rows), batch_size)]
    model.train(was)
    if not out:
        if examples:
            import warnings

            from emovox.errors import EmovoxWarning

            warnings.warn(
                f"branch '{branch.name}' has no input in any of the {len(examples)} training examples"
                + (" (the corpus gives no dialogue order, so no utterance has a previous one): it can only learn its "
                   "'no context' vector" if branch.cfg.input == "context" else ""),
                EmovoxWarning,
                stacklevel=2,
            )
        return torch.zeros(0, branch.num_layers, branch.width)
    return torch.cat(out).float()
