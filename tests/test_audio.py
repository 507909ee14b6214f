"""load_audio: every format/rate/depth to 16 kHz mono float32, segments, and every bad-file case."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from corpus_fixtures import write_tone

from emovox.audio import SAMPLE_RATE, audio_duration, load_audio
from emovox.corpora.base import Utterance
from emovox.data.examples import load_cropped_audio
from emovox.errors import AudioError, EmovoxError


def dominant_freq(x: np.ndarray, sr: int = SAMPLE_RATE) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[np.argmax(spectrum)])


@pytest.mark.parametrize("sr", [44_100, 8_000, 48_000, 16_000])
@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "FLOAT", "PCM_U8", "PCM_32", "DOUBLE"])
def test_any_rate_and_depth_becomes_16k_mono(tmp_path: Path, sr: int, subtype: str) -> None:
    path = write_tone(tmp_path / "x.wav", 1.0, sr=sr, freq=440.0, channels=2, subtype=subtype, amplitude=0.6)
    x = load_audio(path)
    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(len(x) - round(sr * 1.0 * SAMPLE_RATE / sr)) <= 1
    assert dominant_freq(x) == pytest.approx(440.0, abs=2.0)
    # Stereo is averaged: left 0.6, right 0.3 -> 0.45 peak (8-bit is coarse).
    assert np.abs(x[len(x) // 4 : 3 * len(x) // 4]).max() == pytest.approx(0.45, abs=0.03)


def test_channels_are_averaged_not_picked(tmp_path: Path) -> None:
    t = np.arange(16_000) / 16_000
    tone = 0.5 * np.sin(2 * np.pi * 300 * t)
    sf.write(str(tmp_path / "cancel.wav"), np.stack([tone, -tone], axis=1), 16_000, subtype="FLOAT")
    assert np.abs(load_audio(tmp_path / "cancel.wav")).max() < 1e-6


@pytest.mark.parametrize("fmt", ["flac", "ogg", "mp3"])
def test_compressed_formats(tmp_path: Path, fmt: str) -> None:
    if fmt.upper() not in sf.available_formats():
        pytest.skip(f"this libsndfile has no {fmt}")
    path = tmp_path / f"x.{fmt}"
    t = np.arange(44_100) / 44_100
    sf.write(str(path), (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 44_100)
    x = load_audio(path)
    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(len(x) - 16_000) <= (16 if fmt != "mp3" else 1200)  # MP3 pads with encoder delay
    assert dominant_freq(x) == pytest.approx(440.0, abs=3.0)
    assert audio_duration(path) == pytest.approx(1.0, abs=0.08)


def test_segment_reads_only_that_part(tmp_path: Path) -> None:
    # Three seconds, one tone per second: 300, 600, 900 Hz.
    sr = 16_000
    t = np.arange(sr) / sr
    signal = np.concatenate([0.4 * np.sin(2 * np.pi * f * t) for f in (300, 600, 900)]).astype(np.float32)
    path = tmp_path / "three.wav"
    sf.write(str(path), signal, sr, subtype="FLOAT")
    mid = load_audio(path, start=1.0, end=2.0)
    assert len(mid) == sr
    np.testing.assert_array_equal(mid, load_audio(path)[sr : 2 * sr])
    assert dominant_freq(mid) == pytest.approx(600, abs=2)
    assert dominant_freq(load_audio(path, start=2.0)) == pytest.approx(900, abs=2)
    assert len(load_audio(path, end=0.5)) == sr // 2
    # The same segment from a 48 kHz stereo copy is resampled to the same length and tone.
    path48 = write_tone(tmp_path / "48.wav", 3.0, sr=48_000, freq=600, channels=2)
    assert len(load_audio(path48, 1.25, 2.0)) == 12_000


def test_segment_errors_name_the_file(tmp_path: Path) -> None:
    path = write_tone(tmp_path / "one.wav", 1.0)
    for start, end in [(0.5, 0.5), (0.8, 0.2), (-1.0, 0.5), (1.5, 2.0), (0.2, 3.0)]:
        with pytest.raises(AudioError, match="one.wav"):
            load_audio(path, start, end)
    # A few ms past the end (rounding in annotations) is clipped, not an error.
    assert len(load_audio(path, 0.5, 1.05)) == 8_000


def test_long_file_memory_is_bounded(tmp_path: Path) -> None:
    """30 s of 48 kHz stereo: a full float read would need 11.5 MB; a 1 s cut must not read it all."""
    sr, seconds = 48_000, 30
    path = tmp_path / "long.wav"
    with sf.SoundFile(str(path), "w", sr, 2, subtype="PCM_16") as f:
        t = np.arange(sr) / sr
        for k in range(seconds):
            tone = 0.3 * np.sin(2 * np.pi * (200 + 10 * k) * t)
            f.write(np.stack([tone, tone], axis=1))
    tracemalloc.start()
    try:
        cut = load_audio(path, 10.0, 11.0)
        _, peak_cut = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        full = load_audio(path)
        _, peak_full = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(cut) == 16_000 and dominant_freq(cut) == pytest.approx(300, abs=2)
    assert len(full) == seconds * 16_000
    assert peak_cut < 1.5e6, f"reading a 1 s cut peaked at {peak_cut / 1e6:.1f} MB"
    assert peak_full < 5e6, f"reading 30 s peaked at {peak_full / 1e6:.1f} MB (the mono 16 kHz result is 1.9 MB)"


def test_duration_from_header(tmp_path: Path) -> None:
    assert audio_duration(write_tone(tmp_path / "a.wav", 1.5, sr=22_050)) == pytest.approx(1.5, abs=1e-4)


def test_utterance_audio_cuts_only_when_cut(tmp_path: Path) -> None:
    path = write_tone(tmp_path / "u.wav", 2.0)
    whole = Utterance("u", "s", "neutral", "neu", audio=path, start=5.0, end=6.0)  # timeline times, not a cut
    cut = Utterance("c", "s", "neutral", "neu", audio=path, start=0.5, end=1.0, cut=True)
    assert len(load_cropped_audio(whole, 10.0)) == 32_000
    assert len(load_cropped_audio(cut, 10.0)) == 8_000
    with pytest.raises(AudioError, match="'t'"):
        load_cropped_audio(Utterance("t", "s", "neutral", "neu"), 10.0)


# --- bad files --------------------------------------------------------------------------


def _truncated_wav(tmp: Path) -> Path:
    good = write_tone(tmp / "good.wav", 1.0, sr=44_100, channels=2, subtype="PCM_24")
    data = good.read_bytes()
    bad = tmp / "truncated.wav"
    bad.write_bytes(data[: len(data) // 2])
    return bad


def _header_only_wav(tmp: Path) -> Path:
    good = write_tone(tmp / "good2.wav", 1.0)
    bad = tmp / "header_only.wav"
    bad.write_bytes(good.read_bytes()[:44])
    return bad


def _truncated_flac(tmp: Path) -> Path:
    t = np.arange(44_100) / 44_100
    sf.write(str(tmp / "good.flac"), 0.5 * np.sin(2 * np.pi * 440 * t), 44_100)
    bad = tmp / "truncated.flac"
    bad.write_bytes((tmp / "good.flac").read_bytes()[:3000])
    return bad


def _text_as_wav(tmp: Path) -> Path:
    p = tmp / "notes.wav"
    p.write_text("this is a text file with a .wav name\n")
    return p


def _zero_samples(tmp: Path) -> Path:
    p = tmp / "empty.wav"
    sf.write(str(p), np.zeros(0, dtype=np.float32), 16_000)
    return p


def _non_finite(value: float, name: str):
    def make(tmp: Path) -> Path:
        x = (0.1 * np.ones(16_000)).astype(np.float32)
        x[8_000] = value
        p = tmp / name
        sf.write(str(p), x, 16_000, subtype="FLOAT")
        return p

    return make


BAD_FILES = {
    "missing": (lambda tmp: tmp / "nowhere.wav", "not found"),
    "directory": (lambda tmp: (tmp / "adir.wav").mkdir() or tmp / "adir.wav", "directory"),
    "text named .wav": (_text_as_wav, "cannot be read as audio"),
    "truncated wav": (_truncated_wav, "truncated"),
    "header-only wav": (_header_only_wav, "truncated"),
    "truncated flac": (_truncated_flac, "corrupt or truncated"),
    "zero samples": (_zero_samples, "zero samples"),
    "nan": (_non_finite(np.nan, "nan.wav"), "non-finite"),
    "inf": (_non_finite(np.inf, "inf.wav"), "non-finite"),
    "-inf": (_non_finite(-np.inf, "neginf.wav"), "non-finite"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_audio_raises_audio_error_naming_the_file(tmp_path: Path, case: str) -> None:
    make, why = BAD_FILES[case]
    path = make(tmp_path)
    with pytest.raises(AudioError) as info:
        load_audio(path)
    message = str(info.value)
    assert path.name in message and why in message
    assert isinstance(info.value, EmovoxError)


def test_duration_of_bad_files_is_an_audio_error(tmp_path: Path) -> None:
    for make in (_text_as_wav, _truncated_wav, lambda tmp: tmp / "nowhere.wav"):
        path = make(tmp_path)
        with pytest.raises(AudioError, match=path.name):
            audio_duration(path)
