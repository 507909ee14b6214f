"""``head: logistic`` for any kind whose head can read its inputs linearly (classifier, fusion, late fusion).

The papers' heads are linear in what they read: the classifier's dropout + linear layer, and the
fusion classifier's per-branch FC-256 projections, concatenated, then dropout + linear, with no
activation in between (IEMOCAP paper, Figure 1); late fusion's MLP, without its hidden layers, is
one linear layer over the standardised member outputs. Trained by Adam with early stopping, such a head
is a noisy fit of a convex model; over frozen, cached branches scikit-learn fits the same function
class exactly (``emovox.models.logistic``), choosing C and layers on held-out speakers only. This
module does the part the kinds share: which rows the fit sees (every cached augmented view of
the training clips), the statistics it standardises with, the candidate column sets, and the
record of what was chosen. Each kind then writes the coefficients into its own layers, so the
saved recognizer is the kind's ordinary module: safetensors, predict, serve and ONNX unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from pydantic import BaseModel, Field, model_validator

from emovox.errors import ConfigError
from emovox.models.logistic import INNER_GROUPS, Select

if TYPE_CHECKING:
    from emovox.models.base import ModelKind
    from emovox.models.branch import Branch
    from emovox.models.logistic import LogisticFit


#: ``choices["valid_predictions"]`` of a refitted head: its validation predictions come from the fit before the refit.
VALID_HELD_OUT = "pre-refit fit (held out)"


class LogisticFields(BaseModel):
    """The ``head: logistic`` settings every kind with that head shares (a kind adds its ``layer_sets``)."""

    C: list[float] = Field(
        [0.02],
        min_length=1,
        description="logistic: regularisation strengths to choose from (one value: no choice).",
    )
    select: Select = Field(
        "valid-ua",
        description="logistic: how C (and the layer set) is chosen: valid-ua / valid-weighted-f1 / valid-logloss on the "
        "fold's validation part, or inner-logloss: speaker groups inside the training part (steadier; never sees "
        "validation or test).",
    )
    refit: bool = Field(
        False,
        description="logistic: after choosing, fit once more on training + validation data (the test part stays unseen).",
    )
    inner: Literal["speakers", "corpora"] = Field(
        "speakers",
        description="inner-logloss: what the inner cross-validation holds out. speakers: groups of the training speakers "
        "(the test is a speaker never heard). corpora: each training corpus in turn, so the choices and the temperature "
        "are made for a corpus never heard, as a leave-one-corpus-out or cross-corpus test asks; a training part of one "
        "corpus holds out speaker groups instead (recorded as choices.inner).",
    )

    @model_validator(mode="after")
    def _inner_needs_inner_logloss(self):
        if self.inner != "speakers" and self.select != "inner-logloss":
            raise ValueError(f"inner: {self.inner} chooses by inner cross-validation: it needs select: inner-logloss")
        return self


def with_views(branches: Sequence[Branch], examples) -> list:
    """``examples`` plus one example per cached augmented copy of each branch's input (a closed-form
    fit sees every view at once); a copy replaces that branch's input only."""
    out = list(examples)
    for branch in branches:
        for e in examples:
            row = e.cached.get(branch.slot)
            for k, copy in enumerate((row or {}).get("variants") or []):
                out.append(replace(e, id=f"{e.id}#{branch.name}-aug{k + 1}", cached={**e.cached, branch.slot: copy}))
    return out


@torch.no_grad()
def features(model: ModelKind, examples, reduce: Callable[[dict], torch.Tensor], batch_size: int = 64) -> np.ndarray:
    """``[N, D]``: ``reduce`` (what the linear head reads) of every example, eval mode, float64."""
    was = model.training
    model.eval()
    out = [reduce(model.collate(examples[i : i + batch_size])).float() for i in range(0, len(examples), batch_size)]
    model.train(was)
    return torch.cat(out).numpy().astype(np.float64) if out else np.zeros((0, 0))


def column_sets(layer_sets, parts: Sequence[tuple[Sequence[int], int]]) -> list[list[int]] | None:
    """Feature columns of every candidate. ``parts`` gives, per branch in column order, the hidden
    states it concatenates (``layer_index``) and their width; a candidate names, per branch, the
    states to keep (a classifier's candidate is one list, a fusion's one list per branch)."""
    if not layer_sets:
        return None
    out = []
    for candidate in layer_sets:
        if len(candidate) != len(parts):
            raise ConfigError(f"layer_sets: candidate {candidate} names {len(candidate)} branches, the model has {len(parts)}")
        cols, offset = [], 0
        for keep, (index, width) in zip(candidate, parts, strict=True):
            position = {layer: i for i, layer in enumerate(index)}
            unknown = sorted(set(keep) - set(position))
            if unknown:
                raise ConfigError(f"layer_sets: layers {unknown} are not among the branch's layers {list(index)}")
            cols += [offset + position[k] * width + j for k in keep for j in range(width)]
            offset += len(index) * width
        out.append(cols)
    return out


