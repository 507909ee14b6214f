"""Experiment tracking (``train.report_to``): what TensorBoard and MLflow hold, read back with their own
readers, equals what the run wrote in ``done.json`` and ``results.json``; a run resumed after a crash
leaves no duplicate or missing point; a tracker that is not installed is a clear error.

The runs are real ``run_cv`` runs of a tiny frozen probe on the tone corpus (seconds each).
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
from helpers import tiny_config, tone_rows, write_manifest

from emovox.config import config_from_dict
from emovox.errors import ConfigError
from emovox.evaluation.metrics import HEADLINE
from emovox.training.checkpoint import Checkpointer
from emovox.training.runner import run_cv
from emovox.training.tracking import Tracker, TrackingError

LR = 0.003  # slow enough that validation scores change between epochs
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # this module's own MLflow readers: nothing leaves the machine


def has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


needs_tensorboard = pytest.mark.skipif(not has("tensorboard"), reason="tensorboard not installed (pip install 'emovox[tracking]')")
needs_mlflow = pytest.mark.skipif(
    not (has("mlflow") and has("sqlalchemy") and has("alembic")), reason="MLflow client not installed (pip install 'emovox[tracking]')"
)


def tracked_config(root, report_to, **train) -> dict:
    manifest = write_manifest(root / "m.csv", tone_rows(root, per_class=3))
    return tiny_config(
        manifest, root / "cache", folds=[1, 2], train={"lr": LR, "max_epochs": 4, "patience": 4, "report_to": report_to, **train}
    )


def available() -> list[str]:
    return [name for name, ok in (("tensorboard", has("tensorboard")), ("mlflow", has("mlflow") and has("sqlalchemy"))) if ok]


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    """One cross-validation (2 folds) reporting to every installed tracker."""
    if not available():
        pytest.skip("neither tensorboard nor mlflow is installed (pip install 'emovox[tracking]')")
    root = tmp_path_factory.mktemp("tracked")
    data = tracked_config(root, available())
    results = run_cv(config_from_dict(data), root / "run", progress=False)
    return root / "run", data, results


def done(run, k: int) -> dict:
    return json.loads((run / f"fold_{k}" / "done.json").read_text())


def steps_and_losses(history: list[dict]) -> tuple[list[int], list[float]]:
    losses = [x for epoch in history for x in epoch["step_loss"]]
    return list(range(1, len(losses) + 1)), losses


# --- TensorBoard ----------------------------------------------------------------------------------


def scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})  # 0: keep every point
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}, acc


def f32(values) -> list[float]:
    return [float(np.float32(v)) for v in values]  # TensorBoard stores scalars as float32


def check_tensorboard(log_dir, fold: dict, cfg: dict) -> None:
    got, acc = scalars(log_dir)
    history = fold["history"]
    steps, losses = steps_and_losses(history)
    assert got["train/loss"] == list(zip(steps, f32(losses), strict=True))  # every optimizer step, once
    assert got["train/lr"] == list(zip(steps, f32([cfg["train"]["lr"]] * len(steps)), strict=True))
    ends = [h["steps"] for h in history]
    for tag, key in (("valid/ua", "valid_ua"), ("valid/wa", "valid_wa"), ("valid/macro_f1", "valid_macro_f1"), ("epoch", "epoch")):
        assert got[tag] == list(zip(ends, f32([h[key] for h in history]), strict=True)), tag
    for k in HEADLINE:
        assert got[f"test/{k}"] == [(ends[-1], f32([fold["test"][k]])[0])]
    assert got["best_epoch"] == [(ends[-1], float(fold["best_epoch"]))]
    # the config as hparams (TensorBoard's HParams tab)
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["train.lr"].number_value == cfg["train"]["lr"]
    assert start.hparams["model.backbone"].string_value == cfg["model"]["backbone"]
    assert start.hparams["protocol"].string_value == cfg["protocol"]
    assert "_hparams_/session_end_info" in content


@needs_tensorboard
def test_tensorboard_holds_the_runs_curves_and_test_metrics(tracked_run):
    run, cfg, results = tracked_run
    assert sorted(p.name for p in (run / "tensorboard").iterdir()) == ["fold_1", "fold_2"]
    for k in (1, 2):
        fold = done(run, k)
        assert fold["test"] == {m: results["folds"][k - 1][m] for m in HEADLINE}
        check_tensorboard(run / "tensorboard" / f"fold_{k}", fold, cfg)
    # validation UA changed during training: the curves are not constant
    assert len({h["valid_ua"] for k in (1, 2) for h in done(run, k)["history"]}) > 1


# --- MLflow ------------------------------------------------------------------------------------------


def mlflow_runs(run, name: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{run / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(name)
    return client, {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}


def history_of(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def check_mlflow_fold(client, r, fold: dict, cfg: dict) -> None:
    history = fold["history"]
    steps, losses = steps_and_losses(history)
    assert history_of(client, r.info.run_id, "train/loss") == list(zip(steps, losses, strict=True))  # exact: float64
    ends = [h["steps"] for h in history]
    for tag, key in (("valid/ua", "valid_ua"), ("valid/wa", "valid_wa"), ("valid/macro_f1", "valid_macro_f1"), ("valid/loss", "valid_loss")):
        assert history_of(client, r.info.run_id, tag) == list(zip(ends, [h[key] for h in history], strict=True)), tag
    for k in HEADLINE:
        assert history_of(client, r.info.run_id, f"test/{k}") == [(ends[-1], fold["test"][k])]
    assert r.data.params["train.lr"] == str(cfg["train"]["lr"])
    assert r.data.params["model.backbone"] == cfg["model"]["backbone"]
    assert r.info.status == "FINISHED"


@needs_mlflow
def test_mlflow_holds_a_run_per_fold_under_the_experiment(tracked_run):
    run, cfg, results = tracked_run
    client, runs = mlflow_runs(run, cfg["name"])
    parent = runs.pop("run")  # the cross-validation's run, named after the run directory
    assert sorted(runs) == ["fold_1", "fold_2"]
    for k in (1, 2):
        r = runs[f"fold_{k}"]
        assert r.data.tags["mlflow.parentRunId"] == parent.info.run_id
        check_mlflow_fold(client, r, done(run, k), cfg)
    for part in ("mean", "std", "pooled"):
        for k in HEADLINE:
            assert parent.data.metrics[f"{part}/{k}"] == results[part][k]
    assert parent.info.status == "FINISHED" and parent.data.params["name"] == cfg["name"]


@needs_mlflow
def test_mlflow_tracking_uri_from_the_config(tmp_path, monkeypatch):
    store = tmp_path / "elsewhere.db"
    data = tracked_config(tmp_path, ["mlflow"], max_epochs=1, mlflow_tracking_uri=f"sqlite:///{store}")
    data["folds"] = [1]
    monkeypatch.delenv("MLFLOW_DISABLE_TELEMETRY", raising=False)
    run_cv(config_from_dict(data), tmp_path / "run", progress=False)
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"  # MLflow's usage telemetry is off unless the user opts in
    assert store.is_file() and not (tmp_path / "run" / "mlflow.db").exists()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    names = {r.info.run_name for r in client.search_runs([client.get_experiment_by_name(data["name"]).experiment_id])}
    assert names == {"run", "fold_1"}


# --- a crash mid-epoch, then resume: nothing logged twice, nothing missing --------------------------


class Killed(BaseException):
    """Stands in for SIGKILL at one precise point (nothing after it runs)."""


@pytest.mark.skipif(not available(), reason="neither tensorboard nor mlflow is installed (pip install 'emovox[tracking]')")
def test_a_resumed_run_logs_every_step_exactly_once(tmp_path, monkeypatch):
    """The killed process had flushed steps past its last checkpoint (the trackers flush before each
    commit, and it dies just before committing): the resumed one logs them again, and the readers
    must show each once, equal to the finished fold's history."""
    data = tracked_config(tmp_path, available(), checkpoint_every_steps=2, max_epochs=3)
    data["folds"] = [1]
    real_save = Checkpointer.save
    calls = {"n": 0}

    def dies_at_the_fourth_checkpoint(self, model, optimizer, scheduler, state):
        calls["n"] += 1
        if calls["n"] == 4:
            raise Killed
        real_save(self, model, optimizer, scheduler, state)

    monkeypatch.setattr(Checkpointer, "save", dies_at_the_fourth_checkpoint)
    with pytest.raises(Killed):
        run_cv(config_from_dict(data), tmp_path / "run", progress=False)
    monkeypatch.undo()
    state = json.loads((tmp_path / "run" / "fold_1" / "last_state.json").read_text())
    logged_past_it = state["global_step"] + 1  # the killed process logged (and flushed) at least one more step

    run_cv(config_from_dict(data), tmp_path / "run", progress=False)
    fold = done(tmp_path / "run", 1)
    assert 0 < fold["resumed_from_step"] < logged_past_it <= fold["history"][-1]["steps"]
    if "tensorboard" in available():
        check_tensorboard(tmp_path / "run" / "tensorboard" / "fold_1", fold, data)
    if "mlflow" in available():
        client, runs = mlflow_runs(tmp_path / "run", data["name"])
        assert sorted(runs) == ["fold_1", "run"]  # the resumed process reopened the same runs
        check_mlflow_fold(client, runs["fold_1"], fold, data)


