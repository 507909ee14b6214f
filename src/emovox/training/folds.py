"""Train and test one fold: fresh model, training-part statistics, early stopping, predictions.

A fold with ``done.json`` is never retrained (its predictions are read back); an interrupted one
resumes from its last epoch checkpoint inside ``fold_dir``.

``on_missing_class: error|drop`` (default error): a class with no training utterance in a fold
(small corpora, rare classes) stops the run naming fold and class, or that class's test and
validation utterances are left out of that fold only (the model still has the class's output,
so its other predictions are scored over the full label set). A class with no utterance in the
fold's training, validation *or* test part (an ``in-corpus`` fold of a corpus without it) is
neither learnt nor scored, so it stops nothing.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from emovox.atomic import atomic_write_json
from emovox.data.examples import Example, Skipped
from emovox.errors import EmovoxError
from emovox.evaluation.metrics import Metrics, compute_metrics
from emovox.evaluation.predictions import read_predictions, write_predictions
from emovox.splits.fold import Fold
from emovox.training import distributed
from emovox.training.checkpoint import clear_resume_state, remove_stale_temporaries
from emovox.training.tracking import open_tracker
from emovox.training.trainer import Trainer

if TYPE_CHECKING:
    from emovox.config import ExperimentConfig
    from emovox.training.data import ExperimentData


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
    best_epoch: int = 0
    choices: dict = field(default_factory=dict)
    calibration: dict = field(default_factory=dict)


def read_fold(fold: Fold, fold_dir: Path, labels: Sequence[str]) -> FoldOutcome | None:
    """The outcome of a finished fold (``done.json`` and its predictions), or None while it is not finished.

    Reads files only: collecting a run's results never loads audio, a backbone or a model.
    """
    done = fold_dir / "done.json"
    if not done.is_file():
        return None
    info = json.loads(done.read_text())
    ids, y, probs = read_predictions(fold_dir / "predictions.csv", labels)
    skipped = [Skipped.from_dict(d) for d in info.get("skipped", [])]
    return FoldOutcome(
        fold,
        ids,
        y,
        probs,
        info["history"],
        info["seconds"],
        compute_metrics(y, probs.argmax(1).tolist(), labels),
        skipped,
        info.get("best_epoch", 0),
        info.get("choices", {}),
        info.get("calibration", {}),
    )


def train_fold(cfg: ExperimentConfig, data: ExperimentData, fold: Fold, fold_dir: Path, *, progress: bool = True) -> FoldOutcome:
    """The fold's outcome: read back when it is finished, else trained (resuming from its last epoch)."""
    finished = read_fold(fold, fold_dir, data.corpus.labels)
    if finished is not None:
        return finished
    with fold_lock(fold_dir, fold) if distributed.is_main() else contextlib.nullcontext():
        return _train_fold(cfg, data, fold, fold_dir, progress=progress)


