"""Experiment tracking: training curves, the config and test metrics in TensorBoard and MLflow.

Researchers read learning curves in the tools they already use, so emovox writes those tools' own
files with their own writers (TensorBoard event files through ``torch.utils.tensorboard``, MLflow
through its client) rather than a home-made logger. The trainer knows one small interface,
``Tracker``; with ``train.report_to`` empty it is the no-op base class and nothing is imported.

Everything is logged on one x axis, the optimizer step, so that curves of folds of different
lengths line up and TensorBoard's restart purge treats every tag alike:

- every optimizer step: ``train/loss`` (the mean loss of the batches that step accumulated; with
  ``grad_accum: 1`` the per-batch loss of the IEMOCAP paper's Figure 4) and ``train/lr``
  (``train/lr/<group>`` when the model kind trains parameter groups at different rates);
- every epoch end: ``epoch``, ``train/epoch_loss``, ``valid/loss``, ``valid/wa``, ``valid/ua``,
  ``valid/macro_f1``;
- once the fold is tested (at its last step): ``test/wa``, ``test/ua``, ``test/macro_f1``, ``test/weighted_f1``
  (every headline metric of ``emovox.evaluation.metrics``) and ``best_epoch``;
- the whole config flattened to dotted keys (``train.lr``): MLflow parameters, TensorBoard hparams.

One tracked run per fold (``fold_k``; ``fold_k/point_i`` for each point of a search): TensorBoard
writes ``RUN/tensorboard/fold_k``; MLflow puts a run per fold in the experiment named after the
config, nested under a parent run for the whole cross-validation that gets its mean and pooled
metrics. MLflow's store is ``train.mlflow_tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else an
SQLite file in the run directory (MLflow's file store is in maintenance mode and refuses to start
unless told otherwise; SQLite is its recommended local backend).

A run killed and resumed repeats the steps after its last checkpoint; training is deterministic,
so it logs the same values again. TensorBoard is told to hide what the killed process wrote past
the checkpoint (``purge_step``); the MLflow tracker drops re-logged values at steps its run
already has. Both flush before every checkpoint is committed, so nothing committed is missing.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emovox.atomic import atomic_write_json
from emovox.errors import EmovoxError
from emovox.evaluation.metrics import HEADLINE

if TYPE_CHECKING:
    from emovox.config import ExperimentConfig

#: Where a tracked run's MLflow id is kept (in the fold's directory; the parent run's in the run directory).
TRACKING_FILE = "tracking.json"
TENSORBOARD_DIR = "tensorboard"
MLFLOW_DB = "mlflow.db"
MLFLOW_ARTIFACTS = "mlflow-artifacts"
INSTALL_HINT = "pip install 'emovox[tracking]'"
#: The metrics a fold reports once tested (their TensorBoard tags are declared in the hparams experiment).
TEST_TAGS = tuple(f"test/{k}" for k in HEADLINE)
#: Epoch-record keys -> tag.
EPOCH_TAGS = {
    "epoch": "epoch",
    "train_loss": "train/epoch_loss",
    "valid_loss": "valid/loss",
    "valid_wa": "valid/wa",
    "valid_ua": "valid/ua",
    "valid_macro_f1": "valid/macro_f1",
}


class TrackingError(EmovoxError):
    """A tracker named in ``train.report_to`` is not installed, or its store cannot be used."""


class Tracker:
    """What the trainer and the fold runner report to. This base class logs nothing (``report_to: []``)."""

    step = 0  # the highest step seen: test metrics go there

    def resume(self, step: int) -> None:
        """Training (re)starts after optimizer step ``step`` (0: from scratch); called once, before any log."""
        self.step = max(self.step, step)

    def log_step(self, step: int, loss: float, lrs: dict[str, float]) -> None:
        tags = {"train/lr": next(iter(lrs.values()))} if len(lrs) == 1 else {f"train/lr/{k}": v for k, v in lrs.items()}
        self.log(step, {"train/loss": loss, **tags})

    def log_epoch(self, step: int, record: dict) -> None:
        values = {tag: record.get(key) for key, tag in EPOCH_TAGS.items()}
        self.log(step, {k: float(v) for k, v in values.items() if v is not None and math.isfinite(v)})

    def log_test(self, scores: dict[str, float], best_epoch: int) -> None:
        self.log(self.step, {**{f"test/{k}": float(v) for k, v in scores.items()}, "best_epoch": float(best_epoch)})

    def log(self, step: int, values: dict[str, float]) -> None:
        self.step = max(self.step, step)

    def flush(self) -> None:
        """Make everything logged so far durable (called before each checkpoint is committed)."""

    def close(self, *, failed: bool = False) -> None:
        """The fold is finished (tested) or failed; a process killed never gets here and resumes the run."""


class Trackers(Tracker):
    """Several trackers at once (``report_to: [tensorboard, mlflow]``)."""

    def __init__(self, trackers: list[Tracker]):
        self.trackers = trackers

    def resume(self, step: int) -> None:
        super().resume(step)
        for t in self.trackers:
            t.resume(step)

    def log(self, step: int, values: dict[str, float]) -> None:
        super().log(step, values)
        for t in self.trackers:
            t.log(step, values)

    def flush(self) -> None:
        for t in self.trackers:
            t.flush()

    def close(self, *, failed: bool = False) -> None:
        for t in self.trackers:
            t.close(failed=failed)


def flatten_config(cfg: ExperimentConfig) -> dict[str, bool | int | float | str]:
    """The config as ``{dotted.key: scalar}``; lists and nulls as JSON text (what both trackers accept)."""
    out: dict[str, bool | int | float | str] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for k, v in node.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k))
        elif isinstance(node, (bool, int, float, str)):
            out[prefix] = node
        else:
            out[prefix] = json.dumps(node)

    walk(json.loads(cfg.model_dump_json()), "")
    return out


# --- TensorBoard ---------------------------------------------------------------------------------


class TensorBoardTracker(Tracker):
    """Event files in ``log_dir`` through ``torch.utils.tensorboard.SummaryWriter``."""

    def __init__(self, log_dir: Path, params: dict[str, Any]):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise TrackingError(f"train.report_to: tensorboard needs the tensorboard package ({INSTALL_HINT})") from None
        self._writer_class = SummaryWriter
        self.log_dir = Path(log_dir)
        self.params = params
        self.writer = None

    def _open(self, step: int) -> None:
        # Events a killed process wrote past its last checkpoint (step > ``step``) are hidden by
        # TensorBoard's readers from this point on: the resumed run writes them again.
        earlier = self.log_dir.is_dir() and any(self.log_dir.glob("events.out.tfevents.*"))
        self.writer = self._writer_class(str(self.log_dir), purge_step=step + 1 if earlier else None, flush_secs=30)
        from torch.utils.tensorboard.summary import hparams

        experiment, start, self._end = hparams(self.params, dict.fromkeys(TEST_TAGS, 0.0))
        for summary in (experiment, start):
            self.writer._get_file_writer().add_summary(summary)

    def resume(self, step: int) -> None:
        super().resume(step)
        if self.writer is None:
            self._open(step)

    def log(self, step: int, values: dict[str, float]) -> None:
        super().log(step, values)
        if self.writer is None:
            self._open(0)
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self, *, failed: bool = False) -> None:
        if self.writer is None:
            return
        if not failed:
            self.writer._get_file_writer().add_summary(self._end)
        self.writer.close()
        self.writer = None


# --- MLflow --------------------------------------------------------------------------------------


def mlflow_store(cfg: ExperimentConfig, run_root: Path) -> tuple[str, Path | None]:
    """The tracking URI (``train.mlflow_tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else SQLite in the
    run directory) and, for that default store, where a new experiment keeps its artifacts."""
    given = cfg.train.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if given:
        return given, None
    return f"sqlite:///{(run_root / MLFLOW_DB).resolve()}", run_root / MLFLOW_ARTIFACTS


def _mlflow_client(uri: str):
    # MLflow 3 sends usage telemetry to its vendor unless told not to; emovox sends nothing anywhere the
    # user did not ask for (set MLFLOW_DISABLE_TELEMETRY=false yourself to opt in)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise TrackingError(f"train.report_to: mlflow needs the MLflow client ({INSTALL_HINT})") from None
    for name in ("mlflow.store.db.utils", "alembic.runtime.migration"):  # "creating tables" on every new store
        logging.getLogger(name).setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=uri)


def _mlflow_call(uri: str, what: str, fn, *args, **kwargs):
    """An MLflow client call whose failure names the store and what to do."""
    try:
        return fn(*args, **kwargs)
    except EmovoxError:
        raise
    except Exception as exc:  # the client raises MlflowException, SQLAlchemy and HTTP errors alike
        raise TrackingError(
            f"MLflow at {uri}: could not {what} ({type(exc).__name__}: {str(exc)[:300]}); check "
            "train.mlflow_tracking_uri / MLFLOW_TRACKING_URI, or remove mlflow from train.report_to"
        ) from None


def _experiment_id(client, uri: str, name: str, artifacts: Path | None) -> str:
    exp = _mlflow_call(uri, f"read experiment {name!r}", client.get_experiment_by_name, name)
    if exp is None:
        location = artifacts.resolve().as_uri() if artifacts is not None else None
        return _mlflow_call(uri, f"create experiment {name!r}", client.create_experiment, name, artifact_location=location)
    if exp.lifecycle_stage == "deleted":
        _mlflow_call(uri, f"restore deleted experiment {name!r}", client.restore_experiment, exp.experiment_id)
    return exp.experiment_id


def _saved_run(client, uri: str, record: Path, key: str):
    """The MLflow run recorded under ``key`` in ``record`` for this store, if it still exists."""
    try:
        saved = json.loads(record.read_text())["mlflow"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if saved.get("tracking_uri") != uri or not saved.get(key):
        return None
    try:
        run = client.get_run(saved[key])
    except Exception:  # deleted by hand, or another store: start a new run
        return None
    return run if run.info.lifecycle_stage == "active" else None


def _record_run(record: Path, uri: str, key: str, run_id: str) -> None:
    try:
        data = json.loads(record.read_text()) if record.is_file() else {}
    except (OSError, ValueError):
        data = {}
    data.setdefault("mlflow", {}).update({"tracking_uri": uri, key: run_id})
    atomic_write_json(record, data)


def _chunks(items: list, size: int) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class _MLflowRun:
    """One MLflow run of the experiment: created once, reopened by a resumed process (its id is kept in ``record``)."""

    #: MLflow's limits per ``log_batch`` call and per parameter value.
    MAX_METRICS, MAX_PARAMS, MAX_VALUE = 1000, 100, 6000

    def __init__(self, uri: str, experiment: str, artifacts: Path | None, record: Path, name: str, tags: dict[str, str],
                 params: dict[str, Any] | None):
        from mlflow.entities import Param

        self.uri = uri
        self.client = client = _mlflow_client(uri)
        experiment_id = _experiment_id(client, uri, experiment, artifacts)
        run = _saved_run(client, uri, record, "run_id")
        self.logged: dict[str, int] = {}  # metric -> highest step the store already has
        if run is not None:
            self.run_id = run.info.run_id
            for key in run.data.metrics:
                history = _mlflow_call(uri, "read the run's metrics", client.get_metric_history, self.run_id, key)
                self.logged[key] = max(m.step for m in history)
            if run.info.status != "RUNNING":
                _mlflow_call(uri, "reopen the run", client.update_run, self.run_id, status="RUNNING")
        else:
            run = _mlflow_call(uri, "create a run", client.create_run, experiment_id, run_name=name, tags=tags)
            self.run_id = run.info.run_id
            if params:
                clip = lambda v: str(v) if len(str(v)) <= self.MAX_VALUE else str(v)[: self.MAX_VALUE - 1] + "…"  # noqa: E731
                for chunk in _chunks([Param(k, clip(v)) for k, v in params.items()], self.MAX_PARAMS):
                    _mlflow_call(uri, "log the config", client.log_batch, self.run_id, params=chunk)
            _record_run(record, uri, "run_id", self.run_id)
        self.pending: list = []
        self.last_flush = time.monotonic()

    def log(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        for key, value in values.items():
            if step > self.logged.get(key, -1):  # not already in the store (a resumed run repeats steps)
                self.pending.append(Metric(key, float(value), now, step))
        if len(self.pending) >= self.MAX_METRICS or time.monotonic() - self.last_flush > 30:
            self.flush()

    def flush(self) -> None:
        for chunk in _chunks(self.pending, self.MAX_METRICS):
            _mlflow_call(self.uri, "log metrics", self.client.log_batch, self.run_id, metrics=chunk)
        self.pending = []
        self.last_flush = time.monotonic()

    def close(self, *, failed: bool = False) -> None:
        self.flush()
        _mlflow_call(self.uri, "end the run", self.client.set_terminated, self.run_id, "FAILED" if failed else "FINISHED")


def _parent_run(cfg: ExperimentConfig, run_root: Path) -> _MLflowRun:
    """The run of the whole cross-validation (kept in ``RUN/tracking.json``): the folds' runs nest under it."""
    uri, artifacts = mlflow_store(cfg, run_root)
    corpus = " + ".join(cfg.corpus_specs)
    tags = {"emovox.run_dir": str(run_root.resolve()), "emovox.corpus": corpus, "emovox.protocol": cfg.protocol}
    return _MLflowRun(uri, cfg.name, artifacts, run_root / TRACKING_FILE, run_root.resolve().name, tags, flatten_config(cfg))