# --- configuration and errors ------------------------------------------------------------------------


def test_report_to_accepts_one_name_or_none_and_refuses_others(tmp_path):
    base = tiny_config(tmp_path / "m.csv", tmp_path / "cache")
    one = config_from_dict({**base, "train": {**base["train"], "report_to": "tensorboard"}})
    assert one.train.report_to == ["tensorboard"]
    assert config_from_dict({**base, "train": {**base["train"], "report_to": "none"}}).train.report_to == []
    assert config_from_dict(base).train.report_to == []  # off by default
    with pytest.raises(ConfigError, match="report_to"):
        config_from_dict({**base, "train": {**base["train"], "report_to": ["wandb"]}})


@pytest.mark.parametrize(("tracker", "module"), [("tensorboard", "torch.utils.tensorboard"), ("mlflow", "mlflow.tracking")])
def test_a_tracker_that_is_not_installed_is_a_clear_error(tmp_path, monkeypatch, tracker, module):
    monkeypatch.setitem(sys.modules, module, None)  # what `import` sees when the package is absent
    data = tracked_config(tmp_path, [tracker])
    with pytest.raises(TrackingError, match=rf"report_to: {tracker} needs .*pip install 'emovox\[tracking\]'"):
        run_cv(config_from_dict(data), tmp_path / "run", progress=False)