def inner_split(rows, inner: str) -> tuple[list[str], int, str]:
    """The inner cross-validation's group of every training row, how many groups, and what they are (for the record).

    ``corpora`` holds out each training corpus in turn: leave-one-domain-out validation, one of the model
    selections DomainBed compares (Gulrajani and Lopez-Paz, 2021), here because a speaker of a corpus already
    heard is a milder test than the unseen corpus a leave-one-corpus-out fold tests on. On EmoDB + RAVDESS +
    ASED it chose C and layers that gave the held-out corpus 61.2 UA on average against 58.6 with speaker
    groups (a numpy probe on the recipe's cached features, without augmentation or shrinkage, 2026-12-07;
    the recipe's own figures are in docs/results.md). With one training corpus there is nothing to hold out
    but speakers."""
    corpora = sorted({e.corpus for e in rows if e.corpus is not None})
    if inner == "corpora" and len(corpora) >= 2 and all(e.corpus is not None for e in rows):
        return [e.corpus for e in rows], len(corpora), "corpora: " + ", ".join(corpora)
    said = "speakers" if inner == "speakers" else "speakers (one training corpus)"
    return [e.speaker or e.id for e in rows], INNER_GROUPS, said


def fit_head(model: ModelKind, branches: Sequence[Branch], train, valid, cfg, reduce: Callable[[dict], torch.Tensor],
             sets: list[list[int]] | None, *, modes: Sequence[str] | None = None,
             use_mode: Callable[[str, list], None] | None = None,
             snapshot: Callable[[str], None] | None = None) -> tuple[LogisticFit, dict]:
    """Choose and fit the logistic head on ``reduce``'s features; the fit and the choices to record.

    ``modes`` (with ``use_mode(mode, part)``, which switches the model to a normalisation mode with
    the statistics of ``part``): normalisation candidates, each one more view of the same rows that
    the choice ranks like the layer sets and C. Every view's validation rows are standardised with
    their own groups' statistics, as test rows will be. When a normalisation wins over ``none``,
    ``none``'s best candidate is fitted too (``LogisticFit.fallback``), after ``snapshot("none")`` is
    called with the model in that state, so the kind can keep its statistics for clips it cannot
    normalise.
    """
    from emovox.models.logistic import fit_logistic

    views = [b for b in branches if b.augments(model.augment)]
    rows = with_views(views, train) if views else train
    y = [e.target for e in rows]
    xs, xvs = [], []
    for mode in modes or [None]:
        if mode is not None:
            use_mode(mode, train)
            if valid:
                model.observe(valid, reset=False)
        xs.append(features(model, rows, reduce))
        xvs.append(features(model, valid, reduce) if valid else None)
    yv = [e.target for e in valid] if valid else None

    refitting = bool(cfg.refit and valid)
    fallback = modes.index("none") if modes and "none" in modes and snapshot is not None else None

    def refit_data(view: int):
        # statistics of the data the final model is fitted on; the choice was made on training-part statistics
        if modes:
            use_mode(modes[view], [*train, *valid] if refitting else train)
            if snapshot is not None:
                snapshot(modes[view])
        else:
            model.fit_statistics([*train, *valid])
        if not refitting:
            return xs[view], y
        everything = with_views(views, [*train, *valid]) if views else [*train, *valid]
        return features(model, everything, reduce), [e.target for e in everything]

    many = modes is not None and len(modes) > 1
    groups, inner_groups, inner = inner_split(rows, getattr(cfg, "inner", "speakers"))
    fit = fit_logistic(
        xs if many else xs[0], y, len(model.labels), Cs=cfg.C, x_valid=(xvs if many else xvs[0]) if valid else None,
        y_valid=yv, groups=groups, inner_groups=inner_groups, column_sets=sets, select=cfg.select,
        refit=refit_data if many else (refit_data(0) if refitting else None), fallback_view=fallback,
    )
    choices = {"C": fit.C, "select": cfg.select, "scores": fit.scores, "refit": bool(cfg.refit and valid)}
    if cfg.select == "inner-logloss":
        choices["inner"] = inner
    if modes:
        choices["normalize"] = modes[fit.view]
    # a refitted model has seen its validation part: keep the pre-refit fit's validation logits, which
    # are what votes and reports must read as "validation predictions" (emovox.training.folds)
    model.heldout_valid = (
        {e.id: row for e, row in zip(valid, fit.valid_logits, strict=True)} if fit.valid_logits is not None else None
    )
    if model.heldout_valid is not None:  # `emovox vote` refuses refitted runs that lack this mark (older emovox)
        choices["valid_predictions"] = VALID_HELD_OUT
    if getattr(cfg, "layer_sets", None):
        choices["layers"] = cfg.layer_sets[fit.columns]
    if fit.temperature is not None:  # from held-out predictions of the chosen candidate
        choices["temperature"] = round(fit.temperature, 6)
    return fit, choices