class MLflowTracker(Tracker):
    """A fold's MLflow run; metrics are sent in batches (at checkpoints, every 30 s, every 1000 values)."""

    def __init__(self, cfg: ExperimentConfig, run_root: Path, name: str, state_dir: Path, *, nested: bool = True):
        tags = {"emovox.run_dir": str(run_root.resolve()), "emovox.fold": name}
        if nested:
            tags["mlflow.parentRunId"] = _parent_run(cfg, run_root).run_id
        uri, artifacts = mlflow_store(cfg, run_root)
        self.run = _MLflowRun(uri, cfg.name, artifacts, state_dir / TRACKING_FILE, name, tags, flatten_config(cfg))

    def log(self, step: int, values: dict[str, float]) -> None:
        super().log(step, values)
        self.run.log(step, values)

    def flush(self) -> None:
        self.run.flush()

    def close(self, *, failed: bool = False) -> None:
        self.run.close(failed=failed)


# --- entry points ----------------------------------------------------------------------------------


def open_tracker(cfg: ExperimentConfig, *, run_root: Path, name: str, state_dir: Path, nested: bool = True) -> Tracker:
    """The tracker of one trained model (a fold, or a search point of a fold) named ``name`` (``fold_3``).

    ``run_root`` is the run directory (TensorBoard's ``tensorboard/`` and the default MLflow store
    go there); ``state_dir`` is where the model's checkpoints are (its MLflow run id is kept beside them).
    ``nested=False`` (a final model, ``emovox train``): one MLflow run without a cross-validation parent.
    """
    from emovox.training import distributed

    if not distributed.is_main():  # several processes train one model: the main one reports it
        return Tracker()
    trackers: list[Tracker] = []
    for kind in cfg.train.report_to:
        if kind == "tensorboard":
            trackers.append(TensorBoardTracker(run_root / TENSORBOARD_DIR / name, flatten_config(cfg)))
        elif kind == "mlflow":
            trackers.append(MLflowTracker(cfg, run_root, name, state_dir, nested=nested))
    if not trackers:
        return Tracker()
    return trackers[0] if len(trackers) == 1 else Trackers(trackers)


def log_run_results(cfg: ExperimentConfig, run_root: Path, results: dict) -> None:
    """The cross-validation's mean, std and pooled metrics on its MLflow parent run (TensorBoard has no such run)."""
    if "mlflow" not in cfg.train.report_to:
        return
    parent = _parent_run(cfg, run_root)
    parts = ("mean", "std", "pooled")
    values = {f"{part}/{k}": float(results[part][k]) for part in parts for k in HEADLINE if k in results[part]}
    parent.log(len(results["folds"]), values)  # step = folds aggregated (a run extended by more folds logs again)
    parent.close()
