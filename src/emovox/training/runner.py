"""Run an experiment config over every fold of its protocol and aggregate the results.

The runner owns the run directory: the audited splits, one sub-folder per fold (checkpoints,
predictions with class probabilities, learning curve) and the aggregated results. A fold with
``done.json`` is never retrained, so a restarted run continues with the next fold; a fold that
was interrupted (even by ``kill -9`` mid-epoch) resumes from its last epoch checkpoint and ends
with the same numbers as an uninterrupted run. Every file is written atomically.

Policies for data that cannot be used, chosen in the config and never silent:

- ``on_bad_audio: skip|error`` (default skip): an utterance whose audio (or, for text models,
  transcript) is unusable is left out of the whole run, or stops it;
- ``on_missing_class: error|drop`` (default error): a class with no training utterance in a fold (small
  corpora, rare classes) stops the run naming fold and class, or that class's test and
  validation utterances are left out of that fold only (the model still has the class's output,
  so its other predictions are scored over the full label set).

Everything left out is listed with its reason in ``results.json`` ("skipped") and in
``report.md`` ("Skipped utterances").
"""

from __future__ import annotations

import csv
import json
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import yaml

from emovox import __version__
from emovox.config import ExperimentConfig
from emovox.corpora.base import Corpus
from emovox.data.examples import Example, Skipped, build_examples
from emovox.errors import EmovoxError
from emovox.metrics import Metrics, aggregate, compute_metrics
from emovox.splits import Fold, make_folds, write_folds
from emovox.training.checkpoint import atomic_write_json, atomic_write_text, remove_stale_temporaries
from emovox.training.trainer import Trainer, clear_resume_state, set_threads

RESULTS_SCHEMA = 1


@dataclass
class FoldOutcome:
    fold: Fold
    ids: list[str]
    y_true: list[int]
    probs: np.ndarray
    history: list[dict]
    seconds: float
    metrics: Metrics
    skipped: list[Skipped] = field(default_factory=list)


# --- model construction ----------------------------------------------------------------------


def build_backbone(cfg: ExperimentConfig):
    from emovox.backbones import load_backbone

    return load_backbone(
        cfg.model.backbone,
        tiny=cfg.model.tiny,
        max_tokens=cfg.model.max_tokens,
        max_seconds=cfg.model.max_seconds,
        seed=cfg.train.seed,
    )


def uses_feature_cache(cfg: ExperimentConfig) -> bool:
    """Frozen backbone with a linear (or layer-weighted) probe: train on cached pooled features."""
    return cfg.model.mode == "frozen" and cfg.model.pooling != "attention"


def feature_collate(batch: list[Example]) -> dict:
    return {"features": torch.stack([e.item for e in batch])}


def make_end_to_end(cfg: ExperimentConfig, backbone, num_classes: int):
    """UtteranceClassifier set up for the config's mode; returns (model, collate)."""
    from emovox.models.classifier import UtteranceClassifier

    if cfg.model.mode == "frozen":
        backbone.freeze()
    elif cfg.model.mode == "finetune-frozen-cnn":
        backbone.freeze_feature_encoder()
    model = UtteranceClassifier(
        backbone, num_classes, pooling=cfg.model.pooling, layer_weights=cfg.model.layer_weights, dropout=cfg.model.dropout
    )

    def collate(batch: list[Example]) -> dict:
        return backbone.preprocess([e.item for e in batch])

    return model, collate


def make_top_layers(cfg: ExperimentConfig, backbone, num_classes: int):
    from emovox.errors import ConfigError
    from emovox.models.top_layers import TopLayersClassifier

    if cfg.model.pooling == "attention":
        raise ConfigError("model.mode finetune-top mean-pools its states: set model.pooling to auto or mean")
    return TopLayersClassifier(
        backbone, num_classes, top_layers=cfg.model.top_layers, dropout=cfg.model.dropout,
        layer_weights=cfg.model.layer_weights, standardize=cfg.model.standardize,
    )


def make_feature_head(cfg: ExperimentConfig, features: torch.Tensor, num_classes: int):
    from emovox.models.classifier import FeatureClassifier

    _, layers, hidden = features.shape
    return FeatureClassifier(
        layers, hidden, num_classes, layer_weights=cfg.model.layer_weights, dropout=cfg.model.dropout, standardize=cfg.model.standardize
    )


