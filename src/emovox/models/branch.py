"""A branch: one backbone reading one input, pooled per layer. The unit every model kind is built from.

A branch is (modality, utterance | context | pair, backbone, how much of it trains). It turns a
batch of examples into ``[B, L, W]``: the selected hidden states of its backbone, each pooled
over time. What happens before that depends on its ``mode``:

- ``frozen``: the backbone never changes, so its per-layer pooled states are computed once per
  run and cached on disk (``models.extraction``, ``emovox.cache``); training reads the cache and never runs the backbone.
  (With learned attention pooling the frames are needed, so the frozen backbone runs each step.)
- ``finetune``: everything trains, the backbone runs on every batch (the papers' recipe);
  ``finetune-frozen-cnn`` keeps a wav2vec2-family CNN front end frozen.
- ``finetune-top``: only the top ``top_layers`` Whisper encoder layers (and its final norm) train.
  The frozen bottom's output (the frames entering the first trained layer, and the bottom's own
  pooled states) is computed once, cached on disk like features, and the top layers run live
  (``backbones.whisper.top_states``: Whisper's internals stay with Whisper).

A backbone without weights (openSMILE functionals) gives one vector per clip, one "layer" of one
"frame": only ``frozen`` applies, and the rest is refused with a ``ConfigError`` (``_check_fixed_features``).

What a frozen branch precomputes, and under which cache identity, is ``models.extraction``'s (``precompute``).

Given raw inputs (no cache, as in a deployed recognizer) every mode runs its backbone itself, so
the trained module is the deployable one. A context branch reads the previous utterance; the
first utterance of a dialogue has none, and the branch then outputs a learned "no context" vector
(``no_input``, zeros at the start): the utterance is kept, and the model learns what "this is the
first turn" means. A ``pair`` branch is the cheap alternative the IEMOCAP paper mentions: one text
backbone reading "previous utterance + utterance" as a tokenizer pair.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from emovox.errors import ConfigError, EmovoxWarning
from emovox.models.heads import STD_FLOOR, Combine
from emovox.models.pooling import AttentionPooling, pool, pooled_width

Mode = Literal["frozen", "finetune", "finetune-frozen-cnn", "finetune-top"]
Pooling = Literal["auto", "mean", "sum", "max", "stats", "attention"]


class BranchConfig(BaseModel):
    """One backbone reading one input; these fields are also the flat fields of a classifier."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    name: str | None = Field(None, description="Branch name (default: what it reads, e.g. audio, text, context_text).")
    backbone: str = Field(description="Registry name (e.g. whisper-base), hub id, or local model directory.")
    tiny: bool = Field(False, description="Build a tiny randomly initialised model of the same class (tests, dry runs).")
    input: Literal["utterance", "context", "pair"] = Field(
        "utterance",
        description="utterance: the utterance itself; context: the previous utterance of its dialogue (a learned "
        "vector stands for 'no previous utterance'); pair: text backbones read (previous, current) as a tokenizer pair.",
    )
    mode: Mode = Field(
        "finetune",
        description="frozen: cached features, only the head trains; finetune: everything trains (paper); "
        "finetune-frozen-cnn: wav2vec2-family CNN feature encoder stays frozen; "
        "finetune-top: only the top `top_layers` encoder layers train (Whisper), the frozen bottom runs once.",
    )
    top_layers: int = Field(2, gt=0, description="finetune-top: how many of the top encoder layers train.")
    pooling: Pooling = Field(
        "auto",
        description="auto = the family's paper pooling (mean; last token for decoder-only LMs; BART's EOS); "
        "mean, sum, max, stats (mean + standard deviation), attention (learned).",
    )
    layers: Literal["all", "last"] | list[int] = Field(
        "last", description="Hidden states the head reads: all, last, or a list of indices (0 = embeddings)."
    )
    combine: Combine = Field(
        "weighted", description="Several layers become one vector by a learned weighted sum or by concatenation."
    )
    standardize: bool | None = Field(
        None,
        description="z-score pooled states with training-part statistics; default: when the states are precomputed "
        "(frozen, finetune-top).",
    )
    std_floor: float = Field(
        STD_FLOOR, ge=0, description="Standardisation: a std counts as at least this fraction of its layer's median std."
    )
    max_tokens: int = Field(100, gt=0)
    max_seconds: float = Field(10.0, gt=0)
    context_turns: int = Field(
        1, ge=1, description="context/pair text: how many previous turns of the dialogue it reads (paper: 1)."
    )
    context_speakers: bool = Field(
        False, description="context/pair text: each previous turn as 'speaker: text' (MELD's speaker names)."
    )

    def context_format(self):
        """The ``ContextFormat`` this branch's context text is built with (None: it reads no context text)."""
        from emovox.data.examples import ContextFormat

        if self.input == "utterance":
            return None
        return ContextFormat(self.context_turns, self.context_speakers)

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, data: Any) -> Any:
        """emovox 0.1 spelled layer selection ``layer_weights: true|false`` and pairs ``context: true``."""
        if isinstance(data, dict):
            data = dict(data)
            if "layer_weights" in data:
                if data.pop("layer_weights"):
                    data.setdefault("layers", "all")
                    data.setdefault("combine", "weighted")
                else:
                    data.setdefault("layers", "last")
            if data.pop("context", False):
                data.setdefault("input", "pair")
        return data


