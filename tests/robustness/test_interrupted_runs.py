"""Interrupted runs: ``kill -9`` in the middle of an epoch, then ``emovox cv --resume``, ends with
exactly the numbers and predictions of an uninterrupted run; finished folds are kept; no crash
leaves a half-written checkpoint or JSON behind.

The kill test runs the real command line in a child process and kills it with SIGKILL (no
handler, no cleanup, as the OOM killer or a pulled plug would), as soon as fold 2 has written
its first epoch checkpoint, i.e. while it trains its next epoch.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest
import torch
import yaml
from helpers import tiny_config, tone_rows, write_manifest
from robustness_helpers import EMOVOX, Net, blobs, collate
from safetensors.torch import load_file as load_tensors
from typer.testing import CliRunner

from emovox import atomic as checkpoint  # the atomic writers (re-exported by training.checkpoint)
from emovox.cli import app
from emovox.config import TrainConfig, config_from_dict
from emovox.errors import EmovoxError
from emovox.training.checkpoint import STATE_FILE
from emovox.training.runner import run_cv
from emovox.training.trainer import Trainer

MAX_EPOCHS = 6


def finetune_config(root) -> dict:
    """Tiny wav2vec2 fine-tuned end to end (dropout and SpecAugment draw from torch's and numpy's
    RNGs, so an inexact resume would show), two folds, several short epochs."""
    manifest = write_manifest(root / "m.csv", tone_rows(root, per_class=4, seconds=0.5))
    return tiny_config(
        manifest,
        root / "cache",
        model={"mode": "finetune"},
        train={"lr": 1e-3, "max_epochs": MAX_EPOCHS, "patience": MAX_EPOCHS},
        folds=[1, 2],
    )


def wait_for_checkpoint(proc: subprocess.Popen, state: os.PathLike, log, timeout: float = 240) -> int:
    """Poll until ``state`` (written atomically, so never half-read) records epoch >= 1."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the run ended (code {proc.returncode}) before it could be killed:\n{log.read_text()}")
        try:
            epoch = json.loads(open(state).read())["epoch"]
        except FileNotFoundError:
            epoch = 0
        if epoch >= 1:
            return epoch
        time.sleep(0.003)
    proc.kill()
    pytest.fail(f"no checkpoint in {state} within {timeout} s:\n{log.read_text()}")


def metrics_of(results: dict) -> dict:
    return {k: results[k] for k in ("folds", "mean", "std", "pooled", "best_epochs", "skipped", "label_set")}


def test_kill_9_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path):
    data = finetune_config(tmp_path)
    cfg_path = tmp_path / "exp.yaml"
    cfg_path.write_text(yaml.safe_dump(data))
    killed = tmp_path / "killed"
    log = tmp_path / "killed.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*EMOVOX, "cv", str(cfg_path), "--out", str(killed), "--quiet"], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_for_checkpoint(proc, killed / "fold_2" / STATE_FILE, log)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    # it died inside fold 2: fold 1 finished, fold 2 part-trained, no results yet
    state = json.loads((killed / "fold_2" / STATE_FILE).read_text())
    assert 1 <= state["epoch"] < MAX_EPOCHS and not state["finished"]
    assert (killed / "fold_1" / "done.json").is_file() and not (killed / "fold_2" / "done.json").exists()
    assert not (killed / "results.json").exists()
    fold1_done = (killed / "fold_1" / "done.json").read_bytes()
    fold1_predictions = (killed / "fold_1" / "predictions.csv").read_bytes()

    with (tmp_path / "resume.log").open("w") as out:
        resume = subprocess.Popen(
            [*EMOVOX, "cv", str(cfg_path), "--out", str(killed), "--quiet", "--resume"], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        # meanwhile, the same config without interruption (in this process: also checks that
        # another process with the same seed computes the same numbers)
        reference = run_cv(config_from_dict(data), tmp_path / "reference", progress=False)
        assert resume.wait(timeout=300) == 0, (tmp_path / "resume.log").read_text()
    finally:
        resume.kill()

    resumed = json.loads((killed / "results.json").read_text())
    fold2 = json.loads((killed / "fold_2" / "done.json").read_text())
    assert fold2["resumed_from_epoch"] >= state["epoch"] >= 1  # it continued, it did not start over
    assert (killed / "fold_1" / "done.json").read_bytes() == fold1_done  # the finished fold was kept
    assert (killed / "fold_1" / "predictions.csv").read_bytes() == fold1_predictions
    assert metrics_of(resumed) == metrics_of(reference)
    assert (killed / "predictions.csv").read_text() == (tmp_path / "reference" / "predictions.csv").read_text()
    ref_fold2 = json.loads((tmp_path / "reference" / "fold_2" / "done.json").read_text())
    strip = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h]  # noqa: E731
    assert strip(fold2["history"]) == strip(ref_fold2["history"])
    # nothing of the interruption is left: no resume checkpoints, no temporaries
    assert not [p.name for p in killed.rglob("*") if p.name.startswith("last_") or p.name.endswith(".tmp")]


# --- a crash between the files of one checkpoint -------------------------------------------------


def fresh_trainer(run_dir) -> Trainer:
    torch.manual_seed(0)
    cfg = TrainConfig(lr=0.02, batch_size=8, max_epochs=5, patience=5, seed=3)
    return Trainer(Net(), collate, cfg, 3, run_dir=run_dir, progress=False)


class Killed(BaseException):
    """Stands in for SIGKILL at one precise point (nothing after it runs, not even except-Exception)."""