# --- data -------------------------------------------------------------------------------------


class ExperimentData:
    """Everything loaded once per run and shared by all folds: examples and, if frozen, features."""

    def __init__(self, cfg: ExperimentConfig, corpus: Corpus, *, progress: bool = True):
        self.cfg = cfg
        self.corpus = corpus
        self.backbone = build_backbone(cfg)
        self.modality = self.backbone.modality
        examples, self.skipped = build_examples(
            corpus,
            [u.id for u in corpus],
            self.modality,
            context=cfg.model.context,
            max_seconds=cfg.model.max_seconds,
            on_error=cfg.on_bad_audio,
        )
        self.features: torch.Tensor | None = None
        if uses_feature_cache(cfg):
            from emovox.features import FeatureCache, backbone_key, extract_pooled

            cache = FeatureCache(cfg.cache_dir)
            key = backbone_key(self.backbone, tiny=cfg.model.tiny, seed=cfg.train.seed)
            self.features = extract_pooled(
                self.backbone, examples, cache=cache, model_key=key, progress=progress, description="frozen features"
            )
            examples = [Example(e.id, e.target, self.features[i], e.length) for i, e in enumerate(examples)]
        elif cfg.model.mode == "finetune-top":
            from emovox.models.top_layers import extract_bottom

            frames = extract_bottom(make_top_layers(cfg, self.backbone, len(corpus.labels)), examples, progress=progress)
            examples = [Example(e.id, e.target, frames[i], e.length) for i, e in enumerate(examples)]
        self.examples = {e.id: e for e in examples}

    def select(self, ids: Sequence[str]) -> list[Example]:
        return [self.examples[i] for i in ids if i in self.examples]


# --- one fold ---------------------------------------------------------------------------------


def write_predictions(path: Path, rows, labels: Sequence[str]) -> None:
    """One row per utterance: id, fold, true and predicted label, and every class probability
    (the ensembles and late-fusion models are trained on these)."""
    lines = ["id,fold,true,pred," + ",".join(f"p_{label}" for label in labels)]
    for uid, fold, t, p in rows:
        lines.append(",".join([_csv(uid), _csv(fold), labels[t], labels[int(np.argmax(p))]] + [f"{x:.6f}" for x in p]))
    atomic_write_text(path, "\n".join(lines) + "\n")