def default_branch_name(cfg: BranchConfig, modality: str) -> str:
    return cfg.name or {"utterance": modality, "context": f"context_{modality}", "pair": "text_pair"}[cfg.input]


class BackboneStore:
    """Backbones for branches: a frozen one is loaded once and shared by every fold of a run
    (its weights never change); a trainable one is loaded fresh for every model."""

    def __init__(self) -> None:
        self._frozen: dict[tuple, Any] = {}

    def get(self, cfg: BranchConfig, seed: int):
        from emovox.backbones.loader import load_backbone

        key = (cfg.backbone, cfg.tiny, cfg.max_tokens, cfg.max_seconds, seed if cfg.tiny else None)
        if cfg.mode == "frozen" and key in self._frozen:
            return self._frozen[key]
        backbone = load_backbone(cfg.backbone, tiny=cfg.tiny, max_tokens=cfg.max_tokens, max_seconds=cfg.max_seconds, seed=seed)
        if cfg.mode == "frozen":
            self._frozen[key] = backbone
        return backbone


class Branch(nn.Module):
    """A backbone + per-layer pooling over one input field; ``forward`` gives ``[B, L, W]``."""

    def __init__(self, name: str, cfg: BranchConfig, backbone):
        super().__init__()
        self.name = name
        self.cfg = cfg
        self.backbone = backbone
        self.modality = backbone.modality
        if cfg.input == "pair" and self.modality != "text":
            raise ConfigError(f"branch {name}: input 'pair' (previous + current utterance as one text) needs a text backbone")
        if (cfg.context_turns != 1 or cfg.context_speakers) and (cfg.input == "utterance" or self.modality != "text"):
            raise ConfigError(
                f"branch {name}: context_turns / context_speakers shape a context text; this branch reads "
                f"{'the utterance' if cfg.input == 'utterance' else 'audio'} "
                "(use them on a text branch with input context or pair)"
            )
        if not backbone.learned:
            _check_fixed_features(name, cfg, backbone)
        self.pooling = backbone.spec.pooling if cfg.pooling == "auto" else cfg.pooling
        self.total_layers = backbone.num_layers
        self.layer_index = _layer_index(cfg.layers, self.total_layers, name)
        self.mode = cfg.mode
        self.cut: int | None = None
        if cfg.mode == "frozen":
            backbone.freeze()
        elif cfg.mode == "finetune-frozen-cnn":
            backbone.freeze_feature_encoder()
        elif cfg.mode == "finetune-top":
            self.cut = _unfreeze_top(backbone, cfg.top_layers, self.pooling)
        self.attention = AttentionPooling(backbone.hidden_size) if self.pooling == "attention" else None
        self.width = backbone.hidden_size if self.attention is not None else pooled_width(self.pooling, backbone.hidden_size)
        self.num_layers = len(self.layer_index)
        self.no_input = nn.Parameter(torch.zeros(self.num_layers, self.width)) if cfg.input == "context" else None

    # -- what it reads ---------------------------------------------------------------------------
    @property
    def field(self) -> str:
        return ("context_" if self.cfg.input == "context" else "") + self.modality

    def fields(self) -> set[str]:
        return {"text", "context_text"} if self.cfg.input == "pair" else {self.field}

    def context_format(self):
        """How the context text this branch reads is built (None when it reads none)."""
        return self.cfg.context_format() if "context_text" in self.fields() else None

    def item(self, example) -> Any:
        """The raw input this branch reads from ``example`` (None: no previous utterance)."""
        if self.cfg.input == "pair":
            return (example.context_text, example.text)
        value = getattr(example, self.field)
        if self.field == "context_text" and self.cfg.context_turns > 1 and value is not None:
            from emovox.data.examples import EndText

            return EndText(value)  # several turns: too long, it loses its oldest words, not the newest
        return value

    @property
    def cache_mode(self) -> str | None:
        """What ``precompute`` stores: per-layer pooled states, a frozen bottom's frames, or nothing."""
        if self.mode == "frozen" and self.attention is None:
            return "pooled"
        if self.mode == "finetune-top":
            return "bottom"
        return None

    @property
    def top(self) -> int:
        """The highest hidden state this branch reads: frozen extraction stops there."""
        return max(self.layer_index)

    @property
    def slot(self) -> str:
        """Where this branch's precomputed prefix lives in ``Example.cached``: models (or grid points of
        a search) whose branches precompute the same thing share it; different things never collide."""
        depth = self.cut if self.cache_mode == "bottom" else self.top
        return f"{self.name}/{self.cache_mode}/{self.pooling}/{depth}"

    def augments(self, augment) -> bool:
        """Whether this branch sees augmented waveforms: its own utterance's audio, augmentation on."""
        return augment is not None and augment.active and self.modality == "audio" and self.cfg.input == "utterance"

    @property
    def standardize(self) -> bool:
        return self.cache_mode is not None if self.cfg.standardize is None else bool(self.cfg.standardize)

    # -- batches ---------------------------------------------------------------------------------
    def collate(self, batch: Sequence, *, augment=None, epoch: int = 0, seed: int = 0) -> dict:
        """Inputs for the rows that have one (``present``); cached prefixes when every row has them.

        ``augment`` (training batches only): cached rows read one of their views, the original or an
        augmented copy, chosen per (seed, epoch, utterance); live audio is augmented on the fly.
        """
        from emovox.data.augment import augment_audio, rng_for

        augmenting = self.augments(augment)
        present = [self.item(e) is not None for e in batch]
        if self.no_input is None and not all(present):
            missing = next(e.id for e, p in zip(batch, present, strict=True) if not p)
            raise ConfigError(f"branch {self.name}: example {missing} has no {self.field}")
        rows = [e for e, p in zip(batch, present, strict=True) if p]
        out: dict[str, Any] = {"present": torch.tensor(present, dtype=torch.bool)}
        if not rows:
            return out
        cached = [e.cached.get(self.slot) for e in rows] if self.cache_mode else []
        if cached and all(c is not None for c in cached):
            if augmenting:
                cached = [_view(c, rng_for(seed, e.id, epoch)) for c, e in zip(cached, rows, strict=True)]
            if self.cache_mode == "pooled":
                out["pooled"] = torch.stack([c["pooled"] for c in cached])
            else:
                out.update(_frames_collate(cached))
            return out
        items = [self.item(e) for e in rows]
        if augmenting:
            items = [augment_audio(x, rng_for(seed, e.id, epoch), augment) for x, e in zip(items, rows, strict=True)]
        out["inputs"] = self.backbone.preprocess(items)
        if augmenting and augment.specaugment and "input_features" in out["inputs"]:
            from emovox.data.augment import spec_augment

            lengths = out["inputs"]["attention_mask"].sum(-1)
            out["inputs"]["input_features"] = spec_augment(
                out["inputs"]["input_features"], rng_for(seed, rows[0].id, 7_000_000 + epoch), lengths=lengths
            )
        return out

    def forward(self, inputs: dict) -> torch.Tensor:
        present = inputs["present"]
        if "pooled" in inputs:
            states = inputs["pooled"][:, self.layer_index]
        elif "frames" in inputs:
            states = self._top(inputs)[:, self.layer_index]
        elif "inputs" in inputs:
            states = self._live(inputs["inputs"])
        else:
            states = None
        if self.no_input is None:
            return states
        full = self.no_input.unsqueeze(0).expand(len(present), -1, -1)
        if states is None:
            return full
        if bool(present.all()):
            return states
        full = full.clone()
        full[present] = states.to(full.dtype)
        return full

    def _live(self, inputs: dict) -> torch.Tensor:
        """Run the backbone on preprocessed inputs: ``[P, L_selected, W]``. A frozen branch stops the backbone
        at the highest state it reads, as its extraction does (``extraction.pool_all_layers``): the layers above
        change nothing it returns, and a recognizer reading Whisper-base's states 2-5 runs 5 of its 6 layers."""
        last_only = self.layer_index == [self.total_layers - 1]
        frozen = self.mode == "frozen"
        stop = self.backbone.stop_after(self.top) if frozen and not last_only else contextlib.nullcontext()
        with torch.no_grad() if frozen else contextlib.nullcontext(), stop:
            enc = self.backbone(inputs, all_layers=not last_only)
        hidden = enc.hidden
        if self.attention is not None:
            pooled = self.attention(hidden, enc.mask)
        else:
            pooled = pool(hidden, enc.mask, self.pooling, eos_mask=enc.eos_mask)
        if last_only:
            return pooled.unsqueeze(1)
        return pooled.transpose(0, 1)[:, self.layer_index]

    def _top(self, inputs: dict) -> torch.Tensor:
        """Top layers over cached bottom frames: every hidden state pooled, ``[P, L, W]``."""
        from emovox.backbones.whisper import top_states

        mask = inputs["mask"]
        states = top_states(self.backbone, inputs["frames"], mask, self.cut)
        live = torch.stack([pool(s, mask, self.pooling) for s in states], dim=1)
        return torch.cat([inputs["lower"], live], dim=1)

    def describe(self) -> dict:
        spec = self.backbone.spec
        return {
            "name": self.name,
            "backbone": spec.name,
            "family": spec.family,
            "modality": self.modality,
            "input": self.cfg.input,
            "mode": self.mode,
            "pooling": self.pooling,
            "layers": self.layer_index,
            **self.backbone.about(),
        }