def test_resuming_with_other_tracking_settings_is_the_same_run(tmp_path):
    """Trackers and checkpoint frequency change how a run is recorded, not its numbers."""
    data = tracked_config(tmp_path, [], max_epochs=1)
    data["folds"] = [1]
    first = run_cv(config_from_dict(data), tmp_path / "run", progress=False)
    data["train"].update(checkpoint_every_steps=3, keep_checkpoints=2)
    again = run_cv(config_from_dict(data), tmp_path / "run", progress=False)
    assert again["pooled"] == first["pooled"]


@pytest.mark.skipif(not available(), reason="neither tensorboard nor mlflow is installed (pip install 'emovox[tracking]')")
def test_emovox_train_tracks_the_final_model_beside_it(tmp_path):
    """``emovox train``: TensorBoard in MODEL_DIR/tensorboard/all_data (kept with the recognizer), one MLflow
    run in MODEL_DIR/mlflow.db (not one of the recognizer's files: it still loads and verifies)."""
    from emovox import Recognizer
    from emovox.training.final import train_recognizer

    data = tracked_config(tmp_path, available(), max_epochs=2)
    model_dir = tmp_path / "recognizer"
    train_recognizer(config_from_dict(data), model_dir, progress=False)
    meta = json.loads((model_dir / "emovox.json").read_text())
    history = meta["training"]["history"]
    steps, losses = steps_and_losses(history)
    if "tensorboard" in available():
        got, _ = scalars(model_dir / "tensorboard" / "all_data")
        assert got["train/loss"] == list(zip(steps, f32(losses), strict=True))
        assert got["valid/ua"] == list(zip([h["steps"] for h in history], f32([h["valid_ua"] for h in history]), strict=True))
        assert any(f.startswith("tensorboard/") for f in meta["files"])  # part of the recognizer, like a hub's runs/
    if "mlflow" in available():
        client, runs = mlflow_runs(model_dir, data["name"])
        assert list(runs) == ["all_data"] and "mlflow.parentRunId" not in runs["all_data"].data.tags
        assert history_of(client, runs["all_data"].info.run_id, "train/loss") == list(zip(steps, losses, strict=True))
        assert runs["all_data"].info.status == "FINISHED"
        assert not any(f.startswith("mlflow") for f in meta["files"])
    assert set(Recognizer.load(model_dir).labels) == {"low", "high"}