def _csv(value: str) -> str:
    """RFC 4180 quoting, so ids with commas, quotes or line breaks read back intact."""
    if any(c in value for c in ',"\r\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


def read_predictions(path: Path, labels: Sequence[str]) -> tuple[list[str], list[int], np.ndarray]:
    index = {label: i for i, label in enumerate(labels)}
    ids, y, probs = [], [], []
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            ids.append(row["id"])
            y.append(index[row["true"]])
            probs.append([float(row[f"p_{label}"]) for label in labels])
    return ids, y, np.asarray(probs, dtype=np.float32).reshape(len(ids), len(labels))


def train_fold(
    cfg: ExperimentConfig, data: ExperimentData, fold: Fold, fold_dir: Path, *, progress: bool = True
) -> FoldOutcome:
    labels = data.corpus.labels
    done = fold_dir / "done.json"
    if done.is_file():
        info = json.loads(done.read_text())
        ids, y, probs = read_predictions(fold_dir / "predictions.csv", labels)
        skipped = [Skipped.from_dict(d) for d in info.get("skipped", [])]
        return FoldOutcome(
            fold, ids, y, probs, info["history"], info["seconds"], compute_metrics(y, probs.argmax(1).tolist(), labels), skipped
        )
    remove_stale_temporaries(fold_dir)
    t0 = time.time()
    train, valid, test = data.select(fold.train), data.select(fold.valid), data.select(fold.test)
    if not train:
        raise EmovoxError(f"fold {fold.index} ({fold.name}): no usable training utterance (see the skipped utterances)")
    valid, test, skipped = apply_missing_class_policy(cfg, fold, labels, train, valid, test)
    if not test:
        raise EmovoxError(
            f"fold {fold.index} ({fold.name}): no usable test utterance is left; every one was skipped "
            "(fix the corpus or choose another protocol)"
        )
    num_classes = len(labels)
    torch.manual_seed(cfg.train.seed)
    if data.features is not None:
        model = make_feature_head(cfg, data.features, num_classes)
        model.fit_standardization(torch.stack([e.item for e in train]))
        collate = feature_collate
    elif cfg.model.mode == "finetune-top":
        from emovox.models.top_layers import frames_collate

        model, collate = make_top_layers(cfg, build_backbone(cfg), num_classes), frames_collate
        model.fit_standardization([frames_collate(train[i : i + 64]) for i in range(0, len(train), 64)])
    else:
        backbone = data.backbone if fold.index == 1 and not getattr(data, "_backbone_used", False) else build_backbone(cfg)
        data._backbone_used = True
        model, collate = make_end_to_end(cfg, backbone, num_classes)
    trainer = Trainer(
        model, collate, cfg.train, num_classes, run_dir=fold_dir, progress=progress, description=f"fold {fold.index}",
        allow_absent_classes=cfg.on_missing_class == "drop",
    )
    fit = trainer.fit(train, valid)
    probs = trainer.predict_proba(test)
    ids, y = [e.id for e in test], [e.target for e in test]
    write_predictions(fold_dir / "predictions.csv", [(i, fold.name, t, p) for i, t, p in zip(ids, y, probs)], labels)
    seconds = time.time() - t0
    metrics = compute_metrics(y, probs.argmax(1).tolist(), labels)
    atomic_write_json(
        done,
        {
            "fold": fold.index,
            "name": fold.name,
            "best_epoch": fit.best_epoch,
            "best_valid_ua": fit.best_valid_ua,
            "stopped_early": fit.stopped_early,
            "resumed_from_epoch": fit.resumed_from_epoch,
            "history": fit.history,
            "seconds": round(seconds, 2),
            "test": metrics.scores.to_dict(),
            "skipped": [x.to_dict() for x in skipped],
        },
    )
    clear_resume_state(fold_dir)  # the fold is finished: only the best weights matter now
    return FoldOutcome(fold, ids, y, probs, fit.history, seconds, metrics, skipped)


def apply_missing_class_policy(
    cfg: ExperimentConfig, fold: Fold, labels: Sequence[str], train: list[Example], valid: list[Example], test: list[Example]
) -> tuple[list[Example], list[Example], list[Skipped]]:
    """Validation and test examples of this fold, less those of classes it cannot learn.

    Classes are counted on the usable training examples (after ``on_bad_audio: skip``), so a
    class whose only training clips were corrupt is caught here too.
    """
    present = {e.target for e in train}
    missing = [i for i in range(len(labels)) if i not in present]
    if not missing:
        return valid, test, []
    names = [labels[i] for i in missing]
    n_test = sum(e.target in missing for e in test)
    if cfg.on_missing_class == "error":
        raise EmovoxError(
            f"fold {fold.index} ({fold.name}): class(es) {names} have no training utterance in this fold "
            f"({n_test} of its test utterances have them). Set on_missing_class: drop to leave those test "
            "utterances out of this fold (they are listed in the report), remove the class from the label "
            "set (e.g. labels=... in the corpus spec), or choose a protocol that keeps every class in training"
        )
    reason = f"class {{}} has no training utterance in fold {fold.index} ({fold.name}); on_missing_class: drop"
    skipped = [
        Skipped(e.id, reason.format(repr(labels[e.target])), "missing_class", fold.name)
        for e in [*valid, *test]
        if e.target in missing
    ]
    return [e for e in valid if e.target not in missing], [e for e in test if e.target not in missing], skipped


# --- whole protocol ---------------------------------------------------------------------------


def environment_record(cfg: ExperimentConfig, corpus: Corpus) -> dict:
    import transformers

    return {
        "emovox": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),
        "corpus": cfg.corpus,
        "corpus_fingerprint": corpus.fingerprint(),
        "utterances": len(corpus),
        "protocol": cfg.protocol,
        "validation": cfg.validation,
        "seed": cfg.train.seed,
    }


