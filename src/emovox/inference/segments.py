"""Long recordings cut into segments while streaming (``timeline`` predicts each and keeps the timeline).

A one-hour call or podcast is 230 MB as 16 kHz float32 and more at its native rate, so it is
never loaded whole. The file is decoded block by block (soundfile), averaged to mono and
resampled with soxr's streaming resampler; a segmenter consumes those blocks and yields
segments as soon as they are complete, holding at most one segment plus one block; the
timeline keeps only each segment's times and probabilities. Peak memory is therefore set by
the block and segment lengths, not by the length of the recording.

Two segmenters:

``fixed``  windows of ``window`` seconds every ``window - overlap`` seconds: even coverage,
           nothing skipped, no assumptions about the audio (music, noise, crosstalk).
``vad``    energy-based voice activity: frames louder than a threshold are speech; speech
           separated by less than ``min_silence`` is one segment; segments shorter than
           ``min_speech`` are dropped, longer than ``max_segment`` (padding included) are split. The threshold is
           ``threshold_db`` (dBFS) when given, else ``margin_db`` above a running noise floor
           (10th percentile of the last ``floor_seconds`` of frame energies), kept between
           ``floor_db`` and ``ceiling_db``: it follows recordings made at any level without a
           first pass over the file, and sound that never pauses for longer than the floor
           window (music, a tone) still counts as activity as long as it is louder than
           ``ceiling_db``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from emovox.audio import SAMPLE_RATE
from emovox.errors import AudioError, EmovoxError

#: Source frames decoded per block (about 4 s at 16 kHz, 1.4 s at 44.1 kHz).
BLOCK_FRAMES = 1 << 16


class SegmentError(EmovoxError):
    """A segmentation setting is invalid (negative window, overlap not below the window, ...)."""


@dataclass(frozen=True)
class SegmentConfig:
    mode: Literal["vad", "fixed"] = "vad"
    # fixed windows
    window: float = 4.0
    overlap: float = 1.0
    # voice activity
    frame: float = 0.03
    threshold_db: float | None = None
    margin_db: float = 12.0
    floor_db: float = -60.0
    ceiling_db: float = -30.0
    floor_seconds: float = 30.0
    min_speech: float = 0.3
    min_silence: float = 0.4
    padding: float = 0.1
    max_segment: float = 10.0
    #: fixed mode: a last window shorter than this (seconds) is dropped unless it is the only one
    min_tail: float = 0.25

    def __post_init__(self) -> None:
        if self.mode not in ("vad", "fixed"):
            raise SegmentError(f"segment mode {self.mode!r}: use 'vad' (voice activity) or 'fixed' (windows)")
        positive = {
            "window": self.window,
            "frame": self.frame,
            "max_segment": self.max_segment,
            "floor_seconds": self.floor_seconds,
        }
        for name, value in positive.items():
            if not (math.isfinite(value) and value > 0):
                raise SegmentError(f"segment {name} must be a positive number of seconds, got {value}")
        for name in ("overlap", "min_speech", "min_silence", "padding", "min_tail", "margin_db"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise SegmentError(f"segment {name} must be zero or positive, got {value}")
        if self.overlap >= self.window:
            raise SegmentError(f"segment overlap {self.overlap} s must be shorter than the window {self.window} s")
        if self.threshold_db is not None and not (math.isfinite(self.threshold_db) and self.threshold_db <= 0):
            raise SegmentError(f"threshold_db {self.threshold_db} must be a level in dBFS (<= 0), e.g. -35")
        if not self.floor_db < self.ceiling_db <= 0:
            raise SegmentError(f"need floor_db < ceiling_db <= 0 (dBFS), got {self.floor_db} and {self.ceiling_db}")
        if self.mode == "vad" and self.max_segment < 2 * self.padding + 2 * self.frame:
            raise SegmentError(f"max_segment {self.max_segment} s must be longer than twice the padding ({self.padding} s)")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.mode == "fixed":
            return {k: d[k] for k in ("mode", "window", "overlap", "min_tail")}
        return {k: v for k, v in d.items() if k not in ("window", "overlap", "min_tail")}


@dataclass(frozen=True)
class Segment:
    """``audio`` is the 16 kHz mono signal of ``[start, end)`` seconds of the recording."""

    start: float
    end: float
    audio: np.ndarray


# --- streaming decode ---------------------------------------------------------------------


def stream_audio(path: str | Path, *, block_frames: int = BLOCK_FRAMES) -> Iterator[np.ndarray]:
    """16 kHz mono float32 blocks of ``path``, decoded and resampled incrementally."""
    import soundfile as sf
    import soxr

    from emovox.audio import audio_duration

    p = Path(path).expanduser()
    audio_duration(p)  # existence, readability, truncated headers: AudioError naming the file
    try:
        with sf.SoundFile(str(p)) as f:
            rate = f.samplerate
            resampler = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32") if rate != SAMPLE_RATE else None
            position = 0
            while True:
                block = f.read(block_frames, dtype="float32", always_2d=True)
                last = len(block) < block_frames
                mono = np.ascontiguousarray(block[:, 0]) if block.shape[1] == 1 else block.mean(axis=1, dtype=np.float32)
                if not np.isfinite(mono).all():
                    where = (position + int(np.flatnonzero(~np.isfinite(mono))[0])) / rate
                    raise AudioError(f"{p}: holds non-finite samples (NaN or inf), first at {where:.3f} s; re-export it")
                position += len(mono)
                out = mono if resampler is None else resampler.resample_chunk(mono, last=last)
                if len(out):
                    yield out
                if last:
                    return
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise AudioError(f"{p}: the audio data is corrupt or truncated ({exc}); re-export or remove the file") from None


# --- segmenters ---------------------------------------------------------------------------


def fixed_windows(blocks: Iterable[np.ndarray], config: SegmentConfig) -> Iterator[Segment]:
    """Windows of ``config.window`` s every ``window - overlap`` s; the last one may be shorter."""
    win = int(round(config.window * SAMPLE_RATE))
    hop = win - int(round(config.overlap * SAMPLE_RATE))
    min_tail = int(round(config.min_tail * SAMPLE_RATE))
    buf = np.zeros(0, dtype=np.float32)
    offset = 0  # absolute sample index of buf[0] (the next window's start)
    emitted = False
    covered = 0  # absolute end of the last window emitted
    for block in blocks:
        buf = np.concatenate([buf, block]) if len(buf) else np.asarray(block, dtype=np.float32)
        while len(buf) >= win:
            yield Segment(offset / SAMPLE_RATE, (offset + win) / SAMPLE_RATE, buf[:win].copy())
            emitted, covered = True, offset + win
            buf = buf[hop:]
            offset += hop
    end = offset + len(buf)
    if len(buf) and end > covered and (not emitted or len(buf) >= min_tail):
        yield Segment(offset / SAMPLE_RATE, end / SAMPLE_RATE, buf.copy())


class _Vad:
    """Frame-level speech/silence decisions with hysteresis, on a bounded sample buffer."""

    def __init__(self, config: SegmentConfig):
        self.c = config
        self.frame = max(1, int(round(config.frame * SAMPLE_RATE)))
        self.min_silence = max(1, int(round(config.min_silence / config.frame)))
        self.min_speech = int(round(config.min_speech * SAMPLE_RATE))
        self.pad = int(round(config.padding * SAMPLE_RATE))
        # a segment with its padding on both sides is at most max_segment long
        self.max_len = int(round(config.max_segment * SAMPLE_RATE)) - 2 * self.pad
        self.history: deque[float] = deque(maxlen=max(1, int(round(config.floor_seconds / config.frame))))
        self.buf = np.zeros(0, dtype=np.float32)
        self.buf_start = 0  # absolute sample index of buf[0]
        self.framed = 0  # absolute sample index up to which frames were classified
        self.seg_start: int | None = None  # first sample of the open speech run
        self.last_speech = 0  # end sample of the last speech frame of the open run
        self.silence = 0  # silent frames since then
        self.pending: list[tuple[int, int]] = []  # closed segments waiting for their end padding

    def threshold(self, levels: np.ndarray) -> float:
        if self.c.threshold_db is not None:
            return self.c.threshold_db
        self.history.extend(levels.tolist())
        floor = float(np.percentile(np.fromiter(self.history, dtype=np.float64), 10))
        return min(self.c.ceiling_db, max(self.c.floor_db, floor + self.c.margin_db))

    def push(self, block: np.ndarray) -> Iterator[Segment]:
        self.buf = np.concatenate([self.buf, block]) if len(self.buf) else np.asarray(block, dtype=np.float32)
        end = self.buf_start + len(self.buf)
        n = (end - self.framed) // self.frame
        if n:
            first = self.framed - self.buf_start
            frames = self.buf[first : first + n * self.frame].reshape(n, self.frame).astype(np.float64)
            levels = 10.0 * np.log10(np.mean(frames * frames, axis=1) + 1e-12)
            thr = self.threshold(levels)
            for k, level in enumerate(levels):
                self._step(self.framed + k * self.frame, bool(level > thr))
            self.framed += n * self.frame
        yield from self._flush(end, final=False)
        self._trim()

    def finish(self) -> Iterator[Segment]:
        end = self.buf_start + len(self.buf)
        if self.seg_start is not None:
            self._close()
        yield from self._flush(end, final=True)

    def _step(self, at: int, speech: bool) -> None:
        if speech:
            if self.seg_start is None:
                self.seg_start = at
            self.last_speech, self.silence = at + self.frame, 0
            if self.last_speech + self.frame - self.seg_start > self.max_len:  # one more frame would not fit
                self._close()
        elif self.seg_start is not None:
            self.silence += 1
            if self.silence >= self.min_silence:
                self._close()

    def _close(self) -> None:
        assert self.seg_start is not None
        if self.last_speech - self.seg_start >= self.min_speech:
            self.pending.append((self.seg_start, self.last_speech))
        self.seg_start, self.silence = None, 0

    def _flush(self, available: int, *, final: bool) -> Iterator[Segment]:
        while self.pending:
            s, e = self.pending[0]
            lo, hi = max(self.buf_start, s - self.pad), e + self.pad
            if hi > available and not final:
                return
            hi = min(hi, available)
            self.pending.pop(0)
            audio = self.buf[lo - self.buf_start : hi - self.buf_start].copy()
            yield Segment(lo / SAMPLE_RATE, hi / SAMPLE_RATE, audio)

    def _trim(self) -> None:
        keep = self.framed - self.pad
        if self.pending:
            keep = min(keep, self.pending[0][0] - self.pad)
        if self.seg_start is not None:
            keep = min(keep, self.seg_start - self.pad)
        drop = keep - self.buf_start
        if drop > 0:
            self.buf = self.buf[drop:].copy() if drop < len(self.buf) else np.zeros(0, dtype=np.float32)
            self.buf_start += drop


def vad_segments(blocks: Iterable[np.ndarray], config: SegmentConfig) -> Iterator[Segment]:
    """Speech segments found by frame energy (see the module docstring)."""
    vad = _Vad(config)
    for block in blocks:
        yield from vad.push(block)
    yield from vad.finish()


def iter_segments(path: str | Path, config: SegmentConfig = SegmentConfig()) -> Iterator[Segment]:
    """Segments of the recording at ``path``, streamed (see the module docstring)."""
    blocks = stream_audio(path)
    return fixed_windows(blocks, config) if config.mode == "fixed" else vad_segments(blocks, config)
