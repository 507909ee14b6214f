"""Folds as jobs: `emovox cv --fold K` in concurrent processes, `--collect`, `--list-jobs`, `study`, submitit.

The proof that nothing is duplicated or lost: two processes training different folds at once into
one run directory, then `--collect`, give the results.json (and predictions) of one sequential run.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import REPO, make_tone_manifest, tiny_config
from typer.testing import CliRunner

from emovox.cli import app
from emovox.config import config_from_dict
from emovox.errors import EmovoxError

#: Fields of results.json that measure time, not results.
TIMING = ("seconds", "feature_seconds", "fold_seconds")


def comparable(results: dict) -> dict:
    out = {k: v for k, v in results.items() if k not in TIMING}
    out["environment"] = {k: v for k, v in results["environment"].items() if k != "threads"}
    if results.get("baseline"):
        out["baseline"] = {k: v for k, v in results["baseline"].items() if k != "directory"}  # where the run lives
    return out


def subprocess_env() -> dict:
    """This checkout's sources first, as the test process has them."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), *filter(None, [env.get("PYTHONPATH")])])
    return env


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("jobs")
    manifest = make_tone_manifest(root / "corpus", speakers=4, per_class=2)
    cfg = tiny_config(manifest, root / "cache", baseline=True, name="jobs")
    (root / "exp.yaml").write_text(yaml.safe_dump(cfg))
    return root


@pytest.fixture(scope="module")
def sequential(study_dir, tmp_path_factory) -> tuple[Path, dict]:
    """The study's config run once in this process, the reference every way of splitting it into jobs must equal.
    With a cache of its own: the study's cache stays cold for the first jobs, which must fill it concurrently."""
    from emovox.training.runner import run_cv

    root = tmp_path_factory.mktemp("sequential")
    data = {**yaml.safe_load((study_dir / "exp.yaml").read_text()), "cache_dir": str(root / "cache")}
    payload = run_cv(config_from_dict(data), root / "run", progress=False)
    return root / "run", payload


def cv(*args: str):
    return CliRunner().invoke(app, ["cv", *args])


def test_concurrent_fold_jobs_then_collect_equal_a_sequential_run(study_dir, sequential, tmp_path):
    config = study_dir / "exp.yaml"
    out = tmp_path / "jobs-run"
    # two processes at once, each its own folds (and their baseline folds), into one run directory and one cache
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "emovox", "cv", str(config), "--out", str(out), "--quiet", *[a for k in ks for a in ("--fold", str(k))]],
            env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for ks in ((1, 3), (2, 4))
    ]  # fmt: skip
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    assert "fold 1 (" in logs[0] and "fold 3 (" in logs[0] and "fold 2 (" in logs[1]
    assert not (out / "results.json").exists()  # fold jobs aggregate nothing
    for k in range(1, 5):
        assert (out / f"fold_{k}" / "done.json").is_file() and (out / "baseline" / f"fold_{k}" / "done.json").is_file()
        assert (out / "splits" / f"fold_{k}" / "test.jsonl").is_file()  # every job wrote every fold's split, none removed one
    r = cv(str(config), "--out", str(out), "--collect")
    assert r.exit_code == 0, r.output
    collected = json.loads((out / "results.json").read_text())

    reference, payload = sequential
    assert comparable(collected) == comparable(payload) == comparable(json.loads((reference / "results.json").read_text()))
    assert collected["missing"] == [] and len(collected["folds"]) == 4 and collected["baseline"]["folds"]
    assert (out / "predictions.csv").read_text() == (reference / "predictions.csv").read_text()
    # the whole cost is the sum of both jobs' times
    jobs = sorted(p.name for p in (out / "jobs").glob("*.json"))
    assert jobs == ["fold_1+3.json", "fold_2+4.json"]
    assert collected["seconds"] == pytest.approx(
        sum(sum(json.loads(p.read_text())["invocations"]) for p in (out / "jobs").glob("*.json")), abs=0.05
    )


def test_cv_with_jobs_equals_one_process(study_dir, sequential, tmp_path):
    """``emovox cv --jobs 2``: extraction shards and folds in two spawned workers write what one process writes."""
    config = study_dir / "exp.yaml"
    cache = tmp_path / "fresh-cache"  # cold: the workers extract too
    r = cv(str(config), "--out", str(tmp_path / "parallel"), "--quiet", "--jobs", "2", "--set", f"cache_dir={cache}")
    assert r.exit_code == 0, r.output
    parallel = json.loads((tmp_path / "parallel" / "results.json").read_text())
    reference, payload = sequential
    assert comparable(parallel) == comparable(payload)
    assert len(parallel["folds"]) == 4 and parallel["baseline"]["folds"]
    assert (tmp_path / "parallel" / "predictions.csv").read_text() == (reference / "predictions.csv").read_text()
    assert list(cache.rglob("*.safetensors"))  # the workers filled the run's cache


def test_collect_names_what_is_missing(study_dir, tmp_path):
    config = study_dir / "exp.yaml"
    out = tmp_path / "partial"
    r = cv(str(config), "--out", str(out), "--collect")
    assert isinstance(r.exception, EmovoxError) and "no run here" in str(r.exception)
    r = cv(str(config), "--out", str(out), "--fold", "2", "--quiet")
    assert r.exit_code == 0, r.output
    assert "fold 2 (" in r.output and "--collect" in r.output
    assert sorted(p.name for p in out.glob("fold_*")) == ["fold_2"]  # nothing of another fold
    r = cv(str(config), "--out", str(out), "--collect")
    assert r.exit_code == 3, r.output
    payload = json.loads((out / "results.json").read_text())
    assert len(payload["folds"]) == 1 and len(payload["fold_names"]) == 1
    names = payload["missing"]
    assert names == [n for n in names if n.startswith("fold ")] and [n.split(" (")[0] for n in names] == ["fold 1", "fold 3", "fold 4"]
    said = " ".join(r.output.split())  # rich wraps long lines
    assert "fold 1 (" in said and "fold 4 (" in said
    assert "INCOMPLETE" in (out / "report.md").read_text()
    # a fold outside the protocol is a clear error
    r = cv(str(config), "--out", str(out), "--fold", "9")
    assert isinstance(r.exception, EmovoxError) and "folds 1..4" in str(r.exception)