def run_cv(
    cfg: ExperimentConfig,
    out_dir: Path,
    *,
    progress: bool = True,
    corpus: Corpus | None = None,
    on_fold: Callable[[FoldOutcome], None] | None = None,
    resume: bool = True,
    fresh: bool = False,
) -> dict:
    """Train and test every fold; returns the ``results.json`` content.

    A run directory that already holds this run is continued (``resume``, the default):
    finished folds are kept and an interrupted fold resumes from its last epoch. With
    ``resume=False`` such a directory is refused; ``fresh`` deletes the previous run first.
    """
    from emovox.corpora import load_corpus

    set_threads(cfg.train.threads)
    out_dir = Path(out_dir)
    corpus = corpus if corpus is not None else load_corpus(cfg.corpus)
    prepare_run_dir(out_dir, resume=resume, fresh=fresh)
    _check_same_run(out_dir, cfg, corpus)
    for d in (out_dir, out_dir / "splits", *out_dir.glob("splits/*/")):
        remove_stale_temporaries(d)  # left by a process killed mid-write; fold dirs clean their own
    folds = make_folds(corpus, cfg.protocol, cfg.validation, seed=cfg.train.seed)
    if cfg.folds is not None:
        wanted = set(cfg.folds)
        folds = [f for f in folds if f.index in wanted]
        if not folds:
            raise EmovoxError(f"folds {sorted(wanted)} select nothing; this protocol has folds 1..{len(make_folds(corpus, cfg.protocol, cfg.validation, seed=cfg.train.seed))}")
    write_folds(folds, corpus, out_dir / "splits")
    t_start = time.time()
    data = ExperimentData(cfg, corpus, progress=progress)
    prep_seconds = time.time() - t_start
    outcomes: list[FoldOutcome] = []
    from emovox.progress import progress_bar

    for fold in progress_bar(folds, desc=cfg.name, unit="fold", disable=not progress):
        outcome = train_fold(cfg, data, fold, out_dir / f"fold_{fold.index}", progress=progress)
        outcomes.append(outcome)
        if on_fold is not None:
            on_fold(outcome)
    skipped = corpus_dropped(corpus) + list(data.skipped) + [x for o in outcomes for x in o.skipped]
    return write_results(cfg, corpus, folds, outcomes, skipped, out_dir, seconds=time.time() - t_start, prep_seconds=prep_seconds)


def corpus_dropped(corpus: Corpus) -> list[Skipped]:
    """Utterances a corpus reader left out because of a data problem (e.g. ``on_missing_audio=skip``).

    Readers that skip report them as ``Corpus.dropped``: ``(utterance id or file, reason)``
    pairs; label-set selection (``labels=``, IEMOCAP's 4 classes) is a choice, not a problem,
    and is not listed.
    """
    return [Skipped(str(uid), str(reason), "corpus") for uid, reason in getattr(corpus, "dropped", None) or ()]


def prepare_run_dir(out_dir: Path, *, resume: bool, fresh: bool) -> None:
    """Create ``out_dir``, or decide what to do with the run it already holds (see ``run_cv``).

    Only a directory that holds an emovox run (its ``run.json``) is ever deleted, so a mistyped
    ``--out ~`` with ``--fresh`` cannot wipe anything else.
    """
    record = out_dir / "run.json"
    if out_dir.exists() and not out_dir.is_dir():
        raise EmovoxError(f"--out {out_dir}: exists and is not a directory; choose another run directory")
    if fresh and out_dir.is_dir() and any(out_dir.iterdir()):
        if not record.is_file():
            raise EmovoxError(
                f"--fresh: {out_dir} is not empty and holds no emovox run (no run.json), so it is not deleted; "
                "choose another --out"
            )
        shutil.rmtree(out_dir)
    elif not resume and record.is_file():
        raise EmovoxError(
            f"{out_dir} already holds a run; pass --resume to continue it (finished folds are kept) "
            "or --fresh to delete it and start over"
        )
    out_dir.mkdir(parents=True, exist_ok=True)


