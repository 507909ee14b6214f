"""A long recording's emotion timeline: each segment (``segments``) predicted as ``predict`` would, the recording
streamed, never loaded whole; only each segment's times and probabilities are kept, so peak memory is set by the
block and segment lengths, not by the length of the recording. ``plot_timeline`` draws it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from emovox.audio import SAMPLE_RATE
from emovox.inference.segments import Segment, SegmentConfig, iter_segments

if TYPE_CHECKING:
    from emovox.inference.recognizer import Recognizer


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