@contextlib.contextmanager
def fold_lock(fold_dir: Path, fold: Fold):
    """Refuse a second process training the same fold at the same time (a job submitted twice): it
    would overwrite the first one's checkpoints. An advisory ``flock`` on ``fold_dir/.lock``, released
    when the process ends however it ends; where the filesystem has no locks this guards nothing."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    fold_dir.mkdir(parents=True, exist_ok=True)
    with open(fold_dir / ".lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise EmovoxError(
                f"fold {fold.index} ({fold.name}): another process is training it right now ({fold_dir}); "
                "let that one finish, a second job for the same fold would overwrite its checkpoints"
            ) from None
        except OSError:  # a filesystem without locks
            yield
            return
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _train_fold(cfg: ExperimentConfig, data: ExperimentData, fold: Fold, fold_dir: Path, *, progress: bool = True) -> FoldOutcome:
    labels = data.corpus.labels
    done = fold_dir / "done.json"
    main = distributed.is_main()  # under torchrun / accelerate launch only the main process writes
    if main:
        remove_stale_temporaries(fold_dir)
    t0 = time.time()
    previous = _previous_seconds(fold_dir)
    train, valid, test, skipped = fold_parts(cfg, data, fold)
    trainer, fit = fit_fold_model(cfg, data, fold, fold_dir, train, valid, progress=progress)
    record_fold_model(fold_dir, trainer, fit)
    probs = trainer.predict_proba(test)
    ids, y = [e.id for e in test], [e.target for e in test]
    if main:
        rows = [(i, fold.name, t, p) for i, t, p in zip(ids, y, probs, strict=True)]
        write_predictions(fold_dir / "predictions.csv", rows, labels)
    if valid and fold.validation == "strict":
        valid_probs = heldout_valid_proba(trainer, valid)
    if main and valid and fold.validation == "strict":
        write_predictions(
            fold_dir / "valid_predictions.csv",
            [(e.id, fold.name, e.target, p) for e, p in zip(valid, valid_probs, strict=True)],
            labels,
        )
    seconds = previous + time.time() - t0
    metrics = compute_metrics(y, probs.argmax(1).tolist(), labels)
    trainer.tracker.log_test(metrics.scores.to_dict(), fit.best_epoch)
    trainer.tracker.flush()
    record = distributed.describe()  # None in one process: its done.json is what it always was
    if record is not None:
        from emovox.models.fold_model import learnt_state

        record["weights_sha256"] = distributed.weights_digests(learnt_state(trainer.model))
    outcome = FoldOutcome(
        fold, ids, y, probs, fit.history, seconds, metrics, skipped, fit.best_epoch, fit.choices, fit.calibration
    )
    if not main:
        distributed.barrier()  # the main process writes the fold's files; wait until they are there
        trainer.tracker.close()
        return outcome
    atomic_write_json(
        done,
        {
            "fold": fold.index,
            "name": fold.name,
            "best_epoch": fit.best_epoch,
            "best_valid_ua": fit.best_valid_ua,
            "stopped_early": fit.stopped_early,
            "resumed_from_epoch": fit.resumed_from_epoch,
            "resumed_from_step": fit.resumed_from_step,
            "history": fit.history,
            "choices": fit.choices,
            "calibration": fit.calibration,
            "seconds": round(seconds, 2),
            "test": metrics.scores.to_dict(),
            "skipped": [x.to_dict() for x in skipped],
            **({"processes": record} if record is not None else {}),
        },
    )
    clear_resume_state(fold_dir)  # the fold is finished: only the best weights matter now
    trainer.tracker.close()
    distributed.barrier()
    return outcome


def train_point(cfg: ExperimentConfig, data: ExperimentData, fold: Fold, fold_dir: Path, point: int, *, progress: bool = True):
    """``emovox cv CFG --fold K --point J``: fit grid point ``J`` of fold ``K`` only, in ``fold_K/search/point_J``.

    The unit of work of a search: the fold's own job (``--fold K``) later finds the point finished
    (its trainer resumes a finished run: the best weights are read back, nothing is retrained),
    chooses the best point on validation and tests only that one. Returns the point's validation UA.
    """
    points = data.points
    if len(points) == 1:
        raise EmovoxError("--point: this config has no search grid (no `search:`); run the fold itself with --fold K")
    if not 1 <= point <= len(points):
        raise EmovoxError(f"--point {point}: this config's search grid has points 1..{len(points)}")
    if fold.validation != "strict":
        raise EmovoxError("search chooses on the validation part; use `validation: strict`")
    point_dir = fold_dir / "search" / f"point_{point}"
    with fold_lock(point_dir, fold) if distributed.is_main() else contextlib.nullcontext():
        train, valid, _, _ = fold_parts(cfg, data, fold)
        _, fit = fit_fold_model(cfg, data, fold, fold_dir, train, valid, progress=progress, only_point=point)
    return fit.best_valid_ua


def fold_parts(cfg: ExperimentConfig, data: ExperimentData, fold: Fold):
    """The fold's usable ``train, valid, test`` examples and what the missing-class policy left out."""
    labels = data.corpus.labels
    train, valid, test = data.select(fold.train), data.select(fold.valid), data.select(fold.test)
    if not train:
        raise EmovoxError(f"fold {fold.index} ({fold.name}): no usable training utterance (see the skipped utterances)")
    valid, test, skipped = apply_missing_class_policy(cfg, fold, labels, train, valid, test)
    if not test:
        raise EmovoxError(
            f"fold {fold.index} ({fold.name}): no usable test utterance is left; every one was skipped "
            "(fix the corpus or choose another protocol)"
        )
    return train, valid, test, skipped