def _view(row: dict, rng) -> dict:
    """One view of a cached row: the original (index 0) or one of its augmented copies."""
    copies = row.get("variants") or []
    j = int(rng.integers(0, len(copies) + 1))
    return row if j == 0 else copies[j - 1]


def _layer_index(layers, total: int, name: str) -> list[int]:
    if layers == "all":
        return list(range(total))
    if layers == "last":
        return [total - 1]
    index = [int(i) if int(i) >= 0 else total + int(i) for i in layers]
    bad = [i for i in layers if not -total <= int(i) < total]
    if bad or not index or len(set(index)) != len(index):
        raise ConfigError(
            f"branch {name}: layers {list(layers)} must be distinct indices of the backbone's {total} hidden states "
            f"(0 = embeddings, {total - 1} = last)"
        )
    return index


def _check_fixed_features(name: str, cfg: BranchConfig, backbone) -> None:
    """A backbone without weights (openSMILE functionals) is one vector per clip that nothing can train:
    only mode frozen, one "layer" (index 0) and no pooling to choose."""
    what = f"branch {name}: '{backbone.spec.name}' computes fixed {backbone.spec.family} features, one vector per clip"
    if cfg.mode != "frozen":
        raise ConfigError(f"{what}, with no weights to train: use mode: frozen (head linear, mlp or logistic), not {cfg.mode}")
    if cfg.pooling not in ("auto", "mean"):
        raise ConfigError(f"{what}: there are no frames to pool; use pooling: auto (not {cfg.pooling})")
    if cfg.layers not in ("all", "last") and [int(i) for i in cfg.layers] not in ([0], [-1]):
        raise ConfigError(f"{what}: it has one 'layer' (index 0), not {list(cfg.layers)}; use layers: all (and no layer_sets)")
    if cfg.std_floor > 0 and "std_floor" not in cfg.model_fields_set:
        warnings.warn(
            f"{what}: the default std_floor ({cfg.std_floor:g} x the median std) is made for a neural layer, whose "
            "dimensions share one scale; functionals mix units (Hz, dB, ratios), and the floor would shrink the "
            "small-scale ones (eGeMAPS: 34 of 88 on EmoDB, spectral slopes and jitter up to 60-fold). "
            "Set std_floor: 0 for plain z-scores, as the field's baseline (and emovox's) standardises them",
            EmovoxWarning,
            stacklevel=4,
        )


