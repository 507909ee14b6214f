"""Bad audio in a corpus: a clear error naming the file, or (skip policy) a run that goes on and
lists every utterance it left out, in results.json, report.md and a CLI warning.

Policies under test (``ExperimentConfig.on_bad_audio``): ``skip`` (default) leaves an unusable
utterance out of the whole run and reports it; ``error`` stops at the first one with an
``AudioError`` that names the file. Audio shorter than 0.1 s is such an error (``TooShortError``); audio
longer than ``model.max_seconds`` is not: it is cropped, reading only the part that is used.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import yaml
from helpers import tiny_config, tone, tone_rows, write_manifest, write_wav
from robustness_helpers import BAD_AUDIO, sparse_long_wav
from typer.testing import CliRunner

from emovox.cli import app
from emovox.config import config_from_dict
from emovox.corpora import load_corpus
from emovox.corpora.base import Corpus, Utterance
from emovox.data.examples import MIN_SECONDS, TooShortError, build_examples
from emovox.errors import AudioError, EmovoxError
from emovox.training.runner import run_cv

SUFFIX = {"unsupported_format": ".m4a"}


def bad_rows(root) -> list[dict]:
    """One utterance per kind of bad audio, spread over the speakers so every fold meets some."""
    rows = []
    for i, (kind, (make, _)) in enumerate(BAD_AUDIO.items()):
        rel = f"bad/{kind}{SUFFIX.get(kind, '.wav')}"
        make(root / rel)
        rows.append(
            {"id": f"bad_{kind}", "path": rel, "label": "low" if i % 2 else "high", "speaker": f"spk{i % 4}", "text": "x"}
        )
    return rows


@pytest.fixture(scope="module")
def corpus_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("badaudio")
    good = tone_rows(root)
    bad = bad_rows(root)
    # missing files are the corpus reader's business (on_missing_audio); here the file vanished
    # after the manifest was checked, so it reaches the run: keep it out of the manifest read
    write_manifest(root / "good.csv", good)
    write_manifest(root / "mixed.csv", good + [r for r in bad if r["id"] != "bad_missing"])
    return root


@pytest.mark.parametrize("kind", list(BAD_AUDIO))
def test_each_kind_of_bad_audio_is_an_audio_error_naming_the_file(tmp_path, kind):
    make, why = BAD_AUDIO[kind]
    path = make(tmp_path / f"{kind}{SUFFIX.get(kind, '.wav')}")
    corpus = Corpus("c", [Utterance(kind, "s", "low", "low", audio=path)], ("low",))
    with pytest.raises(AudioError) as info:
        build_examples(corpus, [kind], ["audio"], on_error="error")
    assert isinstance(info.value, EmovoxError)
    assert path.name in str(info.value) and why in str(info.value)
    examples, skipped = build_examples(corpus, [kind], ["audio"], on_error="skip")
    assert examples == [] and [s.id for s in skipped] == [kind]
    assert path.name in skipped[0].reason and why in skipped[0].reason
    assert skipped[0].kind == ("too_short" if kind == "too_short" else "audio")


def test_too_short_threshold_is_one_tenth_of_a_second(tmp_path):
    ok = write_wav(tmp_path / "ok.wav", tone(300, MIN_SECONDS))
    short = write_wav(tmp_path / "short.wav", tone(300, MIN_SECONDS - 0.005))
    # a 3 s recording whose annotated segment is only 50 ms long is too short as well
    long = write_wav(tmp_path / "long.wav", tone(300, 3.0))
    utts = [
        Utterance("ok", "s", "low", "low", audio=ok),
        Utterance("short", "s", "low", "low", audio=short),
        Utterance("cut", "s", "low", "low", audio=long, start=1.0, end=1.05, cut=True),
    ]
    corpus = Corpus("c", utts, ("low",))
    examples, skipped = build_examples(corpus, ["ok", "short", "cut"], ["audio"], on_error="skip")
    assert [e.id for e in examples] == ["ok"] and len(examples[0].audio) == 1600
    assert [(s.id, s.kind) for s in skipped] == [("short", "too_short"), ("cut", "too_short")]
    assert "long.wav [1-1.05 s]" in skipped[1].reason
    with pytest.raises(TooShortError, match="short.wav"):
        build_examples(corpus, ["short"], ["audio"])


def test_an_hour_long_file_is_cropped_without_decoding_it(tmp_path, monkeypatch):
    """Only ``max_seconds`` are read from disk: counted at the decoder, not guessed from timing."""
    import emovox.audio as audio

    hour = sparse_long_wav(tmp_path / "hour.wav", 3600)
    long_cut = write_wav(tmp_path / "dialogue.wav", np.concatenate([tone(200, 4.0), tone(600, 4.0)]))
    read = []
    original = audio._read_mono_resampled

    def counting(p, f, count, sample_rate):
        read.append(count)
        return original(p, f, count, sample_rate)

    monkeypatch.setattr(audio, "_read_mono_resampled", counting)
    utts = [
        Utterance("hour", "s", "low", "low", audio=hour),
        Utterance("cut", "s", "low", "low", audio=long_cut, start=3.0, end=8.0, cut=True),
    ]
    examples, skipped = build_examples(Corpus("c", utts, ("low",)), ["hour", "cut"], ["audio"], max_seconds=2.0)
    assert skipped == []
    assert [len(e.audio) for e in examples] == [32_000, 32_000]
    assert [e.length for e in examples] == [2.0, 2.0]
    assert read == [32_000, 32_000], "decoded more than the 2 s that are used"
    # the cut starts at its own start: 1 s of the 200 Hz part, then the 600 Hz part
    cut = examples[1].audio
    spectrum = np.abs(np.fft.rfft(cut[16_000:]))
    assert np.argmax(spectrum) * 16_000 / len(cut[16_000:]) == pytest.approx(600, abs=2)


def test_skip_policy_lists_every_bad_utterance_in_results_report_and_cli(corpus_root, tmp_path):
    cfg_data = tiny_config(corpus_root / "mixed.csv", tmp_path / "cache")  # skip is the default
    cfg_path = tmp_path / "exp.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg_data))
    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["cv", str(cfg_path), "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    expected_bad = {f"bad_{k}" for k in BAD_AUDIO if k != "missing"}
    assert f"warning: {len(expected_bad)} utterance(s) skipped (7 audio, 1 too short)" in " ".join(r.output.split())

    res = json.loads((out / "results.json").read_text())
    skipped = {s["id"]: s for s in res["skipped"]}
    assert set(skipped) == expected_bad
    for uid, s in skipped.items():
        kind = uid.removeprefix("bad_")
        assert BAD_AUDIO[kind][1] in s["reason"] and kind in s["reason"], s  # names the file and says why
        assert "fold" not in s  # left out of the whole run, not of one fold
    # nothing dropped silently: every manifest row was either tested once or is listed
    corpus = load_corpus(f"manifest:{corpus_root / 'mixed.csv'}")
    predicted = [line.split(",")[0] for line in (out / "predictions.csv").read_text().splitlines()[1:]]
    assert len(predicted) == len(set(predicted)) == res["pooled"]["n"]
    assert set(predicted) | set(skipped) == {u.id for u in corpus} and not set(predicted) & set(skipped)

    report = (out / "report.md").read_text()
    section = report.split("## Skipped utterances", 1)[1]
    assert "8 utterance(s) were left out (7 audio, 1 too short" in section
    for uid in expected_bad:
        assert f"| {uid} | all |" in section


def test_error_policy_stops_with_one_line_naming_the_file(corpus_root, tmp_path, monkeypatch, capsys):
    from emovox.cli import main

    cfg_path = tmp_path / "exp.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_config(corpus_root / "mixed.csv", tmp_path / "cache", on_bad_audio="error")))
    monkeypatch.setattr(sys, "argv", ["emovox", "cv", str(cfg_path), "--out", str(tmp_path / "run"), "--quiet"])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "Traceback" not in err and len(err.splitlines()) == 1
    assert str(corpus_root / "bad") in err  # the first bad file of the manifest, by its path
    assert not (tmp_path / "run" / "results.json").exists()


def test_no_skip_section_is_empty_handed(corpus_root, tmp_path):
    """A clean run says explicitly that nothing was left out (absence of a list is not evidence)."""
    cfg = config_from_dict(tiny_config(corpus_root / "good.csv", tmp_path / "cache", folds=[1]))
    res = run_cv(cfg, tmp_path / "run", progress=False)
    assert res["skipped"] == []
    assert "None: every utterance of the corpus was used" in (tmp_path / "run" / "report.md").read_text()