def fit_fold_model(cfg, data, fold: Fold, fold_dir: Path, train, valid, *, progress: bool = True, only_point: int | None = None):
    """The fold's model, fitted on ``train``: the config's, or the best on ``valid`` of its search grid
    (``only_point``: fit that grid point alone and return it, for ``train_point``)."""
    from emovox.training.search import describe

    points = data.points
    if len(points) > 1 and fold.validation != "strict":
        raise EmovoxError(
            "search chooses on the validation part, which under `validation: paper` is the test fold; use `validation: strict`"
        )
    best = None
    scores: dict[str, float] = {}
    for i, point_cfg in enumerate(points):
        if only_point is not None and i != only_point - 1:
            continue
        run_dir = fold_dir if len(points) == 1 else fold_dir / "search" / f"point_{i + 1}"
        model = data.build_model(point_cfg)
        model.use_fold(fold, data.corpus)
        name = fold_dir.name if len(points) == 1 else f"{fold_dir.name}/point_{i + 1}"
        tracker = open_tracker(point_cfg, run_root=fold_dir.parent, name=name, state_dir=run_dir)
        trainer = Trainer(
            model,
            None,
            point_cfg.train,
            len(data.corpus.labels),
            run_dir=run_dir,
            progress=progress,
            description=f"fold {fold.index}" + (f" point {i + 1}/{len(points)}" if len(points) > 1 else ""),
            allow_absent_classes=cfg.on_missing_class == "drop" or _unscored_absent(train, valid),
            tracker=tracker,
        )
        # a grid point may have its own job (train_point): never fit it twice at once
        lock = len(points) > 1 and only_point is None and distributed.is_main()
        try:
            with fold_lock(run_dir, fold) if lock else contextlib.nullcontext():
                fit = fit_model(model, trainer, train, valid, calibrate_on_valid=fold.validation == "strict")
        except BaseException:
            tracker.close(failed=True)
            raise
        if len(points) == 1 or only_point is not None:
            return trainer, fit
        scores[describe(_point_of(cfg, i))] = round(_score(fit), 6)
        if best is None or _score(fit) > _score(best[2]):
            if best is not None:
                best[1].tracker.close()  # a point not chosen is never tested
            best = (i, trainer, fit)
        else:
            tracker.close()
    i, trainer, fit = best
    chosen_on = f"valid_{cfg.train.select_on}"
    fit.choices = {**fit.choices, "search": {"chosen": describe(_point_of(cfg, i)), chosen_on: scores}}
    return trainer, fit


def _unscored_absent(train: list[Example], valid: list[Example]) -> bool:
    """True when the classes without training utterances have no validation utterance either (after the missing-class
    policy, none in the test part): the model keeps their outputs and is never scored on them."""
    present = {e.target for e in train}
    return not any(e.target not in present for e in valid)


def _score(fit) -> float:
    """What a search point is chosen by: the train.select_on metric of its chosen epoch (UA when
    the point was fitted in closed form or before scores were recorded)."""
    return fit.best_valid_score if fit.best_valid_score != float("-inf") else fit.best_valid_ua


