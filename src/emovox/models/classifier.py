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
from typing import Any, Literal

import torch
from pydantic import Field, field_validator

from emovox.errors import ConfigError
from emovox.models.base import WEIGHTS_FILE, KindConfig, ModelKind, check_tensors, read_weights
from emovox.models.branch import BackboneStore, Branch, BranchConfig, default_branch_name, non_backbone_state
from emovox.models.closed_form import LogisticFields
from emovox.models.extraction import precompute
from emovox.models.heads import ClassifierHead, FallbackHead, GroupNormalizer, LayerReducer, Normalize


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
    normalize: list[Normalize] = Field(
        ["none"],
        min_length=1,
        description="logistic over a frozen branch: how each clip's pooled states are standardised before the head, "
        "candidates chosen with C and the layer set: none (training statistics for every clip), corpus (its corpus's "
        "statistics), speaker (its speaker's; at prediction time from the speaker's own unlabelled clips). "
        "See emovox.models.heads.GroupNormalizer.",
    )
    normalize_shrink: float | Literal["auto"] = Field(
        "auto", description="normalize: a group's statistics are shrunk towards the global ones as if this many clips of "
        "everyone were added to its own (a speaker with few clips is mostly standardised like everyone); auto: per "
        "dimension, within-speaker over between-speaker variance of the training speakers (empirical Bayes).",
    )

    @field_validator("normalize_shrink")
    @classmethod
    def _shrink(cls, v: Any) -> Any:
        if v != "auto" and v < 0:
            raise ValueError("must be auto or a number of clips >= 0")
        return v

    @field_validator("normalize", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        """``normalize: speaker`` (one mode, no choice) or a list of candidates; repeats dropped."""
        values = [v] if isinstance(v, str) else list(v)
        return list(dict.fromkeys(values))


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
        self.normalizer = None
        self.fallback = None
        if config.normalize != ["none"]:
            if config.head != "logistic" or b.cache_mode != "pooled":
                raise ConfigError(
                    "normalize (per-speaker or per-corpus statistics) is a candidate of the closed-form head over frozen "
                    f"features: it needs head: logistic and mode: frozen (this branch: head {config.head}, mode {b.mode})"
                )
            shrink = None if config.normalize_shrink == "auto" else float(config.normalize_shrink)
            self.normalizer = GroupNormalizer(b.num_layers, b.width, shrink=shrink, std_floor=config.std_floor)
            self.normalizer.mode = config.normalize[0]
            if "none" in config.normalize:  # chosen against none: keep none's best for clips without statistics
                self.fallback = FallbackHead(b.num_layers, b.width, len(labels), combine=config.combine,
                                             std_floor=config.std_floor)

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
        return precompute(self.branch, examples, cache=cache, seed=self.seed, progress=progress, augment=self.augment,
                          precision=self.extract_precision)

    def collate(self, batch, *, augment: bool = False) -> dict:
        aug = self.augment if augment else None
        out = {self.branch.name: self.branch.collate(batch, augment=aug, epoch=getattr(self, "epoch", 0), seed=self.seed)}
        if self.normalizer is not None:
            out["groups"] = [self.normalizer.key(e) for e in batch]
        return out

    @torch.no_grad()
    def fit_statistics(self, train) -> None:
        states = None
        if self.normalizer is not None:
            states = branch_states(self, self.branch, train)
            keys = [self.normalizer.key(e) for e in train if self.branch.item(e) is not None]
            self.normalizer.fit(states, keys)
            self.observe(train)
            states = self.normalizer(states, keys)
        if self.reducer.standardize.enabled:
            self.reducer.fit_statistics(states if states is not None else branch_states(self, self.branch, train))

    @torch.no_grad()
    def observe(self, examples, *, reset: bool = True):
        """Per-group statistics of ``examples``' unlabelled states, for ``normalize: speaker | corpus``
        (``reset=False`` adds their groups to those already seen). Returns the examples with their frozen
        states attached, so a recognizer runs its backbone once."""
        norm = self.normalizer
        if norm is None or norm.mode == "none":
            return examples
        examples = self.prepare(list(examples), cache=None, progress=False)
        rows = [e for e in examples if self.branch.item(e) is not None]
        table = {} if reset else dict(norm.table)
        norm.observe(branch_states(self, self.branch, rows), [norm.key(e) for e in rows])
        norm.table = {**table, **norm.table}
        return examples

    def normalize_with(self, mode: Normalize, part) -> None:
        """Use normalisation ``mode`` with statistics of ``part`` (the training part, or training +
        validation for a refit): the global shrinkage target, the groups of ``part``, the standardisation."""
        self.normalizer.mode = mode
        self.fit_statistics(part)

    # -- computation -----------------------------------------------------------------------------
    def states(self, inputs: dict) -> torch.Tensor:
        """``[B, L, W]``: the branch's pooled states, standardised per speaker or corpus when the model does that."""
        states = self.branch(inputs[self.branch.name])
        if self.normalizer is not None and self.normalizer.mode != "none":
            states = self.normalizer(states, inputs.get("groups"))
        return states

    def embed(self, inputs: dict) -> torch.Tensor:
        return self.reducer(self.states(inputs))

    def logits(self, inputs: dict) -> torch.Tensor:
        norm = self.normalizer
        if norm is None or norm.mode == "none":
            return self.head(self.embed(inputs))
        raw = self.branch(inputs[self.branch.name])
        return self.logits_of_states(raw, inputs.get("groups"))

    def logits_of_states(self, raw: torch.Tensor, keys: list | None) -> torch.Tensor:
        """Logits of the branch's raw pooled states ``[B, L, W]``; ``keys``: each row's group (speaker or
        corpus) for a model that normalises per group (None: no group known)."""
        norm = self.normalizer
        if norm is None or norm.mode == "none":
            return self.head(self.reducer(raw))
        keys = keys or [None] * len(raw)
        logits = self.head(self.reducer(norm(raw, keys)))
        known = torch.tensor([k is not None and k in norm.table for k in keys], dtype=torch.bool, device=logits.device)
        if self.fallback is None or bool(known.all()):
            return logits
        # clips without statistics of their group: the unnormalised candidate, rescaled so that ``forward``'s
        # division by this model's temperature leaves the fallback's own calibration
        spare = self.fallback(raw) * self.temperature
        return torch.where(known[:, None], logits, spare.to(logits.dtype))

    def from_embedding(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.head(embedding)

    def embed_width(self) -> int:
        return self.reducer.out_width

    def embed_and_logits(self, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.embed(inputs)
        return embedding, self.head(embedding) / self.temperature

    def forward_backbone_inputs(self, backbone_inputs: dict) -> torch.Tensor:
        """Calibrated logits straight from the backbone's preprocessing output (ONNX export traces this)."""
        return self.logits_of_states(self.branch._live(backbone_inputs), None) / self.temperature

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
        modes = None
        if self.normalizer is not None:
            modes = list(cfg.normalize)
            if "corpus" in modes and len({getattr(e, "corpus", None) for e in train}) < 2:
                # one training corpus: its statistics are the global ones, so "corpus" would only repeat "none"
                modes = [m for m in modes if m != "corpus"] or ["none"]
        fit, choices = fit_head(self, [self.branch], train, valid, cfg, self.embed, sets, modes=modes,
                                use_mode=self.normalize_with, snapshot=self._snapshot_statistics)
        with torch.no_grad():
            self.head.linear.weight.copy_(torch.from_numpy(fit.coef))
            self.head.linear.bias.copy_(torch.from_numpy(fit.intercept))
            if self.fallback is not None and fit.fallback is not None:
                spare, stats = fit.fallback, self._snapshots["none"]
                self.fallback.linear.weight.copy_(torch.from_numpy(spare.coef))
                self.fallback.linear.bias.copy_(torch.from_numpy(spare.intercept))
                self.fallback.reducer.standardize.load_state_dict(stats)
                self.fallback.temperature.fill_(spare.temperature or 1.0)
                choices["fallback"] = {"normalize": "none", "C": spare.C, "temperature": round(spare.temperature or 1.0, 6),
                                       **({"layers": cfg.layer_sets[spare.columns]} if cfg.layer_sets else {})}
        return choices

    def _snapshot_statistics(self, mode: str) -> None:
        """Keep the layer standardisation of ``mode`` as it is now (the fallback head reads unnormalised states)."""
        if not hasattr(self, "_snapshots"):
            self._snapshots = {}
        self._snapshots[mode] = {k: v.clone() for k, v in self.reducer.standardize.state_dict().items()}

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