def test_a_crash_after_the_tensors_but_before_the_state_resumes_from_the_previous_epoch(tmp_path, monkeypatch):
    train, valid, test = blobs(48, 1), blobs(24, 2), blobs(24, 3)
    ref = fresh_trainer(tmp_path / "ref")
    ref_fit = ref.fit(train, valid)
    ref_probs = ref.predict_proba(test)

    import emovox.training.checkpoint as checkpoint_module

    real_write = checkpoint_module.atomic_write_json
    run = tmp_path / "run"

    def dies_at_epoch_3(path, data):
        if data["epoch"] == 3:
            (path.parent / f".{path.name}.x1y2.tmp").write_text('{"epoch": 3, "hist')  # a half-written temporary
            raise Killed
        real_write(path, data)

    monkeypatch.setattr(checkpoint_module, "atomic_write_json", dies_at_epoch_3)
    with pytest.raises(Killed):
        fresh_trainer(run).fit(train, valid)
    monkeypatch.undo()
    # epoch 3's tensors are complete on disk, but the state (the commit point) still says epoch 2
    assert json.loads((run / STATE_FILE).read_text())["epoch"] == 2
    assert (run / "last_model.e003.safetensors").is_file() and (run / "last_model.e002.safetensors").is_file()

    resumed = fresh_trainer(run)
    fit = resumed.fit(train, valid)
    assert fit.resumed_from_epoch == 2
    strip = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h]  # noqa: E731
    assert strip(fit.history) == strip(ref_fit.history)
    np.testing.assert_array_equal(resumed.predict_proba(test), ref_probs)
    assert not list(run.glob(".*.tmp"))
    assert sorted(p.name for p in run.glob("last_*")) == [
        "last_model.e005.safetensors",
        "last_optimizer.e005.safetensors",
        "last_state.json",
    ]


def test_a_damaged_checkpoint_is_a_clear_error_not_a_traceback(tmp_path):
    run = tmp_path / "run"
    fresh_trainer(run).fit(blobs(24, 1), blobs(12, 2))
    state = json.loads((run / STATE_FILE).read_text())
    (run / state["model_file"]).write_bytes(b"\x00" * 64)
    with pytest.raises(EmovoxError, match=r"cannot resume from this checkpoint .*--fresh"):
        fresh_trainer(run).fit(blobs(24, 1), blobs(12, 2))


# --- atomic writes ---------------------------------------------------------------------------------


def test_a_failed_write_leaves_the_previous_file_whole_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    checkpoint.atomic_write_json(target, {"ua": 0.5})
    tensors = tmp_path / "w.safetensors"
    checkpoint.atomic_save_tensors(tensors, {"w": torch.ones(3)})

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.os, "replace", crash)
    with pytest.raises(OSError):
        checkpoint.atomic_write_json(target, {"ua": 0.9, "more": list(range(1000))})

    def half_written(tensors_, path, metadata=None):
        open(path, "wb").write(b"\x08\x00\x00\x00")  # a few bytes, then the process "dies"
        raise OSError("killed")

    monkeypatch.setattr(checkpoint, "save_file", half_written)
    with pytest.raises(OSError):
        checkpoint.atomic_save_tensors(tensors, {"w": torch.zeros(3)})
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"ua": 0.5}
    assert load_tensors(tensors)["w"].tolist() == [1.0, 1.0, 1.0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json", "w.safetensors"]


# --- --resume / --no-resume / --fresh --------------------------------------------------------------


def test_resume_flags(tmp_path):
    manifest = write_manifest(tmp_path / "m.csv", tone_rows(tmp_path))
    cfg_path = tmp_path / "exp.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_config(manifest, tmp_path / "cache", folds=[1])))
    out = tmp_path / "run"
    runner = CliRunner()
    first = runner.invoke(app, ["cv", str(cfg_path), "--out", str(out), "--quiet"])
    assert first.exit_code == 0, first.output
    done = out / "fold_1" / "done.json"
    stamp = done.stat().st_mtime_ns
    first_pooled = json.loads((out / "results.json").read_text())["pooled"]

    again = runner.invoke(app, ["cv", str(cfg_path), "--out", str(out), "--quiet", "--resume"])
    assert again.exit_code == 0 and done.stat().st_mtime_ns == stamp  # continued: nothing retrained

    refused = runner.invoke(app, ["cv", str(cfg_path), "--out", str(out), "--quiet", "--no-resume"])
    assert isinstance(refused.exception, EmovoxError) and "--resume to continue it" in str(refused.exception)
    assert done.stat().st_mtime_ns == stamp

    fresh = runner.invoke(app, ["cv", str(cfg_path), "--out", str(out), "--quiet", "--fresh"])
    assert fresh.exit_code == 0, fresh.output
    assert done.stat().st_mtime_ns != stamp  # retrained from scratch ...
    assert json.loads((out / "results.json").read_text())["pooled"] == first_pooled  # ... to the same numbers

    # --fresh never deletes a directory that is not an emovox run
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    refused = runner.invoke(app, ["cv", str(cfg_path), "--out", str(precious), "--quiet", "--fresh"])
    assert isinstance(refused.exception, EmovoxError) and "not deleted" in str(refused.exception)
    assert (precious / "thesis.tex").read_text() == "years of work"
    both = runner.invoke(app, ["cv", str(cfg_path), "--out", str(out), "--fresh", "--no-resume"])
    assert isinstance(both.exception, EmovoxError)
