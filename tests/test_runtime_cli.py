"""predict, timeline and serve use a recognizer's runtime by default and never import torch for it; commands
are loaded on demand; what needs the `train` extra says so in one line."""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
from helpers import REPO, free_port, tone, write_wav
from typer.testing import CliRunner

from emovox.cli import app

runner = CliRunner()
HEAVY = ("torch", "transformers", "sklearn", "scipy", "matplotlib", "yaml")

#: Run emovox as after a plain `pip install emovox`: the `train` extra's packages cannot be imported.
WITHOUT_TRAIN = """
import importlib.abc, sys
class _NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'torch', 'transformers', 'sklearn', 'scipy', 'peft', 'accelerate', 'yaml', 'onnx', 'matplotlib'}:
            raise ModuleNotFoundError(f'No module named {name!r}', name=name)
sys.meta_path.insert(0, _NotInstalled())
"""
RUN = """
from emovox.cli import main
sys.argv = ['emovox', *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
print('LOADED', sorted({m.split('.')[0] for m in sys.modules} & set(HEAVY)), file=sys.stderr)
sys.exit(code)
"""


def emovox(*args: str, train_extra: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    """``emovox ARGS`` in a fresh interpreter; its stderr ends with the heavy modules it loaded."""
    code = ("" if train_extra else WITHOUT_TRAIN) + f"import sys\nHEAVY = {HEAVY!r}\n" + RUN
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), COLUMNS="200")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=timeout)


def loaded(done: subprocess.CompletedProcess) -> list[str]:
    return json.loads(re.findall(r"LOADED (\[.*\])", done.stderr)[-1].replace("'", '"'))


@pytest.fixture(scope="module")
def speechy(tmp_path_factory):
    """A 1.5 s clip that rises and falls like speech, and a 9 s recording of them with pauses."""
    root = tmp_path_factory.mktemp("clips")
    t = np.arange(24000) / 16000
    clip = (tone(515, 1.5) * (np.sin(2 * np.pi * 4 * t) > 0)).astype(np.float32)
    long = np.concatenate([clip, np.zeros(8000, np.float32), clip * 0.5, np.zeros(16000, np.float32), clip, clip])
    return write_wav(root / "clip.wav", clip), write_wav(root / "long.wav", long)


# --- the runtime path imports no training stack -----------------------------------------------------------------


def test_import_emovox_and_help_load_no_training_stack():
    done = subprocess.run(
        [sys.executable, "-c", f"import sys, emovox, emovox.cli; print(sorted(set(m.split('.')[0] for m in sys.modules) & set({HEAVY!r})))"],
        capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO / "src")), timeout=120,
    )
    assert done.stdout.strip() == "[]", done.stderr
    done = emovox("--help")
    assert done.returncode == 0 and "export" in done.stdout and loaded(done) == []


def test_predict_and_timeline_on_the_runtime_import_no_torch(audio_recognizer_dir, speechy, tmp_path):
    from emovox.inference.recognizer import Recognizer

    clip, long = speechy
    done = emovox("predict", str(audio_recognizer_dir), str(clip), "--json", "-")
    assert done.returncode == 0, done.stderr
    assert loaded(done) == [] and "(engine onnx)" in done.stderr
    row = json.loads(done.stdout)[0]
    reference = Recognizer.load(audio_recognizer_dir).predict(str(clip))
    assert row["label"] == reference.label and row["speech"] is True
    np.testing.assert_allclose(list(row["probabilities"].values()), list(reference.probabilities.values()), atol=1e-4)

    done = emovox("timeline", str(audio_recognizer_dir), str(long), "--json", str(tmp_path / "t.json"), "--quiet")
    assert done.returncode == 0, done.stderr
    assert loaded(done) == [] and json.loads((tmp_path / "t.json").read_text())["engine"] == "onnx"


