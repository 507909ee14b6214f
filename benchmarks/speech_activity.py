"""Measurements behind the thresholds of ``emovox.inference.activity`` (prints numbers, asserts nothing).

For every EmoDB clip: its active speech seconds, active fraction, loudest and background frame
levels; for synthetic signals that must not count as speech (digital silence, near-silence,
stationary noise and tones at every level) and for EmoDB speech made harder (30 dB quieter,
under steady noise): the same. The thresholds in ``emovox.inference.activity`` should leave a wide gap
between the smallest EmoDB value and the largest no-speech value.

    python benchmarks/speech_activity.py [--emodb ../shared/data/emodb]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from emovox.audio import load_audio  # noqa: E402
from emovox.inference.activity import (  # noqa: E402
    ABSOLUTE_FLOOR_DB,
    BACKGROUND_PERCENTILE,
    FRAME_SECONDS,
    MARGIN_DB,
    MIN_SPEECH_SECONDS,
    active_frames,
    frame_levels_db,
    has_speech,
)

SR = 16_000


def describe(clip: np.ndarray) -> dict:
    levels = frame_levels_db(clip)
    active = active_frames(clip)
    return {
        "active_s": float(active.sum()) * FRAME_SECONDS,
        "fraction": float(active.mean()) if active.size else 0.0,
        "peak_db": float(levels.max()) if levels.size else float("-inf"),
        "background_db": float(np.percentile(levels, BACKGROUND_PERCENTILE)) if levels.size else float("-inf"),
        "speech": has_speech(clip),
    }


def at_level(x: np.ndarray, dbfs: float) -> np.ndarray:
    """Scale ``x`` to an RMS level of ``dbfs`` (dB relative to full scale)."""
    rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) or 1.0
    return (x * (10 ** (dbfs / 20) / rms)).astype(np.float32)


def coloured_noise(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """1/f^exponent noise (0 white, 1 pink, 2 brown) shaped in the frequency domain."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n)
    f[0] = f[1]
    return np.fft.irfft(spectrum / f ** (exponent / 2), n).astype(np.float32)


def synthetic(seconds: float = 3.0, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    out = {"digital silence": np.zeros(n, np.float32)}
    out["16-bit dither (+-1 LSB)"] = (rng.integers(-1, 2, n) / 32768).astype(np.float32)
    for level in (-80, -70, -60):
        out[f"white noise {level} dBFS"] = at_level(rng.standard_normal(n), level)
    for name, exponent in (("white", 0.0), ("pink", 1.0), ("brown", 2.0)):
        for level in (-50, -30, -10):
            out[f"{name} noise {level} dBFS"] = at_level(coloured_noise(n, exponent, rng), level)
    hum = sum(np.sin(2 * np.pi * 50 * k * t) / k for k in (1, 2, 3, 4))
    out["50 Hz hum + harmonics -30 dBFS"] = at_level(hum, -30)
    out["440 Hz tone -20 dBFS"] = at_level(np.sin(2 * np.pi * 440 * t), -20)
    # noise whose level drifts slowly (a fan spinning up): 6 dB over the clip
    out["white noise drifting 6 dB"] = at_level(rng.standard_normal(n) * np.linspace(1.0, 2.0, n), -40)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--emodb", type=Path, default=ROOT.parent / "shared" / "data" / "emodb")
    args = parser.parse_args()
    print(
        f"thresholds: frame {FRAME_SECONDS * 1000:g} ms, absolute floor {ABSOLUTE_FLOOR_DB:g} dBFS, "
        f"margin {MARGIN_DB:g} dB over the {BACKGROUND_PERCENTILE:g}th-percentile frame, speech >= {MIN_SPEECH_SECONDS:g} s active"
    )
    files = sorted((args.emodb / "wav").glob("*.wav"))
    rng = np.random.default_rng(1)
    rows: dict[str, list[dict]] = {"EmoDB (original)": [], "EmoDB 30 dB quieter": [], "EmoDB + white noise, SNR 10 dB": []}
    for f in files:
        clip = load_audio(f)
        rows["EmoDB (original)"].append(describe(clip))
        rows["EmoDB 30 dB quieter"].append(describe(clip * 10 ** (-30 / 20)))
        noise = rng.standard_normal(len(clip)).astype(np.float32)
        rms = float(np.sqrt(np.mean(clip.astype(np.float64) ** 2)))
        rows["EmoDB + white noise, SNR 10 dB"].append(describe(clip + noise * rms * 10 ** (-10 / 20)))
    print(f"\nEmoDB: {len(files)} clips from {args.emodb}")
    print(f"{'set':34s} {'speech':>9s} {'min active s':>13s} {'p5 active s':>12s} {'min fraction':>13s} {'min peak dB':>12s} {'max bkgd dB':>12s}")
    for name, values in rows.items():
        if not values:
            continue
        active = np.array([v["active_s"] for v in values])
        print(
            f"{name:34s} {sum(v['speech'] for v in values):4d}/{len(values):<4d} {active.min():13.2f} {np.percentile(active, 5):12.2f} "
            f"{min(v['fraction'] for v in values):13.3f} {min(v['peak_db'] for v in values):12.1f} "
            f"{max(v['background_db'] for v in values):12.1f}"
        )
    print("\nSynthetic, 3 s each (must not be speech)")
    print(f"{'signal':34s} {'speech':>6s} {'active s':>9s} {'peak dB':>8s} {'bkgd dB':>8s} {'peak - bkgd':>12s}")
    for name, clip in synthetic().items():
        d = describe(clip)
        print(
            f"{name:34s} {str(d['speech']):>6s} {d['active_s']:9.2f} {d['peak_db']:8.1f} {d['background_db']:8.1f} "
            f"{d['peak_db'] - d['background_db']:12.1f}"
        )


if __name__ == "__main__":
    main()