#: What ``Recognizer.save`` writes (``emovox.json`` last: its presence means a complete recognizer),
#: and the work folder of an unfinished ``train_recognizer``.
RECOGNIZER_ENTRIES = ("emovox.json", "head.safetensors", "README.md", "backbone", "_training")


def prepare_model_dir(model_dir: Path, *, force: bool) -> None:
    """Refuse to train into a folder that holds another recognizer or anything else, unless ``force``.

    Like ``prepare_run_dir``: nothing that is not ours is ever deleted. ``force`` replaces an
    existing recognizer (its files are deleted now, before training) and writes into a non-empty
    unrelated folder without touching its other files. A folder holding only ``_training`` is a
    ``train`` that was interrupted: it is continued.
    """
    if model_dir.exists() and not model_dir.is_dir():
        raise EmovoxError(f"--out {model_dir}: exists and is not a directory; choose another recognizer directory")
    if not model_dir.is_dir():
        return
    if (model_dir / "emovox.json").is_file():
        if not force:
            raise EmovoxError(
                f"--out {model_dir} already holds a recognizer; pass --force to replace it, or choose another --out"
            )
        for name in RECOGNIZER_ENTRIES:
            if (model_dir / name).is_dir():
                shutil.rmtree(model_dir / name)
            else:
                (model_dir / name).unlink(missing_ok=True)
        return
    others = sorted(p.name for p in model_dir.iterdir() if p.name != "_training")
    if others and not force:
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise EmovoxError(
            f"--out {model_dir} is not empty ({shown}) and holds no recognizer; choose a new or empty folder, "
            "or pass --force to write the recognizer into it (nothing in it is deleted)"
        )


def _check_same_run(out_dir: Path, cfg: ExperimentConfig, corpus: Corpus) -> None:
    """Refuse to continue a run directory that belongs to another config or corpus."""
    record = out_dir / "run.json"
    current = {"config": json.loads(cfg.model_dump_json()), "corpus_fingerprint": corpus.fingerprint()}
    if record.is_file():
        previous = json.loads(record.read_text())
        keep = lambda d: {k: v for k, v in d["config"].items() if k not in {"folds"}}  # noqa: E731
        if keep(previous) != keep(current) or previous["corpus_fingerprint"] != current["corpus_fingerprint"]:
            raise EmovoxError(
                f"{out_dir} holds a run of a different config or corpus; choose another --out, or pass --fresh "
                "to delete that run and start this one"
            )
    else:
        atomic_write_json(record, current)


def write_results(
    cfg: ExperimentConfig,
    corpus: Corpus,
    folds: list[Fold],
    outcomes: list[FoldOutcome],
    skipped: list[Skipped],
    out_dir: Path,
    *,
    seconds: float,
    prep_seconds: float,
) -> dict:
    from emovox import reporting

    labels = corpus.labels
    pooled_true = [t for o in outcomes for t in o.y_true]
    pooled_pred = [int(p) for o in outcomes for p in o.probs.argmax(1)]
    result = aggregate(
        [o.metrics for o in outcomes],
        pooled_true,
        pooled_pred,
        labels,
        fold_names=[o.fold.name for o in outcomes],
        protocol=cfg.protocol,
        speaker_independent=all(f.speaker_independent for f in folds),
    )
    payload = result.to_dict()
    payload.update(
        {
            "schema": RESULTS_SCHEMA,
            "name": cfg.name,
            "corpus": cfg.corpus,
            "validation": cfg.validation,
            "label_set": list(labels),
            "backbone": cfg.model.backbone,
            "mode": cfg.model.mode,
            "seconds": round(seconds, 2),
            "feature_seconds": round(prep_seconds, 2),
            "fold_seconds": [round(o.seconds, 2) for o in outcomes],
            "best_epochs": [json.loads((out_dir / f"fold_{o.fold.index}" / "done.json").read_text())["best_epoch"] for o in outcomes],
            "skipped": [s.to_dict() for s in skipped],
            "environment": environment_record(cfg, corpus),
        }
    )
    reporting.write_report(
        result, out_dir, title=cfg.name, history=[o.history for o in outcomes], curve_names=[o.fold.curve_name for o in outcomes]
    )
    report = out_dir / "report.md"
    atomic_write_text(report, report.read_text(encoding="utf-8").rstrip("\n") + "\n\n" + skipped_markdown(skipped, cfg))
    atomic_write_text(out_dir / "config.yaml", yaml.safe_dump(json.loads(cfg.model_dump_json()), sort_keys=False))
    atomic_write_json(out_dir / "results.json", payload)  # a superset of the report's results.json
    rows = [(uid, o.fold.name, t, p) for o in outcomes for uid, t, p in zip(o.ids, o.y_true, o.probs)]
    write_predictions(out_dir / "predictions.csv", rows, labels)
    return payload


