"""Late fusion (DeBERTa + wav2vec2 paper): an MLP over the frozen outputs of already trained models.

The paper fine-tunes a text recognizer (DeBERTa-v3-small) and an audio recognizer (wav2vec2-base-
960h) separately, freezes both, and trains "an MLP with 4 layers" on the concatenation of each
one's features and classification. Here a member is any trained emovox model: its ``embed`` (the
vector its classifier layer reads) and its calibrated logits are concatenated over members,
z-scored with training-part statistics, and fed to ``hidden`` (default 256, 128, 64: three hidden
layers + the output layer = the paper's four; the text gives no sizes, activation or dropout, so
ReLU and dropout 0.2 are emovox's choices). Only the MLP trains. The members' outputs never change,
so ``prepare`` computes them once per run (members' own frozen features come from the feature
cache) and training takes seconds.

Where members come from, and why it matters: a member trained on all of a corpus has seen every
cross-validation fold's test utterances, and a late fusion scored on them would inherit that
leak. So ``members`` are one of

- **cv run directories** (``emovox cv`` of each member's recipe on the same corpus and protocol):
  fold k of the late fusion uses the model fold k of each member run trained (``fold_k/model.json``,
  ``emovox.models.fold_model``), and before training it checks, from the member run's own
  ``splits/``, that no utterance of fold k's test part was in that member's training or
  validation part. Members are then exactly as blind to the test part as the fusion. Such a late
  fusion exists fold by fold only: it cannot be saved as one recognizer.
- **recognizer directories** (``emovox train``): for ``emovox train`` (the final recognizer, no
  test part), and for ``emovox cv`` only if they were trained on another corpus (a member whose
  recorded training corpus is this one is refused: it saw the test folds).

A saved late-fusion recognizer holds its members, each a complete recognizer directory under
``members/<i>/`` (every file covered by the outer ``emovox.json`` checksums and by the member's
own), and its MLP in ``weights.safetensors``: it is self-contained, and predicts by running each
member on the raw inputs.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, field_validator
from torch import nn

from emovox.errors import ConfigError, EmovoxError, RecognizerError
from emovox.models.base import WEIGHTS_FILE, KindConfig, ModelKind, check_tensors, read_weights
from emovox.models.closed_form import LogisticFields
from emovox.models.heads import Standardize

RECOGNIZER, RUN = "recognizer", "run"
MEMBERS_DIR = "members"


class LateFusionConfig(LogisticFields, KindConfig):
    kind: Literal["late-fusion"] = "late-fusion"
    members: list[str] = Field(
        description="Trained models to combine: cv run directories (emovox cv: fold k uses each run's fold-k model) "
        "or recognizer directories (emovox train; in cv only when trained on another corpus)."
    )
    inputs: list[Literal["embedding", "logits"]] = Field(
        ["embedding", "logits"], min_length=1, description="What each member contributes (the paper: both)."
    )
    hidden: list[int] = Field(
        [256, 128, 64], min_length=1, description="Hidden layer widths; with the output layer, len(hidden) + 1 layers."
    )
    activation: Literal["relu", "gelu"] = "relu"
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    standardize: bool = Field(True, description="z-score the concatenated member outputs with training-part statistics.")
    head: Literal["mlp", "logistic"] = Field(
        "mlp",
        description="mlp: the paper's MLP trained by the trainer; logistic: no hidden layers, one multinomial logistic "
        "regression over the standardised member outputs fitted in closed form (scikit-learn), C chosen on held-out "
        "speakers (`hidden`, `activation` and `dropout` are then unused).",
    )

    @field_validator("members")
    @classmethod
    def _some(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("a late fusion needs at least one member")
        if len(set(v)) != len(v):
            raise ValueError("a member is listed twice")
        return v

    @field_validator("hidden")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(h <= 0 for h in v):
            raise ValueError("hidden widths must be positive")
        return v


@dataclasses.dataclass
class Member:
    """One member: where it is, what it is, and what the MLP gets from it."""

    source: Path
    type: str  # RECOGNIZER or RUN
    fields: set[str]
    width: int  # its embedding width
    num_labels: int
    max_seconds: float
    describe: dict
    model: ModelKind | None = None  # a recognizer member's model (run members have one per fold)
    info: dict = dataclasses.field(default_factory=dict)  # a recognizer's emovox.json
    context: Any = None  # the ContextFormat of its context text (None: it reads none)

    @property
    def folds(self) -> list[str]:
        """A run member's finished folds, as ``fold_k`` names in fold order."""
        names = [p.name for p in self.source.glob("fold_*") if (p / "done.json").is_file()]
        return sorted(names, key=lambda n: int(n.split("_")[1]) if n.split("_")[1].isdigit() else 0)


