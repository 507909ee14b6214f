"""Run an experiment config over every fold of its protocol and aggregate the results.

The runner owns the run directory: the audited splits, one sub-folder per fold (checkpoints,
predictions with class probabilities, learning curve) and the aggregated results. A fold with
``done.json`` is never retrained, so a restarted run continues with the next fold; a fold that
was interrupted (even by ``kill -9`` mid-epoch) resumes from its last epoch checkpoint and ends
with the same numbers as an uninterrupted run. Every file is written atomically.

``on_bad_audio: skip|error`` (default skip): an utterance whose audio (or, for text models,
transcript) is unusable is left out of the whole run, or stops it. Everything left out is listed
with its reason in ``results.json`` ("skipped") and in ``report.md`` ("Skipped utterances").
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from emovox.atomic import atomic_write_json
from emovox.config import ExperimentConfig
from emovox.corpora.base import Corpus
from emovox.data.examples import Skipped
from emovox.errors import EmovoxError
from emovox.splits import make_folds, write_folds
from emovox.training.checkpoint import remove_stale_temporaries
from emovox.training.data import ExperimentData
from emovox.training.folds import FoldOutcome, train_fold
from emovox.training.results import write_results
from emovox.training.tracking import log_run_results
from emovox.training.trainer import set_threads

#: Wall time of every invocation that worked on a run directory (so a resumed run reports its whole cost).
TIMING_FILE = "timing.json"


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
    check_same_run(out_dir, cfg, corpus)
    for d in (out_dir, out_dir / "splits", *out_dir.glob("splits/*/")):
        remove_stale_temporaries(d)  # left by a process killed mid-write; fold dirs clean their own
    all_folds = make_folds(corpus, cfg.protocol, cfg.validation, seed=cfg.train.seed)
    folds = all_folds
    if cfg.folds is not None:
        wanted = set(cfg.folds)
        folds = [f for f in all_folds if f.index in wanted]
        if not folds:
            raise EmovoxError(f"folds {sorted(wanted)} select nothing; this protocol has folds 1..{len(all_folds)}")
    write_folds(folds, corpus, out_dir / "splits")
    clock = _Clock(out_dir)
    data = ExperimentData(cfg, corpus, progress=progress)
    prep_seconds = clock.tick()
    outcomes: list[FoldOutcome] = []
    from emovox.progress import progress_bar

    for fold in progress_bar(folds, desc=cfg.name, unit="fold", disable=not progress):
        outcome = train_fold(cfg, data, fold, out_dir / f"fold_{fold.index}", progress=progress)
        outcomes.append(outcome)
        clock.tick()
        if on_fold is not None:
            on_fold(outcome)
    baseline = None
    if cfg.baseline:
        from emovox.training.baseline import run_baseline

        baseline = run_baseline(cfg, corpus, folds, out_dir / "baseline", progress=progress)
        clock.tick()
    skipped = corpus_dropped(corpus) + list(data.skipped) + [x for o in outcomes for x in o.skipped]
    payload = write_results(
        cfg, corpus, folds, outcomes, skipped, out_dir, seconds=clock.total(), prep_seconds=prep_seconds, baseline=baseline
    )
    log_run_results(cfg, out_dir, payload)
    return payload


class _Clock:
    """This invocation's wall time, recorded in ``timing.json`` after every stage, plus earlier invocations'."""

    def __init__(self, out_dir: Path):
        self.path = out_dir / TIMING_FILE
        self.start = self.last = time.time()
        try:
            self.earlier = [float(x) for x in json.loads(self.path.read_text())["invocations"]] if self.path.is_file() else []
        except (ValueError, KeyError, TypeError, OSError):
            self.earlier = []

    def tick(self) -> float:
        """Seconds since the previous tick; records this invocation's time so far."""
        now = time.time()
        step, self.last = now - self.last, now
        atomic_write_json(self.path, {"invocations": [*self.earlier, round(now - self.start, 2)]})
        return step

    def total(self) -> float:
        return sum(self.earlier) + (time.time() - self.start)


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


def check_same_run(out_dir: Path, cfg: ExperimentConfig, corpus: Corpus) -> None:
    """Refuse to continue a run directory that belongs to another config or corpus."""
    record = out_dir / "run.json"
    current = {"config": json.loads(cfg.model_dump_json()), "corpus_fingerprint": corpus.fingerprint()}
    if record.is_file():
        previous = json.loads(record.read_text())
        same_config = _results_config(previous["config"]) == _results_config(current["config"])
        if not same_config or previous["corpus_fingerprint"] != current["corpus_fingerprint"]:
            raise EmovoxError(
                f"{out_dir} holds a run of a different config or corpus; choose another --out, or pass --fresh "
                "to delete that run and start this one"
            )
    else:
        atomic_write_json(record, current)


#: Fields that change how a run is recorded or checkpointed, never its numbers: a run may be resumed with others.
BOOKKEEPING = {"train": ("report_to", "mlflow_tracking_uri", "checkpoint_every_steps", "keep_checkpoints")}


def _results_config(config: dict) -> dict:
    """The part of a config that decides the run's results (which folds run is not part of it either)."""
    out = {k: v for k, v in config.items() if k != "folds"}
    for section, fields in BOOKKEEPING.items():
        out[section] = {k: v for k, v in out.get(section, {}).items() if k not in fields}
    return out