class Recording(Tracker):
    """A tracker that keeps what the trainer reports (the interface is the only thing tested here)."""

    def __init__(self):
        self.points, self.flushes = [], 0

    def log(self, step, values):
        super().log(step, values)
        self.points.append((step, dict(values)))

    def flush(self):
        self.flushes += 1


def test_the_trainer_reports_each_step_and_epoch_and_names_learning_rates_by_group():
    """What the trainer hands any tracker: the loss of every optimizer step (averaged over the batches it
    accumulated), each group's learning rate by name, and the epoch's validation scores at its last step."""
    import torch
    from torch import nn

    from emovox.config import TrainConfig
    from emovox.data.examples import Example
    from emovox.training.trainer import Trainer

    class TwoRates(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.head = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, inputs):
            return self.head(torch.relu(self.body(inputs["x"])))

        def param_groups(self, lr, head_lr):
            return [{"params": self.body.parameters(), "lr": lr, "name": "backbone"},
                    {"params": self.head.parameters(), "lr": head_lr, "name": "head"}]

    g = torch.Generator().manual_seed(0)
    examples = [Example(f"u{i}", i % 2, length=1.0, cached={"x": torch.randn(4, generator=g) + 2 * (i % 2)}) for i in range(20)]
    tracker = Recording()
    cfg = TrainConfig(lr=1e-3, head_lr=0.05, batch_size=4, grad_accum=2, max_epochs=2, patience=2)
    collate = lambda batch: {"x": torch.stack([e.cached["x"] for e in batch])}  # noqa: E731
    fit = Trainer(TwoRates(), collate, cfg, 2, progress=False, tracker=tracker).fit(examples[:12], examples[12:])
    steps = [(s, v) for s, v in tracker.points if "train/loss" in v]
    assert [s for s, _ in steps] == [1, 2, 3, 4]  # 3 batches an epoch, 2 per step: steps of 2 and 1 batches
    assert [v["train/loss"] for _, v in steps] == [x for h in fit.history for x in h["step_loss"]]
    assert all(v["train/lr/backbone"] == 1e-3 and v["train/lr/head"] == 0.05 for _, v in steps)
    epochs = [(s, v) for s, v in tracker.points if "valid/ua" in v]
    assert [(s, v["epoch"], v["valid/ua"], v["valid/macro_f1"]) for s, v in epochs] == [
        (h["steps"], h["epoch"], h["valid_ua"], h["valid_macro_f1"]) for h in fit.history
    ]
    assert tracker.flushes >= 2  # before each epoch's checkpoint would be committed
