"""Manifests (CSV/JSONL), export round trips, and the ``emovox corpus`` commands."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from corpus_fixtures import (
    LABEL_TONES,
    MANIFEST_ROWS,
    make_emodb_tree,
    make_iemocap_tree,
    make_manifest,
    make_meacorpus_tree,
    make_ravdess_tree,
)
from typer.testing import CliRunner

from emovox.cli import app
from emovox.corpora import UNKNOWN_SPEAKER, load_corpus, read_manifest, write_manifest
from emovox.data.examples import load_cropped_audio
from emovox.errors import CorpusError

runner = CliRunner()


def dominant_freq(x: np.ndarray, sr: int = 16_000) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[np.argmax(spectrum)])


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_manifest_reads_every_column(tmp_path: Path, fmt: str) -> None:
    path = make_manifest(tmp_path, fmt)
    c = load_corpus(f"manifest:{path}")
    assert len(c) == len(MANIFEST_ROWS)
    assert c.labels == ("angry", "happy", "neutral", "sad")  # sorted set of the labels
    a = c["a"]  # id defaults to the file name without extension
    assert a.audio == path.parent / "clips" / "a.wav" and a.audio.is_absolute()
    assert (a.label, a.corpus_label, a.text, a.speaker, a.session) == ("happy", "happy", "hello there", "spk1", "s1")
    assert (a.start, a.end, a.cut, a.dialogue, a.turn) == (None, None, False, None, None)
    assert c["b"].text is None
    t2 = c["d1_t2"]
    assert (t2.start, t2.end, t2.cut, t2.turn, t2.dialogue, t2.text) == (1.0, 2.0, True, 1, "d1", "second, turn")
    assert c["d1_t3"].text == 'third "turn"'
    assert c.previous("d1_t2").id == "d1_t1" and c.previous("d1_t3").id == "d1_t2" and c.previous("d1_t1") is None


def test_manifest_cuts_load_their_own_segment(tmp_path: Path) -> None:
    c = load_corpus(f"manifest:{make_manifest(tmp_path)}")
    for uid in ("d1_t1", "d1_t2", "d1_t3"):
        x = load_cropped_audio(c[uid], 10.0)
        assert len(x) == 16_000
        assert dominant_freq(x) == pytest.approx(LABEL_TONES[c[uid].label], abs=2)
    assert len(load_cropped_audio(c["c"], 10.0)) == 4_800  # 0.3 s of 44.1 kHz stereo


def test_manifest_labels_option_orders_and_filters(tmp_path: Path) -> None:
    path = make_manifest(tmp_path)
    c = load_corpus(f"manifest:{path}?labels=sad,happy")
    assert c.labels == ("sad", "happy") and sorted(u.id for u in c) == ["a", "b", "d1_t3"]


def test_manifest_minimal_columns_and_defaults(tmp_path: Path) -> None:
    make_manifest(tmp_path)
    m = tmp_path / "manifest" / "min.csv"
    m.write_text("path,label,start,end,note\nlong/dialogue.wav,x,0.5,1.5,ignored\nclips/a.wav,y,,,\n")
    c = read_manifest(m)
    assert sorted(u.id for u in c) == ["a", "dialogue@0.5-1.5"]
    assert {u.speaker for u in c} == {UNKNOWN_SPEAKER}
    assert c["dialogue@0.5-1.5"].cut and not c["a"].cut


@pytest.mark.parametrize(
    "content,match",
    [
        ("label,text\nhappy,hi\n", "required column.*path.*found columns"),
        ("path,label\nclips/a.wav,\n", "line 2: the label cell is empty"),
        ("path,label\nclips/a.wav,x\nclips/a.wav,y\n", "id 'a' was already used on line 2"),
        ("path,label,start,end\nclips/a.wav,x,0.2,0.1\n", "line 2: end 0.1 is not after start 0.2"),
        ("path,label,turn\nclips/a.wav,x,first\n", "line 2: turn 'first' is not a whole number"),
        ("path,label\nclips/nothere.wav,x\n", "nothere.wav"),
    ],
)
def test_manifest_errors_name_file_and_line(tmp_path: Path, content: str, match: str) -> None:
    make_manifest(tmp_path)
    m = tmp_path / "manifest" / "bad.csv"
    m.write_text(content)
    with pytest.raises(CorpusError, match=match):
        load_corpus(f"manifest:{m}")


def test_manifest_bad_jsonl_and_type(tmp_path: Path) -> None:
    (tmp_path / "m.jsonl").write_text('{"path": "a.wav", "label": "x"}\nnot json\n')
    with pytest.raises(CorpusError, match="m.jsonl, line 2: not valid JSON"):
        load_corpus(f"manifest:{tmp_path / 'm.jsonl'}")
    (tmp_path / "m.xlsx").write_text("")
    with pytest.raises(CorpusError, match="unknown file type"):
        load_corpus(f"manifest:{tmp_path / 'm.xlsx'}")


# --- export round trips ------------------------------------------------------------------


def _corpora(tmp: Path) -> dict[str, str]:
    return {
        "iemocap": f"iemocap:{make_iemocap_tree(tmp, sessions=1)}?labels=6",
        "ravdess": f"ravdess:{make_ravdess_tree(tmp, actors=(1,))}",
        "emodb": f"emodb:{make_emodb_tree(tmp)}",
        "meacorpus": f"meacorpus:{make_meacorpus_tree(tmp)}",
        "manifest": f"manifest:{make_manifest(tmp, 'jsonl')}",
    }


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".tsv"])
@pytest.mark.parametrize("relative", [False, True])
def test_export_then_load_gives_equal_utterances(tmp_path: Path, suffix: str, relative: bool) -> None:
    for name, spec in _corpora(tmp_path / "data").items():
        original = load_corpus(spec)
        out = write_manifest(original, tmp_path / "out" / f"{name}{suffix}", relative=relative)
        back = load_corpus(f"manifest:{out}?labels={','.join(original.labels)}")
        assert back.utterances == original.utterances, name
        assert back.labels == original.labels
        for u in original:
            prev, prev_back = original.previous(u), back.previous(u.id)
            assert (prev.id if prev else None) == (prev_back.id if prev_back else None)
        written = out.read_text()
        assert (str(tmp_path) in written) != relative  # relative exports hold no absolute paths


def test_relative_export_moves_with_its_audio(tmp_path: Path) -> None:
    original = load_corpus(f"emodb:{make_emodb_tree(tmp_path / 'a')}")
    write_manifest(original, tmp_path / "a" / "emodb.csv", relative=True)
    (tmp_path / "a").rename(tmp_path / "b")
    moved = load_corpus(f"manifest:{tmp_path / 'b' / 'emodb.csv'}")
    assert [u.id for u in moved] == [u.id for u in original]
    assert all(u.audio.is_file() and "/b/" in str(u.audio) for u in moved)


# --- CLI ----------------------------------------------------------------------------------


def test_cli_info_json(tmp_path: Path) -> None:
    root = make_iemocap_tree(tmp_path, sessions=2, seconds_scale=0.5)
    result = runner.invoke(app, ["corpus", "info", f"iemocap:{root}", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["utterances"] == 20
    assert info["labels"] == {"angry": 4, "happy": 6, "neutral": 6, "sad": 4}
    assert info["speakers"] == 4 and info["sessions"] == 2 and info["dialogues"] == 4
    assert info["missing_transcripts"] == 2
    # Clip lengths are (end - start) / 2 for the 10 kept utterances of each session.
    kept = [(1.0, 1.8), (2.0, 3.2), (3.5, 4.3), (5.3, 6.1), (6.3, 7.0), (8.0, 8.6),
            (0.5, 1.2), (1.4, 2.0), (2.2, 2.9), (3.8, 4.4)]
    expected_total = 2 * sum((e - s) * 0.5 for s, e in kept)
    assert info["total_duration_s"] == pytest.approx(expected_total, abs=1e-3)
    assert info["mean_duration_s"] == pytest.approx(expected_total / 20, abs=1e-3)
    assert info["unreadable_audio"] == []


def test_cli_info_cut_durations_and_table(tmp_path: Path) -> None:
    path = make_manifest(tmp_path)
    result = runner.invoke(app, ["corpus", "info", f"manifest:{path}", "--json"])
    info = json.loads(result.output)
    assert info["total_duration_s"] == pytest.approx(3 * 0.3 + 3 * 1.0, abs=1e-3)
    assert info["speakers"] == 2 and info["missing_transcripts"] == 1
    table = runner.invoke(app, ["corpus", "info", f"manifest:{path}"])
    assert table.exit_code == 0 and "utterances" in table.output and "angry" in table.output


def test_cli_info_reports_unreadable_audio(tmp_path: Path) -> None:
    root = make_emodb_tree(tmp_path)
    (root / "wav" / "03a01Fa.wav").write_text("not audio")
    result = runner.invoke(app, ["corpus", "info", f"emodb:{root}", "--json"])
    assert result.exit_code == 1
    info = json.loads(result.output)
    assert len(info["unreadable_audio"]) == 1 and "03a01Fa.wav" in info["unreadable_audio"][0]


def test_cli_info_real_emodb(emodb_dir: Path) -> None:
    info = json.loads(runner.invoke(app, ["corpus", "info", f"emodb:{emodb_dir}", "--json"]).output)
    assert (info["utterances"], info["speakers"], info["missing_transcripts"]) == (535, 10, 0)
    # durations against soundfile's own header reading of every file (the copy's lengths vary: 1.2-9.0 s)
    import soundfile as sf

    seconds = [sf.info(str(p)).duration for p in sorted((emodb_dir / "wav").glob("*.wav"))]
    assert info["total_duration_s"] == pytest.approx(sum(seconds), abs=0.01)
    assert info["mean_duration_s"] == pytest.approx(sum(seconds) / len(seconds), abs=0.01)


def test_cli_export_round_trip(tmp_path: Path) -> None:
    spec = f"ravdess:{make_ravdess_tree(tmp_path)}"
    out = tmp_path / "ravdess.csv"
    result = runner.invoke(app, ["corpus", "export", spec, str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote 16 utterances" in result.output
    # RAVDESS labels are not in sorted order, so the command says how to keep their order.
    assert "?labels=neutral,calm,happy" in result.output
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 16 and set(rows[0]) >= {"id", "path", "label", "speaker", "text", "start", "end"}
    assert load_corpus(f"manifest:{out}").utterances == load_corpus(spec).utterances


def test_cli_user_errors_are_corpus_errors(tmp_path: Path) -> None:
    result = runner.invoke(app, ["corpus", "info", f"iemocap:{tmp_path}"])
    assert isinstance(result.exception, CorpusError) and "Session1" in str(result.exception)