def skipped_markdown(skipped: Sequence[Skipped], cfg: ExperimentConfig) -> str:
    """The report's "Skipped utterances" section: every utterance left out, with its reason."""
    lines = ["## Skipped utterances", ""]
    policy = f"`on_bad_audio: {cfg.on_bad_audio}`, `on_missing_class: {cfg.on_missing_class}`"
    if not skipped:
        return "\n".join(lines + [f"None: every utterance of the corpus was used ({policy}).", ""])
    counts: dict[str, int] = {}
    for x in skipped:
        counts[x.kind] = counts.get(x.kind, 0) + 1
    summary = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in sorted(counts.items()))
    lines += [f"{len(skipped)} utterance(s) were left out ({summary}; policy {policy}):", ""]
    lines += ["| id | fold | kind | reason |", "|---|---|---|---|"]
    cell = lambda v: str(v).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    for x in skipped:
        lines.append(f"| {cell(x.id)} | {cell(x.fold or 'all')} | {x.kind} | {cell(x.reason)} |")
    return "\n".join(lines) + "\n"


# --- one model on all data -----------------------------------------------------------------------


def holdout_speakers(corpus: Corpus, seed: int, fraction: float = 0.1) -> tuple[list[str], list[str]]:
    """Training and early-stopping ids for a final model: whole speakers held out when possible.

    About ``fraction`` of the speakers (at least one) are held out, chosen with ``seed``, so the
    stopping epoch is picked on voices the model has not heard, as in the strict protocol.
    With fewer than three speakers a seeded ``fraction`` of utterances is held out instead.
    """
    import random

    speakers = sorted(corpus.speakers)
    if len(speakers) >= 3:
        k = max(1, round(fraction * len(speakers)))
        held = set(random.Random(seed).sample(speakers, k))
        train = [u.id for u in corpus if u.speaker not in held]
        valid = [u.id for u in corpus if u.speaker in held]
        return train, valid
    from emovox.splits import _seeded_split

    rest, held_ids = _seeded_split(corpus, [u.id for u in corpus], fraction, seed, "train", what="valid")
    return list(rest), list(held_ids)


