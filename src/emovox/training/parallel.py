"""``emovox cv CFG --jobs N``: one run's feature extraction and folds in N local worker processes.

A frozen-feature run is many small single-threaded pieces: one Whisper pass per clip, one logistic
fit per fold. A second *thread* in one process barely helps them (on a busy machine it only
waits), a second *process* does. The pool is the standard library's; its work units are the ones
cluster jobs use (an extraction shard of ``emovox extract --shard i/N``, then one fold of
``emovox cv --fold K`` with its baseline fold), so a parallel run writes exactly the files a
sequential run or fold jobs write, and ``collect_cv`` aggregates them the same way: the results
are identical, only the wall time changes (tested).

Each worker runs one torch thread, loads the corpus and backbones once, and keeps the
``ExperimentData`` it built for later folds. Workers are spawned (never forked: a forked torch or
BLAS thread pool can deadlock).
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emovox.atomic import atomic_write_json

if TYPE_CHECKING:
    from emovox.config import ExperimentConfig
    from emovox.corpora.base import Corpus
    from emovox.splits.fold import Fold

#: What a worker process keeps between tasks.
_STATE: dict[str, Any] = {}


def _start(cfg: ExperimentConfig, corpus: Corpus, folds: list[Fold], out_dir: str) -> None:
    import warnings

    from emovox.accel import set_threads
    from emovox.errors import EmovoxWarning

    warnings.simplefilter("ignore", EmovoxWarning)  # the main process has said it once; N copies add nothing
    train = cfg.train.model_copy(update={"threads": 1, "extract_threads": 1})
    set_threads(1)
    _STATE.update(cfg=cfg.model_copy(update={"train": train}), corpus=corpus, out=Path(out_dir), data={},
                  folds={f.index: f for f in folds})


def _data(cfg: ExperimentConfig):
    from emovox.training.data import ExperimentData

    key = cfg.model_dump_json()
    if key not in _STATE["data"]:
        _STATE["data"][key] = ExperimentData(cfg, _STATE["corpus"], progress=False)
    return _STATE["data"][key]


def _extract(shard: str) -> list[dict]:
    """One extraction shard into the shared cache; the utterances it found unusable."""
    from emovox.data.shards import Shard
    from emovox.training.extract import extract

    summary = extract(_STATE["cfg"], Shard.parse(shard), corpus=_STATE["corpus"], progress=False)
    return [s.to_dict() for s in summary.skipped]


def _fold(index: int) -> int:
    """Fold ``index`` and its baseline fold, as ``emovox cv --fold K`` trains them."""
    from emovox.training.baseline import baseline_config
    from emovox.training.folds import train_fold

    cfg, out, fold = _STATE["cfg"], _STATE["out"], _STATE["folds"][index]
    train_fold(cfg, _data(cfg), fold, out / f"fold_{index}", progress=False)
    bcfg = baseline_config(cfg) if cfg.baseline else None
    if bcfg is not None:
        train_fold(bcfg, _data(bcfg), fold, out / "baseline" / f"fold_{index}", progress=False)
    return index


def train_folds_parallel(
    cfg: ExperimentConfig, corpus: Corpus, folds: list[Fold], out_dir: Path, *, jobs: int, clock, skipped_file: Path,
    progress: bool = True,
) -> None:
    """Extract in ``jobs`` shards, then train every fold (and its baseline fold) on ``jobs`` processes."""
    from emovox.progress import progress_bar
    from emovox.training.data import warn_uniform_durations_of

    jobs = max(1, min(jobs, len(folds)))
    warn_uniform_durations_of(cfg, corpus)  # once, here, rather than once per worker
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_start, initargs=(cfg, corpus, folds, str(out_dir))) as pool:
        skipped: dict[str, dict] = {}
        shards = [f"{i}/{jobs}" for i in range(1, jobs + 1)]
        bar = progress_bar(total=len(shards), desc=f"features ({jobs} processes)", unit="shard", disable=not progress)
        for future in as_completed([pool.submit(_extract, s) for s in shards]):
            for d in future.result():
                skipped.setdefault(d["id"], d)
            bar.update(1)
        bar.close()
        atomic_write_json(skipped_file, {"skipped": sorted(skipped.values(), key=lambda d: d["id"])})
        clock.tick(prep=True)
        bar = progress_bar(total=len(folds), desc=f"{cfg.name} ({jobs} processes)", unit="fold", disable=not progress)
        for future in as_completed([pool.submit(_fold, f.index) for f in folds]):
            future.result()  # a worker's error (an EmovoxError naming the file and problem) surfaces here
            bar.update(1)
            clock.tick()
        bar.close()
