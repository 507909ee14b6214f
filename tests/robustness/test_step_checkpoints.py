"""Step checkpoints (``train.checkpoint_every_steps``, ``train.keep_checkpoints``): a run killed in the
middle of an epoch resumes from its last *step* checkpoint (model, optimizer, scheduler, RNG and the
position in the epoch's batch order) and ends with exactly the numbers of an uninterrupted run; the
newest K checkpoints are kept, and a damaged newest one falls back to the one before.

The kill test runs the real command line in a child process and sends SIGKILL only once it has
seen a mid-epoch checkpoint on disk: the child is frozen (SIGSTOP) while the test re-reads the
state, so the checkpoint it is killed after is known exactly, whatever the machine's load.
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

from emovox.config import TrainConfig, config_from_dict
from emovox.errors import EmovoxWarning
from emovox.training.checkpoint import STATE_FILE, Checkpointer
from emovox.training.runner import run_cv
from emovox.training.trainer import Trainer


def read_state(path) -> dict | None:
    try:
        return json.loads(open(path).read())  # written atomically: whole or absent
    except FileNotFoundError:
        return None


def kill_after_a_mid_epoch_checkpoint(proc: subprocess.Popen, state_path, log, *, min_epoch: int = 2, timeout: float = 300) -> dict:
    """SIGKILL ``proc`` right after it committed a step checkpoint inside epoch >= ``min_epoch``; returns that state."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the run ended (code {proc.returncode}) before it could be killed:\n{log.read_text()}")
        state = read_state(state_path)
        if state and state.get("in_epoch") and state["in_epoch"]["epoch"] >= min_epoch:
            os.kill(proc.pid, signal.SIGSTOP)  # frozen: the state on disk cannot change any more
            state = read_state(state_path)
            if state.get("in_epoch"):
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
                return state
            os.kill(proc.pid, signal.SIGCONT)  # it had just finished the epoch: wait for the next one
        time.sleep(0.002)
    proc.kill()
    pytest.fail(f"no mid-epoch checkpoint in {state_path} within {timeout} s:\n{log.read_text()}")


def metrics_of(results: dict) -> dict:
    return {k: results[k] for k in ("folds", "mean", "std", "pooled", "best_epochs", "skipped", "label_set")}


def without_seconds(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in e.items() if k != "seconds"} for e in history]


def test_kill_9_mid_epoch_resumes_from_the_last_step_checkpoint(tmp_path):
    # a tiny wav2vec2 fine-tuned end to end: dropout and SpecAugment draw from torch's and numpy's RNGs,
    # so restoring them (or the position in the batch order) inexactly would change the numbers
    manifest = write_manifest(tmp_path / "m.csv", tone_rows(tmp_path, per_class=4, seconds=0.5))
    data = tiny_config(
        manifest,
        tmp_path / "cache",
        model={"mode": "finetune"},
        train={"lr": 1e-3, "max_epochs": 4, "patience": 4, "checkpoint_every_steps": 1, "keep_checkpoints": 2},
        folds=[1],
    )
    cfg_path = tmp_path / "exp.yaml"
    cfg_path.write_text(yaml.safe_dump(data))
    killed, log = tmp_path / "killed", tmp_path / "killed.log"
    with log.open("w") as out:
        proc = subprocess.Popen([*EMOVOX, "cv", str(cfg_path), "--out", str(killed), "--quiet"], stdout=out, stderr=subprocess.STDOUT)
    try:
        state = kill_after_a_mid_epoch_checkpoint(proc, killed / "fold_1" / STATE_FILE, log)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    part = state["in_epoch"]
    assert 0 < part["batches_done"] and part["epoch"] == state["epoch"] + 1 >= 2  # inside an epoch, after the first
    assert len(state["history"]) == state["epoch"] and len(part["step_loss"]) == part["batches_done"]
    # the newest two checkpoints are on disk, each complete (state, model, optimizer); a third one is
    # there only if the kill came between a commit and the deletion of what it superseded
    fold = killed / "fold_1"
    older = {json.loads(p.read_text())["global_step"]: json.loads(p.read_text()) for p in fold.glob("last_state.e*.json")}
    previous = older[state["global_step"] - 1]
    for s in (state, previous):
        assert (fold / s["model_file"]).is_file() and (fold / s["optimizer_file"]).is_file()
    assert len(older) <= 2 and len(list(fold.glob("last_model.*.safetensors"))) <= 3

    with (tmp_path / "resume.log").open("w") as out:
        resume = subprocess.Popen([*EMOVOX, "cv", str(cfg_path), "--out", str(killed), "--quiet"], stdout=out, stderr=subprocess.STDOUT)
    try:
        reference = run_cv(config_from_dict(data), tmp_path / "reference", progress=False)  # meanwhile, uninterrupted
        assert resume.wait(timeout=300) == 0, (tmp_path / "resume.log").read_text()
    finally:
        resume.kill()
    done = json.loads((fold / "done.json").read_text())
    ref_done = json.loads((tmp_path / "reference" / "fold_1" / "done.json").read_text())
    assert done["resumed_from_step"] == state["global_step"]  # from the step checkpoint, not the epoch start
    assert done["resumed_from_epoch"] == state["epoch"]
    assert without_seconds(done["history"]) == without_seconds(ref_done["history"])  # every step's loss included
    assert metrics_of(json.loads((killed / "results.json").read_text())) == metrics_of(reference)
    assert (killed / "predictions.csv").read_text() == (tmp_path / "reference" / "predictions.csv").read_text()
    assert not [p.name for p in killed.rglob("*") if p.name.startswith("last_") or p.name.endswith(".tmp")]


