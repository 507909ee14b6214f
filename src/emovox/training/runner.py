"""Run an experiment config over every fold of its protocol and aggregate the results.

The runner owns the run directory: the audited splits, one sub-folder per fold (checkpoints,
predictions with class probabilities, learning curve) and the aggregated results. A fold with
``done.json`` is never retrained, so a restarted run continues with the next fold; a fold that
was interrupted (even by ``kill -9`` mid-epoch) resumes from its last epoch checkpoint and ends
with the same numbers as an uninterrupted run. Every file is written atomically.

``on_bad_audio: skip|error`` (default skip): an utterance whose audio (or, for text models,
transcript) is unusable is left out of the whole run, or stops it. Everything left out is listed
with its reason in ``results.json`` ("skipped") and in ``report.md`` ("Skipped utterances").

The fold is the unit of work: ``run_fold_jobs`` (``emovox cv CFG --fold K``) trains some folds and
writes nothing another fold's job writes, so a SLURM array, GNU parallel or submitit can run every
fold at once into one run directory; ``collect_cv`` (``--collect``) then aggregates whatever is
finished and names what is missing. ``run_cv`` is the two in sequence, in one process.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from emovox.accel import set_threads
from emovox.atomic import atomic_write_json
from emovox.config import ExperimentConfig
from emovox.corpora.base import Corpus
from emovox.data.examples import Skipped
from emovox.errors import EmovoxError
from emovox.splits.fold import Fold, write_folds
from emovox.splits.protocols import make_folds
from emovox.training.checkpoint import remove_stale_temporaries
from emovox.training.data import ExperimentData
from emovox.training.folds import FoldOutcome, train_fold
from emovox.training.results import write_results
from emovox.training.tracking import log_run_results

#: Wall time of every invocation that worked on a run directory (so a resumed run reports its whole cost).
TIMING_FILE = "timing.json"
#: Timing of fold jobs (``emovox cv --fold K``), one file per job, so concurrent jobs never write the same file.
JOBS_DIR = "jobs"
#: Utterances the run's data left out (unusable audio or transcript), for ``collect_cv`` that loads no audio.
SKIPPED_FILE = "skipped.json"
#: Where the text-only control (``control: text``) writes its folds and transcripts.
CONTROL_DIR = "control_text"
#: Temporaries in the shared run directory younger than this may be another job's write in flight.
SHARED_TEMP_SECONDS = 3600.0


def run_cv(
    cfg: ExperimentConfig,
    out_dir: Path,
    *,
    progress: bool = True,
    corpus: Corpus | None = None,
    on_fold: Callable[[FoldOutcome], None] | None = None,
    resume: bool = True,
    fresh: bool = False,
    jobs: int = 1,
) -> dict:
    """Train and test every fold (``cfg.folds``: those only); returns the ``results.json`` content.

    ``jobs`` > 1: extraction shards and folds run in that many local processes (``emovox.training.parallel``);
    same files, same results.

    A run directory that already holds this run is continued (``resume``, the default):
    finished folds are kept and an interrupted fold resumes from its last epoch. With
    ``resume=False`` such a directory is refused; ``fresh`` deletes the previous run first.
    The results are collected from the fold directories exactly as ``collect_cv`` does after
    fold jobs, so a sequential run and ``--fold`` jobs + ``--collect`` give the same results.json.
    """
    set_threads(cfg.train.threads)
    out_dir = Path(out_dir)
    corpus, all_folds = open_run(cfg, out_dir, corpus=corpus, resume=resume, fresh=fresh)
    folds = select_folds(all_folds, cfg.folds)
    from emovox.training import distributed

    if jobs > 1 and len(folds) > 1 and distributed.world() == 1:
        from emovox.training.parallel import train_folds_parallel

        clock = _Clock(out_dir / TIMING_FILE)
        train_controls(cfg, corpus, folds, out_dir, progress=progress)
        train_folds_parallel(
            cfg, corpus, folds, out_dir, jobs=jobs, clock=clock, skipped_file=out_dir / SKIPPED_FILE, progress=progress
        )
    else:
        train_folds(cfg, corpus, folds, out_dir, clock=_Clock(out_dir / TIMING_FILE), progress=progress, on_fold=on_fold)

    if not distributed.is_main():
        return None  # several processes trained together: the main one writes the results
    collected = collect_cv(cfg, out_dir, corpus=corpus, folds=[f.index for f in folds])
    if collected.missing:  # every fold was just trained, so this is a bug, not a user's problem
        raise RuntimeError(f"{out_dir}: {', '.join(collected.missing)} missing right after training")
    return collected.payload


def run_fold_jobs(
    cfg: ExperimentConfig,
    out_dir: Path,
    indices: Sequence[int],
    *,
    progress: bool = True,
    corpus: Corpus | None = None,
    point: int | None = None,
) -> list[FoldOutcome]:
    """``emovox cv CFG --fold K``: train only folds ``indices`` (and their baseline folds) into the run directory.

    Writes its own ``fold_K/`` (and ``baseline/fold_K/``) and nothing another fold job writes,
    except files every job writes alike (``run.json``, the splits, ``skipped.json``), atomically.
    No results: ``collect_cv`` aggregates whatever is finished. Concurrent jobs never race.
    With ``point`` (``--point J``), only grid point J of each fold is fitted (``train_point``);
    the fold jobs then read the finished points back. Returns no outcomes then.
    """
    set_threads(cfg.train.threads)
    out_dir = Path(out_dir)
    corpus, all_folds = open_run(cfg, out_dir, corpus=corpus, resume=True, fresh=False)
    folds = select_folds(all_folds, sorted(set(indices)), what="--fold")
    if cfg.folds is not None and not {f.index for f in folds} <= set(cfg.folds):
        raise EmovoxError(f"--fold {sorted(set(indices))}: the config selects folds {cfg.folds}; run one of those")
    job = "fold_" + "+".join(str(f.index) for f in folds) + (f".point_{point}" if point is not None else "")
    clock = _Clock(out_dir / JOBS_DIR / f"{job}.json")
    return train_folds(cfg, corpus, folds, out_dir, clock=clock, progress=progress, point=point)


def open_run(cfg: ExperimentConfig, out_dir: Path, *, corpus: Corpus | None, resume: bool, fresh: bool):
    """Create or check the run directory and write the protocol's folds; ``(corpus, every fold)``.

    Every fold of the protocol is written to ``splits/`` (the same files from every job, so
    concurrent jobs agree), whichever folds this invocation trains.
    """
    from emovox.training import distributed

    corpus = corpus if corpus is not None else cfg.open_corpus()
    all_folds = make_folds(corpus, cfg.protocol, cfg.validation, seed=cfg.train.seed)
    from emovox.training.control import check_control

    check_control(cfg, corpus)
    if distributed.is_main():
        prepare_run_dir(out_dir, resume=resume, fresh=fresh)
        check_same_run(out_dir, cfg, corpus)
        for d in (out_dir, out_dir / "splits", *out_dir.glob("splits/*/")):
            # left by a process killed mid-write; a younger one may be a concurrent fold job's (fold dirs clean their own)
            remove_stale_temporaries(d, older_than=SHARED_TEMP_SECONDS)
        write_folds(all_folds, corpus, out_dir / "splits")
    distributed.barrier()
    return corpus, all_folds


def select_folds(all_folds: list[Fold], indices: Sequence[int] | None, *, what: str = "folds") -> list[Fold]:
    if indices is None:
        return all_folds
    wanted = set(indices)
    folds = [f for f in all_folds if f.index in wanted]
    unknown = sorted(wanted - {f.index for f in all_folds})
    if not folds or unknown:
        raise EmovoxError(f"{what} {sorted(unknown or wanted)}: this protocol has folds 1..{len(all_folds)}")
    return folds


def train_folds(
    cfg: ExperimentConfig,
    corpus: Corpus,
    folds: list[Fold],
    out_dir: Path,
    *,
    clock: _Clock,
    progress: bool = True,
    on_fold: Callable[[FoldOutcome], None] | None = None,
    point: int | None = None,
) -> list[FoldOutcome]:
    """The controls (``control:``), then train (or read back) ``folds``, then the baseline on the same folds; records
    timing and unusable data (``point``: only that grid point of each fold, and no baseline or control, which belong
    to the fold's own job)."""
    from emovox.progress import progress_bar
    from emovox.training import distributed

    main = distributed.is_main()
    progress = progress and main
    with distributed.main_process_first():  # the main process fills the feature cache, the others read it
        data = ExperimentData(cfg, corpus, progress=progress)
    if main:
        atomic_write_json(out_dir / SKIPPED_FILE, {"skipped": [x.to_dict() for x in data.skipped]})
        clock.tick(prep=True)
    if point is None:  # first: cheap once transcribed, and a control that cannot run stops nothing trained
        train_controls(cfg, corpus, folds, out_dir, progress=progress and main)
    outcomes: list[FoldOutcome] = []
    if point is not None:
        from emovox.training.folds import train_point

        for fold in folds:
            train_point(cfg, data, fold, out_dir / f"fold_{fold.index}", point, progress=progress)
            if main:
                clock.tick()
        return outcomes
    for fold in progress_bar(folds, desc=cfg.name, unit="fold", disable=not progress):
        outcome = train_fold(cfg, data, fold, out_dir / f"fold_{fold.index}", progress=progress)
        outcomes.append(outcome)
        if main:
            clock.tick()
        if on_fold is not None:
            on_fold(outcome)
    if cfg.baseline:
        from emovox.training.baseline import train_baseline_folds

        train_baseline_folds(cfg, corpus, folds, out_dir / "baseline", progress=progress)
        if main:
            clock.tick()
    return outcomes


def train_controls(cfg: ExperimentConfig, corpus: Corpus, folds: list[Fold], out_dir: Path, *, progress: bool = True) -> None:
    """The controls the config asks for (``control: text``) on ``folds``, in ``out_dir/control_text``."""
    from emovox.training import distributed

    if cfg.control is not None and cfg.control.text and distributed.is_main():
        from emovox.training.control import train_text_control

        train_text_control(cfg, corpus, folds, out_dir / CONTROL_DIR, progress=progress)


@dataclass
class Collected:
    """What ``collect_cv`` found: the results (None when no fold is finished) and what is missing."""

    payload: dict | None
    done: list[int]
    missing: list[str]


def collect_cv(cfg: ExperimentConfig, out_dir: Path, *, corpus: Corpus | None = None, folds: Sequence[int] | None = None):
    """``emovox cv CFG --collect``: results over every finished fold; unfinished ones are named in ``missing``.

    Reads files only (no audio, no model), so it runs anywhere the run directory is visible. The
    results of an incomplete run say so (``missing`` in results.json, a warning atop report.md).
    The baseline is reported only when it is finished on every collected fold (the same folds).
    """
    from emovox.training.baseline import baseline_config, read_baseline_folds, summarize
    from emovox.training.folds import read_fold

    out_dir = Path(out_dir)
    if not (out_dir / "run.json").is_file():
        raise EmovoxError(
            f"{out_dir}: no run here (no run.json); start its folds first (emovox cv CONFIG --out {out_dir} --fold K, "
            "or --list-jobs for every command)"
        )
    corpus = corpus if corpus is not None else cfg.open_corpus()
    check_same_run(out_dir, cfg, corpus)
    all_folds = make_folds(corpus, cfg.protocol, cfg.validation, seed=cfg.train.seed)
    wanted = select_folds(all_folds, folds if folds is not None else cfg.folds)
    outcomes, missing = [], []
    for fold in wanted:
        outcome = read_fold(fold, out_dir / f"fold_{fold.index}", corpus.labels)
        if outcome is None:
            missing.append(f"fold {fold.index} ({fold.name})")
        else:
            outcomes.append(outcome)
    baseline = base = None
    if cfg.baseline and outcomes and baseline_config(cfg) is not None:
        finished = [o.fold for o in outcomes]
        base, base_missing = read_baseline_folds(cfg, corpus, finished, out_dir / "baseline")
        missing += [f"baseline fold {f.index} ({f.name})" for f in base_missing]
        baseline = summarize(cfg, corpus, base, out_dir / "baseline") if not base_missing else None
        base = base if not base_missing else None
    if not outcomes:
        return Collected(None, [], missing)
    control = None
    if cfg.control is not None and cfg.control.text:
        from emovox.training.control import read_text_control

        control, control_missing = read_text_control(cfg, corpus, [o.fold for o in outcomes], out_dir / CONTROL_DIR)
        missing += [f"text control fold {f.index} ({f.name})" for f in control_missing]
    skipped = corpus_dropped(corpus) + _read_skipped(out_dir) + [x for o in outcomes for x in o.skipped]
    seconds, prep_seconds = _timings(out_dir)
    payload = write_results(
        cfg, corpus, outcomes_folds(outcomes), outcomes, skipped, out_dir,
        seconds=seconds, prep_seconds=prep_seconds, baseline=baseline, missing=missing,
        baseline_outcomes=base, control=control,
    )  # fmt: skip
    log_run_results(cfg, out_dir, payload)
    return Collected(payload, [o.fold.index for o in outcomes], missing)


def outcomes_folds(outcomes: list[FoldOutcome]) -> list[Fold]:
    return [o.fold for o in outcomes]


def _read_skipped(out_dir: Path) -> list[Skipped]:
    path = out_dir / SKIPPED_FILE
    if not path.is_file():
        return []
    return [Skipped.from_dict(d) for d in json.loads(path.read_text()).get("skipped", [])]


def _timings(out_dir: Path) -> tuple[float, float]:
    """Wall seconds of every invocation and job that worked on the run (summed: machine time, not
    elapsed time, when jobs ran in parallel), and the part of it spent preparing data and features."""
    seconds = prep = 0.0
    for path in [out_dir / TIMING_FILE, *sorted((out_dir / JOBS_DIR).glob("*.json"))]:
        record = _Clock.read(path)
        seconds += sum(record["invocations"])
        prep += sum(record["prep"])
    return seconds, prep


class _Clock:
    """This invocation's wall time, recorded in a timing file after every stage, plus earlier invocations'."""

    def __init__(self, path: Path):
        self.path = path
        self.start = self.last = time.time()
        earlier = self.read(path)
        self.earlier, self.earlier_prep = earlier["invocations"], earlier["prep"]
        self.prep = 0.0

    @staticmethod
    def read(path: Path) -> dict:
        try:
            data = json.loads(path.read_text()) if path.is_file() else {}
            invocations = [float(x) for x in data.get("invocations", [])]
            prep = [float(x) for x in data.get("prep", [])]
        except (ValueError, KeyError, TypeError, AttributeError, OSError):
            invocations, prep = [], []
        return {"invocations": invocations, "prep": prep}

    def tick(self, *, prep: bool = False) -> float:
        """Seconds since the previous tick (counted as data preparation with ``prep``); records them."""
        now = time.time()
        step, self.last = now - self.last, now
        if prep:
            self.prep += step
        atomic_write_json(
            self.path,
            {"invocations": [*self.earlier, round(now - self.start, 2)], "prep": [*self.earlier_prep, round(self.prep, 2)]},
        )
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
        from emovox.corpora.pool import corpus_sources

        atomic_write_json(record, {**current, "corpora": corpus_sources(corpus)})


#: Fields that change how a run is recorded or checkpointed, never its numbers: a run may be resumed with others.
BOOKKEEPING = {"train": ("report_to", "mlflow_tracking_uri", "checkpoint_every_steps", "keep_checkpoints")}


#: Top-level fields that add to a run without changing its folds' results: a finished run may be continued with them.
ADDITIONS = ("folds", "control")


def _results_config(config: dict) -> dict:
    """The part of a config that decides the run's results (which folds run is not part of it either, nor the
    controls reported beside them). Fields left at None count as absent, so the runs of an emovox that had no
    such field (``labels``) are still continued."""
    out = {k: v for k, v in config.items() if k not in ADDITIONS and v is not None}
    for section, fields in BOOKKEEPING.items():
        out[section] = {k: v for k, v in out.get(section, {}).items() if k not in fields}
    return out
