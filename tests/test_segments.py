"""Long audio: streaming decode, fixed windows, energy VAD, flat memory, timelines and plots."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest
import soundfile as sf
from helpers import tone, write_wav
from typer.testing import CliRunner

from emovox.audio import SAMPLE_RATE, load_audio
from emovox.cli import app
from emovox.errors import AudioError, RecognizerError
from emovox.inference.recognizer import Recognizer
from emovox.inference.segments import (
    SegmentConfig,
    SegmentError,
    fixed_windows,
    iter_segments,
    stream_audio,
    vad_segments,
)
from emovox.inference.timeline import plot_timeline, predict_timeline

SR = SAMPLE_RATE


def blocks_of(x: np.ndarray, size: int) -> list[np.ndarray]:
    return [x[i : i + size] for i in range(0, len(x), size)]


def bursts(layout: list[tuple[float, float]], *, level: float = 0.3, noise: float = 0.002, seed: int = 0) -> np.ndarray:
    """(seconds, 1 for a 300 Hz burst / 0 for near-silence) pieces, concatenated at 16 kHz."""
    rng = np.random.default_rng(seed)
    parts = []
    for seconds, on in layout:
        n = int(round(seconds * SR))
        x = noise * rng.standard_normal(n)
        if on:
            x = x + level * np.sin(2 * np.pi * 300 * np.arange(n) / SR)
        parts.append(x)
    return np.concatenate(parts).astype(np.float32)


# --- streaming decode -------------------------------------------------------------------------


@pytest.mark.parametrize("sr, channels", [(16_000, 1), (8_000, 1), (44_100, 2)])
def test_stream_matches_whole_file_decode(tmp_path, sr, channels):
    t = np.arange(int(2.3 * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * 440 * t)
    data = x if channels == 1 else np.stack([x, 0.5 * x], axis=1)
    path = tmp_path / "a.wav"
    sf.write(str(path), data.astype(np.float32), sr, subtype="FLOAT")
    streamed = np.concatenate(list(stream_audio(path, block_frames=5000)))
    whole = load_audio(path)
    assert abs(len(streamed) - len(whole)) <= 2
    n = min(len(streamed), len(whole))
    np.testing.assert_allclose(streamed[:n], whole[:n], atol=1e-4)


def test_stream_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"this is not audio")
    with pytest.raises(AudioError, match="bad.wav"):
        list(stream_audio(bad))
    with pytest.raises(AudioError, match="not found"):
        list(stream_audio(tmp_path / "none.wav"))


# --- fixed windows ----------------------------------------------------------------------------


def test_fixed_windows_cover_the_recording_and_do_not_depend_on_block_size():
    x = np.arange(int(7.5 * SR), dtype=np.float32)
    config = SegmentConfig(mode="fixed", window=2.0, overlap=0.5)
    segs = list(fixed_windows(blocks_of(x, 3000), config))
    assert [(s.start, s.end) for s in segs] == [(0.0, 2.0), (1.5, 3.5), (3.0, 5.0), (4.5, 6.5), (6.0, 7.5)]
    for s in segs:  # each window holds exactly its own samples
        np.testing.assert_array_equal(s.audio, x[int(s.start * SR) : int(s.end * SR)])
    other = list(fixed_windows(blocks_of(x, 70_001), config))
    assert [(s.start, s.end) for s in other] == [(s.start, s.end) for s in segs]
    # a tail already inside the previous window is not repeated; a short clip is one window
    assert [(s.start, s.end) for s in fixed_windows([x[: int(6.4 * SR)]], config)][-1] == (4.5, 6.4)
    assert [(s.start, s.end) for s in fixed_windows([x[:8000]], config)] == [(0.0, 0.5)]


# --- voice activity ---------------------------------------------------------------------------


def test_vad_finds_bursts_merges_short_pauses_drops_blips_and_splits_long_speech():
    layout = [(1.0, 0), (1.5, 1), (0.8, 0), (2.0, 1), (0.2, 0), (1.0, 1), (1.0, 0), (0.1, 1), (1.0, 0), (5.0, 1), (0.5, 0)]
    x = bursts(layout)
    config = SegmentConfig(mode="vad", padding=0.1, min_silence=0.4, min_speech=0.3, max_segment=4.0)
    segs = list(vad_segments(blocks_of(x, 4096), config))
    got = [(round(s.start, 2), round(s.end, 2)) for s in segs]
    # speech at 1.0-2.5, 3.3-6.5 (a 0.2 s pause is not a boundary), 8.6-13.6 split into 4 s pieces (padding
    # included); the 0.1 s blip is dropped
    expected = [(0.9, 2.6), (3.2, 6.6), (8.5, 12.5), (12.3, 13.7)]
    assert len(got) == len(expected), got
    for (s, e), (es, ee) in zip(got, expected, strict=True):
        assert abs(s - es) <= 0.05 and abs(e - ee) <= 0.05, got  # within a 30 ms frame (+ rounding)
    for seg in segs:
        np.testing.assert_array_equal(seg.audio, x[int(round(seg.start * SR)) : int(round(seg.end * SR))])
    # decisions do not depend on how the stream was cut into blocks ...
    assert [(s.start, s.end) for s in vad_segments(blocks_of(x, 999), config)] == [(s.start, s.end) for s in segs]
    # ... nor on the recording level (adaptive threshold), while a fixed threshold is absolute
    quiet = [(s.start, s.end) for s in vad_segments([x * 0.05], config)]
    assert quiet == [(s.start, s.end) for s in segs]
    assert list(vad_segments([x * 0.05], SegmentConfig(mode="vad", threshold_db=-20))) == []


@pytest.mark.parametrize(
    "options, message",
    [
        ({"mode": "spectral"}, "vad"),
        ({"mode": "fixed", "window": 2, "overlap": 2}, "shorter than the window"),
        ({"window": -1}, "positive"),
        ({"threshold_db": 3}, "dBFS"),
        ({"min_silence": float("nan")}, "zero or positive"),
    ],
)
def test_bad_segment_settings(options, message):
    with pytest.raises(SegmentError, match=message):
        SegmentConfig(**options)


# --- memory -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hour_file(tmp_path_factory):
    """One hour at 8 kHz int16 (58 MB; 230 MB once at 16 kHz float32): 20 s quiet, 40 s tone, per minute."""
    path = tmp_path_factory.mktemp("hour") / "hour.wav"
    sr = 8000
    minute = (0.2 * np.sin(2 * np.pi * 200 * np.arange(60 * sr) / sr)).astype(np.float32)
    minute[: 20 * sr] *= 0.01
    with sf.SoundFile(str(path), "w", sr, 1, subtype="PCM_16") as f:
        for _ in range(60):
            f.write(minute)
    return path


@pytest.mark.parametrize("mode", ["fixed", "vad"])
def test_segmenting_an_hour_keeps_memory_flat(hour_file, mode):
    config = SegmentConfig(mode=mode, window=4.0, overlap=1.0, max_segment=10.0)
    tracemalloc.start()
    try:
        count, last, longest = 0, None, 0
        for seg in iter_segments(hour_file, config):
            count, last, longest = count + 1, seg, max(longest, len(seg.audio))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8e6, f"peak {peak / 1e6:.1f} MB"  # the decoded hour would be 230 MB
    assert last.end == pytest.approx(3600.0, abs=0.05)
    if mode == "fixed":
        assert count == 1200  # windows start every 3 s
    else:
        # 40 s of tone per minute, cut into 9.8 s pieces (10 s with the 0.1 s padding on each side)
        assert count == 300 and longest <= 10 * SR
        assert last.start == pytest.approx(3599.1, abs=0.15)  # pieces are whole 30 ms frames


# --- timelines --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def alternating(tmp_path_factory):
    """12 s alternating 3 s of 'high' (520 Hz) and 'low' (180 Hz) tone, at 22.05 kHz."""
    sr = 22_050
    x = np.concatenate([tone(f, 3.0, sr=sr) for f in (520, 180, 520, 180)])
    return write_wav(tmp_path_factory.mktemp("long") / "alternating.wav", x, sr)


def test_timeline_follows_the_recording(audio_recognizer_dir, alternating, tmp_path):
    rec = Recognizer.load(audio_recognizer_dir)
    tl = predict_timeline(rec, alternating, mode="fixed", window=1.5, overlap=0.0)
    assert [(e.start, e.end) for e in tl.entries] == [(1.5 * k, 1.5 * (k + 1)) for k in range(8)]
    assert [e.label for e in tl.entries] == ["high", "high", "low", "low"] * 2
    assert tl.label_seconds() == {"high": 6.0, "low": 6.0}
    data = json.loads(tl.write_json(tmp_path / "t.json").read_text())
    assert data["duration"] == pytest.approx(12.0) and data["segmentation"]["mode"] == "fixed"
    assert data["segments"][2]["label"] == "low" and set(data["segments"][2]["probabilities"]) == {"high", "low"}
    png = plot_timeline(tl, tmp_path / "t.png")
    import matplotlib.image

    image = matplotlib.image.imread(str(png))
    assert image.shape[0] > 200 and image.shape[1] > 600 and image[..., :3].std() > 0.05
    with pytest.raises(RecognizerError, match="either"):
        predict_timeline(rec, alternating, SegmentConfig(), mode="fixed")


def test_text_recognizer_timeline_needs_asr(text_recognizer_dir, alternating):
    with pytest.raises(RecognizerError, match="ASR"):
        predict_timeline(Recognizer.load(text_recognizer_dir), alternating)


def test_cli_timeline_writes_json_and_png(audio_recognizer_dir, tmp_path):
    x = bursts([(0.5, 0), (1.5, 1), (1.0, 0), (1.2, 1), (0.5, 0)])
    wav = write_wav(tmp_path / "talk.wav", x)
    out, png = tmp_path / "tl.json", tmp_path / "tl.png"
    r = CliRunner().invoke(app, ["timeline", str(audio_recognizer_dir), str(wav), "--json", str(out), "--plot", str(png)])
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    assert [(round(s["start"], 1), round(s["end"], 1)) for s in data["segments"]] == [(0.4, 2.1), (2.9, 4.3)]
    assert data["segmentation"]["mode"] == "vad" and png.stat().st_size > 5000
    assert "2 segments" in r.output and "time per label" in r.output
    r = CliRunner().invoke(app, ["timeline", str(audio_recognizer_dir), str(wav), "--mode", "fixed", "--overlap", "9"])
    assert isinstance(r.exception, SegmentError)