# --- in process: retention and fallback ------------------------------------------------------------


def fresh_trainer(run_dir, **train) -> Trainer:
    torch.manual_seed(0)
    cfg = TrainConfig(lr=0.02, batch_size=4, max_epochs=4, patience=4, seed=3, **train)
    return Trainer(Net(), collate, cfg, 3, run_dir=run_dir, progress=False)


class Killed(BaseException):
    """Stands in for SIGKILL at one precise point (nothing after it runs, not even except-Exception)."""


def dies_at_checkpoint(monkeypatch, n: int) -> None:
    """The process dies as it is about to commit its ``n``-th checkpoint (after the ``n-1``-th)."""
    real, calls = Checkpointer.save, {"n": 0}

    def save(self, model, optimizer, scheduler, state):
        calls["n"] += 1
        if calls["n"] == n:
            raise Killed
        real(self, model, optimizer, scheduler, state)

    monkeypatch.setattr(Checkpointer, "save", save)


@pytest.mark.parametrize(("keep", "grad_accum"), [(1, 1), (2, 1), (3, 2)])
def test_only_the_newest_k_checkpoints_are_kept_and_resume_is_exact(tmp_path, monkeypatch, keep, grad_accum):
    train, valid, test = blobs(48, 1), blobs(24, 2), blobs(24, 3)  # 12 batches of 4 per epoch
    settings = {"checkpoint_every_steps": 2, "keep_checkpoints": keep, "grad_accum": grad_accum}
    ref = fresh_trainer(tmp_path / "ref", **settings)
    ref_fit = ref.fit(train, valid)
    ref_probs = ref.predict_proba(test)

    dies_at_checkpoint(monkeypatch, 9)  # somewhere in epoch 2 or 3
    with pytest.raises(Killed):
        fresh_trainer(tmp_path / "run", **settings).fit(train, valid)
    monkeypatch.undo()
    run = tmp_path / "run"
    state = json.loads((run / STATE_FILE).read_text())
    kept = [state] + [json.loads(p.read_text()) for p in run.glob("last_state.e*.json")]
    assert len(kept) == keep  # eight checkpoints were committed; the newest `keep` are left
    steps = sorted(s["global_step"] for s in kept)
    assert steps[-1] == state["global_step"]
    assert sorted(p.name for p in run.glob("last_model.*")) == sorted(s["model_file"] for s in kept)
    assert sorted(p.name for p in run.glob("last_optimizer.*")) == sorted(s["optimizer_file"] for s in kept)

    resumed = fresh_trainer(run, **settings)
    fit = resumed.fit(train, valid)
    assert fit.resumed_from_step == state["global_step"] > 0
    assert without_seconds(fit.history) == without_seconds(ref_fit.history)
    np.testing.assert_array_equal(resumed.predict_proba(test), ref_probs)


def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(tmp_path, monkeypatch):
    train, valid, test = blobs(48, 1), blobs(24, 2), blobs(24, 3)
    settings = {"checkpoint_every_steps": 5, "keep_checkpoints": 2}
    ref = fresh_trainer(tmp_path / "ref", **settings)
    ref_fit = ref.fit(train, valid)
    ref_probs = ref.predict_proba(test)

    dies_at_checkpoint(monkeypatch, 6)
    with pytest.raises(Killed):
        fresh_trainer(tmp_path / "run", **settings).fit(train, valid)
    monkeypatch.undo()
    run = tmp_path / "run"
    newest = json.loads((run / STATE_FILE).read_text())
    (older_file,) = run.glob("last_state.e*.json")
    older = json.loads(older_file.read_text())
    (run / newest["model_file"]).write_bytes(b"\x00" * 64)  # a disk error in the newest checkpoint

    resumed = fresh_trainer(run, **settings)
    with pytest.warns(EmovoxWarning, match=rf"cannot be read .*{newest['model_file']}.*older kept checkpoint {older['tag']}"):
        fit = resumed.fit(train, valid)
    assert fit.resumed_from_step == older["global_step"] < newest["global_step"]
    assert without_seconds(fit.history) == without_seconds(ref_fit.history)
    np.testing.assert_array_equal(resumed.predict_proba(test), ref_probs)
    # the damaged files are gone; the two newest checkpoints of the finished run remain
    assert not (run / newest["model_file"]).exists()
    assert len(list(run.glob("last_model.*"))) == 2
