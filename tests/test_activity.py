"""``emovox.inference.activity``: silence, near-silence and steady noise have no speech; every EmoDB clip has."""

from __future__ import annotations

import numpy as np
import pytest

from emovox.inference.activity import ABSOLUTE_FLOOR_DB, frame_levels_db, has_speech, speech_activity

SR = 16_000


def at_level(x: np.ndarray, dbfs: float) -> np.ndarray:
    return (x * (10 ** (dbfs / 20) / np.sqrt(np.mean(x.astype(np.float64) ** 2)))).astype(np.float32)


def coloured(n: int, exponent: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n)
    f[0] = f[1]
    return np.fft.irfft(spectrum / f ** (exponent / 2), n)


def syllables(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """A speech-like signal: 4 voiced bursts per second (harmonics of 140 Hz, rising and falling) over faint noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    voice = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 8))
    envelope = np.clip(np.sin(2 * np.pi * 2 * t), 0, None) ** 2
    return (0.2 * voice * envelope + 0.002 * rng.standard_normal(len(t))).astype(np.float32)


N = 3 * SR
NO_SPEECH = {
    "digital silence": np.zeros(N, np.float32),
    "16-bit dither": (np.random.default_rng(0).integers(-1, 2, N) / 32768).astype(np.float32),
    "white noise at -70 dBFS": at_level(np.random.default_rng(1).standard_normal(N), -70),
    "white noise at -30 dBFS": at_level(np.random.default_rng(2).standard_normal(N), -30),
    "white noise at -10 dBFS": at_level(np.random.default_rng(3).standard_normal(N), -10),
    "pink noise at -20 dBFS": at_level(coloured(N, 1.0, 4), -20),
    "brown noise (rumble) at -10 dBFS": at_level(coloured(N, 2.0, 5), -10),
    "50 Hz hum": at_level(sum(np.sin(2 * np.pi * 50 * k * np.arange(N) / SR) / k for k in range(1, 5)), -30),
    "steady 440 Hz tone": at_level(np.sin(2 * np.pi * 440 * np.arange(N) / SR), -20),
    "syllables at -85 dBFS (near-silence)": at_level(syllables(3.0), -85),
}


@pytest.mark.parametrize("name", list(NO_SPEECH))
def test_silence_and_steady_noise_have_no_speech(name):
    clip = NO_SPEECH[name]
    assert not has_speech(clip), name
    assert speech_activity(clip) < 0.02


def test_speech_like_signals_have_speech_at_any_level():
    for level in (-45, -20, -3):
        clip = at_level(syllables(), level)
        assert has_speech(clip) and speech_activity(clip) > 0.3, level
    noisy = syllables() + at_level(np.random.default_rng(7).standard_normal(2 * SR), -40)
    assert has_speech(noisy)


def test_levels_are_dbfs_and_empty_clips_are_silent():
    sine = np.sin(2 * np.pi * 1000 * np.arange(SR) / SR)
    assert frame_levels_db(sine) == pytest.approx(np.full(50, -3.0103), abs=1e-3)  # full-scale sine: -3 dBFS
    assert speech_activity(np.zeros(0, np.float32)) == 0.0 and not has_speech(np.zeros(100, np.float32))
    assert ABSOLUTE_FLOOR_DB < -40


def test_every_emodb_clip_has_speech(emodb_dir):
    from emovox.audio import load_audio

    files = sorted((emodb_dir / "wav").glob("*.wav"))
    assert len(files) > 500
    silent = [f.name for f in files if not has_speech(load_audio(f))]
    assert silent == []
    # ... and digital silence padded to an EmoDB clip's length does not
    assert not has_speech(np.zeros_like(load_audio(files[0])))
