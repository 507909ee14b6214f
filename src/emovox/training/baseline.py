"""The standard baseline every recipe is reported beside, on the same folds.

A recipe earns its complexity only if it beats what a few lines of scikit-learn get from the same
backbone: every hidden state of the frozen backbone pooled over time (the family's pooling: the
mean for speech encoders), concatenated, standardised with training-part statistics, and a
multinomial logistic regression with C = 0.02 fitted on the training part (``emovox.models.
logistic``), on the clips as they are (no augmentation). Nothing is tuned, so the baseline cannot
have been fitted to anything but training data. For a recipe with several branches the baseline
reads the first branch that reads the utterance itself. It is cheap (seconds on cached features)
and on by default; ``baseline: false`` turns it off.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from emovox.corpora.base import Corpus
from emovox.evaluation.metrics import aggregate
from emovox.models.logistic import DEFAULT_C
from emovox.training.breakdown import per_corpus

if TYPE_CHECKING:
    from emovox.config import ExperimentConfig
    from emovox.splits.fold import Fold


def baseline_config(cfg: ExperimentConfig) -> ExperimentConfig | None:
    """The baseline's experiment config for ``cfg`` (None when the recipe has no backbone branch)."""
    from emovox.config import config_from_dict

    model = json.loads(cfg.model.model_dump_json())
    branches = model.get("branches") or ([model] if "backbone" in model else [])
    utterance = [b for b in branches if b.get("input", "utterance") == "utterance"] or branches
    if not utterance:
        return None
    b = utterance[0]
    data = json.loads(cfg.model_dump_json())
    data["train"]["augment"] = {"length": False}  # the reference is fitted on the clips as they are
    data.update(
        name=f"{cfg.name} (baseline)",
        search=None,
        baseline=False,
        control=None,
        folds=None,
        model={
            "kind": "classifier",
            "backbone": b["backbone"],
            "tiny": b.get("tiny", False),
            "mode": "frozen",
            "pooling": "auto",
            "layers": "all",
            "combine": "concat",
            "head": "logistic",
            "C": [DEFAULT_C],
            "max_tokens": b.get("max_tokens", 100),
            "max_seconds": b.get("max_seconds", 10.0),
            "std_floor": 0.0,  # plain z-scores, as the reference script (StandardScaler)
        },
    )
    return config_from_dict(data, "baseline")


def describe(cfg: ExperimentConfig) -> str:
    m = cfg.model
    return (
        f"logistic regression on every frozen layer of {Path(m.backbone).name} "
        "(concatenated, standardised; C = 0.02)"
    )


def train_baseline_folds(cfg: ExperimentConfig, corpus: Corpus, folds: list[Fold], out_dir: Path, *, progress: bool = True):
    """Train (or read back) the baseline on ``folds`` only: a fold job fits the baseline of its own fold."""
    from emovox.training.data import ExperimentData
    from emovox.training.distributed import main_process_first
    from emovox.training.folds import train_fold

    bcfg = baseline_config(cfg)
    if bcfg is None:
        return None
    with main_process_first():
        data = ExperimentData(bcfg, corpus, progress=progress)
    return [train_fold(bcfg, data, fold, out_dir / f"fold_{fold.index}", progress=False) for fold in folds]


def read_baseline_folds(cfg: ExperimentConfig, corpus: Corpus, folds: list[Fold], out_dir: Path) -> tuple[list, list[Fold]]:
    """The finished baseline folds among ``folds`` and the unfinished ones (files only, nothing is trained)."""
    from emovox.training.folds import read_fold

    done, missing = [], []
    for fold in folds:
        outcome = read_fold(fold, out_dir / f"fold_{fold.index}", corpus.labels)
        (missing if outcome is None else done).append(fold if outcome is None else outcome)
    return done, missing


def summarize(cfg: ExperimentConfig, corpus: Corpus, outcomes: list, out_dir: Path) -> dict:
    """The baseline's part of results.json, over the folds in ``outcomes``."""
    bcfg = baseline_config(cfg)
    result = aggregate(
        [o.metrics for o in outcomes],
        [t for o in outcomes for t in o.y_true],
        [int(p) for o in outcomes for p in o.probs.argmax(1)],
        corpus.labels,
        fold_names=[o.fold.name for o in outcomes],
        protocol=cfg.protocol,
    )
    return {
        "description": describe(bcfg),
        "model": json.loads(bcfg.model.model_dump_json()),
        "mean": result.mean.to_dict(),
        "std": result.std.to_dict(),
        "pooled": {
            k: v for k, v in result.pooled.to_dict().items() if k not in ("confusion", "confusion_normalized", "per_class")
        },
        "folds": [o.metrics.scores.to_dict() for o in outcomes],
        "per_corpus": per_corpus(outcomes, corpus),
        "choices": [o.choices for o in outcomes],
        "directory": str(out_dir),
    }