def _unfreeze_top(backbone, top_layers: int, pooling: str) -> int:
    """``finetune-top``: Whisper encoders only (``backbones.whisper`` owns their layers), pooled without attention."""
    if backbone.spec.family != "whisper":
        raise ConfigError(
            f"mode finetune-top supports Whisper encoders, not '{backbone.spec.family}'; "
            "use mode finetune or finetune-frozen-cnn for this backbone"
        )
    if pooling == "attention":
        raise ConfigError("mode finetune-top pools its cached states without attention: set pooling to auto, mean or stats")
    from emovox.backbones.whisper import unfreeze_top

    return unfreeze_top(backbone, top_layers)


def _frames_collate(cached: list[dict]) -> dict:
    """Zero-pad cached bottom frames ``[T_i, H]`` to the batch's longest; stack their lower states."""
    longest = max(c["frames"].shape[0] for c in cached)
    hidden = cached[0]["frames"].shape[1]
    frames = torch.zeros(len(cached), longest, hidden)
    mask = torch.zeros(len(cached), longest, dtype=torch.bool)
    for i, c in enumerate(cached):
        n = c["frames"].shape[0]
        frames[i, :n] = c["frames"]
        mask[i, :n] = True
    return {"frames": frames, "mask": mask, "lower": torch.stack([c["lower"] for c in cached])}


def backbone_prefixes(model: nn.Module) -> list[str]:
    """State-dict prefixes of every branch backbone in ``model`` (saved as HF directories, not in the weights file)."""
    return [f"{name}.backbone." if name else "backbone." for name, m in model.named_modules() if isinstance(m, Branch)]


def non_backbone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Everything of ``model`` that is not inside a branch's backbone."""
    prefixes = tuple(backbone_prefixes(model))
    return {k: v for k, v in model.state_dict().items() if not k.startswith(prefixes)}