def test_without_the_train_extra_the_runtime_predicts_and_the_rest_says_what_to_install(
    audio_recognizer_dir, text_recognizer_dir, speechy, tmp_path
):
    clip, long = speechy
    done = emovox("predict", str(audio_recognizer_dir), str(clip), "--csv", "-", train_extra=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("input,label,p_high,p_low")
    missing = [
        ("train", str(tmp_path / "recipe.yaml"), "--out", str(tmp_path / "out")),
        ("predict", str(text_recognizer_dir), "--text", "hello there"),  # no runtime: it needs torch
        ("predict", str(audio_recognizer_dir), str(clip), "--engine", "torch"),
        ("export", str(audio_recognizer_dir)),
        ("timeline", str(audio_recognizer_dir), str(long), "--plot", str(tmp_path / "t.png")),  # refused before the work
    ]
    for args in missing:
        done = emovox(*args, train_extra=False)
        assert done.returncode == 2, (args, done.stderr)
        lines = [x for x in done.stderr.splitlines() if not x.startswith("LOADED")]
        assert len(lines) == 1 and lines[0].startswith("error: ") and "pip install 'emovox[train]'" in lines[0], done.stderr
        assert "Traceback" not in done.stderr


@pytest.mark.timeout(600)
def test_serve_on_the_runtime_without_the_train_extra(audio_recognizer_dir, speechy, tmp_path):
    clip, _ = speechy
    port = free_port()
    code = WITHOUT_TRAIN + "import sys\nfrom emovox.cli import main\nsys.argv = ['emovox', *sys.argv[1:]]\nmain()\n"
    cmd = [sys.executable, "-c", code, "serve", str(audio_recognizer_dir), "--port", str(port), "--log-level", "warning",
           "--max-upload-mb", "0.2"]
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=str(REPO / "src")))
    base = f"http://127.0.0.1:{port}"
    try:
        # Wait for the server to answer or to die (its log says why); a server that never answers is caught by the
        # test's timeout mark, not by a clock here: on a busy machine start-up time is not behaviour.
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                health = httpx.get(f"{base}/health", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert health.json()["engine"] == "onnx" and httpx.get(f"{base}/labels").json()["engine"] == "onnx"
        r = httpx.post(f"{base}/predict", files={"audio": ("clip.wav", clip.read_bytes(), "audio/wav")})
        assert r.status_code == 200 and r.json()["label"] == "high" and r.json()["speech"] is True
        r = httpx.post(f"{base}/predict", files={"audio": ("big.wav", b"0" * 300_000, "audio/wav")})
        assert r.status_code == 413 and r.json()["error"] == "too_large"
        r = httpx.post(f"{base}/predict", files={"audio": ("junk.wav", b"not audio at all", "audio/wav")})
        assert r.status_code == 422 and r.json()["error"] == "bad_audio" and "junk.wav" in r.json()["detail"]
        r = httpx.post(f"{base}/timeline", files={"audio": ("clip.wav", clip.read_bytes(), "audio/wav")})
        assert r.status_code == 200 and r.json()["segments"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
    assert "engine onnx" in (tmp_path / "serve.log").read_text()


# --- choosing the engine -----------------------------------------------------------------------------------------


def test_engines_give_the_same_answers_and_are_named(audio_recognizer_dir, speechy):
    clip, long = speechy
    out = {}
    for engine in ("torch", "onnx", "auto"):
        r = runner.invoke(app, ["predict", str(audio_recognizer_dir), str(clip), "--json", "-", "--engine", engine])
        assert r.exit_code == 0, r.output
        out[engine] = json.loads(r.stdout)[0]
        assert f"(engine {'onnx' if engine == 'auto' else engine})" in r.stderr
    for engine in ("onnx", "auto"):
        assert out[engine]["label"] == out["torch"]["label"]
        np.testing.assert_allclose(list(out[engine]["probabilities"].values()),
                                   list(out["torch"]["probabilities"].values()), atol=1e-4)
    out = clip.parent / "torch-timeline.json"
    r = runner.invoke(app, ["timeline", str(audio_recognizer_dir), str(long), "--json", str(out), "--quiet", "--engine", "torch"])
    assert r.exit_code == 0 and json.loads(out.read_text())["engine"] == "torch"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--engine", "onnx"], "holds no runtime"),
        (["--engine", "gpu"], "--engine 'gpu': use one of auto, torch, onnx, onnx-int8"),
    ],
)
def test_engine_errors_are_one_line(args, message, text_recognizer_dir):
    r = runner.invoke(app, ["predict", str(text_recognizer_dir), "--text", "hello", *args])
    assert r.exit_code != 0 and message in str(r.exception)


def test_int8_engine_needs_an_int8_export(audio_recognizer_dir, speechy):
    clip, _ = speechy
    r = runner.invoke(app, ["predict", str(audio_recognizer_dir), str(clip), "--engine", "onnx-int8"])
    assert "has no int8 encoder" in str(r.exception) and "--int8" in str(r.exception)


# --- commands on demand ----------------------------------------------------------------------------------------------


def test_the_command_table_names_every_command_and_its_module():
    from emovox.cli._commands import COMMANDS

    modules = sorted(p.stem for p in (REPO / "src" / "emovox" / "cli").glob("*.py")
                     if "@app.command" in p.read_text() or "app.add_typer" in p.read_text())
    assert sorted(set(COMMANDS.values())) == modules
    for module in modules:
        importlib.import_module(f"emovox.cli.{module}")
    defined = {(c.name or c.callback.__name__): c.callback.__module__.rsplit(".", 1)[1] for c in app.registered_commands}
    defined.update({g.name: "corpus" for g in app.registered_groups})
    assert defined == COMMANDS


# --- a real runtime-only install ---------------------------------------------------------------------------------


def test_a_runtime_only_install_predicts(audio_recognizer_dir, speechy):
    """``pip install emovox`` (no extra) in its own environment: CI points EMOVOX_RUNTIME_PYTHON at its interpreter."""
    python = os.environ.get("EMOVOX_RUNTIME_PYTHON")
    if not python:
        pytest.skip("EMOVOX_RUNTIME_PYTHON is not set (CI sets it to a venv with a plain `pip install .`)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([python, "-c", "import torch"], capture_output=True, text=True, env=env)
    assert done.returncode != 0, "the runtime-only environment has torch installed"
    clip, _ = speechy
    done = subprocess.run([python, "-m", "emovox", "predict", str(audio_recognizer_dir), str(clip), "--json", "-"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["label"] == "high" and "(engine onnx)" in done.stderr
    done = subprocess.run([python, "-m", "emovox", "train", "recipe.yaml", "--out", "x"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 2 and "pip install 'emovox[train]'" in done.stderr and "Traceback" not in done.stderr