#: Members already loaded in this process (frozen and only ever evaluated, so folds and grid points share them).
_LOADED: dict[tuple, Member] = {}


def load_member(path: str | Path, *, backbones=None) -> Member:
    """A member from a recognizer directory or a cv run directory (``ConfigError`` naming it otherwise)."""
    source = Path(path).expanduser().resolve()
    if (source / "emovox.json").is_file():
        key = (str(source), (source / "emovox.json").stat().st_mtime_ns)
        if key not in _LOADED:
            from emovox.models import directory

            model, labels, info = directory.load(source)
            _LOADED[key] = _member(source, RECOGNIZER, _frozen(model), info=info)
        return _LOADED[key]
    if (source / "run.json").is_file():
        from emovox.models.fold_model import load_fold_model

        probe = Member(source, RUN, set(), 0, 0, 0.0, {})
        if not probe.folds:
            raise ConfigError(f"late-fusion member {path}: a cv run without a finished fold; finish it with `emovox cv`")
        key = (str(source), probe.folds[0], (source / probe.folds[0] / "done.json").stat().st_mtime_ns)
        if key not in _LOADED:
            model = load_fold_model(source / probe.folds[0], backbones=backbones)
            if isinstance(model, LateFusionModel):
                raise ConfigError(f"late-fusion member {path}: a late fusion cannot be a member of another")
            _LOADED[key] = _member(source, RUN, model)
            _LOADED[key].model = None  # run members use each fold's own model
        return _LOADED[key]
    raise ConfigError(
        f"late-fusion member {path}: neither a recognizer directory (emovox.json, from `emovox train`) "
        "nor a cv run directory (run.json, from `emovox cv`)"
    )


def _member(source: Path, type_: str, model: ModelKind, *, info: dict | None = None) -> Member:
    if isinstance(model, LateFusionModel):
        raise ConfigError(f"late-fusion member {source}: a late fusion cannot be a member of another")
    try:
        width = int(model.embed_width())
    except NotImplementedError:
        raise ConfigError(f"late-fusion member {source}: its model kind {model.kind!r} exposes no embedding") from None
    context = model.context_format() if "context_text" in model.fields() else None
    return Member(source, type_, set(model.fields()), width, len(model.labels), float(model.max_seconds()),
                  model.describe(), model, info or {}, context)