def train_recognizer(
    cfg: ExperimentConfig, model_dir: Path, *, progress: bool = True, corpus: Corpus | None = None, cv_results: Path | None = None,
    force: bool = False,
):
    """Train on the whole corpus (less a held-out speaker group for early stopping) and save a
    self-contained recognizer directory (``prepare_model_dir`` says where it may go)."""
    from emovox.corpora import load_corpus
    from emovox.models.classifier import FrozenFeatureModel
    from emovox.recognizer import Recognizer

    model_dir = Path(model_dir)
    prepare_model_dir(model_dir, force=force)
    set_threads(cfg.train.threads)
    corpus = corpus if corpus is not None else load_corpus(cfg.corpus)
    train_ids, valid_ids = holdout_speakers(corpus, cfg.train.seed)
    data = ExperimentData(cfg, corpus, progress=progress)
    train, valid = data.select(train_ids), data.select(valid_ids)
    labels = corpus.labels
    missing = sorted({*labels} - {labels[e.target] for e in train})
    if missing:
        raise EmovoxError(f"{cfg.corpus}: classes {missing} have no training utterances; remove them from the label set")
    torch.manual_seed(cfg.train.seed)
    if data.features is not None:
        head = make_feature_head(cfg, data.features, len(labels))
        head.fit_standardization(torch.stack([e.item for e in train]))
        model, collate, kind = head, feature_collate, "frozen-features"
    elif cfg.model.mode == "finetune-top":
        from emovox.models.top_layers import frames_collate

        model, collate, kind = make_top_layers(cfg, data.backbone, len(labels)), frames_collate, "top-layers"
        model.fit_standardization([frames_collate(train[i : i + 64]) for i in range(0, len(train), 64)])
    else:
        model, collate = make_end_to_end(cfg, data.backbone, len(labels))
        kind = "end-to-end"
    work = model_dir / "_training"
    trainer = Trainer(model, collate, cfg.train, len(labels), run_dir=work, progress=progress, description="all data")
    fit = trainer.fit(train, valid)
    if kind == "frozen-features":
        deployable = FrozenFeatureModel(data.backbone, model)
        head_shape = {"num_layers": int(data.features.shape[1]), "hidden_size": int(data.features.shape[2])}
    elif cfg.model.mode == "finetune-top":
        deployable, head_shape = model, None  # runs its own frozen bottom on raw inputs
    else:
        deployable, head_shape = model, None
    info = {
        "name": cfg.name,
        "emovox_version": __version__,
        "kind": kind,
        "modality": data.modality,
        "model": json.loads(cfg.model.model_dump_json()),
        "preprocessing": {"sample_rate": 16000, "max_seconds": cfg.model.max_seconds, "max_tokens": cfg.model.max_tokens, "context": cfg.model.context},
        "training": {
            "corpus": cfg.corpus,
            "corpus_fingerprint": corpus.fingerprint(),
            "train_utterances": len(train),
            "valid_utterances": len(valid),
            "validation": "held-out speakers" if len(corpus.speakers) >= 3 else "held-out utterances",
            "best_epoch": fit.best_epoch,
            "best_valid_ua": fit.best_valid_ua,
            "history": fit.history,
            "config": json.loads(cfg.model_dump_json()),
            "skipped": [s.to_dict() for s in corpus_dropped(corpus) + list(data.skipped)],
        },
    }
    if head_shape is not None:
        info["head"] = head_shape
    if cv_results is not None and Path(cv_results).is_file():
        r = json.loads(Path(cv_results).read_text())
        info["cross_validation"] = {
            "results": str(cv_results), "protocol": r["protocol"], "folds": len(r["folds"]),
            "mean": r["mean"], "std": r["std"], "pooled": {k: r["pooled"][k] for k in ("wa", "ua", "macro_f1")},
        }
    recognizer = Recognizer(deployable, data.backbone, labels, info)
    recognizer.save(model_dir)
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    return recognizer


def evaluate_recognizer(recognizer, corpus: Corpus, *, on_bad_audio: str = "skip", progress: bool = True):
    """Score a trained recognizer on a corpus; its labels must all be known to the recognizer.

    Unusable utterances are left out and returned as the fourth value (``on_bad_audio="skip"``),
    or raise (``"error"``)."""
    from emovox.errors import RecognizerError

    unknown = sorted({u.label for u in corpus} - set(recognizer.labels))
    if unknown:
        raise RecognizerError(
            f"{corpus.spec or corpus.name}: labels {unknown} are not among the recognizer's {list(recognizer.labels)}"
        )
    pre = recognizer.info["preprocessing"]
    examples, skipped = build_examples(
        corpus, [u.id for u in corpus], recognizer.modality, context=pre["context"], max_seconds=pre["max_seconds"], on_error=on_bad_audio
    )
    from emovox.progress import progress_bar

    # longest first, as predict_proba would batch them, a chunk at a time so that the bar moves
    order = sorted(range(len(examples)), key=lambda i: -examples[i].length)
    probs = np.zeros((len(examples), len(recognizer.labels)), dtype=np.float32)
    with progress_bar(total=len(examples), desc="evaluate", unit="utt", disable=not progress) as bar:
        for start in range(0, len(order), 64):
            chunk = order[start : start + 64]
            probs[chunk] = recognizer.predict_proba([examples[i].item for i in chunk])
            bar.update(len(chunk))
    index = {label: i for i, label in enumerate(recognizer.labels)}
    y_true = [index[corpus[e.id].label] for e in examples]
    metrics = compute_metrics(y_true, probs.argmax(1).tolist(), recognizer.labels)
    return metrics, examples, probs, skipped
