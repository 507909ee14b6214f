"""Is there any speech in a clip? A cheap check run before a label is trusted.

A recognizer always answers: two seconds of digital silence come back ``angry`` at p = 0.995.
Before a label is reported, ``has_speech`` says whether the clip holds anything speech-like,
so a caller can flag the answer instead of presenting it as a finding.

How: the clip is cut into 20 ms frames and each frame's level in the speech band (100 Hz-4 kHz;
dBFS, 0 dB = full scale) is measured. A frame is *active* when it is louder than both an absolute floor
(``ABSOLUTE_FLOOR_DB``: below it a clip is near-silent whatever its shape) and the clip's own
background, its 10th-percentile frame level, plus ``MARGIN_DB``. Speech rises and falls by
20-40 dB from syllable to syllable and pause to pause; stationary noise (hiss, hum, fan, a
steady tone) stays within a decibel or two of its own level, so no frame of it clears the
margin, however loud it is. A clip has speech when its active frames add up to at least
``MIN_SPEECH_SECONDS``.

The thresholds were chosen from measurements (``benchmarks/speech_activity.py`` prints them):
every one of EmoDB's 535 clips must count as speech, digital silence, near-silence and
stationary noise at any level must not. This is an energy detector, not a speech detector:
sound that rises and falls like speech (music, door slams, coughs) counts as activity, and
speech buried in loud steady noise may not.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from emovox.audio import SAMPLE_RATE

#: Frame length (seconds) over which the level is measured.
FRAME_SECONDS = 0.02
#: Frequencies (Hz) whose energy counts: where speech is, above rumble and below hiss.
BAND_HZ = (100.0, 4000.0)
#: Below this level (dBFS) a frame is never active: near-silence, dither, a quiet room.
ABSOLUTE_FLOOR_DB = -55.0
#: A frame must be this many dB above the clip's background (10th-percentile frame level).
MARGIN_DB = 12.0
#: Percentile of the frame levels taken as the clip's background level.
BACKGROUND_PERCENTILE = 10.0
#: A clip has speech when its active frames add up to at least this many seconds.
MIN_SPEECH_SECONDS = 0.1


@dataclass(frozen=True)
class SpeechCheck:
    """The check's settings (the constants above by default). A runtime stores them beside its model
    (``emovox.inference``), so a recognizer keeps flagging the clips it flagged when it was exported."""

    frame_seconds: float = FRAME_SECONDS
    band_hz: tuple[float, float] = BAND_HZ
    absolute_floor_db: float = ABSOLUTE_FLOOR_DB
    margin_db: float = MARGIN_DB
    background_percentile: float = BACKGROUND_PERCENTILE
    min_speech_seconds: float = MIN_SPEECH_SECONDS

    def to_dict(self) -> dict:
        d = asdict(self)
        d["band_hz"] = list(self.band_hz)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> SpeechCheck:
        return cls(**{**data, "band_hz": tuple(data.get("band_hz", BAND_HZ))})


DEFAULT = SpeechCheck()


def frame_levels_db(
    clip: np.ndarray, sample_rate: int = SAMPLE_RATE, frame_seconds: float = FRAME_SECONDS, band_hz: tuple = BAND_HZ
) -> np.ndarray:
    """Level (dBFS) of each whole frame within ``band_hz``; a full-scale 1 kHz sine is -3 dB.

    Only the speech band counts: rumble, wind and DC below 100 Hz carry most of the energy of
    brown noise and swing by 20 dB from one 20 ms frame to the next, which would look like speech.
    """
    frame = max(1, round(frame_seconds * sample_rate))
    n = len(clip) // frame
    if n == 0:
        return np.zeros(0)
    frames = np.asarray(clip[: n * frame], dtype=np.float64).reshape(n, frame)
    window = np.hanning(frame)
    spectrum = np.fft.rfft(frames * window, axis=1)
    freqs = np.fft.rfftfreq(frame, 1.0 / sample_rate)
    band = (freqs >= band_hz[0]) & (freqs <= band_hz[1])
    # Parseval: twice the one-sided band power over the window's energy is the band's mean square
    power = 2.0 * np.sum(np.abs(spectrum[:, band]) ** 2, axis=1) / (frame * np.sum(window**2))
    return 10.0 * np.log10(power + 1e-12)


def active_frames(clip: np.ndarray, sample_rate: int = SAMPLE_RATE, check: SpeechCheck = DEFAULT) -> np.ndarray:
    """Boolean per frame: louder than the absolute floor and than the background + margin."""
    levels = frame_levels_db(clip, sample_rate, check.frame_seconds, check.band_hz)
    if levels.size == 0:
        return np.zeros(0, dtype=bool)
    background = float(np.percentile(levels, check.background_percentile))
    return levels > max(check.absolute_floor_db, background + check.margin_db)


def speech_activity(clip: np.ndarray, sample_rate: int = SAMPLE_RATE, check: SpeechCheck = DEFAULT) -> float:
    """Fraction (0-1) of the clip's frames that are active (speech-like); 0 for silence and steady noise."""
    active = active_frames(clip, sample_rate, check)
    return float(active.mean()) if active.size else 0.0


def has_speech(clip: np.ndarray, sample_rate: int = SAMPLE_RATE, check: SpeechCheck = DEFAULT) -> bool:
    """True when the clip's active frames add up to at least ``check.min_speech_seconds``."""
    seconds = float(active_frames(clip, sample_rate, check).sum()) * check.frame_seconds
    return seconds >= check.min_speech_seconds - 1e-9