def _frozen(model: ModelKind) -> ModelKind:
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def _split_ids(run: Path, fold: str, part: str) -> set[str]:
    path = run / "splits" / fold / f"{part}.jsonl"
    if not path.is_file():
        raise EmovoxError(f"{path}: missing; cannot prove this member never trained on the fold's test utterances")
    return {json.loads(line)["id"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}


class LateFusionModel(ModelKind):
    kind = "late-fusion"
    Config = LateFusionConfig

    def __init__(self, config: LateFusionConfig, labels: Sequence[str], members: list[Member]):
        super().__init__(config, labels)
        self.members = members  # a plain list: members are not trained, and run members have no single module
        self.live = nn.ModuleDict({str(i): m.model for i, m in enumerate(members) if m.model is not None})
        self.parts: list[str | None] = ["model" if m.type == RECOGNIZER else None for m in members]  # set by use_fold
        width = sum(m.width * ("embedding" in config.inputs) + m.num_labels * ("logits" in config.inputs) for m in members)
        self.standardize = Standardize(1, width, enabled=config.standardize)
        act = {"relu": nn.ReLU, "gelu": nn.GELU}[config.activation]
        layers: list[nn.Module] = []
        for h in config.hidden if config.head == "mlp" else []:
            layers += [nn.Linear(width, h), act(), nn.Dropout(config.dropout)]
            width = h
        self.mlp = nn.Sequential(*layers)
        self.out = nn.Linear(width, len(labels))
        self._embed_width = width

    @classmethod
    def build(cls, config: LateFusionConfig, labels, *, seed: int = 0, backbones=None):
        members = [load_member(m, backbones=backbones) for m in config.members]
        torch.manual_seed(seed)
        model = cls(config, labels, members)
        model.seed = seed
        return model

    def train(self, mode: bool = True):
        super().train(mode)
        for m in self.live.values():
            m.eval()  # members are frozen: no dropout, ever
        return self

    # -- which member models a fold may use ------------------------------------------------------
    def use_fold(self, fold, corpus) -> None:
        for i, m in enumerate(self.members):
            if m.type == RECOGNIZER:
                if fold is not None:
                    _refuse_same_corpus(m, corpus)
                self.parts[i] = "model"
                continue
            if fold is None:
                raise ConfigError(
                    f"late-fusion member {m.source} is a cv run: its models exist fold by fold, for `emovox cv`. "
                    "For a final recognizer (`emovox train`) give the members' recognizer directories (`emovox train` of "
                    "each member's recipe)"
                )
            name = f"fold_{fold.index}"
            if name not in m.folds:
                raise EmovoxError(f"late-fusion member {m.source} has no finished {name}; run it over every fold first")
            seen = _split_ids(m.source, name, "train") | _split_ids(m.source, name, "valid")
            leaked = seen & set(fold.test)
            if leaked:
                raise EmovoxError(
                    f"late-fusion member {m.source}: its {name} model trained on {len(leaked)} of this fold's test "
                    f"utterances (e.g. {sorted(leaked)[:3]}); members must be cv runs of the same corpus and protocol"
                )
            self.parts[i] = name

    # -- data ------------------------------------------------------------------------------------
    def fields(self) -> set[str]:
        return set().union(*(m.fields for m in self.members))

    def max_seconds(self) -> float:
        return max(m.max_seconds for m in self.members)

    def context_format(self):
        from emovox.data.examples import common_context_format

        return common_context_format((m.context for m in self.members), where="late fusion")

    def slot(self, i: int, part: str) -> str:
        """Where member ``i``'s outputs (of its model ``part``: ``model`` or ``fold_k``) live in ``Example.cached``."""
        return f"late-fusion/{self.members[i].source}/{part}/{'+'.join(self.config.inputs)}"

    def prepare(self, examples, *, cache, progress: bool = True):
        from emovox.models.branch import BackboneStore
        from emovox.models.fold_model import load_fold_model

        store = BackboneStore()
        for i, m in enumerate(self.members):
            for part in ["model"] if m.type == RECOGNIZER else m.folds:
                slot = self.slot(i, part)
                if all(slot in e.cached for e in examples):
                    continue
                model = m.model if m.type == RECOGNIZER else load_fold_model(m.source / part, backbones=store)
                rows = member_outputs(model, examples, self.config.inputs, cache=cache, progress=progress,
                                      description=f"member {i + 1} ({m.source.name}{'' if part == 'model' else ', ' + part})")
                examples = [e.with_cached(slot, r) for e, r in zip(examples, rows, strict=True)]
        return examples

    @torch.no_grad()
    def fit_statistics(self, train) -> None:
        if self.standardize.enabled and train:
            self.standardize.fit(self.collate(list(train))["features"].unsqueeze(1))

    def collate(self, batch, *, augment: bool = False) -> dict:
        if all(p is not None for p in self.parts):
            slots = [self.slot(i, p) for i, p in enumerate(self.parts)]
            if all(s in e.cached for e in batch for s in slots):
                return {"features": torch.stack([torch.cat([e.cached[s] for s in slots]) for e in batch])}
        missing = [str(m.source) for m in self.members if m.model is None]
        if missing:
            raise ConfigError(
                f"late-fusion members {missing} are cv runs, whose models exist fold by fold only: this late fusion "
                "runs inside `emovox cv`; for a recognizer, give the members' recognizer directories"
            )
        return {str(i): m.model.collate(batch) for i, m in enumerate(self.members)}

    # -- computation -----------------------------------------------------------------------------
    def features(self, inputs: dict) -> torch.Tensor:
        """``[B, D]``: every member's outputs, concatenated (precomputed, or run live on raw inputs)."""
        if "features" in inputs:
            return inputs["features"]
        with torch.no_grad():
            return torch.cat(
                [member_row(m.model, inputs[str(i)], self.config.inputs) for i, m in enumerate(self.members)], dim=-1
            )

    def embed(self, inputs: dict) -> torch.Tensor:
        return self.mlp(self.standardize(self.features(inputs).unsqueeze(1))[:, 0])

    def embed_width(self) -> int:
        return self._embed_width

    def fit_direct(self, train, valid) -> dict | None:
        """``head: logistic``: scikit-learn on the standardised member outputs, written into ``out``."""
        if self.config.head != "logistic":
            return None
        from emovox.models.closed_form import fit_head

        fit, choices = fit_head(self, [], train, valid, self.config, self.embed, None)
        with torch.no_grad():
            self.out.weight.copy_(torch.from_numpy(fit.coef))
            self.out.bias.copy_(torch.from_numpy(fit.intercept))
        return choices

    def logits(self, inputs: dict) -> torch.Tensor:
        return self.out(self.embed(inputs))

    def from_embedding(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.out(embedding)

    def embed_and_logits(self, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.embed(inputs)
        return embedding, self.out(embedding) / self.temperature

    def compute_size(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # -- files -----------------------------------------------------------------------------------
    def own_state(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if not k.startswith("live.")}

    def save(self, directory: Path) -> None:
        from emovox.atomic import atomic_save_tensors

        directory = Path(directory)
        for i, m in enumerate(self.members):
            if m.type != RECOGNIZER:
                raise ConfigError(f"late-fusion member {m.source} is a cv run: a recognizer needs recognizer directories")
            target = directory / MEMBERS_DIR / str(i)
            if target.resolve() == m.source:
                continue  # saved again in place
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(m.source, target, ignore=shutil.ignore_patterns("_training", ".*"))
        atomic_save_tensors(directory / WEIGHTS_FILE, {k: v.contiguous() for k, v in self.own_state().items()},
                            metadata={"format": "pt"})

    def saved_config(self) -> LateFusionConfig:
        return self.config.model_copy(update={"members": [f"{MEMBERS_DIR}/{i}" for i in range(len(self.members))]})

    @classmethod
    def load(cls, directory: Path, config: LateFusionConfig, labels):
        directory = Path(directory)
        members = []
        for rel in config.members:
            if Path(rel).is_absolute() or ".." in Path(rel).parts:
                raise RecognizerError(f"{directory / 'emovox.json'}: member {rel!r} must be a folder inside the recognizer")
            path = directory / rel
            if not (path / "emovox.json").is_file():
                raise RecognizerError(f"{path}: missing; the recognizer directory is incomplete (copy it again)")
            members.append(load_member(path))
        model = cls(config, labels, members)
        path = directory / WEIGHTS_FILE
        tensors = read_weights(path)
        check_tensors(path, tensors, model.own_state(), f"a late fusion of {len(members)} members for {len(labels)} labels")
        model.load_state_dict(tensors, strict=False)
        return model

    def describe(self) -> dict:
        return {
            "kind": self.kind,
            "members": [{"source": str(m.source), "type": m.type, **m.describe} for m in self.members],
            "inputs": list(self.config.inputs),
            "hidden": list(self.config.hidden),
        }


def _refuse_same_corpus(member: Member, corpus) -> None:
    """A recognizer trained on this corpus has seen every test fold: refuse it in cross-validation."""
    training = member.info.get("training") or {}
    same_data = training.get("corpus_fingerprint") == corpus.fingerprint()
    trained = training.get("corpus") or []
    trained_on = {_spec_path(str(c)) for c in (trained if isinstance(trained, list) else [trained])} - {""}
    evaluated = {_spec_path(s.strip()) for s in str(corpus.spec or "").split(" + ")} - {""}  # a pool's spec joins its specs
    same_place = bool(trained_on & evaluated)
    if same_data or same_place:
        raise EmovoxError(
            f"late-fusion member {member.source} was trained on this corpus ({training.get('corpus')}), so it has seen "
            "the test utterances of every fold and the scores would leak them. For cross-validation give the members' "
            "cv run directories (`emovox cv` of each member's recipe): each fold then uses the member model that fold trained"
        )


def _spec_path(spec: str) -> str:
    fmt, _, rest = spec.partition(":")
    return f"{fmt}:{rest.partition('?')[0].rstrip('/')}" if rest else ""


def member_row(model: ModelKind, inputs: dict, parts: Sequence[str]) -> torch.Tensor:
    """``[B, D]``: what one member contributes (its embedding and/or its calibrated logits)."""
    embedding, logits = model.embed_and_logits(inputs)
    return torch.cat([embedding if p == "embedding" else logits for p in parts], dim=-1).float()


@torch.no_grad()
def member_outputs(model: ModelKind, examples: list, parts: Sequence[str], *, cache, progress: bool = True,
                   description: str = "member", batch_size: int = 32) -> list[torch.Tensor]:
    """One row per example: ``member_row`` of the member over it, computed once (its own frozen features
    from the feature cache). The member sees only its own precomputed parts, never another member's."""
    from tqdm.auto import tqdm

    from emovox.data.batching import length_grouped_batches

    own = model.prepare([dataclasses.replace(e, cached={}) for e in examples], cache=cache, progress=progress)
    model.eval()
    rows: list[Any] = [None] * len(own)
    batches = length_grouped_batches([e.length for e in own], batch_size, shuffle=False)
    with torch.inference_mode(), tqdm(total=len(own), desc=f"late fusion: {description}", unit="utt",
                                      disable=not progress, leave=False) as bar:
        for b in batches:
            out = member_row(model, model.collate([own[i] for i in b]), parts)
            for j, i in enumerate(b):
                rows[i] = out[j].clone()
            bar.update(len(b))
    return rows
