"""Fusion classifier (IEMOCAP paper, Figure 1): N branches -> FC-256 each -> concatenated -> dropout -> linear.

Each branch is (modality, utterance | context, backbone, mode): e.g. Whisper on the audio and OPT
on the transcript, each with a copy reading the previous utterance. A branch's pooled output
(standardised and layer-combined as in the classifier) is projected to a common width by its own
linear layer (the paper's "FC 256", no activation), the projections are concatenated, and one
dropout + linear layer classifies. Everything trains end to end with the fine-tuning defaults;
frozen branches come from the feature cache, so a fusion of frozen branches trains in seconds.

``head: logistic`` fits the same function class in closed form: the projections and the final
layer compose to one linear map of the concatenated branch features (there is no activation
between them), so a multinomial logistic regression over those features, C chosen on held-out
speakers, is the exact optimum of what Adam approximates. Its coefficients are written back into
the projections (the first ``classes`` outputs of each) and an identity-like final layer, so the
recognizer keeps the paper's shape and file format.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, field_validator
from torch import nn

from emovox.errors import ConfigError
from emovox.models.base import WEIGHTS_FILE, KindConfig, ModelKind
from emovox.models.branch import BackboneStore, Branch, BranchConfig, default_branch_name
from emovox.models.classifier import branch_states, load_weights
from emovox.models.closed_form import LogisticFields
from emovox.models.extraction import precompute
from emovox.models.heads import LayerReducer


class FusionConfig(LogisticFields, KindConfig):
    kind: Literal["fusion"] = "fusion"
    branches: list[BranchConfig] = Field(
        description="One to four branches, each a backbone reading the utterance or its context."
    )
    projection: int = Field(256, gt=0, description="Width every branch is projected to before concatenation (paper: 256).")
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    head: Literal["linear", "logistic"] = Field(
        "linear",
        description="linear: the projections and final layer trained by the trainer (paper); logistic: the same linear "
        "map fitted in closed form over frozen branches (scikit-learn), C chosen on held-out speakers.",
    )
    layer_sets: list[list[list[int]]] | None = Field(
        None,
        description="logistic: candidates chosen jointly with C, each one list of hidden states per branch (indices into "
        "that branch's `layers`; branches need combine: concat), e.g. [[[0, 1, 2, 3, 4, 5, 6], [0, 1, 2, 3, 4, 5, 6]], "
        "[[2, 3, 4, 5], [0, 1, 2, 3, 4, 5, 6]]]; default: every selected layer.",
    )

    @field_validator("branches")
    @classmethod
    def _some(cls, v: list[BranchConfig]) -> list[BranchConfig]:
        if not 1 <= len(v) <= 4:
            raise ValueError(f"a fusion model has one to four branches, not {len(v)}")
        return v


class FusionModel(ModelKind):
    kind = "fusion"
    Config = FusionConfig

    def __init__(self, config: FusionConfig, labels: Sequence[str], backbones: list):
        super().__init__(config, labels)
        names = [default_branch_name(b, bb.modality) for b, bb in zip(config.branches, backbones, strict=True)]
        if len(set(names)) != len(names):
            raise ConfigError(f"fusion branches need distinct names (set `name:` on each); got {names}")
        self.branches = nn.ModuleList(Branch(n, b, bb) for n, b, bb in zip(names, config.branches, backbones, strict=True))
        self.reducers = nn.ModuleList(
            LayerReducer(br.num_layers, br.width, combine=br.cfg.combine, standardize=br.standardize, std_floor=br.cfg.std_floor)
            for br in self.branches
        )
        self.projections = nn.ModuleList(nn.Linear(r.out_width, config.projection) for r in self.reducers)
        self.dropout = nn.Dropout(config.dropout)
        self.linear = nn.Linear(config.projection * len(self.branches), len(labels))

    @classmethod
    def build(cls, config: FusionConfig, labels, *, seed: int = 0, backbones: BackboneStore | None = None):
        store = backbones or BackboneStore()
        loaded = [store.get(b, seed) for b in config.branches]
        torch.manual_seed(seed)
        model = cls(config, labels, loaded)
        model.seed = seed
        return model

    def fields(self) -> set[str]:
        return set().union(*(b.fields() for b in self.branches))

    def max_seconds(self) -> float:
        return max(b.cfg.max_seconds for b in self.branches)

    def context_format(self):
        from emovox.data.examples import common_context_format

        return common_context_format((b.context_format() for b in self.branches), where="fusion")

    def prepare(self, examples, *, cache, progress: bool = True):
        for b in self.branches:
            examples = precompute(b, examples, cache=cache, seed=self.seed, progress=progress, augment=self.augment,
                                  precision=self.extract_precision)
        return examples

    @torch.no_grad()
    def fit_statistics(self, train) -> None:
        for b, r in zip(self.branches, self.reducers, strict=True):
            if r.standardize.enabled:
                r.fit_statistics(branch_states(self, b, train))

    def collate(self, batch, *, augment: bool = False) -> dict:
        aug = self.augment if augment else None
        epoch = getattr(self, "epoch", 0)
        return {b.name: b.collate(batch, augment=aug, epoch=epoch, seed=self.seed) for b in self.branches}

    def embed(self, inputs: dict) -> torch.Tensor:
        return torch.cat(
            [p(r(b(inputs[b.name]))) for b, r, p in zip(self.branches, self.reducers, self.projections, strict=True)], dim=-1
        )

    def reduced(self, inputs: dict) -> torch.Tensor:
        """The branches' standardised, layer-combined features, concatenated (what the projections read)."""
        return torch.cat([r(b(inputs[b.name])) for b, r in zip(self.branches, self.reducers, strict=True)], dim=-1)

    def fit_direct(self, train, valid) -> dict | None:
        """``head: logistic``: one logistic regression over every branch's features, written into the layers."""
        if self.config.head != "logistic":
            return None
        from emovox.models.closed_form import column_sets, fit_head

        cfg, classes = self.config, len(self.labels)
        if cfg.projection < classes:
            raise ConfigError(f"head: logistic writes each branch's class scores into its projection: projection "
                              f"({cfg.projection}) must be at least the number of classes ({classes})")
        if cfg.layer_sets and any(b.cfg.combine != "concat" for b in self.branches):
            raise ConfigError("layer_sets need combine: concat on every branch (a candidate keeps some concatenated layers)")
        sets = column_sets(cfg.layer_sets, [(b.layer_index, b.width) for b in self.branches])  # None: every column
        fit, choices = fit_head(self, list(self.branches), train, valid, cfg, self.reduced, sets)
        coef, offset = torch.from_numpy(fit.coef), 0
        with torch.no_grad():
            self.linear.weight.zero_()
            for i, (r, p) in enumerate(zip(self.reducers, self.projections, strict=True)):
                p.weight.zero_()
                p.bias.zero_()
                p.weight[:classes] = coef[:, offset : offset + r.out_width]  # branch i's share of every class score
                offset += r.out_width
                self.linear.weight[:, i * cfg.projection : i * cfg.projection + classes] = torch.eye(classes)
            self.linear.bias.copy_(torch.from_numpy(fit.intercept))
        return choices

    def logits(self, inputs: dict) -> torch.Tensor:
        return self.from_embedding(self.embed(inputs))

    def from_embedding(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(embedding))

    def embed_width(self) -> int:
        return self.config.projection * len(self.branches)

    def embed_and_logits(self, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.embed(inputs)
        return embedding, self.linear(self.dropout(embedding)) / self.temperature

    def backbone_parameters(self):
        return [p for b in self.branches for p in b.backbone.parameters()]

    def compute_size(self) -> int:
        skip = {id(p) for b in self.branches if b.cache_mode == "pooled" for p in b.backbone.parameters()}
        return sum(p.numel() for p in self.parameters() if id(p) not in skip)

    def save(self, directory: Path) -> None:
        from emovox.atomic import atomic_save_tensors
        from emovox.models.branch import non_backbone_state

        for b in self.branches:
            b.backbone.save(Path(directory) / "branches" / b.name)
        atomic_save_tensors(Path(directory) / WEIGHTS_FILE, non_backbone_state(self), metadata={"format": "pt"})

    @classmethod
    def load(cls, directory: Path, config: FusionConfig, labels):
        from emovox.models.registry import load_branch_backbone

        loaded = []
        for b in config.branches:
            if b.name is None:
                raise ConfigError(f"{directory}: a saved fusion branch has no name")
            loaded.append(load_branch_backbone(Path(directory) / "branches" / b.name, b))
        model = cls(config, labels, loaded)
        load_weights(
            model, Path(directory) / WEIGHTS_FILE, f"a {len(config.branches)}-branch fusion model for {len(labels)} labels"
        )
        return model

    def saved_config(self) -> FusionConfig:
        """The config with every branch's name filled in (what a recognizer directory records)."""
        return self.config.model_copy(update={"branches": [b.cfg.model_copy(update={"name": b.name}) for b in self.branches]})

    def describe(self) -> dict:
        return {"kind": self.kind, "branches": [b.describe() for b in self.branches]}
