"""Two gloo processes (torchrun / accelerate launch) fine-tune one model exactly as one process does.

DDP averages the ranks' gradients, so 2 processes with ``grad_accum: 1`` take the same optimizer
steps as one process with ``grad_accum: 2``. The corpus gives every part an uneven share (train
12 utterances in batches of 5: three batches, an odd count, so one rank runs a zero-weighted
stand-in at the last step; valid and test 6 each: shares of 5 and 1) and the tiny Whisper encoder
has no dropout, so the runs can be compared exactly: same predictions per id, same metrics, the
same weights on both ranks, exit code 0 every time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import REPO, free_port, make_tone_manifest, tiny_config

from emovox.config import config_from_dict


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), *filter(None, [e.get("PYTHONPATH")])])
    e.pop("WORLD_SIZE", None)
    return e


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    manifest = make_tone_manifest(root / "corpus", speakers=4, per_class=3)
    cfg = tiny_config(
        manifest, root / "cache", name="ddp",
        model={"backbone": "whisper-base", "mode": "finetune", "dropout": 0.0, "layers": "all"},
        train={"lr": 3e-3, "batch_size": 5, "max_epochs": 3, "patience": 3},
    )  # fmt: skip
    (root / "ddp.yaml").write_text(yaml.safe_dump(cfg))
    return root, cfg


def launch(launcher: list[str], config: Path, out: Path) -> subprocess.CompletedProcess:
    cmd = [*launcher, "-m", "emovox", "cv", str(config), "--out", str(out), "--fold", "1", "--quiet"]
    return subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=900)


def test_two_gloo_processes_train_exactly_as_one_process_with_twice_the_accumulation(setup, tmp_path):
    from emovox.training.runner import collect_cv, run_fold_jobs

    root, cfg = setup
    single = tmp_path / "single"
    single_cfg = {**cfg, "train": {**cfg["train"], "grad_accum": 2}, "folds": [1]}
    run_fold_jobs(config_from_dict(single_cfg), single, [1], progress=False)
    reference = json.loads((single / "fold_1" / "done.json").read_text())
    assert "processes" not in reference  # one process writes what it always wrote

    launchers = {
        "torchrun": [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port())],
        # on a CPU-only machine --cpu would start one process; --multi_gpu starts two gloo processes (torchrun underneath)
        "accelerate": [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                       "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                       "--main_process_port", str(free_port())],
    }  # fmt: skip
    for name, launcher in launchers.items():
        out = tmp_path / name
        r = launch(launcher, root / "ddp.yaml", out)
        assert r.returncode == 0, f"{name}:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
        done = json.loads((out / "fold_1" / "done.json").read_text())
        procs = done["processes"]
        assert procs["world_size"] == 2 and "gloo" in procs["backend"]
        assert len(procs["weights_sha256"]) == 2 and len(set(procs["weights_sha256"])) == 1  # identical weights on both ranks
        # the same predictions per utterance id, test and validation, to the last printed digit
        for part in ("predictions.csv", "valid_predictions.csv"):
            assert (out / "fold_1" / part).read_text() == (single / "fold_1" / part).read_text(), (name, part)
        for key in ("best_epoch", "best_valid_ua", "test", "calibration"):
            assert done[key] == reference[key], (name, key)
        assert [h["valid_ua"] for h in done["history"]] == [h["valid_ua"] for h in reference["history"]]
        assert done["history"][0]["train_loss"] == pytest.approx(reference["history"][0]["train_loss"], rel=1e-6)
        # one process wrote: no temporaries, one copy of each file; logs from the main process only
        assert not list(out.rglob("*.tmp"))
        assert r.stdout.count("fold 1 (") == 1, r.stdout
        # the collected metrics equal the single process's
        a, b = collect_cv(config_from_dict({**cfg, "folds": [1]}), out).payload, collect_cv(config_from_dict(single_cfg), single).payload
        assert a["pooled"] == b["pooled"] and a["folds"] == b["folds"]


def test_emovox_train_under_torchrun_saves_one_recognizer_equal_to_one_process(setup, tmp_path):
    import numpy as np

    from emovox.inference.recognizer import Recognizer
    from emovox.training.final import train_recognizer

    root, cfg = setup
    train_recognizer(config_from_dict({**cfg, "train": {**cfg["train"], "grad_accum": 2}}), tmp_path / "single", progress=False)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port())]
    cmd = [*launcher, "-m", "emovox", "train", str(root / "ddp.yaml"), "--out", str(tmp_path / "ddp"), "--quiet"]
    r = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-5000:]
    assert r.stdout.count("saved ") == 1, r.stdout  # the main process reports, once
    assert not (tmp_path / "ddp" / "_training").exists() and not list((tmp_path / "ddp").rglob("*.tmp"))
    clips = sorted((root / "corpus" / "wav").glob("*.wav"))
    a = Recognizer.load(tmp_path / "ddp").predict([str(c) for c in clips])
    b = Recognizer.load(tmp_path / "single").predict([str(c) for c in clips])
    assert [p.label for p in a] == [p.label for p in b]
    np.testing.assert_array_equal(
        [list(p.probabilities.values()) for p in a], [list(p.probabilities.values()) for p in b]
    )