def record_fold_model(fold_dir: Path, trainer: Trainer, fit) -> None:
    """``fold_k/model.json``: how to rebuild the model this fold tested (late fusion combines runs fold by fold)."""
    from emovox.models.fold_model import BEST_WEIGHTS, write_fold_model

    best = trainer.run_dir / BEST_WEIGHTS if trainer.run_dir is not None else None
    trained = bool(fit.history) and best is not None and best.is_file()  # else fitted in closed form
    write_fold_model(fold_dir, trainer.model, best if trained else None)


def _point_of(cfg, i: int) -> dict:
    from emovox.training.search import grid_points

    return grid_points(cfg.search)[i]


def heldout_valid_proba(trainer: Trainer, valid: list[Example]) -> np.ndarray:
    """Validation probabilities of a model that was not fitted on them. A closed-form head refitted on
    training + validation data (``refit``) kept its pre-refit fit's validation logits
    (``model.heldout_valid``): its own predictions there are in-sample, and a vote choosing members
    by them would prefer whichever run had seen its validation speakers."""
    held = getattr(trainer.model, "heldout_valid", None)
    if not held:
        return trainer.predict_proba(valid)
    logits = torch.from_numpy(np.stack([held[e.id] for e in valid])) / float(trainer.model.temperature)
    return torch.softmax(logits, dim=-1).numpy()


def fit_model(model, trainer: Trainer, train: list[Example], valid: list[Example], *, calibrate_on_valid: bool = True):
    """Training-part statistics, then a closed-form fit (``fit_direct``) or the trainer, then the
    temperature on the validation part. Every choice made on validation is in ``FitResult.choices``."""
    from emovox.training.calibration import calibrate
    from emovox.training.trainer import FitResult

    model.fit_statistics(train)
    choices = model.fit_direct(train, valid)
    if choices is None:
        fit = trainer.fit(train, valid)
    elif getattr(model, "finetunes_after_direct", False):
        # linear probing, then fine-tuning (LP-FT): the closed-form head is epoch 0 and stays unless a
        # fine-tuned epoch does better on validation; what it calibrated and held out no longer applies
        model.heldout_valid = None
        choices = {k: v for k, v in choices.items() if k not in ("temperature", "valid_predictions")}
        fit = trainer.fit(train, valid, start_is_candidate=True)
        fit.choices = {**choices, "then": "fine-tuned", "epoch": fit.best_epoch}
        if fit.start_valid is not None:
            fit.choices["valid_before_fine_tuning"] = round(fit.start_valid["score"], 6)
        choices = fit.choices
    else:
        fit = FitResult(choices=choices)
        if valid:
            from emovox.evaluation.metrics import compute_metrics

            v = heldout_valid_proba(trainer, valid)  # argmax only: probabilities rank like logits
            fit.best_valid_ua = float(compute_metrics([e.target for e in valid], v.argmax(1).tolist(), model.labels).ua)
            fit.best_valid_score = fit.best_valid_ua  # a closed-form kind makes its own choices on validation UA
    if choices is not None and "temperature" in choices:  # the kind fitted it on held-out predictions itself
        with torch.no_grad():
            model.temperature.fill_(choices["temperature"])
        fit.calibration = {"temperature": choices["temperature"], "fitted_on": "held-out predictions of the chosen candidate"}
    elif calibrate_on_valid:
        fit.calibration = calibrate(model, trainer, valid)
    return fit


def _previous_seconds(fold_dir: Path) -> float:
    """Training time already spent on this fold by interrupted invocations (its epochs' history)."""
    state = fold_dir / "last_state.json"
    if not state.is_file():
        return 0.0
    try:
        return float(sum(h.get("seconds", 0.0) for h in json.loads(state.read_text()).get("history", [])))
    except (ValueError, OSError):
        return 0.0


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
    if n_test + sum(e.target in missing for e in valid) == 0:
        return valid, test, []  # classes this fold neither learns nor scores (e.g. a corpus without them): nothing to drop
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