def test_list_jobs_prints_one_runnable_command_per_fold_and_study_lists_every_recipe(study_dir, tmp_path):
    config = study_dir / "exp.yaml"
    r = CliRunner().invoke(app, ["cv", str(config), "--out", str(tmp_path / "o"), "--set", "train.max_epochs=2", "--list-jobs"])
    assert r.exit_code == 0, r.output
    lines = [line for line in r.stdout.splitlines() if line.startswith("emovox ")]
    assert len(lines) == 4
    for k, line in enumerate(lines, 1):
        assert shlex.split(line) == [
            "emovox", "cv", str(config), "--set", "train.max_epochs=2", "--out", str(tmp_path / "o"), "--fold", str(k)
        ]  # fmt: skip
    assert not (tmp_path / "o").exists()  # listing runs nothing
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({**yaml.safe_load(config.read_text()), "name": "other", "folds": [2, 3]}))
    r = CliRunner().invoke(app, ["study", str(config), str(other), "--out-root", str(tmp_path / "study"), "--list-jobs"])
    assert r.exit_code == 0, r.output
    lines = [line for line in r.stdout.splitlines() if line.startswith("emovox ")]
    assert [(shlex.split(x)[2], shlex.split(x)[-1]) for x in lines] == [(str(config), k) for k in "1234"] + [
        (str(other), "2"), (str(other), "3")
    ]  # fmt: skip
    assert all(f"--out {tmp_path / 'study' / name}" in x for x, name in zip(lines, ["jobs"] * 4 + ["other"] * 2, strict=True))


def test_submitit_local_executor_runs_the_jobs_and_collects(study_dir, tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    monkeypatch.setenv("PYTHONPATH", subprocess_env()["PYTHONPATH"])
    config = study_dir / "exp.yaml"
    out = tmp_path / "submitit-run"
    r = CliRunner().invoke(
        app, ["cv", str(config), "--out", str(out), "--set", "folds=[1,2]", "--set", "baseline=false", "--executor", "local", "--quiet"]
    )
    assert r.exit_code == 0, r.output
    payload = json.loads((out / "results.json").read_text())
    assert len(payload["folds"]) == 2 and len(payload["fold_names"]) == 2
    assert payload["missing"] == []
    logs = list((out / "submitit").glob("*_log.out"))
    assert len(logs) == 2  # one job per fold, each with its log


def test_a_fold_another_process_is_training_is_refused(study_dir, tmp_path):
    import fcntl

    from emovox.training.runner import run_fold_jobs

    cfg = config_from_dict(yaml.safe_load((study_dir / "exp.yaml").read_text()))
    fold_dir = tmp_path / "run" / "fold_2"
    fold_dir.mkdir(parents=True)
    with open(fold_dir / ".lock", "a+") as held:  # what a running job for fold 2 holds
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(EmovoxError, match="another process is training it"):
            run_fold_jobs(cfg, tmp_path / "run", [2], progress=False)
    assert not (fold_dir / "done.json").exists()
    run_fold_jobs(cfg, tmp_path / "run", [2], progress=False)  # released: the fold trains
    assert (fold_dir / "done.json").is_file()


def test_grid_points_as_jobs_then_the_fold_reads_them_back(study_dir, tmp_path):
    from emovox.training.runner import run_cv

    data = yaml.safe_load((study_dir / "exp.yaml").read_text())
    data.update(baseline=False, search={"train.lr": [0.01, 0.05]}, folds=[1])
    config = tmp_path / "grid.yaml"
    config.write_text(yaml.safe_dump(data))
    out = tmp_path / "grid-run"
    r = cv(str(config), "--out", str(out), "--list-jobs", "--points")
    assert r.exit_code == 0, r.output
    lines = [x for x in r.stdout.splitlines() if x.startswith("emovox ")]
    assert [shlex.split(x)[-4:] for x in lines] == [["--fold", "1", "--point", "1"], ["--fold", "1", "--point", "2"]]
    for line in lines:
        r = cv(*shlex.split(line)[2:], "--quiet")
        assert r.exit_code == 0, r.output
    assert not (out / "fold_1" / "done.json").exists()
    stamps = {j: (out / "fold_1" / "search" / f"point_{j}" / "best_model.safetensors").stat().st_mtime_ns for j in (1, 2)}
    r = cv(str(config), "--out", str(out), "--fold", "1", "--quiet")
    assert r.exit_code == 0, r.output
    assert {j: (out / "fold_1" / "search" / f"point_{j}" / "best_model.safetensors").stat().st_mtime_ns for j in (1, 2)} == stamps
    sequential = run_cv(config_from_dict(data), tmp_path / "seq", progress=False)
    done = json.loads((out / "fold_1" / "done.json").read_text())
    assert done["choices"]["search"] == sequential["choices"][0]["search"]
    assert (out / "fold_1" / "predictions.csv").read_text() == (tmp_path / "seq" / "fold_1" / "predictions.csv").read_text()
    r = cv(str(config), "--out", str(out), "--fold", "1", "--point", "3")
    assert isinstance(r.exception, EmovoxError) and "points 1..2" in str(r.exception)
