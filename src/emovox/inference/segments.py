"""Long recordings: cut into segments while streaming, predict each, return a timeline.

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

import json
import math
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from emovox.audio import SAMPLE_RATE
from emovox.errors import AudioError, EmovoxError

if TYPE_CHECKING:
    from emovox.inference.recognizer import Recognizer

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


# --- timeline -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TimelineEntry:
    """One segment's prediction; ``speech`` is ``emovox.inference.activity.has_speech`` of its audio (None: not checked)."""

    start: float
    end: float
    label: str
    probabilities: dict[str, float]
    transcript: str | None = None
    speech: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "label": self.label,
            "probabilities": self.probabilities,
        }
        if self.speech is not None:
            d["speech"] = self.speech
        if self.transcript is not None:
            d["transcript"] = self.transcript
        return d


@dataclass
class Timeline:
    """Per-segment predictions over a recording, plus how much time each label got."""

    source: str
    duration: float
    labels: tuple[str, ...]
    segmentation: dict[str, Any]
    entries: list[TimelineEntry] = field(default_factory=list)
    #: what computed the predictions (``torch``, ``onnx``, ``onnx-int8``; ``Recognizer.engine``)
    engine: str | None = None

    def label_seconds(self) -> dict[str, float]:
        """Seconds of the recording assigned to each label (overlaps counted once, to the later window)."""
        totals = dict.fromkeys(self.labels, 0.0)
        for i, e in enumerate(self.entries):
            end = min(e.end, self.entries[i + 1].start) if i + 1 < len(self.entries) else e.end
            totals[e.label] += max(0.0, end - e.start)
        return {k: round(v, 3) for k, v in totals.items()}

    @property
    def speech_found(self) -> bool:
        """False when no segment was found, or none of them holds speech (silence, steady noise)."""
        return any(e.speech is not False for e in self.entries)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "duration": round(self.duration, 3),
            "labels": list(self.labels),
            "segmentation": self.segmentation,
            **({"engine": self.engine} if self.engine is not None else {}),
            "speech_found": self.speech_found,
            "label_seconds": self.label_seconds(),
            "segments": [e.to_dict() for e in self.entries],
        }

    def write_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path


def predict_timeline(
    recognizer: Recognizer,
    path: str | Path,
    config: SegmentConfig | None = None,
    *,
    batch_size: int = 8,
    progress: bool = False,
    **options,
) -> Timeline:
    """Segment ``path`` while streaming it and classify every segment, ``batch_size`` at a time.

    A recording shorter than ``emovox.audio.MIN_SECONDS`` is refused (``TooShortError``, the same
    message as everywhere); shorter segments (only a custom ``min_tail`` makes them) are not
    predicted. Every entry records whether its audio holds speech (``emovox.inference.activity``).
    """
    from emovox.audio import MIN_SECONDS, audio_duration, too_short_message
    from emovox.errors import TooShortError
    from emovox.inference.activity import has_speech
    from emovox.progress import progress_bar

    if config is None:
        config = SegmentConfig(**options)
    elif options:
        from emovox.errors import RecognizerError

        raise RecognizerError("pass either a SegmentConfig or segmentation options, not both")

    if recognizer.modality == "text" and recognizer.asr is None:
        from emovox.errors import RecognizerError

        raise RecognizerError(
            "this recognizer reads transcripts and has no ASR model to transcribe the segments; "
            "configure one (Recognizer.load(path, asr=...), or --asr PATH_OR_HUB_ID)"
        )
    duration = audio_duration(path)
    if duration < MIN_SECONDS:
        raise TooShortError(too_short_message(str(path), int(round(duration * SAMPLE_RATE))))
    engine = getattr(recognizer, "engine", None)
    timeline = Timeline(str(path), duration, tuple(recognizer.labels), config.to_dict(), engine=engine)
    bar = progress_bar(total=round(duration, 1), unit="s", desc=Path(path).name, disable=not progress)
    batch: list[Segment] = []
    shortest = int(round(MIN_SECONDS * SAMPLE_RATE))

    def run() -> None:
        import warnings

        from emovox.errors import UngroupedWarning

        with warnings.catch_warnings():  # segments are classified alone by design: said once, below
            warnings.simplefilter("ignore", UngroupedWarning)
            preds = recognizer.predict([s.audio for s in batch])
        for s, p in zip(batch, preds, strict=True):
            speech = p.speech if p.speech is not None else has_speech(s.audio)  # the recognizer's own check, when it made one
            timeline.entries.append(TimelineEntry(s.start, s.end, p.label, p.probabilities, p.transcript, speech))
        bar.update(max(0.0, round(batch[-1].end, 1) - bar.n))
        batch.clear()

    try:
        for seg in iter_segments(path, config):
            if len(seg.audio) < shortest:
                continue
            batch.append(seg)
            if len(batch) >= batch_size:
                run()
        if batch:
            run()
        bar.update(max(0.0, bar.total - bar.n))  # the tail after the last segment (or a file without any)
    finally:
        bar.close()
    return timeline


def plot_timeline(timeline: Timeline, path: str | Path, *, title: str | None = None) -> Path:
    """PNG: class probabilities over time (stacked per segment) with the winning label on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    labels = list(timeline.labels)
    colors = {label: plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")(i) for i, label in enumerate(labels)}
    width = min(16.0, max(8.0, timeline.duration / 30.0))
    fig, (top, ax) = plt.subplots(2, 1, figsize=(width, 4.2), sharex=True, gridspec_kw={"height_ratios": [1, 4]})
    entries = timeline.entries
    starts = np.array([e.start for e in entries])
    ends = np.array([min(e.end, entries[i + 1].start) if i + 1 < len(entries) else e.end for i, e in enumerate(entries)])
    widths = np.maximum(ends - starts, 1e-3)
    probs = np.array([[e.probabilities[label] for label in labels] for e in entries]).reshape(len(entries), len(labels))
    bottom = np.zeros(len(entries))
    for j, label in enumerate(labels):  # one call per label: an hour of segments plots in a second
        ax.bar(starts, probs[:, j], width=widths, bottom=bottom, align="edge", color=colors[label], linewidth=0)
        bottom += probs[:, j]
        won = [(s0, w) for s0, w, e in zip(starts, widths, entries, strict=True) if e.label == label]
        if won:
            top.broken_barh(won, (0, 1), color=colors[label])
    top.set_yticks([])
    top.set_ylabel("label", rotation=0, ha="right", va="center")
    ax.set_ylim(0, 1)
    ax.set_xlim(0, max(timeline.duration, 1e-3))
    ax.set_xlabel("time (s)")
    ax.set_ylabel("probability")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[label]) for label in labels]
    ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small", frameon=False)
    top.set_title(title or f"{Path(timeline.source).name}: {len(timeline.entries)} segments ({timeline.segmentation['mode']})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
