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
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import numpy as np

import torch
from pydantic import Field

from emovox.errors import ConfigError
from emovox.models.base import WEIGHTS_FILE, KindConfig, ModelKind, check_tensors, read_weights
from emovox.models.branch import BackboneStore, Branch, BranchConfig, default_branch_name, non_backbone_state
from emovox.models.heads import ClassifierHead, LayerReducer
from emovox.models.logistic import Select


class ClassifierConfig(BranchConfig, KindConfig):
    """``model.kind: classifier`` (the default): the branch's fields plus the head's."""

    kind: Literal["classifier"] = "classifier"
    head: Literal["linear", "mlp", "logistic"] = Field(
        "linear",
        description="linear: dropout + one linear layer trained with the others (papers); mlp: one hidden layer; "
        "logistic: multinomial logistic regression fitted in closed form (scikit-learn), C chosen on validation.",
    )
    hidden: int = Field(256, gt=0, description="mlp: hidden units.")
    C: list[float] = Field(
        [0.02],
        min_length=1,
        description="logistic: regularisation strengths to choose from (one value: no choice).",
    )
    layer_sets: list[list[int]] | None = Field(
        None,
        description="logistic: candidate sets of hidden states (indices into `layers`, e.g. [[0, 1, 2, 3, 4, 5, 6], "
        "[2, 3, 4, 5]]) chosen jointly with C; default: every selected layer.",
    )
    select: Select = Field(
        "valid-ua",
        description="logistic: how C (and the layer set) is chosen: valid-ua / valid-logloss on the fold's validation "
        "part, or inner-logloss: leave-one-speaker-out inside the training part (steadier; never sees validation or test).",
    )
    refit: bool = Field(
        False,
        description="logistic: after choosing, fit once more on training + validation data (the test part stays unseen).",
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

    def fit_direct(self, train, valid) -> dict | None:
        """``head: logistic``: scikit-learn on the reduced (standardised, layer-combined) features."""
        if self.config.head != "logistic":
            return None
        from emovox.models.logistic import fit_logistic

        cfg = self.config
        views = self.branch.augments(self.augment)
        rows = with_views(self.branch, train) if views else train
        x, y = embeddings(self, rows), [e.target for e in rows]
        xv, yv = (embeddings(self, valid), [e.target for e in valid]) if valid else (None, None)
        refit = None
        if cfg.refit and valid:
            # statistics of the data the final model is fitted on; the choice was made on training-part statistics
            self.fit_statistics([*train, *valid])
            everything = with_views(self.branch, [*train, *valid]) if views else [*train, *valid]
            refit = (embeddings(self, everything), [e.target for e in everything])
        width = self.branch.width
        sets = None
        if cfg.layer_sets:
            position = {layer: i for i, layer in enumerate(self.branch.layer_index)}
            unknown = sorted({k for s in cfg.layer_sets for k in s} - set(position))
            if unknown or cfg.combine != "concat":
                raise ConfigError(f"layer_sets need combine: concat and layers among {self.branch.layer_index}; got {unknown}")
            sets = [[position[k] * width + j for k in s for j in range(width)] for s in cfg.layer_sets]
        fit = fit_logistic(
            x, y, len(self.labels), Cs=cfg.C, x_valid=xv, y_valid=yv, groups=[e.speaker or e.id for e in rows],
            column_sets=sets, select=cfg.select, refit=refit,
        )
        with torch.no_grad():
            self.head.linear.weight.copy_(torch.from_numpy(fit.coef))
            self.head.linear.bias.copy_(torch.from_numpy(fit.intercept))
        choices = {"C": fit.C, "select": cfg.select, "scores": fit.scores, "refit": refit is not None}
        if cfg.layer_sets:
            choices["layers"] = cfg.layer_sets[fit.columns]
        if fit.temperature is not None:  # from held-out predictions of the chosen candidate
            choices["temperature"] = round(fit.temperature, 6)
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


def with_views(branch: Branch, examples) -> list:
    """``examples`` plus one example per cached augmented copy (a closed-form fit sees every view at once)."""
    from dataclasses import replace

    out = list(examples)
    for e in examples:
        row = e.cached.get(branch.slot)
        for k, copy in enumerate((row or {}).get("variants") or []):
            out.append(replace(e, id=f"{e.id}#aug{k + 1}", cached={**e.cached, branch.slot: copy}))
    return out


@torch.no_grad()
def embeddings(model: ModelKind, examples, batch_size: int = 64) -> np.ndarray:
    """``[N, D]``: what the classifier layer reads, for every example (eval mode, no grad)."""
    import numpy as np

    was = model.training
    model.eval()
    out = [model.embed(model.collate(examples[i : i + batch_size])).float() for i in range(0, len(examples), batch_size)]
    model.train(was)
    return torch.cat(out).numpy().astype(np.float64) if out else np.zeros((0, 0))


@torch.no_grad()
def branch_states(model: ModelKind, branch: Branch, examples, batch_size: int = 64) -> torch.Tensor:
    """``[N, L, W]`` pooled states of ``branch`` for the examples that have its input (eval mode, no grad)."""
    was = model.training
    model.eval()
    rows = [e for e in examples if branch.item(e) is not None]
    out = [branch(branch.collate(rows[i : i + batch_size])) for i in range(0, len(rows), batch_size)]
    model.train(was)
    if not out:
        return torch.zeros(0, branch.num_layers, branch.width)
    return torch.cat(out).float()
