"""Jobs for engines emovox does not replace: one command line per fold, and submitit to run them.

``--list-jobs`` prints one ``emovox cv ... --fold K`` per line: a SLURM array picks line
``$SLURM_ARRAY_TASK_ID`` (or passes ``--fold $SLURM_ARRAY_TASK_ID`` itself), GNU parallel reads
them as they are. ``--executor local|slurm`` hands the very same commands to submitit (the
``cluster`` extra): ``local`` runs them as subprocesses of this machine, ``slurm`` submits them as
one job array. emovox schedules nothing itself.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from emovox.errors import ConfigError, EmovoxError

EXECUTORS = ("local", "slurm")


@dataclass(frozen=True)
class Job:
    """One unit of work: a name for logs, and the arguments after ``emovox``."""

    name: str
    args: list[str]

    def command(self) -> str:
        return shlex.join(["emovox", *self.args])


def fold_jobs(
    config: Path, overrides: Sequence[str], out: Path, folds: Sequence[int], *, name: str = "", points: int = 0
) -> list[Job]:
    """``emovox cv CONFIG [--set ...] --out OUT --fold K`` for every fold ``K`` (with ``points``: ``--point J``
    for every grid point ``J`` of every fold, the stage before the fold jobs)."""
    base = ["cv", str(config), *[a for s in overrides for a in ("--set", s)], "--out", str(out)]
    name = name or config.stem
    if points > 1:
        return [
            Job(f"{name}/fold_{k}/point_{j}", [*base, "--fold", str(k), "--point", str(j)])
            for k in folds
            for j in range(1, points + 1)
        ]
    return [Job(f"{name}/fold_{k}", [*base, "--fold", str(k)]) for k in folds]


def parse_params(pairs: Sequence[str] | None) -> dict:
    """``--executor-param timeout_min=600 --executor-param slurm_partition=gpu`` -> submitit parameters."""
    import yaml

    params = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"--executor-param {pair!r}: expected key=value, e.g. timeout_min=600 or slurm_partition=gpu")
        key, raw = pair.split("=", 1)
        params[key.strip()] = yaml.safe_load(raw) if raw else ""
    return params


def submit(jobs: Sequence[Job], executor: str, folder: Path, params: dict, *, wait: bool) -> list[str]:
    """Run ``jobs`` through submitit; with ``wait``, block until all end and return the failures (name: log)."""
    if executor not in EXECUTORS:
        raise EmovoxError(f"--executor {executor!r}: use one of {', '.join(EXECUTORS)}")
    try:
        import submitit
    except ImportError:
        raise EmovoxError("--executor needs submitit: pip install 'emovox[cluster]'") from None
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    if executor == "local":
        ex = submitit.LocalExecutor(folder=str(folder))
    else:
        ex = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
    params = {"timeout_min": 24 * 60, **params}
    try:
        ex.update_parameters(**params)
    except (TypeError, ValueError) as exc:
        raise EmovoxError(f"--executor-param: {exc}") from None
    cwd = os.getcwd()
    # `python -m emovox` from this interpreter, in this directory and environment: the job runs the listed command
    functions = [submitit.helpers.CommandFunction([sys.executable, "-m", "emovox", *j.args], cwd=cwd) for j in jobs]
    if executor == "slurm":
        with ex.batch():  # one job array, as `sbatch --array` would submit it
            handles = [ex.submit(f) for f in functions]
    else:
        handles = [ex.submit(f) for f in functions]
    from rich.console import Console

    console = Console(stderr=True)
    for j, h in zip(jobs, handles, strict=True):
        console.print(f"submitted {j.name}: job {h.job_id} (logs {h.paths.stdout.parent})")
    if not wait:
        return []
    failed = []
    for j, h in zip(jobs, handles, strict=True):
        try:
            h.result()
        except Exception as exc:  # submitit raises its own FailedJobError with the job's stderr
            failed.append(f"{j.name} (job {h.job_id}, log {h.paths.stderr}): {str(exc).strip().splitlines()[-1:]}")
    return failed
