"""The command line as a new user meets it: partial failures, readable tables, warnings, help,
one minimum clip length everywhere, ``evaluate``'s own report, ``train --out`` safety, lazy imports."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import typer
from helpers import make_tone_manifest, tone, write_wav
from typer.testing import CliRunner

from emovox.audio import MIN_SECONDS, too_short_message
from emovox.cli import app
from emovox.errors import EmovoxError, TooShortError

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()
NARROW = {"COLUMNS": "80"}


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory) -> Path:
    """Inputs whose sorted order interleaves good and bad files, deep enough that full paths are long."""
    root = tmp_path_factory.mktemp("inputs") / "recordings" / "2026-11-29" / "session with a long name" / "microphone 2"
    write_wav(root / "a_high.wav", tone(515, 0.8))
    (root / "b_broken.wav").parent.mkdir(parents=True, exist_ok=True)
    (root / "b_broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    write_wav(root / "c_low.wav", tone(185, 0.8))
    write_wav(root / "d_blip.wav", tone(300, 0.05))  # under the 0.1 s minimum
    write_wav(root / "e_silence.wav", np.zeros(16_000, np.float32))
    return root


def stderr_of(result) -> str:
    return " ".join(result.stderr.split())


# --- predict: partial failure, order, outputs ------------------------------------------------------


def test_predict_writes_every_good_result_in_input_order_and_exits_3(audio_recognizer_dir, mixed_folder, tmp_path):
    js, cs = tmp_path / "p.json", tmp_path / "p.csv"
    r = runner.invoke(app, ["predict", str(audio_recognizer_dir), str(mixed_folder), "--json", str(js), "--csv", str(cs)], env=NARROW)
    assert r.exit_code == 3, r.output
    rows = json.loads(js.read_text())
    assert [Path(x["input"]).name for x in rows] == ["a_high.wav", "b_broken.wav", "c_low.wav", "d_blip.wav", "e_silence.wav"]
    assert [x["label"] for x in rows] == ["high", None, "low", None, rows[4]["label"]] and rows[4]["label"] in ("high", "low")
    assert "b_broken.wav" in rows[1]["error"] and rows[1]["probabilities"] is None
    assert rows[3]["error"] == too_short_message(str(mixed_folder / "d_blip.wav"), 800)
    assert [x.get("speech") for x in rows] == [False, None, False, None, False]  # steady tones and silence are not speech
    table = list(csv.DictReader(io.StringIO(cs.read_text())))
    assert [Path(x["input"]).name for x in table] == [Path(x["input"]).name for x in rows]
    assert [x["label"] for x in table] == ["high", "", "low", "", rows[4]["label"]]  # failures: empty label, reason in 'error'
    assert table[1]["error"] == rows[1]["error"] and table[0]["error"] == "" and table[0]["p_high"]
    err = stderr_of(r)
    assert "2 of 5 input(s) could not be predicted" in err
    assert "b_broken.wav: cannot be read as audio" in err and "d_blip.wav: 0.050 s of audio is too short" in err
    assert "no speech found in 3 input(s)" in err
    assert "predicted 3 of 5 input(s)" in err


def test_predict_error_policy_stops_at_the_first_bad_file(audio_recognizer_dir, mixed_folder, tmp_path):
    out = tmp_path / "p.json"
    r = runner.invoke(app, ["predict", str(audio_recognizer_dir), str(mixed_folder), "--on-bad-audio", "error", "--json", str(out)])
    assert isinstance(r.exception, EmovoxError) and "b_broken.wav" in str(r.exception)
    assert not out.exists()


def test_predict_json_and_csv_to_stdout_cannot_share_it(audio_recognizer_dir, mixed_folder, tmp_path):
    r = runner.invoke(app, ["predict", str(audio_recognizer_dir), str(mixed_folder / "a_high.wav"), "--json", "-", "--csv", str(tmp_path / "p.csv")])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)[0]["label"] == "high"  # stdout holds the data only: no table
    assert (tmp_path / "p.csv").read_text().startswith("input,label,p_high,p_low")


def test_predict_table_fits_80_columns_with_long_paths(audio_recognizer_dir, mixed_folder):
    r = runner.invoke(app, ["predict", str(audio_recognizer_dir), str(mixed_folder)], env=NARROW)
    lines = r.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), "\n".join(lines)
    assert lines[0].startswith("files in ") and lines[0].endswith("/session with a long name/microphone 2")
    for name in ("a_high.wav", "b_broken.wav", "c_low.wav", "d_blip.wav", "e_silence.wav"):
        [row] = [line for line in lines if line.startswith(name)]  # one line per input, the name whole
    body = lines[lines.index(next(line for line in lines if line.startswith("a_high.wav"))):]
    assert [line.split()[0] for line in body] == ["a_high.wav", "b_broken.wav", "c_low.wav", "d_blip.wav", "e_silence.wav"]
    assert body[1].split()[2] == "-" and "error" in lines[1]  # the failure's label cell is empty, its reason in 'error'


def test_predictions_table_drops_columns_before_it_wraps():
    from rich.console import Console

    from emovox.cli.output import predictions_table

    labels = ("angry", "bored", "disgusted", "fearful", "happy", "neutral", "sad")
    probs = dict(zip(labels, (0.6, 0.1, 0.05, 0.1, 0.05, 0.05, 0.05), strict=True))
    rows = [{"input": f"/very/long/folder/name/clip_{i:03d}_with_a_rather_long_file_name.wav", "label": "angry", "probabilities": probs}
            for i in range(3)]
    rows.append({"input": "/x/bad.wav", "label": None, "probabilities": None, "error": "/x/bad.wav: " + "a long reason " * 10})
    names = [r["input"] for r in rows]
    for width, wide in ((80, False), (200, True)):
        console = Console(width=width, record=True)
        console.print(predictions_table(rows, names, labels, width))
        lines = console.export_text().splitlines()
        assert all(len(line) <= width for line in lines)
        assert len(lines) == 2 + len(rows)  # header, rule, one line per row: nothing folded
        assert ("disgusted" in lines[0]) is wide and ("runner-up" in lines[0]) is not wide
        assert lines[2].split()[0].endswith("_with_a_rather_long_file_name.wav") or "…" in lines[2]


def test_quiet_keeps_the_warnings(audio_recognizer_dir, mixed_folder, tmp_path):
    long = write_wav(tmp_path / "long.wav", tone(180, 10.5))
    r = runner.invoke(app, ["predict", str(audio_recognizer_dir), str(long), str(mixed_folder / "e_silence.wav"), "--quiet"])
    assert r.exit_code == 0 and r.stdout == ""
    err = stderr_of(r)
    assert "cropped to their first 10 s" in err and "no speech found in 2 input(s)" in err
    assert "predicted" not in err  # the summary is not a warning
    r = runner.invoke(app, ["predict", str(audio_recognizer_dir), str(long), "--json", "-"])
    assert json.loads(r.stdout)[0]["seconds_used"] == 10.0 and "cropped" in stderr_of(r)


# --- help ------------------------------------------------------------------------------------------


def all_commands():
    import click

    root = typer.main.get_command(app)

    def walk(cmd, path):
        yield path, cmd
        if isinstance(cmd, click.Group):  # commands are loaded on demand: ask the group for them
            ctx = click.Context(cmd)
            for name in sorted(cmd.list_commands(ctx)):
                yield from walk(cmd.get_command(ctx, name), [*path, name])

    return list(walk(root, []))


@pytest.mark.parametrize("path", [p for p, _ in all_commands()], ids=lambda p: " ".join(p) or "emovox")
def test_help_has_no_bool_placeholders_and_every_option_says_what_it_does(path):
    r = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "120"})
    assert r.exit_code == 0, r.output
    assert "<bool>" not in r.output
    cmd = dict((tuple(p), c) for p, c in all_commands())[tuple(path)]
    for param in cmd.params:
        assert (getattr(param, "help", None) or "").strip(), f"{' '.join(['emovox', *path])}: {param.name} has no help"


# --- one minimum clip length, one message ----------------------------------------------------------


def test_min_duration_is_one_constant_with_one_message(audio_recognizer_dir, tmp_path):
    from fastapi.testclient import TestClient

    from emovox.corpora import load_corpus
    from emovox.data.examples import build_examples
    from emovox.inference.recognizer import Recognizer
    from emovox.serve.app import create_app
    from emovox.serve.limits import ServeConfig

    assert MIN_SECONDS == 0.1
    short = write_wav(tmp_path / "short.wav", tone(300, 0.09))
    core = "0.090 s of audio is too short, shorter than the 0.1 s minimum"
    # predict
    r = runner.invoke(app, ["predict", str(audio_recognizer_dir), str(short), "--json", "-"])
    assert r.exit_code == 3 and json.loads(r.stdout)[0]["error"] == f"{short}: {core}"
    # timeline
    r = runner.invoke(app, ["timeline", str(audio_recognizer_dir), str(short)])
    assert isinstance(r.exception, TooShortError) and str(r.exception) == f"{short}: {core}"
    # serve
    rec = Recognizer.load(audio_recognizer_dir)
    with TestClient(create_app(rec, ServeConfig())) as client:
        resp = client.post("/predict", files={"audio": ("short.wav", short.read_bytes(), "audio/wav")})
    assert resp.status_code == 422 and resp.json() == {"error": "too_short", "detail": f"short.wav: {core}"}
    # training and evaluate (build_examples)
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path,label,speaker\n{short},high,s1\n")
    corpus = load_corpus(f"manifest:{manifest}")
    _, skipped = build_examples(corpus, [u.id for u in corpus], "audio", on_error="skip")
    assert skipped[0].kind == "too_short" and core in skipped[0].reason
    # exactly the minimum is accepted
    ok = write_wav(tmp_path / "ok.wav", tone(515, MIN_SECONDS))
    r = runner.invoke(app, ["predict", str(audio_recognizer_dir), str(ok), "--json", "-"])
    assert r.exit_code == 0 and json.loads(r.stdout)[0]["label"] == "high"


# --- timeline: no speech ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["vad", "fixed"])
def test_timeline_on_silence_says_no_speech_found(audio_recognizer_dir, tmp_path, mode):
    quiet = write_wav(tmp_path / "quiet.wav", (0.0005 * np.random.default_rng(0).standard_normal(5 * 16_000)).astype(np.float32))
    out = tmp_path / "t.json"
    r = runner.invoke(app, ["timeline", str(audio_recognizer_dir), str(quiet), "--mode", mode, "--json", str(out)])
    assert r.exit_code == 0, r.output
    assert "no speech found in quiet.wav" in stderr_of(r)
    assert "segments over" not in r.stdout and "time per label" not in r.stdout  # no empty or meaningless table
    data = json.loads(out.read_text())
    assert data["speech_found"] is False and all(s["speech"] is False for s in data["segments"])
    assert (len(data["segments"]) == 0) is (mode == "vad")


# --- evaluate ------------------------------------------------------------------------------------


def test_evaluate_has_its_own_table_and_per_utterance_json(audio_recognizer_dir, tmp_path):
    manifest = make_tone_manifest(tmp_path / "corpus", speakers=2, per_class=2)
    out = tmp_path / "eval.json"
    r = runner.invoke(app, ["evaluate", str(audio_recognizer_dir), f"manifest:{manifest}", "--json", str(out)], env=NARROW)
    assert r.exit_code == 0, r.output
    assert "Fold" not in r.stdout and "mean ± std" not in r.stdout and "pooled" not in r.stdout
    assert "UA (%)" in r.stdout and "Per class" in r.stdout and "Confusion matrix" in r.stdout
    assert all(len(line) <= 80 for line in r.stdout.splitlines())
    data = json.loads(out.read_text())
    preds = data["predictions"]
    assert len(preds) == data["utterances"] == data["n"] == 8
    assert set(preds[0]) == {"id", "true", "pred", "probabilities"} and set(preds[0]["probabilities"]) == {"high", "low"}
    assert preds[0]["pred"] == max(preds[0]["probabilities"], key=preds[0]["probabilities"].get)
    assert data["wa"] == pytest.approx(np.mean([p["true"] == p["pred"] for p in preds]))
    assert "evaluate: 8/8 utt" in r.stderr  # progress, as plain lines in a non-terminal


# --- train --out ---------------------------------------------------------------------------------


def test_train_refuses_a_used_out_folder_unless_forced(audio_recognizer_dir, tmp_path):
    manifest = make_tone_manifest(tmp_path / "corpus", speakers=3, per_class=2)
    config = tmp_path / "tiny.yaml"
    config.write_text(
        f"name: retrained\ncorpus: manifest:{manifest}\nprotocol: speaker-groups:3\ncache_dir: {tmp_path / 'cache'}\n"
        "model: {backbone: wav2vec2-base, tiny: true, mode: frozen}\n"
        "train: {lr: 0.05, batch_size: 8, max_epochs: 2, patience: 2, threads: 1}\n"
    )
    unrelated = tmp_path / "photos"
    unrelated.mkdir()
    (unrelated / "holiday.jpg").write_bytes(b"x")
    r = runner.invoke(app, ["train", str(config), "--out", str(unrelated), "--quiet"])
    assert isinstance(r.exception, EmovoxError) and "is not empty (holiday.jpg)" in str(r.exception)
    existing = tmp_path / "model"
    shutil.copytree(audio_recognizer_dir, existing)
    (existing / "branches" / "audio" / "stale.json").write_text("{}")
    (existing / "NOTES.txt").write_text("mine")
    before = json.loads((existing / "emovox.json").read_text())["name"]
    r = runner.invoke(app, ["train", str(config), "--out", str(existing), "--quiet"])
    assert isinstance(r.exception, EmovoxError) and "already holds a recognizer" in str(r.exception) and "--force" in str(r.exception)
    assert json.loads((existing / "emovox.json").read_text())["name"] == before  # untouched
    r = runner.invoke(app, ["train", str(config), "--out", str(existing), "--quiet", "--force"])
    assert r.exit_code == 0, r.output
    assert json.loads((existing / "emovox.json").read_text())["name"] == "retrained"
    assert not (existing / "branches" / "audio" / "stale.json").exists() and (existing / "NOTES.txt").read_text() == "mine"
    r = runner.invoke(app, ["predict", str(existing), str(write_wav(tmp_path / "hi.wav", tone(515, 0.8))), "--json", "-"])
    assert r.exit_code == 0 and json.loads(r.stdout)[0]["label"] in ("high", "low")


def test_train_out_checks_reuse_the_run_dir_rules(tmp_path):
    from emovox.training.final import prepare_model_dir

    prepare_model_dir(tmp_path / "new", force=False)  # a new folder is fine
    interrupted = tmp_path / "interrupted"
    (interrupted / "_training").mkdir(parents=True)
    prepare_model_dir(interrupted, force=False)  # an interrupted train continues
    (tmp_path / "file").write_text("x")
    with pytest.raises(EmovoxError, match="not a directory"):
        prepare_model_dir(tmp_path / "file", force=True)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "a.txt").write_text("x")
    prepare_model_dir(busy, force=True)
    assert (busy / "a.txt").read_text() == "x"  # --force writes into it, deletes nothing of the user's


# --- learning curves -------------------------------------------------------------------------------


def test_learning_curves_name_the_validation_speaker_and_keep_legends_off_the_curves(tmp_path):
    from emovox.corpora import load_corpus
    from emovox.evaluation.reporting import learning_curves_figure
    from emovox.splits.protocols import make_folds

    manifest = make_tone_manifest(tmp_path / "corpus", speakers=12, per_class=1)
    corpus = load_corpus(f"manifest:{manifest}")
    folds = make_folds(corpus, "leave-one-speaker-out", "strict")
    assert folds[0].curve_name == "test speaker spk0 / valid speaker spk1"
    assert folds[-1].curve_name == "test speaker spk11 / valid speaker spk0"
    assert {corpus[i].speaker for i in folds[0].valid} == {"spk1"}  # the name says what the curve is measured on
    assert make_folds(corpus, "leave-one-speaker-out", "paper")[0].valid_name == "= test"
    assert make_folds(corpus, "stratified:3", "strict")[0].valid_name == "10% of training"
    history = [[{"epoch": e, "train_loss": 1 / e, "valid_loss": 1.2 / e, "valid_ua": 0.5 + 0.02 * e} for e in range(1, 9)] for _ in folds]
    fig = learning_curves_figure(history, "LOSO", [f.curve_name for f in folds])
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert titles == [f.curve_name for f in folds]  # one panel per fold
    assert not any(ax.get_legend() for ax in fig.axes)  # the one legend belongs to the figure, outside every panel
    assert len(fig.legends) == 1


# --- lazy imports ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [["--help"], ["--version"], ["predict", "--help"], ["train", "--help"], ["corpus", "info", "--help"], ["splits", "--help"]],
    ids=" ".join,
)
def test_commands_that_need_no_model_import_no_torch(args):
    code = (
        "import sys\nfrom emovox.cli import main\nsys.argv = ['emovox', *sys.argv[1:]]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'matplotlib', 'sklearn', 'fastapi') if m in sys.modules]\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=300)
    assert "HEAVY []" in done.stderr, done.stderr
